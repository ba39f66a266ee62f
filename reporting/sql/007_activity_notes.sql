-- 007 (#18): who did what, and notes on jobs. DuckLake-compatible: plain CREATE TABLE,
-- no constraints or indexes (rows are written by workspaces_jobs/activity.py, one short
-- transaction per action). Columns are `time`, not `at`: AT is a reserved word in DuckDB.

-- One row per action a person (or a schedule) took: run, cancel, kill, rerun, notify,
-- unsubscribe, note, schedule-create/-pause/-resume/-delete, filter-save/-delete,
-- view-set/-reset, rule-add/-pause/-resume/-remove. `who` is the verified actor: the
-- signed-in user (web), the token's user (JSON API), the OS user (CLI without a login),
-- the schedule's owner for runs a schedule started
-- (source `schedule`, the schedule's name in `schedule`).
CREATE TABLE activity (
    time     TIMESTAMPTZ NOT NULL,  -- when it was done (UTC)
    who      VARCHAR NOT NULL,
    action   VARCHAR NOT NULL,
    job_id   VARCHAR,               -- the job it acted on (NULL for schedules, filters, views)
    schedule VARCHAR,               -- the schedule it acted on or that started the job
    source   VARCHAR NOT NULL,      -- web | cli | api | schedule
    detail   VARCHAR                -- e.g. "canceled by alice", "to ops@example.com"
);

-- Notes people wrote on a job (why it was rerun, what was found), shown with author and time.
CREATE TABLE notes (
    id     VARCHAR NOT NULL,        -- a random hex id
    job_id VARCHAR NOT NULL,
    time   TIMESTAMPTZ NOT NULL,
    author VARCHAR NOT NULL,
    text   VARCHAR NOT NULL
);
