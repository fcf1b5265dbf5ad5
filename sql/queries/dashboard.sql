-- name: dashboard_finished_per_bucket
-- Completed and failed tasks per time bucket and type since a bucket's start, with their pickup waits (dashboard overview charts).
-- One branch per status, so each range-scans task_queue_finished_idx (status, updated_at).
-- A task's wait is from when it was due (scheduled, or created if later) to its start.
SELECT date_bin(make_interval(secs => %(bucket_s)s), updated_at, 'epoch'::timestamptz) AS bucket,
       task_type, 'completed' AS status, count(*) AS tasks, count(started_at) AS started,
       coalesce(sum(extract(epoch FROM started_at - greatest(scheduled_for, created_at))), 0)
           ::float8 AS waited_s,
       coalesce(max(extract(epoch FROM started_at - greatest(scheduled_for, created_at))), 0)
           ::float8 AS max_waited_s
FROM websurfing_task_queue
WHERE status = 'completed' AND updated_at >= %(since)s
GROUP BY 1, 2
UNION ALL
SELECT date_bin(make_interval(secs => %(bucket_s)s), updated_at, 'epoch'::timestamptz),
       task_type, 'failed', count(*), count(started_at),
       coalesce(sum(extract(epoch FROM started_at - greatest(scheduled_for, created_at))), 0)
           ::float8,
       coalesce(max(extract(epoch FROM started_at - greatest(scheduled_for, created_at))), 0)
           ::float8
FROM websurfing_task_queue
WHERE status = 'failed' AND updated_at >= %(since)s
GROUP BY 1, 2
ORDER BY 1, 2, 3

-- name: dashboard_queue_depth
-- Pending tasks per type and priority: due now, scheduled later, already run many times; through the pending index (dashboard overview).
SELECT task_type, priority,
       count(*) FILTER (WHERE scheduled_for <= now()) AS due,
       count(*) FILTER (WHERE scheduled_for > now()) AS scheduled,
       count(*) FILTER (WHERE attempts >= %(many_attempts)s) AS retried,
       extract(epoch FROM now() - min(scheduled_for) FILTER (WHERE scheduled_for <= now()))::float8
           AS oldest_due_s
FROM websurfing_task_queue
WHERE status = 'pending'
GROUP BY task_type, priority
ORDER BY task_type, priority DESC

-- name: dashboard_workers
-- Registered worker processes with their running tasks, found through task_queue_claimed_idx (dashboard overview).
SELECT w.id, w.hostname, w.pid, w.task_types, w.started_at, w.last_heartbeat_at,
       extract(epoch FROM now() - w.last_heartbeat_at)::float8 AS heartbeat_age_s,
       w.last_heartbeat_at < now() - make_interval(secs => w.stale_after_s) AS stale,
       (SELECT count(*) FROM websurfing_task_queue AS t
        WHERE t.worker_id = w.id AND t.status = 'processing') AS in_flight
FROM websurf.worker AS w
ORDER BY w.hostname, w.started_at

-- name: dashboard_stuck_tasks
-- Tasks running longer than stuck_s, longest first, through task_queue_claimed_idx (dashboard overview).
SELECT id, task_type, attempts, max_attempts, worker_id,
       extract(epoch FROM now() - started_at)::float8 AS running_s
FROM websurfing_task_queue
WHERE status = 'processing' AND started_at < now() - make_interval(secs => %(stuck_s)s)
ORDER BY started_at
LIMIT %(limit)s

-- name: dashboard_failure_groups
-- Failures within the window (failed, or pending for a retry after an error) grouped by type and normalised error (dashboard failures page).
-- The error is normalised (first line; ids, long hex and numbers replaced; URLs cut to
-- their host) so a thousand timeouts to one site are one group; `fingerprint` names it.
-- Only the newest `sample` failed tasks and `sample` retrying ones are read, so a burst
-- of failures costs a bounded read (the page says when the sample was full).
-- dashboard_failure_group_tasks repeats the expression: keep the two the same.
WITH failure AS (
    (SELECT id, task_type, status, updated_at, error_message
     FROM websurfing_task_queue
     WHERE status = 'failed' AND updated_at >= now() - make_interval(secs => %(window_s)s)
     ORDER BY updated_at DESC
     LIMIT %(sample)s)
    UNION ALL
    (SELECT id, task_type, status, updated_at, error_message
     FROM websurfing_task_queue
     WHERE status = 'pending' AND error_message IS NOT NULL
     LIMIT %(sample)s)
), normalised AS (
    SELECT *, left(regexp_replace(regexp_replace(regexp_replace(regexp_replace(
               split_part(coalesce(error_message, '(no error message)'), E'\n', 1),
               '(https?://[^/\s"'']+)[^\s"'',;:)]*', '\1/…', 'gi'),
               '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<id>', 'gi'),
               '\m(0x)?[0-9a-f]{8,}\M', '<hex>', 'gi'),
               '[0-9]+', 'N', 'g'), 200) AS error
    FROM failure
)
SELECT left(md5(task_type || E'\x1f' || error), 16) AS fingerprint, task_type, error,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'pending') AS retrying,
       min(updated_at) AS first_seen, max(updated_at) AS last_seen,
       (array_agg(error_message ORDER BY updated_at DESC))[1] AS example_error,
       (array_agg(id ORDER BY updated_at DESC))[1] AS example_id
