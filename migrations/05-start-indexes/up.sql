-- What a start reads, from indexes that hold it (issue #16 item 2;
-- `src/store/start.rs`). With a year's database out of the page cache (as
-- after a reboot) the start took 31 s to READY: each row these reads
-- checked was a table lookup somewhere in a 6 GB file.

-- 1. The lifecycle index covers what its readers select. A start reads
-- every admission and discharge to decide who is released; with `kind`
-- and `source_kind` only in the table, each was a table lookup, and with
-- sampled statistics SQLite even preferred the source index and visited
-- every patient input: 22 s of the 31. Same name, same condition (queries
-- spell `kind IN (...)` word for word); the columns they select or filter
-- on added at the end.
DROP INDEX inputs_patient_lifecycle;
CREATE INDEX inputs_patient_lifecycle
    ON inputs (patient_id, occurred_at_ms, seq, kind, source_kind)
    WHERE kind IN ('admit', 'discharge');

-- 2. A device's events without a patient in their payload, heartbeats
-- aside: those a start keeps in the spans of patients still in care. The
-- device index alone made the start look up every heartbeat of those
-- spans in the table (1.7 s of the rest). Heartbeats, nearly all of the
-- inputs, are not in it: it costs the writer little.
CREATE INDEX inputs_device_unnamed_events ON inputs (device_id, occurred_at_ms, seq)
    WHERE patient_id IS NULL AND kind != 'heartbeat';
