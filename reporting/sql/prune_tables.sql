-- The history's tables that hold rows of a job (a `job_id` column), so a pruned job's
-- steps, devices, logs, states, notifications and sync bookkeeping go with it, including
-- tables later migrations add.
SELECT c.table_name
FROM information_schema.columns c
JOIN information_schema.tables t
  ON t.table_catalog = c.table_catalog AND t.table_schema = c.table_schema
 AND t.table_name = c.table_name
WHERE c.column_name = 'job_id'
  AND t.table_type = 'BASE TABLE'
  AND c.table_catalog = current_database()
  AND c.table_schema = current_schema()
  AND c.table_name NOT LIKE '\_%' ESCAPE '\'
ORDER BY c.table_name
