-- name: claim_limited_tasks
-- Claim up to %(limit)s due tasks of one operator that has a limit, within what its limits allow now, and when a full limit opens again (child loop, limited operators only).
SELECT id, task_type, payload, attempts, max_attempts, priority, waited_s, payload_bytes,
       fairness_key, reopens_in_s
FROM websurf.claim_limited(%(worker_id)s, %(task_type)s, %(limit)s, %(min_priority)s)

-- name: limited_operators
-- The operators among %(task_types)s that have a limit row (the runner routes their claims to claim_limited_tasks).
SELECT DISTINCT task_type
FROM websurfing_task_limit
WHERE task_type = ANY(%(task_types)s::text[])

-- name: store_limit
-- Store one limit's caps with its source (a pause in force stays); code ('code', at worker start) does not overwrite a limit set from the terminal or the table; returns a row when something changed (websurf limits set, worker start).
INSERT INTO websurfing_task_limit
    (task_type, limit_key, max_running, rate, period_s, burst, source)
VALUES (%(task_type)s, %(limit_key)s, %(max_running)s, %(rate)s, %(period_s)s, %(burst)s,
        %(source)s)
ON CONFLICT (task_type, limit_key) DO UPDATE
SET max_running = EXCLUDED.max_running,
    rate = EXCLUDED.rate,
    period_s = EXCLUDED.period_s,
    burst = EXCLUDED.burst,
    source = EXCLUDED.source
WHERE (EXCLUDED.source <> 'code' OR websurfing_task_limit.source IN ('code', 'slowdown'))
  AND (websurfing_task_limit.max_running, websurfing_task_limit.rate,
       websurfing_task_limit.period_s, websurfing_task_limit.burst, websurfing_task_limit.source)
      IS DISTINCT FROM (EXCLUDED.max_running, EXCLUDED.rate, EXCLUDED.period_s,
                        EXCLUDED.burst, EXCLUDED.source)
RETURNING id

-- name: delete_dropped_code_limits
-- Delete the code's limits of %(task_types)s that the code no longer declares (worker start).
DELETE FROM websurfing_task_limit AS l
WHERE l.source = 'code'
  AND l.task_type = ANY(%(task_types)s::text[])
  AND NOT EXISTS (
      SELECT 1
      FROM unnest(%(declared_types)s::text[], %(declared_keys)s::text[]) AS d(task_type, limit_key)
      WHERE d.task_type = l.task_type AND d.limit_key = l.limit_key
  )
RETURNING id

-- name: remove_limit
-- Delete the limit of an operator (and key) (websurf limits remove).
DELETE FROM websurfing_task_limit
WHERE task_type = %(task_type)s AND limit_key = %(limit_key)s
RETURNING source

-- name: pause_limits_of_tasks
-- Pause the limit key of each task until its time (a handler's SlowDown; recorder, in the transaction that hands the tasks back).
INSERT INTO websurfing_task_limit (task_type, limit_key, paused_until, pause_reason, source)
SELECT DISTINCT ON (q.task_type, coalesce(q.limit_key, ''))
       q.task_type, coalesce(q.limit_key, ''), p.until, p.reason, 'slowdown'
FROM unnest(%(ids)s::uuid[], %(until)s::timestamptz[], %(reasons)s::text[])
     AS p(id, until, reason)
JOIN websurfing_task_queue AS q ON q.id = p.id
ORDER BY q.task_type, coalesce(q.limit_key, ''), p.until DESC
ON CONFLICT (task_type, limit_key) DO UPDATE
SET paused_until = EXCLUDED.paused_until,
    pause_reason = EXCLUDED.pause_reason
WHERE websurfing_task_limit.paused_until IS NULL
   OR websurfing_task_limit.paused_until < EXCLUDED.paused_until

-- name: limit_states
-- Every limit with what holds it now: running, starts in its window, due tasks waiting, pause (websurf limits list, websurf status, /metrics, the dashboard's tenants page).
-- MATERIALIZED: each count reads the queue once, not once per limit row (no index holds
-- limit_key, so counting the waiting tasks reads the pending rows of limited operators).
WITH running AS MATERIALIZED (
    SELECT q.task_type, q.limit_key, count(*) AS n
    FROM websurfing_task_queue q
    WHERE q.status = 'processing'
      AND q.task_type IN (SELECT task_type FROM websurfing_task_limit)
    GROUP BY q.task_type, q.limit_key
), waiting AS MATERIALIZED (
    SELECT q.task_type, q.limit_key, count(*) AS n
    FROM websurfing_task_queue q
    WHERE q.status = 'pending' AND q.scheduled_for <= now()
      AND q.task_type IN (SELECT task_type FROM websurfing_task_limit)
    GROUP BY q.task_type, q.limit_key
)
SELECT l.task_type AS operator, NULLIF(l.limit_key, '') AS key, l.max_running, l.rate, l.period_s, l.burst,
       l.source,
       CASE WHEN l.paused_until > now() THEN l.paused_until END AS paused_until,
       CASE WHEN l.paused_until > now() THEN l.pause_reason END AS pause_reason,
       (SELECT coalesce(sum(r.n), 0) FROM running r
        WHERE r.task_type = l.task_type
          AND (l.limit_key = '' OR r.limit_key = l.limit_key))::int AS running,
       (SELECT coalesce(sum(w.n), 0) FROM waiting w
        WHERE w.task_type = l.task_type
          AND (l.limit_key = '' OR w.limit_key = l.limit_key))::int AS waiting,
       CASE WHEN l.rate IS NOT NULL THEN
           (SELECT count(*) FROM websurf.task_limit_start s
            WHERE s.limit_id = l.id
              AND s.started_at > now() - make_interval(secs => l.period_s))::int
       END AS started_in_period
FROM websurfing_task_limit l
ORDER BY l.task_type, l.limit_key
