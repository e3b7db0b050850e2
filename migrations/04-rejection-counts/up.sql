-- Repeated rejections (issue #13 item 7). The first few rejections of one
-- source with one code in a minute are stored in full in `rejected`; the
-- rest of that minute are counted here, exactly, one row per (source, code,
-- minute). `rejected` plus these counts is every rejection received.
CREATE TABLE rejection_counts (
    source         TEXT    NOT NULL,
    code           TEXT    NOT NULL,
    -- The minute (received_at_ms rounded down to 60,000 ms).
    minute_ms      INTEGER NOT NULL,
    count          INTEGER NOT NULL CHECK (count > 0),
    first_ms       INTEGER NOT NULL,
    last_ms        INTEGER NOT NULL,
    -- The topic of the last one counted (the source's, under the prefix).
    last_topic     TEXT    NOT NULL,
    PRIMARY KEY (source, code, minute_ms)
) WITHOUT ROWID;
