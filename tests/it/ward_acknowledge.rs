//! Acknowledging an alert from the ward page (`POST
//! /api/v1/alerts/{id}/acknowledge`, `[http.acknowledge]`), end to end: the
//! real daemon, the shared Mosquitto, a real SQLite file.
//!
//! * Off by default: refused (403 `acknowledge_off`), nothing changes.
//! * Token mode, with `[alerts] operators`: a request from another site, a
//!   form's content type, no token, an unknown token, a known operator not
//!   on the operators list, a bad alert id and an alert that is not open
//!   are each refused with their own code and status, and the alert stays
//!   unacknowledged; the right token acknowledges: the answer names the
//!   operator, the API shows `acknowledged.by`, the lifecycle message
//!   `acknowledged` with that `by` goes out on MQTT, and the command is
//!   stored as an input like one from a nurse station.
//! * Proxy-header mode: the operator is the proxy's header, never the body.

use crate::http_api::{ago, assert_valid, ward_stop, Ward};
use crate::mqtt_common::{http_request, shared_broker, unique, TestClient};
use serde_json::{json, Value};
use std::time::Duration;

const JSON: &str = "Content-Type: application/json";
const NURSE_TOKEN: &str = "rn4471-0123456789abcdef0123";
const STRANGER_TOKEN: &str = "rn9999-fedcba9876543210fedc";

/// POST the acknowledge of `alert_id` with `headers`: status and JSON body.
fn post(ward: &Ward, alert_id: &str, headers: &[&str]) -> (u16, Value) {
    let path = format!("/api/v1/alerts/{alert_id}/acknowledge");
    let (status, body) = http_request(ward.port, "POST", &path, headers, "{}")
        .unwrap_or_else(|| panic!("no answer to {path}\n{}", ward.process.log_tail(4000)));
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (status, v)
}

/// POST expecting a refusal: its status and code, an error body.
fn refused(ward: &Ward, alert_id: &str, headers: &[&str], status: u16, code: &str) {
    let (s, body) = post(ward, alert_id, headers);
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (status, Some(code)),
        "{body}"
    );
    assert_valid("error", &body);
}

/// Admit P-1 and give a bolus over the dose limit; the high alert's id.
async fn ward_with_an_alert(ward: &Ward, prefix: &str) -> (TestClient, String) {
    // Healthy: both broker connections up (the ingest one subscribed).
    tokio::task::block_in_place(|| {
        crate::mqtt_common::poll_until("a healthy daemon", Duration::from_secs(20), || {
            crate::mqtt_common::http_get(ward.port, "/healthz").is_some_and(|(s, _, _)| s == 200)
        })
    });
    let (host, port) = shared_broker();
    let client = TestClient::connect(&host, port, &unique("ack-pub")).await;
    let t = |s: &str| format!("{prefix}/v1/{s}");
    client
        .publish_all(&[
            (
                t("patients/P-1/admit"),
                json!({"id": "adm-1", "time": ago(30), "weight_kg": 70, "age_years": 50})
                    .to_string()
                    .into_bytes(),
            ),
            (
                t("patients/P-1/doses"),
                json!({"id": "b-1", "time": ago(1), "route": "iv_bolus", "amount_mg": 40})
                    .to_string()
                    .into_bytes(),
            ),
        ])
        .await;
    let alerts = tokio::task::block_in_place(|| {
        ward.wait("the dose_limit alert", "/api/v1/alerts", |v| {
            v["alerts"]
                .as_array()
                .is_some_and(|a| a.iter().any(|a| a["rule"] == "dose_limit"))
        })
    });
    let id = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["rule"] == "dose_limit")
        .unwrap()["alert_id"]
        .as_str()
        .unwrap()
        .to_owned();
    (client, id)
}

