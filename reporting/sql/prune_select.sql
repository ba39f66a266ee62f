-- Jobs `wsjobs prune --older-than` removes from the history: final jobs (never Pending or
-- In progress) that ended (or, without an end, were created) before $cutoff.
SELECT id
FROM jobs
WHERE status IN ('Completed', 'Completed with errors', 'Error', 'Canceled by the user')
  AND coalesce(ended, created) < $cutoff::TIMESTAMPTZ
