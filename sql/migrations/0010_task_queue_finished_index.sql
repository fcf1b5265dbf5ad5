-- websurf:no-transaction
-- `websurf status` and `websurf prune` look at finished tasks by the time they finished:
-- throughput over the last 1/5/15 minutes (completed), recent failures (failed), and
-- retention of cancelled tasks (which the plan's cleanup index does not cover). Without
-- this index each of those reads every finished row of the table, millions of them.
--
-- updated_at is the finish time of a finished row: the finish, reap, cancel and retry
-- statements set it, and nothing updates a row once it is finished.
--
-- Write cost on the hot path: partial, so a claim (status becomes 'processing') adds
-- nothing to it; a finish adds one entry, next to the four the row's new version already
-- needs (pkey, worker, type, cleanup). Those updates are never HOT anyway: each one
-- changes status, which the partial indexes' predicates read.
--
-- CONCURRENTLY (so outside a transaction): on an existing production table a plain
-- CREATE INDEX would block every claim and finish for the length of the build.
CREATE INDEX CONCURRENTLY IF NOT EXISTS task_queue_finished_idx ON websurfing_task_queue
    (status, updated_at) WHERE status IN ('completed', 'failed', 'cancelled');
