-- name: list_tasks
-- The tasks changed last (updated_at: queued, claimed, finished), optionally of one
-- status and/or type (websurf tasks list).
-- One branch per status, so each reads its own index (pending: the pending index;
-- processing: the registered workers' claims; completed, failed, cancelled:
-- task_queue_finished_idx, newest first) instead of the whole table.
SELECT *
FROM (
    (SELECT id, task_type, status, priority, attempts, max_attempts, scheduled_for, created_at,
           updated_at, worker_id, error_message
     FROM websurfing_task_queue
     WHERE status = 'pending'
       AND (%(status)s::text IS NULL OR %(status)s::text = 'pending')
       AND (%(task_type)s::text IS NULL OR task_type = %(task_type)s::text)
     ORDER BY updated_at DESC
     LIMIT %(limit)s)
    UNION ALL
    (SELECT t.id, t.task_type, t.status, t.priority, t.attempts, t.max_attempts, t.scheduled_for,
           t.created_at, t.updated_at, t.worker_id, t.error_message
     FROM websurf.worker AS w
     JOIN websurfing_task_queue AS t ON t.worker_id = w.id AND t.status = 'processing'
     WHERE (%(status)s::text IS NULL OR %(status)s::text = 'processing')
       AND (%(task_type)s::text IS NULL OR t.task_type = %(task_type)s::text)
     ORDER BY t.updated_at DESC
     LIMIT %(limit)s)
    UNION ALL
    (SELECT id, task_type, status, priority, attempts, max_attempts, scheduled_for, created_at,
           updated_at, worker_id, error_message
     FROM websurfing_task_queue
     WHERE status = 'completed'
       AND (%(status)s::text IS NULL OR %(status)s::text = 'completed')
       AND (%(task_type)s::text IS NULL OR task_type = %(task_type)s::text)
     ORDER BY updated_at DESC
     LIMIT %(limit)s)
    UNION ALL
    (SELECT id, task_type, status, priority, attempts, max_attempts, scheduled_for, created_at,
           updated_at, worker_id, error_message
     FROM websurfing_task_queue
     WHERE status = 'failed'
       AND (%(status)s::text IS NULL OR %(status)s::text = 'failed')
       AND (%(task_type)s::text IS NULL OR task_type = %(task_type)s::text)
     ORDER BY updated_at DESC
     LIMIT %(limit)s)
    UNION ALL
    (SELECT id, task_type, status, priority, attempts, max_attempts, scheduled_for, created_at,
           updated_at, worker_id, error_message
     FROM websurfing_task_queue
     WHERE status = 'cancelled'
       AND (%(status)s::text IS NULL OR %(status)s::text = 'cancelled')
       AND (%(task_type)s::text IS NULL OR task_type = %(task_type)s::text)
     ORDER BY updated_at DESC
     LIMIT %(limit)s)
) AS newest
ORDER BY updated_at DESC
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
-- task_queue_finished_idx finds them by finish time (updated_at).
WITH doomed AS (
    SELECT id
    FROM websurfing_task_queue
    WHERE status IN ('completed', 'failed')
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

-- name: list_task_attempts
-- A task's earlier attempts, oldest first (0029); the latest is the task row's own (websurf tasks show, dashboard task page).
SELECT attempt, worker_id, started_at, ended_at, outcome, counted, error_message,
       extract(epoch FROM ended_at - started_at)::float8 AS duration_s
FROM websurfing_task_attempt
WHERE task_id = %(id)s
ORDER BY started_at

-- name: task_wait_limits
-- The limits one task counts against (its operator's, its key's), each with its pause, what runs under it and its rate window (websurf tasks show: why a task waits).
-- A rate window is used up when the starts in the period reach the rate, or those in the
-- burst window reach the burst (claim_limited, 0026); it opens again when every full
-- window's oldest start leaves it.
SELECT NULLIF(l.limit_key, '') AS key, l.max_running, l.rate, l.period_s, l.burst,
       CASE WHEN l.paused_until > now() THEN l.paused_until END AS paused_until,
       CASE WHEN l.paused_until > now() THEN l.pause_reason END AS pause_reason,
       (SELECT count(*)
        FROM websurfing_task_queue AS q
        WHERE q.status = 'processing' AND q.task_type = l.task_type
          AND (l.limit_key = '' OR q.limit_key = l.limit_key))::int AS running,
       w.started::int AS started_in_period,
       CASE WHEN w.started >= l.rate OR w.in_burst >= l.burst THEN greatest(
           CASE WHEN w.started >= l.rate
                THEN w.first_start + make_interval(secs => l.period_s) END,
           CASE WHEN w.in_burst >= l.burst
                THEN w.first_in_burst + make_interval(secs => l.period_s * l.burst / l.rate) END)
       END AS rate_opens_at
FROM websurfing_task_queue AS t
JOIN websurfing_task_limit AS l
  ON l.task_type = t.task_type AND (l.limit_key = '' OR l.limit_key = t.limit_key)
LEFT JOIN LATERAL (
    SELECT count(*) AS started, min(s.started_at) AS first_start,
           count(*) FILTER (WHERE s.started_at > now()
                            - make_interval(secs => l.period_s * l.burst / l.rate)) AS in_burst,
           min(s.started_at) FILTER (WHERE s.started_at > now()
                            - make_interval(secs => l.period_s * l.burst / l.rate))
               AS first_in_burst
    FROM websurf.task_limit_start AS s
    WHERE s.limit_id = l.id AND s.started_at > now() - make_interval(secs => l.period_s)
) AS w ON l.rate IS NOT NULL
WHERE t.id = %(id)s
ORDER BY l.limit_key

-- name: count_tasks_ahead
-- How many due tasks of the same operator the fair claim order (priority, round, due time; 0025) takes before one task, counting at most %(most)s of each kind: higher priority, then its own priority's earlier rounds (websurf tasks show).
-- Two ranges of task_queue_fair_idx; tasks of other operators in them are read and
-- skipped, so the count costs at most the pending entries in front of the task.
WITH t AS (
    SELECT task_type, priority, fair_seq, scheduled_for
    FROM websurfing_task_queue
    WHERE id = %(id)s
)
SELECT (SELECT count(*)
        FROM (SELECT 1
              FROM websurfing_task_queue AS q, t
              WHERE q.status = 'pending' AND q.priority > t.priority
                AND q.task_type = t.task_type AND q.scheduled_for <= now()
              LIMIT %(most)s) AS higher)
     + (SELECT count(*)
        FROM (SELECT 1
              FROM websurfing_task_queue AS q, t
              WHERE q.status = 'pending' AND q.priority = t.priority
                AND (q.fair_seq, q.scheduled_for) < (t.fair_seq, t.scheduled_for)
                AND q.task_type = t.task_type AND q.scheduled_for <= now()
              LIMIT %(most)s) AS earlier) AS ahead
