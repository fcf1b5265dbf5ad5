-- name: list_tasks
-- The newest tasks, optionally of one status and/or type (websurf tasks list).
-- One branch per status, so each reads its own index (pending: the pending index;
-- processing: the registered workers' claims; completed, failed: the cleanup index,
-- newest first; cancelled: task_queue_finished_idx) instead of the whole table.
SELECT *
FROM (
    (SELECT id, task_type, status, priority, attempts, max_attempts, scheduled_for, created_at,
           updated_at, worker_id, error_message
     FROM websurfing_task_queue
     WHERE status = 'pending'
       AND (%(status)s::text IS NULL OR %(status)s::text = 'pending')
       AND (%(task_type)s::text IS NULL OR task_type = %(task_type)s::text)
     ORDER BY created_at DESC
     LIMIT %(limit)s)
    UNION ALL
    (SELECT t.id, t.task_type, t.status, t.priority, t.attempts, t.max_attempts, t.scheduled_for,
           t.created_at, t.updated_at, t.worker_id, t.error_message
     FROM websurf.worker AS w
     JOIN websurfing_task_queue AS t ON t.worker_id = w.id AND t.status = 'processing'
     WHERE (%(status)s::text IS NULL OR %(status)s::text = 'processing')
       AND (%(task_type)s::text IS NULL OR t.task_type = %(task_type)s::text)
     ORDER BY t.created_at DESC
     LIMIT %(limit)s)
    UNION ALL
    (SELECT id, task_type, status, priority, attempts, max_attempts, scheduled_for, created_at,
           updated_at, worker_id, error_message
     FROM websurfing_task_queue
     WHERE status = 'completed'
       AND (%(status)s::text IS NULL OR %(status)s::text = 'completed')
       AND (%(task_type)s::text IS NULL OR task_type = %(task_type)s::text)
     ORDER BY created_at DESC
     LIMIT %(limit)s)
    UNION ALL
    (SELECT id, task_type, status, priority, attempts, max_attempts, scheduled_for, created_at,
           updated_at, worker_id, error_message
     FROM websurfing_task_queue
     WHERE status = 'failed'
       AND (%(status)s::text IS NULL OR %(status)s::text = 'failed')
       AND (%(task_type)s::text IS NULL OR task_type = %(task_type)s::text)
     ORDER BY created_at DESC
     LIMIT %(limit)s)
    UNION ALL
    (SELECT id, task_type, status, priority, attempts, max_attempts, scheduled_for, created_at,
           updated_at, worker_id, error_message
     FROM websurfing_task_queue
     WHERE status = 'cancelled'
       AND (%(status)s::text IS NULL OR %(status)s::text = 'cancelled')
       AND (%(task_type)s::text IS NULL OR task_type = %(task_type)s::text)
     ORDER BY created_at DESC
     LIMIT %(limit)s)
) AS newest
ORDER BY created_at DESC
LIMIT %(limit)s

-- name: list_task_robot_events
-- The audit rows of one task's attempts, oldest first (websurf tasks show).
SELECT id, cell_id, operator_type, success, processing_time_ms, error_message, created_at
FROM websurfing_robot_input_event
WHERE task_id = %(id)s
ORDER BY created_at, id

-- name: cancel_task
-- Cancel a pending task, or ask its worker to stop a running one, through websurf.cancel_task (0027); how: 'cancelled', 'cancel_requested', or NULL for a finished task; no row for an unknown id (websurf tasks cancel).
SELECT id, task_type, websurf.cancel_task(id) AS how
FROM websurfing_task_queue
WHERE id = %(id)s

-- name: retry_task
-- Put a failed or cancelled task back in the queue with more attempts, and wake the workers (websurf tasks retry).
UPDATE websurfing_task_queue
SET status = 'pending',
    scheduled_for = now(),
    max_attempts = attempts + %(more_attempts)s,
    failed_at = NULL,
    worker_id = NULL,
    cancel_requested_at = NULL,  -- a cancel of an earlier attempt does not stop the next
    updated_at = now()
WHERE id = %(id)s AND status IN ('failed', 'cancelled')
RETURNING id, task_type, attempts, max_attempts,
          pg_notify('new_task', json_build_object(
              'task_type', task_type, 'priority', priority, 'id', id)::text)

-- name: prune_finished_tasks
-- Delete one batch of completed/failed tasks created and finished before the cutoff, detaching their audit rows (pruner).
WITH doomed AS (
    SELECT id
    FROM websurfing_task_queue
    WHERE status IN ('completed', 'failed')
      AND created_at < %(cutoff)s
      AND updated_at < %(cutoff)s
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), detached AS (
    UPDATE websurfing_robot_input_event AS e
    SET task_id = NULL
    FROM doomed
    WHERE e.task_id = doomed.id
    RETURNING e.id
), deleted AS (
    DELETE FROM websurfing_task_queue AS t
    USING doomed
    WHERE t.id = doomed.id
    RETURNING t.id
)
SELECT (SELECT count(*) FROM deleted) AS deleted, (SELECT count(*) FROM detached) AS detached

-- name: prune_cancelled_tasks
-- Delete one batch of cancelled tasks created and cancelled before the cutoff (pruner).
WITH doomed AS (
    SELECT id
    FROM websurfing_task_queue
    WHERE status = 'cancelled'
      AND updated_at < %(cutoff)s
      AND created_at < %(cutoff)s
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), detached AS (
    UPDATE websurfing_robot_input_event AS e
    SET task_id = NULL
    FROM doomed
    WHERE e.task_id = doomed.id
    RETURNING e.id
), deleted AS (
    DELETE FROM websurfing_task_queue AS t
    USING doomed
    WHERE t.id = doomed.id
    RETURNING t.id
)
SELECT (SELECT count(*) FROM deleted) AS deleted, (SELECT count(*) FROM detached) AS detached

-- name: database_now
-- The database server's clock (pruner cutoff, so hosts with skewed clocks agree).
SELECT now()

-- name: run_task_now
-- Make a pending task due now, and wake the workers; no row when it is not pending (dashboard's run now).
UPDATE websurfing_task_queue
SET scheduled_for = now(), updated_at = now()
WHERE id = %(id)s AND status = 'pending'
RETURNING id, task_type,
          pg_notify('new_task', json_build_object(
              'task_type', task_type, 'priority', priority, 'id', id)::text)
