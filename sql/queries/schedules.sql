-- name: insert_schedule
-- Add a schedule unless one of that name exists (websurf schedules add, code sync).
INSERT INTO websurf.schedule (name, source, cron, every, time_zone, task_type, payload,
                              priority, max_attempts, catch_up, next_run_at)
VALUES (%(name)s, %(source)s, %(cron)s, %(every)s, %(time_zone)s, %(task_type)s,
        %(payload)s, %(priority)s, %(max_attempts)s, %(catch_up)s, %(next_run_at)s)
ON CONFLICT (name) DO NOTHING
RETURNING id

-- name: update_code_schedule
-- Bring a code-registered schedule in line with the code that now runs (code sync).
UPDATE websurf.schedule
SET cron = %(cron)s, every = %(every)s, time_zone = %(time_zone)s, task_type = %(task_type)s,
    payload = %(payload)s, priority = %(priority)s, max_attempts = %(max_attempts)s,
    catch_up = %(catch_up)s, next_run_at = coalesce(%(next_run_at)s, next_run_at)
WHERE name = %(name)s AND source = 'code'
RETURNING id

-- name: get_schedules_by_name
-- The stored definitions of the named schedules (code sync, pause/resume).
SELECT name, source, cron, every, time_zone, task_type, payload, priority, max_attempts,
       catch_up, paused, next_run_at
FROM websurf.schedule
WHERE name = ANY(%(names)s::text[])

-- name: list_schedules
-- Every schedule with its last task's status and its column (schedules list, status, metrics).
SELECT s.id, s.name, s.source, s.cron, s.every, s.time_zone, s.task_type, s.payload,
       s.priority, s.max_attempts, s.catch_up, s.paused, s.next_run_at, s.last_run_at,
       s.last_enqueued_at, s.last_task_id, t.status AS last_task_status,
       t.error_message AS last_task_error, s.ticks_run, s.ticks_skipped, s.column_id,
       c.title AS column_title, c.spreadsheet_id, s.refresh_after_row,
       cardinality(s.refresh_in_flight) AS refresh_in_flight, s.refresh_rows,
       s.refresh_failed, s.refresh_done_at
FROM websurf.schedule AS s
LEFT JOIN websurfing_task_queue AS t ON t.id = s.last_task_id
LEFT JOIN websurfing_column AS c ON c.id = s.column_id
ORDER BY s.name

-- name: set_schedule_paused
-- Pause a schedule, or resume it from its next tick after now (websurf schedules pause/resume).
UPDATE websurf.schedule
SET paused = %(paused)s, next_run_at = coalesce(%(next_run_at)s, next_run_at)
WHERE name = %(name)s
RETURNING id

-- name: delete_schedule
-- Remove a schedule that is not a column's refresh (websurf schedules remove).
DELETE FROM websurf.schedule
WHERE name = %(name)s AND source <> 'column'
RETURNING id

-- name: due_schedules
-- Unpaused schedules whose next tick is due, oldest first, except refreshes still running and the ids %(passed)s this run already tried (run_once, batch after batch).
SELECT id, name, cron, every, time_zone, task_type, payload, priority, max_attempts, catch_up,
       next_run_at, column_id
FROM websurf.schedule
WHERE NOT paused
  AND next_run_at <= %(now)s
  AND (column_id IS NULL OR refresh_after_row IS NULL)
  AND NOT (id = ANY(%(passed)s::bigint[]))
ORDER BY next_run_at
LIMIT %(limit)s

