-- Every index on a hot table is written again by each change of a row
-- that it names (see migrations/sqlite/0024_fewer_hot_indexes.sql).
DROP INDEX tasks_by_current_attempt;
DROP INDEX attempts_by_lease;
-- A row's new version goes on its own page while the page has room: no
-- row lock record, and a change of no indexed column (a lease renewal, a
-- status update of an attempt) is a heap-only update that touches no index.
ALTER TABLE tasks SET (fillfactor = 70);
ALTER TABLE attempts SET (fillfactor = 70);
