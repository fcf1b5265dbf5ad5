-- websurf:no-transaction
-- Fewer index entries per task. A task's row is written three times (insert, claim,
-- finish) and neither update is HOT (each changes status, which the partial indexes
-- read), so every index on the queue gets a new entry at each write that its predicate
-- admits. Before this file a claim added three entries besides the table row (pkey,
-- worker, type) and a finish five (pkey, worker, type, cleanup, finished); now a claim
-- adds two (pkey, claimed) and a finish three (pkey, cleanup, finished). On the
-- development machine that took PostgreSQL's CPU per no-op task from about 35 to 30
-- microseconds, and no-op throughput with four worker processes on two cores from about
-- 31,500 to 37,000 a second (README, "Benchmark").
--
-- * task_queue_claimed_idx replaces task_queue_worker_idx (worker_id, status,
--   started_at): every reader of a worker's tasks wants its running ones (websurf status,
--   websurf tasks, the reaper, a replacement process taking back its predecessor's
--   claims), so the index holds processing rows only: a finish adds nothing to it, and
--   the reaper, which used to read the whole worker index every few seconds on every
--   host once finished rows piled up, reads the running tasks alone.
-- * task_queue_type_idx (task_type) goes: no query reads the queue by type alone. The
--   claim filters types inside task_queue_processing_idx; with the type index there the
--   planner could prefer a BitmapAnd of both plus a sort when statistics lagged.
-- * task_queue_cleanup_idx stays: `websurf tasks list` reads finished tasks newest
--   first through it, and the pruner finds old ones.
--
-- CONCURRENTLY, so outside a transaction: claims and finishes go on while this runs.
-- The new index is built before the old one is dropped, so the reaper and websurf status
-- never go without one.
CREATE INDEX CONCURRENTLY IF NOT EXISTS task_queue_claimed_idx ON websurfing_task_queue
    (worker_id, started_at) WHERE status = 'processing';
DROP INDEX CONCURRENTLY IF EXISTS task_queue_worker_idx;
DROP INDEX CONCURRENTLY IF EXISTS task_queue_type_idx;
