-- #20 console: each job's device counts on its own row, kept by the sync (rows.py
-- refresh_device_counts) whenever it writes the job's devices. The list, the exports and
-- their sorts read these columns instead of aggregating job_devices on every query
-- (the CSV export at 1M jobs spent most of its time there). DuckLake-compatible: plain
-- ADD COLUMN, then one backfill from job_devices for files synced before this migration.
ALTER TABLE jobs ADD COLUMN device_names VARCHAR;
ALTER TABLE jobs ADD COLUMN devices_ok INTEGER;
ALTER TABLE jobs ADD COLUMN devices_failed INTEGER;

UPDATE jobs SET
    device_names = a.device_names,
    devices_ok = a.devices_ok,
    devices_failed = a.devices_failed
FROM (
    SELECT d.job_id,
           string_agg(d.device, ',' ORDER BY d.device) AS device_names,
           count(*) FILTER (WHERE d.status = 'Completed') AS devices_ok,
           count(*) FILTER (WHERE d.status NOT IN ('Completed', 'Pending', 'In progress'))
               AS devices_failed
    FROM job_devices d GROUP BY d.job_id
) a
WHERE jobs.id = a.job_id;
