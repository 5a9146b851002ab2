-- Every delivery attempt, for the console's event page. Written in batches
-- after the attempt's result (delivery bookkeeping, not ingest), deleted with
-- its event.
CREATE TABLE attempts (
    event_id      text        NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    attempt       integer     NOT NULL,
    started_at    timestamptz NOT NULL,
    duration_us   bigint      NOT NULL,
    result        text        NOT NULL CHECK (result IN ('done', 'retry', 'dead')),
    target_status integer,
    output        text,
    worker        text        NOT NULL
);
CREATE INDEX attempts_event_idx ON attempts (event_id, started_at);
