-- 009 (#17): one row in view_settings under a key every reader ignores ('_nonempty').
-- Why: DuckLake 1.5.5 caches a table's statistics only when the table has rows; an
-- empty table's are read again from the catalog on every query (measured: a scan of the
-- empty view_settings cost 28 ms of CPU, of a one-row one 8-10 ms). Every list, web page
-- and export reads view_settings, which stays empty until someone runs `wsjobs view set`.
-- `wsjobs view reset` keeps this row.
INSERT INTO view_settings (key, value, updated) VALUES ('_nonempty', 'null', now());
