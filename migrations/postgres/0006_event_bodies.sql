-- The embedded store moved headers and bodies to a table of their own in
-- migration 6, so that updating an event's state no longer rewrites its
-- body. PostgreSQL needs no such move: a body of more than about 2 KB is
-- kept out of line (TOAST), and an update that leaves it alone keeps it
-- where it is. Numbered so that both engines stay on one schema version.
SELECT 1;
