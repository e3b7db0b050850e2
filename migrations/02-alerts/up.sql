-- Alerts (issue #4). Every lifecycle message is written in the same
-- transaction as the alert state it comes from, and to the outbox it is
-- published from.

-- One row per alert (open or cleared); `record` is the lifecycle's full
-- state as JSON, read back at start for the open ones.
CREATE TABLE alert_state (
    alert_id      TEXT    PRIMARY KEY,
    number        INTEGER NOT NULL,
    scope_kind    TEXT    NOT NULL CHECK (scope_kind IN ('patient', 'device')),
    scope_id      TEXT    NOT NULL,
    rule          TEXT    NOT NULL,
    subject       TEXT    NOT NULL,
    open          INTEGER NOT NULL CHECK (open IN (0, 1)),
    raised_at_ms  INTEGER NOT NULL,
    cleared_at_ms INTEGER,
    record        TEXT    NOT NULL CHECK (json_valid(record))
);

CREATE INDEX alert_state_open ON alert_state (scope_kind, scope_id) WHERE open = 1;

-- Every lifecycle message published (the alarm-burden report reads it).
CREATE TABLE alert_events (
    seq        INTEGER PRIMARY KEY,
    alert_id   TEXT    NOT NULL,
    patient_id TEXT,
    device_id  TEXT,
    rule       TEXT    NOT NULL,
    phase      TEXT    NOT NULL,
    priority   TEXT    NOT NULL,
    time_ms    INTEGER NOT NULL,
    payload    TEXT    NOT NULL CHECK (json_valid(payload))
);

CREATE INDEX alert_events_time ON alert_events (time_ms);
CREATE INDEX alert_events_alert ON alert_events (alert_id, seq);

-- Operator commands applied (or refused) by the lifecycle.
CREATE TABLE alert_commands (
    input_seq   INTEGER PRIMARY KEY REFERENCES inputs (seq),
    alert_id    TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    by          TEXT    NOT NULL,
    applied     INTEGER NOT NULL CHECK (applied IN (0, 1)),
    outcome     TEXT    NOT NULL,
    time_ms     INTEGER NOT NULL
);