FROM normalised
GROUP BY task_type, error
ORDER BY count(*) DESC, max(updated_at) DESC
LIMIT %(limit)s

-- name: dashboard_failure_group_tasks
-- The tasks of one failure group of one type, newest first, each row with the group's totals (dashboard failure group page and its retry/cancel actions).
WITH failure AS (
    (SELECT id, task_type, status, updated_at, error_message, attempts, max_attempts, worker_id
     FROM websurfing_task_queue
     WHERE status = 'failed' AND updated_at >= now() - make_interval(secs => %(window_s)s)
       AND task_type = %(task_type)s
     ORDER BY updated_at DESC
     LIMIT %(sample)s)
    UNION ALL
    (SELECT id, task_type, status, updated_at, error_message, attempts, max_attempts, worker_id
     FROM websurfing_task_queue
     WHERE status = 'pending' AND error_message IS NOT NULL AND task_type = %(task_type)s
     LIMIT %(sample)s)
), normalised AS (
    SELECT *, left(regexp_replace(regexp_replace(regexp_replace(regexp_replace(
               split_part(coalesce(error_message, '(no error message)'), E'\n', 1),
               '(https?://[^/\s"'']+)[^\s"'',;:)]*', '\1/…', 'gi'),
               '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<id>', 'gi'),
               '\m(0x)?[0-9a-f]{8,}\M', '<hex>', 'gi'),
               '[0-9]+', 'N', 'g'), 200) AS error
    FROM failure
), grouped AS (
    SELECT *, count(*) FILTER (WHERE status = 'failed') OVER () AS group_failed,
           count(*) FILTER (WHERE status = 'pending') OVER () AS group_retrying,
           min(updated_at) OVER () AS first_seen, max(updated_at) OVER () AS last_seen
    FROM normalised
    WHERE left(md5(task_type || E'\x1f' || error), 16) = %(fingerprint)s
)
SELECT id, task_type, status, updated_at, error_message, error, attempts, max_attempts,
       worker_id, group_failed, group_retrying, first_seen, last_seen
FROM grouped
ORDER BY updated_at DESC
LIMIT %(limit)s

