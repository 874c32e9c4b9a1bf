-- Every index on a hot table is written again by each change of a row
-- that it names (docs/performance.md, "Fewer indexes on the hot tables").
-- Status updates now find their task through the attempt's `task_id` (the
-- primary key), so nothing reads `tasks_by_current_attempt`; the lease
-- reaper reads the running attempts through `attempts_running`, which holds
-- only them, so `attempts_by_lease` goes too, and a lease renewal no longer
-- changes an indexed column.
DROP INDEX tasks_by_current_attempt;
DROP INDEX attempts_by_lease;
