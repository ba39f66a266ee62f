-- Per-device, per-step detail of the jobs being exported (`wsjobs export --with-steps`).
-- _wsjobs_selection (id, ord) is the export's temporary table of job ids in list order.
-- A device with no step rows yet (a Pending job) still has its row, with NULL step fields.
SELECT
    dv.job_id,
    dv.device,
    dv.status        AS device_status,
    st.step,
    st.position,
    st.critical,
    st.status        AS step_status,
    st.exit_code,
    st.started,
    st.ended
FROM _wsjobs_selection s
JOIN job_devices dv ON dv.job_id = s.id
LEFT JOIN steps st ON st.job_id = dv.job_id AND st.device = dv.device
ORDER BY s.ord, dv.device, st.position, st.step
