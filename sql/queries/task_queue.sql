-- name: enqueue_task
-- Insert one task without a unique key (queue.enqueue): a plain INSERT ... VALUES, a few
-- tenths of a millisecond quicker than enqueue_tasks' unnest for the single task a
-- person's action or a script adds (the web app's INSERT looks the same).
INSERT INTO websurfing_task_queue
    (task_type, payload, priority, max_attempts, scheduled_for, limit_key)
VALUES (%(task_type)s, %(payload)s, %(priority)s, %(max_attempts)s,
        COALESCE(%(scheduled_for)s::timestamptz, now()), %(limit_key)s)
RETURNING id

-- name: enqueue_tasks
-- Insert tasks in one statement (one notification per type); {coalesce} is enqueue_coalesce when a task has a unique_key (a pending task holding it is updated instead) or empty (queue.enqueue, queue.enqueue_many; keys unique within the call).
INSERT INTO websurfing_task_queue
    (task_type, payload, priority, max_attempts, scheduled_for, unique_key, limit_key)
SELECT t.task_type, t.payload, t.priority, t.max_attempts, COALESCE(t.scheduled_for, now()),
       t.unique_key, t.limit_key
FROM unnest(%(task_types)b::text[], %(payloads)b::jsonb[], %(priorities)b::int[],
            %(max_attempts)b::int[], %(scheduled_for)b::timestamptz[],
            %(unique_keys)b::text[], %(limit_keys)b::text[])
     WITH ORDINALITY AS t(task_type, payload, priority, max_attempts, scheduled_for,
                          unique_key, limit_key, n)
ORDER BY t.n
{coalesce}
-- xmax = 0 only in a row version this statement inserted (not one it updated).
RETURNING id, xmax = 0 AS inserted

-- name: enqueue_coalesce
-- The ON CONFLICT clause of enqueue_tasks, only for batches with a unique key: DO UPDATE needs UPDATE on the queue, which the web app's role (0016) does not have (queue.enqueue_many).
ON CONFLICT (unique_key) WHERE status = 'pending' DO UPDATE
SET task_type = EXCLUDED.task_type,
    payload = EXCLUDED.payload,
    priority = EXCLUDED.priority,
    max_attempts = EXCLUDED.max_attempts,
    scheduled_for = EXCLUDED.scheduled_for,
    limit_key = EXCLUDED.limit_key

-- name: announce_coalesced_tasks
-- Send new_task for pending tasks an enqueue coalesced into, which the INSERT trigger does not see (queue.enqueue, queue.enqueue_many).
SELECT pg_notify('new_task', json_build_object(
           'task_type', task_type, 'priority', max(priority))::text)
FROM websurfing_task_queue
WHERE id = ANY(%(ids)s::uuid[]) AND status = 'pending'
GROUP BY task_type

-- name: claim_tasks
-- Claim up to %(limit)s due tasks of the worker's types at %(min_priority)s or above, counting
-- the attempt (child loop).
-- Fair between keys: within a priority, tasks go by their round (fair_seq, given at insert,
-- sql/migrations/0025), so keys with pending work take turns; one range scan of
-- task_queue_fair_idx, whatever the number of keys.
-- The byte budget: rows are taken in claim order while the payloads before them add up to
-- less than %(max_bytes)s bytes (so always at least one), and the rest stay pending for
-- the next claim; a claim holds at most the budget plus one payload (1 MiB of JSON text at
-- most, 0023) in memory. A payload's bytes: its stored size (pg_column_size, read without
-- rendering it), or its JSON text's where it is stored compressed (only payloads over
-- about 2 kB are). Rendering every payload to text to count it was a fifth of a claim's
-- CPU on robot tasks, paid again for each row the scan passed and another claim held. Nothing a row can hold fails the statement: 0023's limits keep
-- attempts + 1 below max_attempts and every timestamp finite.
WITH picked AS MATERIALIZED (
    SELECT id, priority, fair_seq, scheduled_for,
           CASE WHEN pg_column_compression(payload) IS NULL THEN pg_column_size(payload)
                ELSE octet_length(payload::text) END AS bytes
    FROM websurfing_task_queue
    WHERE status = 'pending'
      AND scheduled_for <= now()
      AND task_type = ANY(%(task_types)b::text[])
      AND priority >= %(min_priority)s
    ORDER BY priority DESC, fair_seq ASC, scheduled_for ASC
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), within_budget AS (
    SELECT id
    FROM (
        SELECT id, bytes,
               sum(bytes) OVER (ORDER BY priority DESC, fair_seq ASC, scheduled_for ASC, id
                                ROWS UNBOUNDED PRECEDING) - bytes AS bytes_before
        FROM picked
    ) AS running
    WHERE bytes_before < %(max_bytes)s
)
UPDATE websurfing_task_queue AS t
SET status = 'processing',
    started_at = now(),
    worker_id = %(worker_id)s,
    attempts = t.attempts + 1,
    updated_at = now()
