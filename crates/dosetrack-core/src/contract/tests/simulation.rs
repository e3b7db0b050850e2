//! Tests of simulation lines.

use super::*;

#[test]
fn simulation_lines() {
    let dose = parse_simulation_line(DOSE_EXAMPLE_2);
    assert!(matches!(dose, Ok(SimulationInput::Dose(ref d)) if d.id == "mar-8"));
    let with_device = with_raw(STARTED, "device_id", Some("\"pump-7\""));
    match parse_simulation_line(&with_device) {
        Ok(SimulationInput::DeviceEvent { device_id, event }) => {
            assert_eq!(device_id, "pump-7");
            assert_eq!(event.kind.kind_name(), "infusion_started");
        }
        other => panic!("{other:?}"),
    }
    let err = |line: &str| match parse_simulation_line(line) {
        Ok(v) => panic!("accepted {line}: {v:?}"),
        Err(e) => (e.code, e.field),
    };
    assert_eq!(
        err(STARTED),
        (ErrorCode::MissingField, Some("device_id".into()))
    );
    assert_eq!(
        err(&with_raw(STARTED, "device_id", Some("\"pump 7\""))),
        (ErrorCode::InvalidValue, Some("device_id".into()))
    );
    assert_eq!(
        err(DISCHARGE),
        (ErrorCode::MissingField, Some("route or kind".into()))
    );
    // kind wins over route.
    let both = with_raw(DOSE_EXAMPLE_1, "kind", Some("\"heartbeat\""));
    assert_eq!(
        err(&both),
        (ErrorCode::MissingField, Some("device_id".into()))
    );
    assert_eq!(err("[]"), (ErrorCode::NotAnObject, None));
    assert_eq!(err("{"), (ErrorCode::InvalidJson, None));
    assert_eq!(
        err(&with_raw(DOSE_EXAMPLE_1, "amount_mg", Some("0"))),
        (ErrorCode::InvalidValue, Some("amount_mg".into()))
    );
}
