-- How many of the exported jobs have each status (the HTML report's summary).
SELECT j.status, count(*) AS jobs
FROM _wsjobs_selection s
JOIN jobs j ON j.id = s.id
GROUP BY j.status
