-- Same shape as the PostgreSQL schema; times are Unix microseconds.
CREATE TABLE events (
    id              TEXT    PRIMARY KEY,
    hook_id         TEXT    NOT NULL,
    delivery_id     TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    received_at     INTEGER NOT NULL,
    headers         TEXT    NOT NULL,
    body            BLOB    NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('stored', 'pending', 'delivering', 'done', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_until     INTEGER,
    leased_by       TEXT,
    last_error      TEXT,
    updated_at      INTEGER NOT NULL,
    UNIQUE (hook_id, delivery_id)
);

-- Claiming due events of one hook in order, and the queue counts. Partial,
-- so events of hooks without an action ('stored') cost no index writes.
CREATE INDEX events_pending_idx ON events (hook_id, next_attempt_at, id) WHERE state = 'pending';
CREATE INDEX events_delivering_idx ON events (hook_id, lease_until) WHERE state = 'delivering';
-- Dead letters: listed, counted and retried by hand.
CREATE INDEX events_dead_idx ON events (id) WHERE state = 'dead';
-- No index on received_at: ids are ULIDs, ordered by receipt time, so time
-- ranges (listing, retention) are ranges of the primary key.
