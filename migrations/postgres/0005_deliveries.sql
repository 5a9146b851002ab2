-- Fan-out (issue 13): one delivery per (event, action), each with its own
-- state, attempts, next attempt time, last error and lease. Ingest still
-- writes only events: the dispatcher materialises an event's deliveries when
-- it first sees it (`fanned_out = false`), evaluating each action's
-- condition with the configuration of that moment. The event's own state,
-- attempts, next attempt time and last error become a summary of its
-- deliveries, kept in the same transactions that change them (see
-- docs/architecture.md).
--
-- Every existing event counts as fanned out (its delivery state moves to
-- `deliveries` below), every new one as not: adding the column with the
-- default `true` and then changing the default costs no table rewrite
-- (PostgreSQL 11+ keeps a constant default in the catalogue), where an
-- UPDATE of every row would rewrite a big events table under the migration
-- lock.
ALTER TABLE events ADD COLUMN fanned_out boolean NOT NULL DEFAULT true;
ALTER TABLE events ALTER COLUMN fanned_out SET DEFAULT false;

CREATE TABLE deliveries (
    event_id        text        NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    action_id       text        NOT NULL,
    hook_id         text        NOT NULL,
    state           text        NOT NULL
                    CHECK (state IN ('pending', 'delivering', 'done', 'dead')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    lease_until     timestamptz,
    leased_by       text,
    last_error      text,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (event_id, action_id)
);
CREATE INDEX deliveries_pending_idx ON deliveries (hook_id, action_id, next_attempt_at, event_id) WHERE state = 'pending';
CREATE INDEX deliveries_delivering_idx ON deliveries (hook_id, action_id, lease_until) WHERE state = 'delivering';
CREATE INDEX deliveries_dead_idx ON deliveries (event_id) WHERE state = 'dead';

-- Every event that had a delivery state becomes one delivery of the single
-- action of before, whose implicit id is `default`: same state, attempts,
-- next attempt time, error and lease. Nothing is re-run, nothing dropped.
INSERT INTO deliveries (event_id, action_id, hook_id, state, attempts, next_attempt_at, lease_until, leased_by, last_error, updated_at)
    SELECT id, 'default', hook_id, state, attempts, next_attempt_at, lease_until, leased_by, last_error, updated_at
    FROM events WHERE state IN ('pending', 'delivering', 'done', 'dead');

-- Events waiting to be fanned out, per hook in id (receipt) order.
CREATE INDEX events_fanout_idx ON events (hook_id, id) WHERE state = 'pending' AND NOT fanned_out;
-- Claims now read deliveries: the events' own lease index is not used.
DROP INDEX IF EXISTS events_delivering_idx;

ALTER TABLE attempts ADD COLUMN action_id text NOT NULL DEFAULT 'default';
