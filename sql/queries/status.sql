-- name: count_pending_by_type
-- Pending tasks per type: due now, scheduled later, oldest due time (websurf status, queue-depth gauge).
SELECT task_type,
       count(*) FILTER (WHERE scheduled_for <= now()) AS due,
       count(*) FILTER (WHERE scheduled_for > now()) AS scheduled,
       min(scheduled_for) FILTER (WHERE scheduled_for <= now()) AS oldest_due_at
FROM websurfing_task_queue
WHERE status = 'pending'
GROUP BY task_type
ORDER BY task_type

-- name: count_pending_by_key
-- The %(limit)s fairness keys with the most pending tasks (due now and later), with how many
-- keys have pending tasks at all (websurf status, the per-key backlog gauges).
-- task_queue_fair_key_idx holds every pending task by key: an index-only scan, grouped in order.
SELECT fairness_key, count(*) AS pending, count(*) OVER () AS keys
FROM websurfing_task_queue
WHERE status = 'pending'
GROUP BY fairness_key
ORDER BY pending DESC, fairness_key
LIMIT %(limit)s

-- name: count_processing_by_type
-- Running tasks per type, found through the registered workers' claims (websurf status).
SELECT t.task_type, count(*) AS processing, min(t.started_at) AS oldest_started_at
FROM websurf.worker AS w
JOIN websurfing_task_queue AS t ON t.worker_id = w.id AND t.status = 'processing'
GROUP BY t.task_type
ORDER BY t.task_type

-- name: count_finished_by_type
-- Tasks that finished within the window, per type and status (websurf status).
-- One branch per status: an equality on status is what lets each branch range-scan
-- task_queue_finished_idx (status, updated_at); `status IN (all three)` would match the
-- index predicate, be dropped as redundant, and leave a scan of the whole index.
SELECT task_type, 'completed' AS status, count(*) AS tasks
FROM websurfing_task_queue
WHERE status = 'completed' AND updated_at >= now() - make_interval(secs => %(window_s)s)
GROUP BY task_type
UNION ALL
SELECT task_type, 'failed', count(*)
FROM websurfing_task_queue
WHERE status = 'failed' AND updated_at >= now() - make_interval(secs => %(window_s)s)
GROUP BY task_type
UNION ALL
SELECT task_type, 'cancelled', count(*)
FROM websurfing_task_queue
WHERE status = 'cancelled' AND updated_at >= now() - make_interval(secs => %(window_s)s)
GROUP BY task_type

-- name: completed_throughput
-- Tasks completed in the last 1, 5 and 15 minutes (websurf status).
SELECT count(*) FILTER (WHERE updated_at >= now() - interval '1 minute') AS last_1m,
       count(*) FILTER (WHERE updated_at >= now() - interval '5 minutes') AS last_5m,
       count(*) AS last_15m
FROM websurfing_task_queue
WHERE status = 'completed'
  AND updated_at >= now() - interval '15 minutes'

-- name: recent_failures_by_type
-- Failed tasks within the window per type, with the latest error (websurf status).
SELECT task_type, count(*) AS failed, max(updated_at) AS last_failed_at,
       (array_agg(error_message ORDER BY updated_at DESC))[1] AS last_error
FROM websurfing_task_queue
WHERE status = 'failed'
  AND updated_at >= now() - make_interval(secs => %(window_s)s)
GROUP BY task_type
ORDER BY failed DESC, task_type

-- name: estimate_task_rows
-- The planner's estimate of the queue table's row count, without counting (websurf status).
SELECT greatest(reltuples, 0)::bigint, now()
FROM pg_class
WHERE oid = 'websurfing_task_queue'::regclass
