-- The `run` activity row of each job a schedule created (#18), written by the sync in the
-- same transaction as the job's row, so it lands in the one history whatever host the
-- worker ran on. A schedule's runs carry the tag `schedule:<name>` (copied by Prefect's
-- scheduler from the deployment); `who` is the job's owner (the schedule's creator),
-- `time` when Prefect created the run. A job with a `run` row already (a sync pass
-- before this one) gets none: the sync may see a job many times.
INSERT INTO activity (time, who, action, job_id, schedule, source, detail)
SELECT coalesce(j.created, now()),
       coalesce(nullif(j.owner, ''), substr(s.tag, 10)),
       'run',
       j.id,
       substr(s.tag, 10),                    -- after 'schedule:'
       'schedule',
       j.action || coalesce(
           ', due ' || strftime(j.expected_start AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%SZ'), '')
FROM jobs j,
     (SELECT id, list_filter(tags, lambda t: starts_with(t, 'schedule:'))[1] AS tag
      FROM jobs WHERE id IN (SELECT unnest($ids))) s
WHERE j.id = s.id
  AND s.tag IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM activity a WHERE a.job_id = j.id AND a.action = 'run');
