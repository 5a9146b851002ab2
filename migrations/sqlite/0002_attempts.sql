-- Every delivery attempt, for the console's event page. Written in batches
-- after the attempt's result (delivery bookkeeping, not ingest), deleted with
-- its event.
CREATE TABLE attempts (
    event_id      TEXT    NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    attempt       INTEGER NOT NULL,
    started_at    INTEGER NOT NULL,
    duration_us   INTEGER NOT NULL,
    result        TEXT    NOT NULL CHECK (result IN ('done', 'retry', 'dead')),
    target_status INTEGER,
    output        TEXT,
    worker        TEXT    NOT NULL
);
CREATE INDEX attempts_event_idx ON attempts (event_id, started_at);
