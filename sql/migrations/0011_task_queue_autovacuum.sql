-- Autovacuum for the queue table, which behaves like no other table here: every task is
-- inserted, updated at claim and updated again at finish, so each task leaves two dead
-- row versions (and dead entries in every index) within seconds, at thousands of tasks
-- a second; finished rows then stay until `websurf prune` deletes them.
--
-- * autovacuum_vacuum_scale_factor: the default 0.2 waits for dead rows worth a fifth of
--   the table. With ten million retained finished rows that is two million dead
--   versions, and the claim query walks every dead entry of the pending index that sits
--   in front of the live ones: claims slow down long before vacuum starts. 0.01 plus a
--   threshold of 10,000 dead rows starts it early on a big table and does not run it
--   nonstop on a small one.
-- * autovacuum_vacuum_insert_scale_factor: inserts alone also trigger a vacuum, which
--   sets visibility-map bits, so `websurf status` counts finished rows with index-only
--   scans instead of visiting the heap.
-- * autovacuum_vacuum_cost_delay = 1 ms (default 2 ms): dead rows accumulate at the
--   rate of the workers, and a throttled vacuum that needs longer than the workers need
--   to produce the next threshold's worth never catches up. Halving the sleep doubles
--   its speed without letting it saturate the disk; the cost limit stays the server's.
-- * autovacuum_analyze_scale_factor 0.02: the share of pending rows swings from none to
--   most of the table within minutes; fresh statistics keep the planner on the partial
--   indexes.
-- * fillfactor stays 100: free space on a page helps HOT updates, and these updates are
--   never HOT (claim and finish change status, which the partial indexes read, and
--   updated_at, which task_queue_finished_idx holds), so reserving space would only make
--   the table larger.
ALTER TABLE websurfing_task_queue SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 10000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_vacuum_cost_delay = 1,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_analyze_threshold = 10000
);
