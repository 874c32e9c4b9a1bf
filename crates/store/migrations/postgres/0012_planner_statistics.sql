-- Columns no statement filters, joins or sorts on need no planner statistics,
-- and these are the large ones (a job's spec, a report): ANALYZE, the store's
-- own (planner_stats) and autovacuum's, skips them. PostgreSQL only; SQLite's
-- schema is unchanged.
ALTER TABLE tasks ALTER COLUMN spec SET STATISTICS 0;
ALTER TABLE jobs ALTER COLUMN spec SET STATISTICS 0;
ALTER TABLE attempts ALTER COLUMN results SET STATISTICS 0,
                     ALTER COLUMN reason_data SET STATISTICS 0;
ALTER TABLE task_stats ALTER COLUMN recent SET STATISTICS 0;
