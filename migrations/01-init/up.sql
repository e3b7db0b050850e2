-- dosetrack store, schema version 1.
--
-- Event sourcing: `inputs` is the append-only log of every accepted input
-- (the source of truth); `rejected` keeps every refused message. The other
-- tables are projections written in the same transaction as the input they
-- derive from, or outputs of the daemon (history, published state, outbox).
--
-- PRAGMAs (journal_mode=WAL, synchronous=FULL, foreign_keys=ON) are set by
-- the code on each connection, not here.

-- Every accepted input, in arrival order (`seq`).
CREATE TABLE inputs (
    seq            INTEGER PRIMARY KEY,
    topic          TEXT    NOT NULL,
    source_kind    TEXT    NOT NULL CHECK (source_kind IN ('patient', 'device', 'alert')),
    source_id      TEXT    NOT NULL,
    input_id       TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    patient_id     TEXT,
    device_id      TEXT,
    occurred_at_ms INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    -- the raw JSON payload as received
    payload        TEXT    NOT NULL,
    -- the payload re-serialised with sorted keys: tells a redelivery (same
    -- canonical text) from a conflict (same source and id, other content)
    canonical      TEXT    NOT NULL,
    -- the parsed fields as JSON, written by the caller
    parsed         TEXT    NOT NULL CHECK (json_valid(parsed)),
    UNIQUE (source_kind, source_id, input_id)
);

-- A patient's inputs in occurrence order.
CREATE INDEX inputs_patient_time ON inputs (patient_id, occurred_at_ms, seq)
    WHERE patient_id IS NOT NULL;

-- A patient's admits and discharges (the `patients` projection is
-- recomputed from them).
CREATE INDEX inputs_patient_lifecycle ON inputs (patient_id, occurred_at_ms, seq)
    WHERE kind IN ('admit', 'discharge');

-- A device's inputs in occurrence order (device events without patient_id
-- are attributed through device_associations).
CREATE INDEX inputs_device_time ON inputs (device_id, occurred_at_ms, seq)
    WHERE device_id IS NOT NULL;

-- Refused messages, kept for audit. `payload` holds at most the first 64 KiB
-- of the raw bytes (which may be invalid UTF-8); `payload_len` the full length.
CREATE TABLE rejected (
    seq            INTEGER PRIMARY KEY,
    topic          TEXT    NOT NULL,
    received_at_ms INTEGER NOT NULL,
    code           TEXT    NOT NULL,
    field          TEXT,
    message        TEXT    NOT NULL,
    payload        BLOB    NOT NULL,
    payload_len    INTEGER NOT NULL CHECK (payload_len >= length(payload))
);

-- Projection: one row per admitted patient. `discharged_at_ms` is set while
-- the latest admit/discharge in occurrence order is a discharge.
CREATE TABLE patients (
    patient_id          TEXT    PRIMARY KEY,
    first_admitted_at_ms INTEGER NOT NULL,
    last_admit_seq      INTEGER NOT NULL REFERENCES inputs (seq),
    discharged_at_ms    INTEGER
);

-- Projection: the covariates of every admit, valid from its occurrence time.
CREATE TABLE patient_covariates (
    patient_id    TEXT    NOT NULL REFERENCES patients (patient_id),
    valid_from_ms INTEGER NOT NULL,
    input_seq     INTEGER NOT NULL REFERENCES inputs (seq),
    weight_kg     REAL    NOT NULL,
    age_years     REAL,
    sex           TEXT,
    height_cm     REAL,
    model         TEXT,
    setting       TEXT    NOT NULL,
    comedications TEXT    NOT NULL CHECK (json_valid(comedications)),
    targets       TEXT    NOT NULL CHECK (json_valid(targets)),
    PRIMARY KEY (patient_id, valid_from_ms, input_seq)
) WITHOUT ROWID;

-- Projection: every device ever heard from (times are occurrence times).
CREATE TABLE devices (
    device_id      TEXT    PRIMARY KEY,
    first_seen_ms  INTEGER NOT NULL,
    last_heard_ms  INTEGER NOT NULL,
    last_input_seq INTEGER NOT NULL REFERENCES inputs (seq)
);

-- Projection: a device's patient from `from_ms` on. A row is added whenever a
-- device event names a patient other than the device's association at the
-- event's occurrence time (or the device has none yet).
CREATE TABLE device_associations (
    device_id  TEXT    NOT NULL REFERENCES devices (device_id),
    patient_id TEXT    NOT NULL,
    from_ms    INTEGER NOT NULL,
    input_seq  INTEGER NOT NULL REFERENCES inputs (seq),
    PRIMARY KEY (device_id, from_ms, input_seq)
) WITHOUT ROWID;

CREATE INDEX device_associations_patient ON device_associations (patient_id, device_id);

-- Computed concentrations; a recompute after a late input overwrites.
CREATE TABLE concentration_history (
    patient_id    TEXT    NOT NULL,
    t_ms          INTEGER NOT NULL,
    cp_ng_per_ml  REAL    NOT NULL,
    ce_ng_per_ml  REAL    NOT NULL,
    PRIMARY KEY (patient_id, t_ms)
) WITHOUT ROWID;

-- The last state message published per patient.
CREATE TABLE published_state (
    patient_id TEXT    PRIMARY KEY,
    time_ms    INTEGER NOT NULL,
    payload    TEXT    NOT NULL
);

-- Messages to publish, written in the transaction that decides them and
-- marked published once the broker has them (issue 4).
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    topic           TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    retained        INTEGER NOT NULL CHECK (retained IN (0, 1)),
    qos             INTEGER NOT NULL CHECK (qos IN (0, 1, 2)),
    created_at_ms   INTEGER NOT NULL,
    published_at_ms INTEGER
);

CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at_ms IS NULL;
