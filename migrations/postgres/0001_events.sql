-- Every accepted delivery. The raw body is kept byte-for-byte (bytea, not
-- jsonb): it must be forwarded unchanged and may need to be re-verified, and
-- parsing jsonb costs the database CPU it needs for commits.
CREATE TABLE events (
    id              text        PRIMARY KEY,
    hook_id         text        NOT NULL,
    delivery_id     text        NOT NULL,
    event_type      text        NOT NULL,
    received_at     timestamptz NOT NULL,
    headers         text        NOT NULL,
    body            bytea       NOT NULL,
    state           text        NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('stored', 'pending', 'delivering', 'done', 'dead')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    lease_until     timestamptz,
    leased_by       text,
    last_error      text,
    updated_at      timestamptz NOT NULL,
    CONSTRAINT events_hook_delivery_key UNIQUE (hook_id, delivery_id)
);

-- Claiming due events of one hook in order, and the queue counts. Partial,
-- so events of hooks without an action ('stored') cost no index writes.
CREATE INDEX events_pending_idx ON events (hook_id, next_attempt_at, id) WHERE state = 'pending';
CREATE INDEX events_delivering_idx ON events (hook_id, lease_until) WHERE state = 'delivering';
-- Dead letters: listed, counted and retried by hand.
CREATE INDEX events_dead_idx ON events (id) WHERE state = 'dead';
-- No index on received_at: ids are ULIDs, ordered by receipt time, so time
-- ranges (listing, retention) are ranges of the primary key.

-- Bodies are mostly JSON of a few KB: PostgreSQL compresses them when
-- moving them to TOAST. lz4 (PostgreSQL 14+, when built with it, as Debian's
-- and PGDG's are) costs a fraction of the CPU of the default pglz, and on a
-- busy server the database's CPU is what limits ingest.
DO $$
BEGIN
    ALTER TABLE events ALTER COLUMN body SET COMPRESSION lz4;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'lz4 compression not available, keeping the default: %', SQLERRM;
END
$$;
