-- name: register_worker
-- A child process announces itself when it boots (worker heartbeat thread).
INSERT INTO websurf.worker (id, hostname, pid, task_types, stale_after_s)
VALUES (%(id)s, %(hostname)s, %(pid)s, %(task_types)s, %(stale_after_s)s)
ON CONFLICT (id) DO UPDATE SET last_heartbeat_at = now()

-- name: heartbeat_worker
-- A live child refreshes its heartbeat; no row means it was presumed dead (heartbeat thread).
UPDATE websurf.worker SET last_heartbeat_at = now() WHERE id = %(id)s RETURNING id

-- name: deregister_worker
-- A child removes itself on a clean exit (child shutdown).
DELETE FROM websurf.worker WHERE id = %(id)s

-- name: list_workers
-- Live and stale workers with their last heartbeat (websurf status).
SELECT id, hostname, pid, task_types, started_at, last_heartbeat_at,
       last_heartbeat_at < now() - make_interval(secs => stale_after_s) AS stale
FROM websurf.worker
ORDER BY hostname, started_at

-- name: delete_stale_workers
-- Forget workers that missed heartbeats for stale_after_s while the server was up (reaper).
DELETE FROM websurf.worker
WHERE greatest(last_heartbeat_at, pg_postmaster_start_time())
      < now() - make_interval(secs => stale_after_s)
RETURNING id, hostname, pid, last_heartbeat_at

-- name: reap_orphaned_tasks
-- Hand back (or fail, when attempts are used up) tasks held by workers not on the roster (reaper).
WITH orphaned AS (
    SELECT t.id
    FROM websurfing_task_queue AS t
    WHERE t.status = 'processing'
      AND NOT EXISTS (SELECT 1 FROM websurf.worker AS w WHERE w.id = t.worker_id)
      AND t.started_at < now() - make_interval(secs => %(min_age_s)s)
    ORDER BY t.started_at
    LIMIT %(limit)s
    FOR UPDATE OF t SKIP LOCKED
)
UPDATE websurfing_task_queue AS t
SET status = CASE WHEN t.attempts >= t.max_attempts THEN 'failed' ELSE 'pending' END,
    failed_at = CASE WHEN t.attempts >= t.max_attempts THEN now() ELSE t.failed_at END,
    scheduled_for = CASE WHEN t.attempts >= t.max_attempts THEN t.scheduled_for ELSE now() END,
    error_message = format(
        'worker %%s stopped heartbeating during attempt %%s of %%s (the process died or was'
        ' cut off from the database)', t.worker_id, t.attempts, t.max_attempts),
    updated_at = now()
FROM orphaned
WHERE t.id = orphaned.id
RETURNING t.id, t.task_type, t.payload, t.status, t.attempts, t.max_attempts, t.worker_id,
          t.error_message

-- name: reap_timed_out_tasks
-- Retry or fail tasks past their timeout plus grace, from claim or server start (reaper).
WITH limits AS (
    SELECT * FROM unnest(%(task_types)s::text[], %(timeouts_s)s::float8[]) AS l(task_type, timeout_s)
), late AS (
    SELECT t.id
    FROM websurfing_task_queue AS t
    JOIN limits AS l ON l.task_type = t.task_type
    WHERE t.status = 'processing'
      AND greatest(t.started_at, pg_postmaster_start_time())
          < now() - make_interval(secs => l.timeout_s)
    ORDER BY t.started_at
    LIMIT %(limit)s
    FOR UPDATE OF t SKIP LOCKED
)
UPDATE websurfing_task_queue AS t
SET status = CASE WHEN t.attempts >= t.max_attempts THEN 'failed' ELSE 'pending' END,
    failed_at = CASE WHEN t.attempts >= t.max_attempts THEN now() ELSE t.failed_at END,
    scheduled_for = CASE WHEN t.attempts >= t.max_attempts THEN t.scheduled_for ELSE now() END,
    error_message = format('attempt %%s of %%s ran past its timeout and was stopped',
                           t.attempts, t.max_attempts),
    updated_at = now()
FROM late
WHERE t.id = late.id
RETURNING t.id, t.task_type, t.payload, t.status, t.attempts, t.max_attempts, t.worker_id,
          t.error_message

-- name: try_maintenance_lock
-- Take the transaction-scoped lock that lets one reaper or pruner run at a time (pooler-safe).
SELECT pg_try_advisory_xact_lock(%(key)s)

-- name: release_dead_worker_tasks
-- Take back a dead worker's tasks; only the attempts it died in count (its replacement, at boot).
WITH culprits AS (
    SELECT * FROM unnest(%(culprit_ids)s::uuid[], %(culprit_attempts)s::int[]) AS c(id, attempts)
), held AS (
    SELECT q.id,
           EXISTS (SELECT 1 FROM culprits AS c WHERE c.id = q.id AND c.attempts = q.attempts)
               AS counted
    FROM websurfing_task_queue AS q
    WHERE q.worker_id = %(worker_id)s AND q.status = 'processing'
    FOR UPDATE OF q
)
UPDATE websurfing_task_queue AS t
SET status = CASE WHEN h.counted AND t.attempts >= t.max_attempts THEN 'failed' ELSE 'pending' END,
    -- never below 0 (0023's limit): a row written by hand may hold a claim it never counted
    attempts = CASE WHEN h.counted THEN t.attempts ELSE greatest(t.attempts - 1, 0) END,
    failed_at = CASE WHEN h.counted AND t.attempts >= t.max_attempts THEN now()
                     ELSE t.failed_at END,
    scheduled_for = CASE WHEN h.counted AND t.attempts >= t.max_attempts THEN t.scheduled_for
                         ELSE now() END,
    error_message = CASE WHEN h.counted THEN format(
        'worker %%s died (%%s) during attempt %%s of %%s', t.worker_id, %(how)s::text,
        t.attempts, t.max_attempts) ELSE t.error_message END,
    updated_at = now()
FROM held AS h
WHERE t.id = h.id
RETURNING t.id, t.task_type, t.payload, t.status, t.attempts, t.max_attempts, t.worker_id,
          t.error_message, h.counted

-- name: backend_pid
-- The server process of this connection; another pid at startup means a pooler (pooler check).
SELECT pg_backend_pid()

-- name: apply_settings
-- set_config each setting, session-wide or (local) for this transaction only (claim connection).
SELECT set_config(s.name, s.value, %(local)s)
FROM unnest(%(names)s::text[], %(values)s::text[]) AS s(name, value)
