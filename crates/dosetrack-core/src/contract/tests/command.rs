//! Tests of alert command payloads.

use super::*;

#[test]
fn accepts_contract_commands() {
    assert_eq!(
        accept(&alert(), CMD_ACK),
        Input::AlertCommand(AlertCommand {
            id: "cmd-1".into(),
            time_ms: t(T0),
            action: CommandAction::Acknowledge,
            by: "rn-4471".into()
        })
    );
    assert_eq!(
        accept(&alert(), CMD_PAUSE),
        Input::AlertCommand(AlertCommand {
            id: "cmd-2".into(),
            time_ms: t(T0),
            action: CommandAction::Pause { minutes: 15.0 },
            by: "rn-4471".into()
        })
    );
}

#[test]
fn alert_command_rules() {
    let topic = alert();
    let p = with_raw(CMD_ACK, "action", Some("\"snooze\""));
    assert_rejects(&topic, &p, ErrorCode::UnknownKind, Some("action"));
    let p = with_raw(CMD_ACK, "action", Some("2"));
    assert_rejects(&topic, &p, ErrorCode::InvalidValue, Some("action"));
    let p = with_raw(CMD_ACK, "action", None);
    assert_rejects(&topic, &p, ErrorCode::MissingField, Some("action"));
    let p = with_raw(CMD_ACK, "by", None);
    assert_rejects(&topic, &p, ErrorCode::MissingField, Some("by"));
    let long_by = format!("\"{}\"", "b".repeat(129));
    for bad in ["\"\"", "\"rn\\t4471\"", "4471", long_by.as_str()] {
        let p = with_raw(CMD_ACK, "by", Some(bad));
        assert_rejects(&topic, &p, ErrorCode::InvalidValue, Some("by"));
    }
    // Acknowledge ignores minutes; pause requires it.
    accepts_payload(&topic, &with_raw(CMD_ACK, "minutes", Some("\"x\"")));
    let p = with_raw(CMD_PAUSE, "minutes", None);
    assert_rejects(&topic, &p, ErrorCode::MissingField, Some("minutes"));
}