fn acknowledged_by(ward: &Ward, alert_id: &str) -> Value {
    let (_, alerts) = ward.get("/api/v1/alerts");
    alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["alert_id"] == alert_id)
        .map(|a| a["acknowledged"]["by"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledging_from_the_page_is_off_by_default() {
    let prefix = unique("ack-off");
    let ward = Ward::start_with(&prefix, "");
    let (_client, id) = ward_with_an_alert(&ward, &prefix).await;
    let auth = format!("Authorization: Bearer {NURSE_TOKEN}");
    refused(
        &ward,
        &id,
        &[JSON, "X-Remote-User: rn-4471", &auth],
        403,
        "acknowledge_off",
    );
    assert_eq!(acknowledged_by(&ward, &id), Value::Null);
    // The page is told, and shows no button.
    let (_, _, page) = crate::mqtt_common::http_get(ward.port, "/").unwrap();
    assert!(
        page.contains(r#"name="dosetrack-acknowledge" content="off""#),
        "{page}"
    );
    ward_stop(ward);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_acknowledges_with_a_token_and_every_other_request_is_refused() {
    let prefix = unique("ack-token");
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("operator-tokens");
    std::fs::write(
        &tokens,
        format!("# ward 7\nrn-4471 {NURSE_TOKEN}\nrn-9999 {STRANGER_TOKEN}\n"),
    )
    .unwrap();
    let ward = Ward::start_with(
        &prefix,
        &format!(
            "\n[http.acknowledge]\nenabled = true\nidentity = \"token\"\n\
             tokens_file = \"{}\"\n\n[alerts]\noperators = [\"rn-4471\"]\n",
            tokens.display()
        ),
    );
    let (mut client, id) = ward_with_an_alert(&ward, &prefix).await;
    client
        .subscribe(&format!("{prefix}/v1/patients/P-1/alerts"))
        .await;
    let nurse = format!("Authorization: Bearer {NURSE_TOKEN}");
    let stranger = format!("Authorization: Bearer {STRANGER_TOKEN}");

    // Each refusal with its own code; none acknowledges.
    refused(
        &ward,
        &id,
        &[JSON, &nurse, "Origin: https://evil.example"],
        403,
        "cross_origin",
    );
    refused(
        &ward,
        &id,
        &["Content-Type: application/x-www-form-urlencoded", &nurse],
        415,
        "bad_content_type",
    );
    refused(&ward, &id, &[JSON], 401, "no_operator");
    // The proxy header means nothing in token mode.
    refused(
        &ward,
        &id,
        &[JSON, "X-Remote-User: rn-4471"],
        401,
        "no_operator",
    );
    refused(
        &ward,
        &id,
        &[JSON, "Authorization: Bearer not-a-token-of-anybody-here"],
        401,
        "bad_token",
    );
    // A known token, but not on [alerts] operators: refused at intake like
    // an MQTT command from that operator.
    refused(&ward, &id, &[JSON, &stranger], 403, "unknown_operator");
    refused(&ward, "al%2Fx", &[JSON, &nurse], 400, "bad_topic");
    refused(&ward, "al-999-1", &[JSON, &nurse], 409, "not_applied");
    assert_eq!(acknowledged_by(&ward, &id), Value::Null);

    // An Origin of another port is another site.
    refused(
        &ward,
        &id,
        &[JSON, &nurse, "Origin: http://127.0.0.1:1"],
        403,
        "cross_origin",
    );
    assert_eq!(acknowledged_by(&ward, &id), Value::Null);

    // The nurse's token acknowledges, in the nurse's name (the page's own
    // origin passes).
    let origin = format!("Origin: http://127.0.0.1:{}", ward.port);
    let (status, body) = post(&ward, &id, &[JSON, &nurse, &origin]);
    assert_eq!(status, 200, "{body}");
    assert_valid("acknowledge", &body);
    assert_eq!(body["by"], "rn-4471");
    assert_eq!(body["alert_id"], id.as_str());
    assert_eq!(body["applied"], true);
    assert!(
        body["command_id"].as_str().unwrap().starts_with("web-"),
        "{body}"
    );
    assert_eq!(acknowledged_by(&ward, &id), "rn-4471");
    // On the wire: the lifecycle message, with who.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut seen = None;
    while seen.is_none() && std::time::Instant::now() < deadline {
        if let Some(p) = client.recv(Duration::from_millis(500)).await {
            let v: Value = serde_json::from_slice(&p.payload).unwrap();
            if v["alert_id"] == id.as_str() && v["phase"] == "acknowledged" {
                seen = Some(v);
            }
        }
    }
    let seen = seen.expect("no acknowledged message on MQTT");
    assert_eq!(seen["acknowledged"]["by"], "rn-4471", "{seen}");
    // Stored as the contract's command input on the alert's topic, the
    // stranger's refusal stored as rejected.
    let db = rusqlite::Connection::open(&ward.db).unwrap();
    let stored: Vec<(String, String, String)> = db
        .prepare("SELECT topic, input_id, payload FROM inputs WHERE source_kind = 'alert' AND source_id = ?1")
        .unwrap()
        .query_map([&id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].0, format!("{prefix}/v1/alerts/{id}/commands"));
    assert_eq!(stored[0].1, body["command_id"].as_str().unwrap());
    let payload: Value = serde_json::from_str(&stored[0].2).unwrap();
    assert_eq!(
        (&payload["action"], &payload["by"]),
        (&json!("acknowledge"), &json!("rn-4471"))
    );
    let rejected: Vec<String> = db
        .prepare("SELECT code FROM rejected WHERE topic = ?1")
        .unwrap()
        .query_map([format!("{prefix}/v1/alerts/{id}/commands")], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rejected, vec!["unknown_operator"]);
    // Again: nothing left to do, said so (200, no change).
    let (status, again) = post(&ward, &id, &[JSON, &nurse]);
    assert_eq!(status, 200, "{again}");
    assert!(
        again["outcome"].as_str().unwrap().contains("no change"),
        "{again}"
    );
    ward_stop(ward);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_the_operator_is_the_proxys_header() {
    let prefix = unique("ack-proxy");
    let ward = Ward::start_with(
        &prefix,
        "\n[http.acknowledge]\nenabled = true\nidentity = \"proxy_header\"\nheader = \"X-Forwarded-User\"\n",
    );
    let (_client, id) = ward_with_an_alert(&ward, &prefix).await;
    let (_, _, page) = crate::mqtt_common::http_get(ward.port, "/").unwrap();
    assert!(page.contains(r#"content="proxy_header""#), "{page}");
    refused(&ward, &id, &[JSON], 401, "no_operator");
    refused(
        &ward,
        &id,
        &[JSON, "X-Remote-User: rn-4471"],
        401,
        "no_operator",
    );
    refused(
        &ward,
        &id,
        &[JSON, "X-Forwarded-User: rn 4471;x"],
        401,
        "no_operator",
    );
    // A `by` in the body is not who the operator is.
    let path = format!("/api/v1/alerts/{id}/acknowledge");
    let (status, body) = http_request(
        ward.port,
        "POST",
        &path,
        &[JSON, "X-Forwarded-User: rn-5150"],
        r#"{"by": "someone-else"}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["by"], "rn-5150");
    assert_eq!(acknowledged_by(&ward, &id), "rn-5150");
    ward_stop(ward);
}
