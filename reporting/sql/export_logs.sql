-- Log lines of the jobs being exported (`wsjobs export --with-logs`), job by job in list
-- order, then by time. _wsjobs_selection (id, ord) is the export's temporary table.
SELECT
    l.job_id,
    l.ts,
    l.device,
    l.step,
    l.stream,
    l.level,
    l.message
FROM _wsjobs_selection s
JOIN logs l ON l.job_id = s.id
ORDER BY s.ord, l.ts, l.id
