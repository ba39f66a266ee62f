-- 002: the jobs list's own settings, kept in the history file so every tool sees them.

-- Filters users saved with `wsjobs filters save NAME ...` (predefined ones are in code).
CREATE TABLE saved_filters (
    name        VARCHAR  NOT NULL,          -- lower-case words: letters, digits, - and _
    spec        VARCHAR NOT NULL,             -- the filter as JSON: {"statuses": [...], "age": ...}
    description VARCHAR,                      -- what it means, e.g. "status is Error, created this week"
    created     TIMESTAMPTZ NOT NULL,
    updated     TIMESTAMPTZ NOT NULL
);

-- View settings (`wsjobs view set|show|reset`): one row per setting, value as JSON.
-- Keys: columns, sort, desc, age, limit, tz. No row = the built-in default.
CREATE TABLE view_settings (
    key     VARCHAR  NOT NULL,
    value   VARCHAR NOT NULL,
    updated TIMESTAMPTZ NOT NULL
);
