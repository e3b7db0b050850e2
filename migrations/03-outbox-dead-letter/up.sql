-- Bounded, fair alert delivery (issue #13 item 3).
--
-- `scope_key`: the alert scope an outbox row belongs to (its lifecycle
-- topic, shared by the scope's `…/alerts` and `…/alerts/active` rows). The
-- publisher keeps the order within a scope only, so one scope's stuck rows
-- never hold back another scope's. Rows written before this migration get
-- it from their topic.
ALTER TABLE outbox ADD COLUMN scope_key TEXT;

UPDATE outbox
   SET scope_key = CASE WHEN topic LIKE '%/alerts/active'
                        THEN substr(topic, 1, length(topic) - length('/active'))
                        ELSE topic END
 WHERE published_at_ms IS NULL;

CREATE INDEX outbox_unpublished_scope ON outbox (scope_key, id)
    WHERE published_at_ms IS NULL;

-- Outbox rows the broker connection refused for good (larger than
-- `max_packet_bytes`, a topic that cannot be published): moved here, in
-- the transaction that takes them out of the outbox, instead of being
-- retried forever ahead of every other row. Never deleted.
CREATE TABLE outbox_dead_letter (
    outbox_id     INTEGER PRIMARY KEY,
    topic         TEXT    NOT NULL,
    scope_key     TEXT,
    payload       TEXT    NOT NULL,
    retained      INTEGER NOT NULL CHECK (retained IN (0, 1)),
    created_at_ms INTEGER NOT NULL,
    moved_at_ms   INTEGER NOT NULL,
    payload_bytes INTEGER NOT NULL,
    reason        TEXT    NOT NULL
);
