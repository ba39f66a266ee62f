-- One text cell of a CSV export, neutralised against formula injection (OWASP "CSV
-- Injection"): a cell that starts with = + - @ TAB or CR gets a leading apostrophe, so a
-- spreadsheet shows it as text instead of running it. {col} is a quoted column name
-- (from the query's own result columns); only VARCHAR columns are wrapped.
CASE WHEN left({col}, 1) IN ('=', '+', '-', '@', chr(9), chr(13)) THEN '''' || {col} ELSE {col} END
