-- Log lines as read (`_raw`: id, job_id, step_id, level, message, ts) as `logs` rows: the
-- rule of runmeta.parse_log_message ("<device> <step> <out|err|sys> | <text>", else the
-- whole message with no tags), written in SQL so a sync parses its lines in one statement
-- instead of one Python call per line. A line without tags takes its device and step from
-- its task run (`_step_names`: the batch's steps). `[^...]` is Python's `\S` on str (RE2's
-- `\S` knows only ASCII spaces); tests/test_sync_logs.py checks both rules agree.
SELECT r.id,
       r.job_id,
       r.step_id,
       coalesce(r.parts.device, s.device) AS device,
       coalesce(r.parts.step, s.step) AS step,
       r.ts,
       CASE r.level
           WHEN 10 THEN 'DEBUG' WHEN 20 THEN 'INFO' WHEN 30 THEN 'WARNING'
           WHEN 40 THEN 'ERROR' WHEN 50 THEN 'CRITICAL' ELSE r.level::VARCHAR
       END AS level,
       r.parts.stream AS stream,
       coalesce(r.parts.text, r.message) AS message
FROM (
    SELECT *,
           CASE WHEN regexp_matches(message, '(?s)^([^\t\n\x0b\f\r\x1c-\x1f\x85\p{Z}]+) ([^\t\n\x0b\f\r\x1c-\x1f\x85\p{Z}]+) (out|err|sys) \| (.*)$')
                THEN regexp_extract(message, '(?s)^([^\t\n\x0b\f\r\x1c-\x1f\x85\p{Z}]+) ([^\t\n\x0b\f\r\x1c-\x1f\x85\p{Z}]+) (out|err|sys) \| (.*)$', ['device', 'step', 'stream', 'text'])
           END AS parts
    FROM _raw
) r
LEFT JOIN _step_names s ON s.id = r.step_id
