-- Headers and body in a table of their own. In the events row they made
-- every record about 8 KB, most of it in overflow pages, and every change
-- of an event's summary (fan-out, claim, result: three or more per event)
-- changed the record's size and so rewrote the whole record, body
-- included. Now those updates touch a row of a few hundred bytes, and the
-- body is written once, at ingest. `body_len` keeps lists from reading it.
CREATE TABLE event_bodies (
    event_id TEXT NOT NULL PRIMARY KEY REFERENCES events (id) ON DELETE CASCADE,
    headers  TEXT NOT NULL,
    body     BLOB NOT NULL
) WITHOUT ROWID;

ALTER TABLE events ADD COLUMN body_len INTEGER NOT NULL DEFAULT 0;
INSERT INTO event_bodies (event_id, headers, body) SELECT id, headers, body FROM events;
UPDATE events SET body_len = length(body);
ALTER TABLE events DROP COLUMN headers;
ALTER TABLE events DROP COLUMN body;
