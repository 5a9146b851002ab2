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

-- Claiming due events of one hook in order (state = 'pending' and
-- next_attempt_at <= now; state = 'delivering' with an expired lease), and
-- the queue-depth count.
CREATE INDEX events_due_idx ON events (hook_id, state, next_attempt_at, id);
-- Dead letters: listed, counted and retried by hand.
CREATE INDEX events_dead_idx ON events (received_at) WHERE state = 'dead';
CREATE INDEX events_received_idx ON events (received_at);
