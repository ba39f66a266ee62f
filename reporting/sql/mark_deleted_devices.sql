-- The unfinished devices of jobs mark_deleted.sql just closed take the job's new status.
UPDATE job_devices SET
    status = (SELECT j.status FROM jobs j WHERE j.id = job_devices.job_id),
    ended = coalesce(ended, $now::TIMESTAMPTZ)
WHERE status IN ('Pending', 'In progress')
  AND job_id IN (
      SELECT id FROM jobs
      WHERE id IN (SELECT unnest($ids))
        AND (reason = 'deleted' OR canceled_by = 'Prefect: deleted')
  );
