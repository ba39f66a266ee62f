-- 011 (#18): who saved each filter. An operator replaces or deletes only the filters they
-- saved, an admin anyone's (web view and JSON API; the role table decides). Filters saved
-- before this migration have no owner (NULL): only an admin may change those.
ALTER TABLE saved_filters ADD COLUMN owner VARCHAR;