-- name: dashboard_find_tasks
-- Tasks of one status, filtered by type, spreadsheet, fairness key and error text (dashboard tasks page).
-- One branch per status so each reads its own index: pending in claim order through the
-- pending index, running through the workers' claims, finished ones newest first through
-- task_queue_finished_idx. The filters look at the newest `sample` tasks of the status
-- (finished within the window), so a filter on a rare value costs a bounded read; a
-- tenant's pending tasks are all looked through (task_queue_fair_key_idx), so the
-- backlog the tenants page names is found whole.
SELECT *
FROM (
    (SELECT *
     FROM (SELECT id, task_type, status, priority, attempts, max_attempts, scheduled_for,
                  updated_at, worker_id, error_message,
                  payload ->> 'spreadsheet_id' AS spreadsheet_id, fairness_key
           FROM websurfing_task_queue
           WHERE status = 'pending' AND %(status)s::text = 'pending'
             AND (%(fairness_key)s::text IS NULL OR fairness_key = %(fairness_key)s::text)
           ORDER BY priority DESC, scheduled_for
           LIMIT %(sample)s) AS next_due
     WHERE (%(task_type)s::text IS NULL OR task_type = %(task_type)s::text)
       AND (%(spreadsheet_id)s::text IS NULL OR spreadsheet_id = %(spreadsheet_id)s::text)
       AND (%(error)s::text IS NULL OR strpos(lower(error_message), lower(%(error)s::text)) > 0)
       AND (%(fairness_key)s::text IS NULL OR fairness_key = %(fairness_key)s::text)
     ORDER BY priority DESC, scheduled_for
     LIMIT %(limit)s)
    UNION ALL
    (SELECT *
     FROM (SELECT t.id, t.task_type, t.status, t.priority, t.attempts, t.max_attempts,
                  t.scheduled_for, t.started_at AS updated_at, t.worker_id, t.error_message,
                  t.payload ->> 'spreadsheet_id' AS spreadsheet_id, t.fairness_key
           FROM websurf.worker AS w
           JOIN websurfing_task_queue AS t ON t.worker_id = w.id AND t.status = 'processing'
           WHERE %(status)s::text = 'processing') AS running
     WHERE (%(task_type)s::text IS NULL OR task_type = %(task_type)s::text)
       AND (%(spreadsheet_id)s::text IS NULL OR spreadsheet_id = %(spreadsheet_id)s::text)
       AND (%(error)s::text IS NULL OR strpos(lower(error_message), lower(%(error)s::text)) > 0)
       AND (%(fairness_key)s::text IS NULL OR fairness_key = %(fairness_key)s::text)
     ORDER BY updated_at DESC
     LIMIT %(limit)s)
    UNION ALL
    (SELECT *
     FROM (SELECT id, task_type, status, priority, attempts, max_attempts, scheduled_for,
                  updated_at, worker_id, error_message,
                  payload ->> 'spreadsheet_id' AS spreadsheet_id, fairness_key
           FROM websurfing_task_queue
           WHERE status = 'completed' AND %(status)s::text = 'completed'
             AND updated_at >= now() - make_interval(secs => %(window_s)s)
           ORDER BY updated_at DESC
           LIMIT %(sample)s) AS newest
     WHERE (%(task_type)s::text IS NULL OR task_type = %(task_type)s::text)
       AND (%(spreadsheet_id)s::text IS NULL OR spreadsheet_id = %(spreadsheet_id)s::text)
       AND (%(error)s::text IS NULL OR strpos(lower(error_message), lower(%(error)s::text)) > 0)
       AND (%(fairness_key)s::text IS NULL OR fairness_key = %(fairness_key)s::text)
     ORDER BY updated_at DESC
     LIMIT %(limit)s)
    UNION ALL
    (SELECT *
     FROM (SELECT id, task_type, status, priority, attempts, max_attempts, scheduled_for,
                  updated_at, worker_id, error_message,
                  payload ->> 'spreadsheet_id' AS spreadsheet_id, fairness_key
           FROM websurfing_task_queue
           WHERE status = 'failed' AND %(status)s::text = 'failed'
             AND updated_at >= now() - make_interval(secs => %(window_s)s)
           ORDER BY updated_at DESC
           LIMIT %(sample)s) AS newest
     WHERE (%(task_type)s::text IS NULL OR task_type = %(task_type)s::text)
       AND (%(spreadsheet_id)s::text IS NULL OR spreadsheet_id = %(spreadsheet_id)s::text)
       AND (%(error)s::text IS NULL OR strpos(lower(error_message), lower(%(error)s::text)) > 0)
       AND (%(fairness_key)s::text IS NULL OR fairness_key = %(fairness_key)s::text)
     ORDER BY updated_at DESC
     LIMIT %(limit)s)
    UNION ALL
    (SELECT *
     FROM (SELECT id, task_type, status, priority, attempts, max_attempts, scheduled_for,
                  updated_at, worker_id, error_message,
                  payload ->> 'spreadsheet_id' AS spreadsheet_id, fairness_key
           FROM websurfing_task_queue
           WHERE status = 'cancelled' AND %(status)s::text = 'cancelled'
             AND updated_at >= now() - make_interval(secs => %(window_s)s)
           ORDER BY updated_at DESC
           LIMIT %(sample)s) AS newest
     WHERE (%(task_type)s::text IS NULL OR task_type = %(task_type)s::text)
       AND (%(spreadsheet_id)s::text IS NULL OR spreadsheet_id = %(spreadsheet_id)s::text)
       AND (%(error)s::text IS NULL OR strpos(lower(error_message), lower(%(error)s::text)) > 0)
       AND (%(fairness_key)s::text IS NULL OR fairness_key = %(fairness_key)s::text)
     ORDER BY updated_at DESC
     LIMIT %(limit)s)
) AS found
LIMIT %(limit)s

-- name: dashboard_task_cells
-- The cells one task's attempts wrote, with their content now (dashboard task page).
SELECT DISTINCT ON (c.id) c.id, c.spreadsheet_id, c.column_id, c.row_number, c.content,
       c.updated_at
FROM websurfing_robot_input_event AS e
JOIN websurfing_cell AS c ON c.id = e.cell_id
WHERE e.task_id = %(id)s
ORDER BY c.id

-- name: dashboard_task_keys
-- One task's fairness key, limit key and when a person asked its worker to stop it (dashboard task page).
SELECT fairness_key, limit_key, cancel_requested_at
FROM websurfing_task_queue
WHERE id = %(id)s

-- name: dashboard_change_probe
-- The newest finish of each kind and the running tasks, through indexes: changes the workers do not announce (dashboard live updates, once a second per dashboard process).
SELECT (SELECT max(updated_at) FROM websurfing_task_queue WHERE status = 'completed') AS completed,
       (SELECT max(updated_at) FROM websurfing_task_queue WHERE status = 'failed') AS failed,
       (SELECT max(updated_at) FROM websurfing_task_queue WHERE status = 'cancelled') AS cancelled,
       (SELECT count(*) FROM websurfing_task_queue WHERE status = 'processing') AS processing,
       (SELECT max(started_at) FROM websurfing_task_queue WHERE status = 'processing') AS started
