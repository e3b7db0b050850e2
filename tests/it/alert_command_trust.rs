//! Issue #13 item 13, "who may silence an alert", through the real binary
//! and the shared Mosquitto: with `[alerts] operators`, a command from
//! anyone else is refused (`unknown_operator`); a command dated far back is
//! refused (`stale_command`, 29 days used to take effect); the pauses of
//! one occurrence add up to at most `max_pause_per_occurrence_min` (three
//! back-to-back 30-min pauses used to be granted; the third is now refused
//! `pause_limit`). Each refusal is stored and published on `rejected`, and
//! the alert keeps ringing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::mqtt_common::blocking::{output_filters, PrefixClient};
use crate::mqtt_common::daemon::DaemonProcess;
use crate::mqtt_common::{poll_until, unique};
use dosetrack::vocab::format_rfc3339;
use serde_json::{json, Value};
use std::time::Duration;

const BROKER: &str = "127.0.0.1";
const PORT: u16 = 1883;

fn ago_min(min: i64) -> String {
    format_rfc3339(chrono::Utc::now().timestamp_millis() - min * 60_000)
}

fn query(db: &std::path::Path, sql: &str) -> Vec<Vec<String>> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |row| {
        (0..n)
            .map(|i| {
                row.get::<_, rusqlite::types::Value>(i).map(|v| match v {
                    rusqlite::types::Value::Null => "NULL".to_owned(),
                    rusqlite::types::Value::Integer(i) => i.to_string(),
                    rusqlite::types::Value::Real(r) => r.to_string(),
                    rusqlite::types::Value::Text(t) => t,
                    rusqlite::types::Value::Blob(b) => format!("{b:?}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[test]
fn only_listed_operators_with_fresh_commands_silence_an_alert_and_pauses_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("opsec");
    let db = dir.path().join("dosetrack.db");
    let config = dir.path().join("dosetrack.toml");
    std::fs::write(
        &config,
        "[alerts]\noperators = [\"rn-1\", \"rn-2\"]\nmax_command_age_min = 10.0\n\
         max_pause_min = 30.0\nmax_pause_per_occurrence_min = 60.0\n",
    )
    .unwrap();
    let mut filters = output_filters(&prefix);
    filters.push(format!("{prefix}/v1/patients/+/alerts"));
    let client = PrefixClient {
        inner: crate::mqtt_common::blocking::BlockingClient::connect(
            BROKER,
            PORT,
            &unique("opc"),
            &filters,
        ),
        prefix: prefix.clone(),
    };
    let mut daemon = DaemonProcess::run(
        (BROKER, PORT),
        &db,
        &prefix,
        &unique("opd"),
        &["--config", config.to_str().unwrap()],
        dir.path(),
    );
    daemon.spawn();
    poll_until("status online", Duration::from_secs(20), || {
        client.on("status").iter().any(|v| v["state"] == "online")
    });

    // An interaction alert, raised at once at admission.
    client.publish(
        "patients/P-1/admit",
        json!({"id": "adm-1", "time": ago_min(5), "weight_kg": 70,
               "comedications": ["clarithromycin"]})
        .to_string(),
    );
    let alerts = || client.on("patients/P-1/alerts");
    poll_until("the interaction alert", Duration::from_secs(20), || {
        alerts().iter().any(|m| m["phase"] == "raised")
    });
    let id = alerts()[0]["alert_id"].as_str().unwrap().to_owned();
    let phases = || -> Vec<String> {
        alerts()
            .iter()
            .filter(|m| m["alert_id"] == id.as_str())
            .map(|m| m["phase"].as_str().unwrap().to_owned())
            .collect()
    };
    let command = |cid: &str, time: String, by: &str, extra: Value| {
        let mut c = json!({"id": cid, "time": time, "by": by});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        client.publish(&format!("alerts/{id}/commands"), c.to_string());
    };
    let rejected_code = |n: usize| -> Vec<String> {
        let mut r = Vec::new();
        poll_until("the rejection", Duration::from_secs(20), || {
            r = client
                .on("rejected")
                .iter()
                .map(|v| v["error"]["code"].as_str().unwrap().to_owned())
                .collect();
            r.len() >= n
        });
        r
    };

    // Anyone on the broker: refused, stored, the alert not acknowledged.
    command(
        "c-1",
        ago_min(0),
        "intruder",
        json!({"action": "acknowledge"}),
    );
    assert_eq!(rejected_code(1), ["unknown_operator"]);
    // A listed operator's acknowledge dated 29 days ago: refused.
    command(
        "c-2",
        ago_min(29 * 24 * 60),
        "rn-1",
        json!({"action": "acknowledge"}),
    );
    assert_eq!(rejected_code(2), ["unknown_operator", "stale_command"]);
    let notices = client.on("rejected");
    assert_eq!(notices[0]["error"]["field"], "by");
    assert_eq!(notices[1]["error"]["field"], "time");
    assert_eq!(
        notices[0]["topic"],
        client.topic(&format!("alerts/{id}/commands")).as_str()
    );

    // Three back-to-back pauses of 30 min: two granted (60 min in all),
    // the third refused.
    command(
        "c-3",
        ago_min(0),
        "rn-1",
        json!({"action": "pause", "minutes": 30}),
    );
    poll_until("the first pause", Duration::from_secs(20), || {
        phases().iter().filter(|p| *p == "paused").count() == 1
    });
    command(
        "c-4",
        ago_min(0),
        "rn-2",
        json!({"action": "pause", "minutes": 30}),
    );
    poll_until("the second pause", Duration::from_secs(20), || {
        phases().iter().filter(|p| *p == "paused").count() == 2
    });
    command(
        "c-5",
        ago_min(0),
        "rn-1",
        json!({"action": "pause", "minutes": 30}),
    );
    assert_eq!(
        rejected_code(3),
        ["unknown_operator", "stale_command", "pause_limit"]
    );
    let limit = &client.on("rejected")[2];
    assert_eq!(limit["error"]["field"], "minutes", "{limit}");
    assert!(
        limit["payload_excerpt"].as_str().unwrap().contains("c-5"),
        "{limit}"
    );
    let granted: Vec<f64> = alerts()
        .iter()
        .filter(|m| m["phase"] == "paused")
        .map(|m| m["details"]["granted_min"].as_f64().unwrap())
        .collect();
    assert_eq!(granted, [30.0, 30.0]);

    // Stored: the two intake refusals as rejected messages; the refused
    // pause as a stored command whose outcome is "not applied".
    let rejected = query(&db, "SELECT code, field FROM rejected ORDER BY seq");
    assert_eq!(
        rejected,
        [
            vec!["unknown_operator".to_owned(), "by".to_owned()],
            vec!["stale_command".to_owned(), "time".to_owned()]
        ]
    );
    let outcomes = query(
        &db,
        "SELECT i.input_id, c.applied, substr(c.outcome, 1, 11) FROM alert_commands c \
         JOIN inputs i ON i.seq = c.input_seq ORDER BY c.input_seq",
    );
    assert_eq!(
        outcomes.iter().map(|r| r[..2].to_vec()).collect::<Vec<_>>(),
        [
            vec!["c-3".to_owned(), "1".to_owned()],
            vec!["c-4".to_owned(), "1".to_owned()],
            vec!["c-5".to_owned(), "0".to_owned()]
        ]
    );
    assert_eq!(outcomes[2][2], "pause_limit");

    // Nothing acknowledged the alert so far; a listed operator's fresh
    // acknowledge does.
    assert!(
        !phases().contains(&"acknowledged".to_owned()),
        "{:?}",
        phases()
    );
    command("c-6", ago_min(0), "rn-2", json!({"action": "acknowledge"}));
    poll_until("the acknowledge", Duration::from_secs(20), || {
        phases().contains(&"acknowledged".to_owned())
    });
    let ack = alerts()
        .into_iter()
        .find(|m| m["phase"] == "acknowledged")
        .unwrap();
    assert_eq!(ack["acknowledged"]["by"], "rn-2", "{ack}");
    assert!(daemon.running());
}
