//! Tests of the closed sets of names.

use super::*;

#[test]
fn serialised_names_match_contract_names() {
    fn check<T: Serialize + fmt::Display>(all: &[T]) {
        for v in all {
            assert_eq!(
                serde_json::to_value(v).ok(),
                Some(Value::String(v.to_string()))
            );
        }
    }
    check(ErrorCode::ALL);
    check(StopReason::ALL);
    check(BolusSource::ALL);
    check(AlarmCode::ALL);
    assert_eq!(ErrorCode::ALL.len(), 16);
    let e = event(STARTED);
    let json = serde_json::to_value(&e).ok();
    assert_eq!(
        json.as_ref().and_then(|j| j.get("kind")),
        Some(&Value::String("infusion_started".into()))
    );
    let r = Rejection::new(ErrorCode::InvalidValue, Some("rate_mg_per_h"), "m");
    assert_eq!(
        serde_json::to_value(&r).ok(),
        Some(
            serde_json::json!({"code": "invalid_value", "field": "rate_mg_per_h", "message": "m"})
        )
    );
    assert_eq!(r.to_string(), "invalid_value (rate_mg_per_h): m");
}