-- = ANY(ARRAY(...)) makes the update a primary-key lookup per claimed row; a join
-- against the CTE lets the planner hash the whole table instead (and carrying the byte
-- counts through a join cost more than counting the claimed rows' again below).
WHERE t.id = ANY(ARRAY(SELECT id FROM within_budget))
-- waited_s: from when the task became due (the later of its creation and its schedule)
-- to this claim, on the database clock; one float is cheaper to read than two timestamps.
RETURNING t.id, t.task_type, t.payload, t.attempts, t.max_attempts, t.priority,
          extract(epoch FROM now() - GREATEST(t.scheduled_for, t.created_at))::float8
              AS waited_s,
          CASE WHEN pg_column_compression(t.payload) IS NULL THEN pg_column_size(t.payload)
               ELSE octet_length(t.payload::text) END AS payload_bytes,
          t.fairness_key

-- name: finish_tasks
-- Record the outcome of claimed tasks, only where this worker still holds that claim (child loop).
-- A batch of plain completions (the usual batch) sends only ids and attempts, the other
-- arrays NULL: unnest pads them with NULLs, read as completed, nothing to record.
UPDATE websurfing_task_queue AS t
SET status = f.status,
    completed_at = CASE WHEN f.status = 'completed' THEN now() ELSE t.completed_at END,
    failed_at = CASE WHEN f.status = 'failed' THEN now() ELSE t.failed_at END,
    scheduled_for = COALESCE(f.run_at, t.scheduled_for),
    -- a retry waits out its backoff in the timed band (sql/migrations/0025), not in
    -- front of due work; the promoter gives it a round once due
    fair_seq = CASE WHEN f.run_at > now()
                    THEN 4611686018427387904
                         + floor(extract(epoch FROM f.run_at) * 1000000)::bigint
                    ELSE t.fair_seq END,
    error_message = COALESCE(f.error, t.error_message),
    attempts = t.attempts - f.uncount,
    updated_at = now()
FROM (
    SELECT id, attempts, COALESCE(status, 'completed') AS status, run_at, error,
           COALESCE(uncount, 0) AS uncount
    FROM unnest(%(ids)b::uuid[], %(attempts)b::int[], %(statuses)b::text[],
                %(run_at)b::timestamptz[], %(errors)b::text[], %(uncount)b::int[])
         AS u(id, attempts, status, run_at, error, uncount)
) AS f
-- The redundant = ANY drives the plan through the primary key, then joins the outcomes.
WHERE t.id = ANY(%(ids)b::uuid[])
  AND t.id = f.id
  AND t.status = 'processing'
  AND t.worker_id = %(worker_id)s
  AND t.attempts = f.attempts
-- cancelled: the reason, when a cancel asked while the task ran turned this outcome into
-- a cancellation (task_queue_honour_cancel, 0027); NULL otherwise.
RETURNING t.id, CASE WHEN t.cancel_requested_at IS NOT NULL THEN t.error_message END

-- name: cancel_requested_tasks
-- The worker's running tasks someone asked to stop, for a cancel notification it may have missed (heartbeat; 0027).
SELECT id
FROM websurfing_task_queue
WHERE worker_id = %(worker_id)s
  AND status = 'processing'
  AND cancel_requested_at IS NOT NULL

-- name: promote_due_tasks
-- Give up to %(limit)s tasks of the timed band that are due by %(now)s (NULL: now()) the current round
-- of their type and priority, or their key's last + 1 if later (maintenance turn,
-- promoter.run_once). The insert trigger's rule (sql/migrations/0025) for a batch in one
-- statement: the lookups read the rounds as they were, so tasks of one key, type and
-- priority follow each other from there in due order.
WITH due AS MATERIALIZED (
    SELECT id, fairness_key, task_type, priority, scheduled_for
    FROM websurfing_task_queue
    WHERE status = 'pending'
      AND fair_seq >= 4611686018427387904
      AND fair_seq <= 4611686018427387904
                      + floor(extract(epoch FROM coalesce(%(now)s::timestamptz, now())) * 1000000)::bigint
    ORDER BY fair_seq
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
placed AS (
    SELECT d.id,
           coalesce(GREATEST(k.next, r.current_round), 0)
               + row_number() OVER (PARTITION BY d.fairness_key, d.task_type, d.priority
                                    ORDER BY d.scheduled_for, d.id) - 1 AS fair_seq
    FROM due AS d
    -- Two branches, one per case of the key: `key = x OR both NULL` is not indexable.
    LEFT JOIN LATERAL (
        SELECT max(b.next) AS next
        FROM ((SELECT q.fair_seq + 1 AS next
               FROM websurfing_task_queue AS q
               WHERE q.status = 'pending' AND q.fairness_key = d.fairness_key
                 AND q.task_type = d.task_type AND q.priority = d.priority
                 AND q.fair_seq < 4611686018427387904
               ORDER BY q.fair_seq DESC
               LIMIT 1)
              UNION ALL
              (SELECT q.fair_seq + 1
               FROM websurfing_task_queue AS q
               WHERE d.fairness_key IS NULL
                 AND q.status = 'pending' AND q.fairness_key IS NULL
                 AND q.task_type = d.task_type AND q.priority = d.priority
                 AND q.fair_seq < 4611686018427387904
               ORDER BY q.fair_seq DESC
               LIMIT 1)) AS b
    ) AS k ON true
    LEFT JOIN LATERAL (
        SELECT q.fair_seq AS current_round
        FROM websurfing_task_queue AS q
        WHERE q.status = 'pending' AND q.priority = d.priority
          AND q.fair_seq < 4611686018427387904
          AND q.task_type = d.task_type
          AND q.scheduled_for <= coalesce(%(now)s::timestamptz, now())
        ORDER BY q.priority DESC, q.fair_seq
        LIMIT 1
    ) AS r ON true
)
UPDATE websurfing_task_queue AS t
SET fair_seq = p.fair_seq
FROM placed AS p
WHERE t.id = p.id AND t.status = 'pending'
RETURNING t.id

-- name: next_due_in
-- Seconds until the earliest future due time among pending tasks of the worker's types, NULL when none (the child's wake-up timer, armed once LISTEN runs: a task queued for later before then notified no one).
SELECT extract(epoch FROM min(scheduled_for) - now())::float8
FROM websurfing_task_queue
WHERE status = 'pending'
  AND scheduled_for > now()
  AND task_type = ANY(%(task_types)b::text[])

-- name: get_task
-- One task by id (websurf tasks show, tests).
SELECT id, task_type, payload, status, priority, attempts, max_attempts, scheduled_for,
       started_at, completed_at, failed_at, error_message, worker_id, created_at, updated_at,
       fairness_key, limit_key, cancel_requested_at
FROM websurfing_task_queue
WHERE id = %(id)s
