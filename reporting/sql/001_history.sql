-- 001: the job history. A public interface for SQL audits: every table and column is
-- documented in the README ("History: the DuckDB file and its schema"). Names are stable;
-- later migrations add, they do not rename. All times are TIMESTAMPTZ in UTC.
-- The history is a DuckLake, which has no PRIMARY KEY, UNIQUE or index: each table's key
-- is named in a comment and kept by the writers (reporting/rows.py replaces by key).

-- One row per job (= Prefect flow run tagged `workspaces`).
CREATE TABLE jobs (
    id                 VARCHAR NOT NULL,   -- job id = flow run id (UUID text)
    name               VARCHAR,               -- flow run name
    action             VARCHAR NOT NULL,      -- action name (YAML or Python action)
    info               VARCHAR,               -- free text: the change the job makes
    owner              VARCHAR,               -- who launched it
    status             VARCHAR NOT NULL,      -- one of the six job statuses
    reason             VARCHAR,               -- Error only: failed / crashed / timed out / inactivity
    prefect_state_type VARCHAR,               -- COMPLETED, FAILED, ...
    prefect_state_name VARCHAR,               -- Completed with errors, TimedOut, Inactivity, ...
    state_message      VARCHAR,               -- the final state's message
    created            TIMESTAMPTZ,
    started            TIMESTAMPTZ,
    ended              TIMESTAMPTZ,           -- set for final statuses only
    expected_start     TIMESTAMPTZ,           -- when it was scheduled to start
    progress           DOUBLE,                -- percent of planned steps done
    deployment_id      VARCHAR,               -- Prefect deployment, when launched from one
    parameters         VARCHAR,               -- flow run parameters as JSON text
    tags               VARCHAR[],             -- flow run tags
    canceled_by        VARCHAR,               -- who canceled it (tag canceled-by:NAME)
    rerun_of           VARCHAR,               -- job id this job re-runs
    updated            TIMESTAMPTZ,           -- Prefect's `updated` of the flow run
    synced             TIMESTAMPTZ            -- when this row was last written by the sync
);

-- One row per step on one device (= step task run).
CREATE TABLE steps (
    id         VARCHAR NOT NULL,           -- task run id
    job_id     VARCHAR NOT NULL,
    device     VARCHAR NOT NULL,
    step       VARCHAR NOT NULL,
    position   INTEGER,                       -- order of the step in the action (from 1; NULL until it ends)
    critical   BOOLEAN,
    status     VARCHAR,                       -- Prefect's task state type, title case
    state_name VARCHAR,
    exit_code  INTEGER,
    message    VARCHAR,                       -- the step's state message
    started    TIMESTAMPTZ,
    ended      TIMESTAMPTZ
);

-- Each device's own result in a job. Key: (job_id, device).
CREATE TABLE job_devices (
    job_id       VARCHAR NOT NULL,
    device       VARCHAR NOT NULL,
    status       VARCHAR NOT NULL,            -- one of the six job statuses, for this device
    steps_ok     INTEGER,
    steps_failed INTEGER,
    started      TIMESTAMPTZ,
    ended        TIMESTAMPTZ
);

-- Log lines of jobs: step output (device/step/stream set) and the runner's own lines.
CREATE TABLE logs (
    id      VARCHAR NOT NULL,              -- Prefect log id
    job_id  VARCHAR NOT NULL,
    step_id VARCHAR,                          -- task run id, NULL for job-level lines
    device  VARCHAR,
    step    VARCHAR,
    ts      TIMESTAMPTZ NOT NULL,
    level   VARCHAR,                          -- DEBUG / INFO / WARNING / ERROR / CRITICAL
    stream  VARCHAR,                          -- out / err / sys for step lines, else NULL
    message VARCHAR
);

-- Every state a job went through (Prefect's flow run state history), e.g. the
-- Running -> Failed(Inactivity) -> Completed episode of a late completion.
CREATE TABLE job_states (
    id         VARCHAR NOT NULL,           -- Prefect state id
    job_id     VARCHAR NOT NULL,
    ts         TIMESTAMPTZ NOT NULL,
    state_type VARCHAR,
    state_name VARCHAR,
    status     VARCHAR,                       -- the job status this state maps to
    message    VARCHAR
);

-- Who subscribed to a job's final status and whether the email went out
-- (from Prefect Variables named wsjobs-notify-<job id>). Key: (job_id, email).
CREATE TABLE notifications (
    job_id        VARCHAR NOT NULL,
    email         VARCHAR NOT NULL,
    status        VARCHAR,                    -- pending / sent / failed
    attempts      INTEGER,
    last_error    VARCHAR,
    sent_at       TIMESTAMPTZ,
    subscribed_at TIMESTAMPTZ,
    subscribed_by VARCHAR
);

-- Where each sync stopped, per Prefect API.
CREATE TABLE sync_state (
    source        VARCHAR NOT NULL,        -- the Prefect API URL synced from
    watermark     TIMESTAMPTZ,                -- server time the last complete pass started
    last_started  TIMESTAMPTZ,
    last_finished TIMESTAMPTZ,
    jobs_added    INTEGER,
    jobs_updated  INTEGER,
    logs_added    INTEGER
);

-- The sync's own bookkeeping per job (not for audits): what it last saw.
CREATE TABLE sync_jobs (
    job_id      VARCHAR NOT NULL,
    api_updated TIMESTAMPTZ,                  -- the flow run's `updated` last synced
    fingerprint VARCHAR,                      -- hash of the job's rows, to count real changes
    settled     BOOLEAN,                      -- final and past the settle window: not re-read
    last_log_ts TIMESTAMPTZ                   -- newest log line synced (logs resume from here)
);

-- Friendly views for auditors.
CREATE VIEW v_jobs AS
SELECT
    j.id, j.action, j.info, j.owner, j.status, j.reason, j.created, j.started, j.ended,
    date_diff('millisecond', j.started, j.ended) / 1000.0 AS duration_s,
    j.progress, j.canceled_by, j.rerun_of,
    (SELECT count(*) FROM job_devices d WHERE d.job_id = j.id) AS devices,
    (SELECT count(*) FROM job_devices d
      WHERE d.job_id = j.id AND d.status NOT IN ('Completed', 'Pending', 'In progress'))
        AS devices_failed,
    EXISTS (SELECT 1 FROM job_states s WHERE s.job_id = j.id AND s.state_name = 'Inactivity')
        AS had_inactivity
FROM jobs j;

CREATE VIEW v_device_history AS
SELECT
    d.device, d.job_id, j.action, j.info, j.owner, d.status AS device_status,
    j.status AS job_status, d.steps_ok, d.steps_failed, d.started, d.ended
FROM job_devices d
JOIN jobs j ON j.id = d.job_id;