-- name: claim_schedule_tick
-- Compare-and-set: take the due tick (and start a column's refresh round) or find it taken (run_once).
UPDATE websurf.schedule
SET next_run_at = %(next_run_at)s,
    last_run_at = CASE WHEN %(run)s THEN %(tick)s ELSE last_run_at END,
    ticks_run = ticks_run + CASE WHEN %(run)s THEN 1 ELSE 0 END,
    ticks_skipped = ticks_skipped + %(skipped)s,
    refresh_after_row = CASE WHEN column_id IS NOT NULL AND %(run)s THEN 0 END,
    refresh_in_flight = CASE WHEN column_id IS NOT NULL AND %(run)s THEN '{}'::uuid[] END,
    refresh_rows = CASE WHEN column_id IS NOT NULL AND %(run)s THEN 0 ELSE refresh_rows END,
    refresh_failed = CASE WHEN column_id IS NOT NULL AND %(run)s THEN 0 ELSE refresh_failed END
WHERE id = %(id)s
  AND next_run_at = %(due)s
  AND NOT paused
  AND (column_id IS NULL OR refresh_after_row IS NULL)
RETURNING id

-- name: record_schedule_task
-- Remember the task a tick enqueued, in the tick's transaction (run_once).
UPDATE websurf.schedule
SET last_task_id = %(task_id)s, last_enqueued_at = now()
WHERE id = %(id)s

-- name: sync_column_schedules
-- One refresh schedule per robot column with a refresh_every, following the column (refresh run_once).
WITH wanted AS (
    SELECT c.id AS column_id, c.refresh_every, c.operator_type
    FROM websurfing_column AS c
    WHERE c.refresh_every IS NOT NULL AND c.operator_type IS NOT NULL
      AND c.source_column_id IS NOT NULL
), added AS (
    INSERT INTO websurf.schedule (name, source, every, task_type, priority, next_run_at,
                                  column_id)
    SELECT 'column:' || w.column_id, 'column', w.refresh_every, w.operator_type,
           %(priority)s, %(now)s::timestamptz + w.refresh_every, w.column_id
    FROM wanted AS w
    WHERE NOT EXISTS (SELECT 1 FROM websurf.schedule AS s WHERE s.column_id = w.column_id)
    ON CONFLICT DO NOTHING
    RETURNING 1
), changed AS (
    UPDATE websurf.schedule AS s
    SET every = w.refresh_every,
        task_type = w.operator_type,
        next_run_at = CASE WHEN s.every = w.refresh_every THEN s.next_run_at
                           ELSE coalesce(s.last_run_at, %(now)s::timestamptz) + w.refresh_every
                      END
    FROM wanted AS w
    WHERE s.column_id = w.column_id
      AND (s.every IS DISTINCT FROM w.refresh_every OR s.task_type <> w.operator_type)
    RETURNING 1
), dropped AS (
    DELETE FROM websurf.schedule AS s
    WHERE s.source = 'column'
      AND NOT EXISTS (SELECT 1 FROM wanted AS w WHERE w.column_id = s.column_id)
    RETURNING 1
)
SELECT (SELECT count(*) FROM added), (SELECT count(*) FROM changed),
       (SELECT count(*) FROM dropped)

-- name: refreshing_schedules
-- Column refresh rounds under way (refresh run_once).
SELECT id
FROM websurf.schedule
WHERE refresh_after_row IS NOT NULL AND NOT paused
ORDER BY id

-- name: lock_refresh_round
-- Take one refresh round for this turn, or skip it when another worker has it (refresh run_once).
SELECT s.refresh_after_row, s.refresh_in_flight, c.id AS column_id, c.spreadsheet_id,
       c.source_column_id, c.operator_type, c.operator_options
FROM websurf.schedule AS s
JOIN websurfing_column AS c ON c.id = s.column_id
WHERE s.id = %(id)s AND s.refresh_after_row IS NOT NULL AND NOT s.paused
FOR UPDATE OF s SKIP LOCKED

-- name: refresh_tasks_status
-- Which of a round's tasks are still pending or running, and which failed (refresh run_once).
SELECT id, status
FROM websurfing_task_queue
WHERE id = ANY(%(ids)s::uuid[])

-- name: refresh_next_cells
-- The next filled rows of a refresh round without a pending task for their robot cell, source cells share-locked, each with the version of its source cell's content: its latest edit's, or the robot output's it holds when newer (refresh run_once).
-- A row a person is editing right now is skipped: the edit enqueues its own task.
SELECT t.id AS cell_id, s.id AS source_cell_id, s.content, s.row_number,
       websurf.content_version(s.id) AS input_version
FROM websurfing_cell AS s
JOIN websurfing_cell AS t
  ON t.spreadsheet_id = s.spreadsheet_id
 AND t.column_id = %(column_id)s
 AND t.row_number = s.row_number
WHERE s.spreadsheet_id = %(spreadsheet_id)s
  AND s.column_id = %(source_column_id)s
  AND s.row_number > %(after_row)s
  AND s.content IS NOT NULL AND s.content <> ''
  AND NOT EXISTS (
      SELECT 1 FROM websurfing_task_queue AS q
      WHERE q.unique_key = 'cell:' || t.id AND q.status = 'pending'
  )
ORDER BY s.row_number
LIMIT %(limit)s
FOR SHARE OF s SKIP LOCKED

-- name: advance_refresh_round
-- Record a round's progress, or end it when every row ran (refresh run_once).
UPDATE websurf.schedule
SET refresh_after_row = CASE WHEN %(done)s THEN NULL ELSE %(after_row)s::int END,
    refresh_in_flight = CASE WHEN %(done)s THEN NULL ELSE %(in_flight)s::uuid[] END,
    refresh_rows = refresh_rows + %(enqueued)s,
    refresh_failed = refresh_failed + %(failed)s,
    refresh_done_at = CASE WHEN %(done)s THEN now() ELSE refresh_done_at END
WHERE id = %(id)s

-- name: set_column_refresh
-- Make a robot column refresh itself every so often, or stop it (refresh.set_column_refresh).
UPDATE websurfing_column
SET refresh_every = %(every)s
WHERE id = %(id)s
RETURNING id, operator_type
