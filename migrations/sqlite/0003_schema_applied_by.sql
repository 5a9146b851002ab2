-- Which webhookd applied each migration, so a binary that finds the schema
-- too new can say which version to install again.
ALTER TABLE webhookd_schema ADD COLUMN applied_by TEXT;
