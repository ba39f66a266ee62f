-- Jobs Prefect no longer has although the history last saw them Pending or In progress
-- (a running job deleted with `prefect flow-run delete`, future runs a redeploy removed).
-- They get a final status that says why, so none stays Pending or In progress forever:
-- one that never started is Canceled (by "Prefect: deleted"); one that had started is
-- Error with reason `deleted`. $ids: the job ids; $now: the sync's server time.
UPDATE jobs SET
    status = CASE WHEN status = 'Pending' THEN 'Canceled by the user' ELSE 'Error' END,
    reason = CASE WHEN status = 'Pending' THEN NULL ELSE 'deleted' END,
    canceled_by = CASE WHEN status = 'Pending' THEN coalesce(canceled_by, 'Prefect: deleted')
                       ELSE canceled_by END,
    state_message = 'deleted from Prefect while ' || status
        || ' (the sync found it gone at ' || strftime($now::TIMESTAMPTZ AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M:%S')
        || ' UTC); last state: ' || coalesce(state_message, prefect_state_name, '-'),
    ended = coalesce(ended, $now::TIMESTAMPTZ),
    synced = $now::TIMESTAMPTZ
WHERE id IN (SELECT unnest($ids)) AND status IN ('Pending', 'In progress');
