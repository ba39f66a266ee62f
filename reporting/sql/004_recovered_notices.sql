-- 004 (#22): a job that was Error (inactivity) and then finished by itself, and the
-- recovery email. DuckLake-compatible: ADD COLUMN only, no constraints.

-- TRUE when the job was marked Error (inactivity) and then reached its real outcome
-- (flow run tag `recovered-after-inactivity`); the episode stays in job_states.
ALTER TABLE jobs ADD COLUMN recovered BOOLEAN;

-- The second email a subscriber gets when the job recovers: pending / sent / failed,
-- NULL when the job did not recover.
ALTER TABLE notifications ADD COLUMN recovery_status VARCHAR;
ALTER TABLE notifications ADD COLUMN recovery_sent_at TIMESTAMPTZ;
