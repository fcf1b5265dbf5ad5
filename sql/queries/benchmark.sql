-- name: bench_create_database
-- Create the benchmark's scratch database {name} (websurf.worker.bench.benchmark.scratch_database).
CREATE DATABASE {name}

-- name: bench_drop_database
-- Drop the benchmark's scratch database {name}, closing stray sessions (scratch_database).
DROP DATABASE IF EXISTS {name} WITH (FORCE)

-- name: bench_reset
-- Empty the scratch database's queue, audit and sheet tables before a measurement (benchmark).
TRUNCATE websurfing_task_queue, websurfing_robot_input_event, websurfing_cell_edit_event,
         websurfing_cell, websurfing_column, websurfing_spreadsheet, websurf.worker,
         websurfing_task_limit CASCADE

-- name: bench_database_clock
-- The server's wall clock now, to time a run against completed_at (benchmark).
SELECT clock_timestamp()

-- name: bench_server_settings
-- The server's version and the settings that decide its speed (benchmark report).
SELECT current_setting('server_version') AS server_version,
       current_setting('synchronous_commit') AS synchronous_commit,
       current_setting('fsync') AS fsync,
       current_setting('shared_buffers') AS shared_buffers,
       current_setting('max_connections') AS max_connections,
       current_setting('full_page_writes') AS full_page_writes,
       version() AS version

-- name: bench_insert_noop_tasks
-- Queue %(count)s noop tasks in one statement (benchmark's throughput runs).
INSERT INTO websurfing_task_queue (task_type, payload)
SELECT 'noop', jsonb_build_object('n', n)
FROM generate_series(1, %(count)s) AS n

-- name: bench_unfinished_count
-- How many tasks are not yet finished: the benchmark polls it to know when a run is over.
SELECT count(*) FROM websurfing_task_queue WHERE status IN ('pending', 'processing')

-- name: bench_completion_times
-- Finished counts and completion timestamps (first, 10th and 90th percentile, last) of a run.
SELECT count(*) FILTER (WHERE status = 'completed') AS completed,
       count(*) FILTER (WHERE status <> 'completed') AS not_completed,
       min(completed_at) AS first_at,
       percentile_disc(0.1) WITHIN GROUP (ORDER BY completed_at) AS p10_at,
       percentile_disc(0.9) WITHIN GROUP (ORDER BY completed_at) AS p90_at,
       max(completed_at) AS last_at,
       count(DISTINCT worker_id) AS workers
FROM websurfing_task_queue
WHERE task_type = %(task_type)s

-- name: bench_live_workers
-- How many worker processes are registered, to know a daemon is ready (benchmark).
SELECT count(*) FROM websurf.worker

-- name: bench_create_user
-- The person who owns the benchmark's spreadsheet and makes its edits.
INSERT INTO websurfing_user (id, name, email)
VALUES (%(id)s, 'websurf bench', %(email)s)
ON CONFLICT (id) DO NOTHING

-- name: bench_create_spreadsheet
-- A spreadsheet for the benchmark's cells (benchmark).
INSERT INTO websurfing_spreadsheet (name, owner_id)
VALUES ('websurf bench', %(owner_id)s)
RETURNING id

-- name: bench_create_column
-- The single column that holds the benchmark's cells.
INSERT INTO websurfing_column (spreadsheet_id, position, title)
VALUES (%(spreadsheet_id)s, 0, 'bench')
RETURNING id

-- name: bench_create_robot_column
-- A noop robot column fed by the benchmark's column, whose options make each task write %(content)s into its cell (benchmark).
INSERT INTO websurfing_column
    (spreadsheet_id, position, title, operator_type, source_column_id, operator_options)
VALUES (%(spreadsheet_id)s, 1, 'bench robot', 'noop', %(source_column_id)s,
        jsonb_build_object('cell_content', %(content)s::text))
RETURNING id

-- name: bench_fill_source_cells
-- A person fills rows 1..%(count)s of the benchmark's column in one statement: the edit trigger creates the robot cells and queues one robot task per row (benchmark).
INSERT INTO websurfing_cell (spreadsheet_id, column_id, row_number, content)
SELECT %(spreadsheet_id)s, %(column_id)s, n, 'row ' || n
FROM generate_series(1, %(count)s) AS n

-- name: bench_settle_cell_sheet
-- Vacuum and analyse what the paste wrote, before the audited cell run's clock starts (benchmark).
VACUUM (ANALYZE) websurfing_cell, websurfing_cell_edit_event, websurfing_task_queue

-- name: bench_check_cell_tasks
-- Audit check after a cell run: tasks without exactly one success robot row, robot cells not written.
SELECT
    (SELECT count(*)
     FROM websurfing_task_queue AS t
     WHERE t.task_type = 'noop'
       AND (SELECT count(*) FROM websurfing_robot_input_event AS e
            WHERE e.task_id = t.id AND e.success) <> 1) AS tasks_without_one_audit_row,
    (SELECT count(*) FROM websurfing_robot_input_event) AS robot_rows,
    (SELECT count(*) FROM websurfing_cell
     WHERE column_id = %(robot_column_id)s
       AND content IS DISTINCT FROM %(content)s::text) AS cells_not_written

-- name: bench_count_edit_events
-- How many person-edit audit rows exist (benchmark edits check).
SELECT count(*) FROM websurfing_cell_edit_event

-- name: bench_count_tasks
-- How many tasks of a type are queued in any state (benchmark checks).
SELECT count(*) FROM websurfing_task_queue WHERE task_type = %(task_type)s

-- name: bench_seed_finished_tasks
-- %(count)s finished noop tasks spread over the past week, for the claim plan measurement.
INSERT INTO websurfing_task_queue
    (task_type, payload, status, attempts, scheduled_for, started_at, completed_at, created_at,
     worker_id)
SELECT 'noop', '{}'::jsonb, 'completed', 1, ts, ts, ts, ts, 'websurf-bench'
FROM (SELECT now() - mod(n, 604800) * interval '1 second' AS ts
      FROM generate_series(1, %(count)s) AS n) AS s

-- name: bench_seed_future_tasks
-- %(count)s pending noop tasks due in the next day, priorities 0..9 (claim plan measurement).
INSERT INTO websurfing_task_queue (task_type, payload, priority, scheduled_for)
SELECT 'noop', '{}'::jsonb, mod(n, 10), now() + interval '1 hour' + mod(n, 86400) * interval '1 second'
FROM generate_series(1, %(count)s) AS n

-- name: bench_seed_due_tasks
-- %(count)s pending noop tasks that are due now (claim plan measurement).
INSERT INTO websurfing_task_queue (task_type, payload)
SELECT 'noop', '{}'::jsonb FROM generate_series(1, %(count)s) AS n

-- name: bench_analyze_queue
-- Refresh the planner's statistics of the queue table after seeding it (claim plan measurement).
ANALYZE websurfing_task_queue

-- name: bench_force_generic_plan
-- Plan the next statements as a prepared statement's generic plan would be (claim plan).
SET LOCAL plan_cache_mode = force_generic_plan

-- name: bench_explain
-- EXPLAIN (ANALYZE, BUFFERS) of {statement}, run in a transaction that is rolled back.
EXPLAIN (ANALYZE, BUFFERS) {statement}

-- name: bench_prepared_statement
-- Name and parameter types of the one statement prepared on this connection (claim plan).
SELECT name, parameter_types::text[] FROM pg_prepared_statements WHERE NOT from_sql

-- name: bench_explain_execute
-- EXPLAIN (ANALYZE, BUFFERS) of prepared statement {name} run with {arguments} (claim plan).
EXPLAIN (ANALYZE, BUFFERS) EXECUTE {name}({arguments})

-- name: bench_insert_sleep_tasks
-- Queue %(count)s tasks of %(task_type)s that sleep %(sleep_s)s seconds, at %(priority)s (benchmark).
INSERT INTO websurfing_task_queue (task_type, payload, priority)
SELECT %(task_type)s, jsonb_build_object('sleep_s', %(sleep_s)s::float8, 'n', n), %(priority)s
FROM generate_series(1, %(count)s) AS n

-- name: bench_run_intervals
-- When each completed task of %(task_type)s was claimed and finished, on the database clock (the limits measurement).
SELECT extract(epoch FROM started_at)::float8, extract(epoch FROM completed_at)::float8
FROM websurfing_task_queue
WHERE task_type = %(task_type)s AND status = 'completed'
ORDER BY started_at

-- name: bench_task_states
-- Pending, processing and completed tasks of one type (benchmark waits on these counts).
SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
       count(*) FILTER (WHERE status = 'processing') AS processing,
       count(*) FILTER (WHERE status = 'completed') AS completed
FROM websurfing_task_queue
WHERE task_type = %(task_type)s

-- name: bench_worker_pids
-- The process ids of the registered worker processes, to read their memory (benchmark).
SELECT pid FROM websurf.worker ORDER BY pid

-- name: bench_edit_task_latencies
-- Each robot task an edit queued: edit commit to robot answer committed (both database
-- clock: created_at is the edit's transaction, completed_at the one that wrote the cell),
-- its priority, whether it completed, and whether bulk work was still unfinished then.
SELECT extract(epoch FROM t.completed_at - t.created_at) * 1000.0 AS latency_ms,
       t.priority,
       t.status = 'completed' AS completed,
       t.created_at < (SELECT max(b.completed_at) FROM websurfing_task_queue AS b
                       WHERE b.task_type = %(bulk_type)s) AS during_bulk
FROM websurfing_task_queue AS t
WHERE t.task_type = %(task_type)s
ORDER BY t.created_at

-- name: bench_robot_cells_answered
-- Robot cells of a column holding the upper-case content of their source cell (benchmark).
SELECT count(*)
FROM websurfing_cell AS r
JOIN websurfing_cell AS s
  ON s.spreadsheet_id = r.spreadsheet_id AND s.row_number = r.row_number
 AND s.column_id = %(source_column_id)s
WHERE r.column_id = %(robot_column_id)s
  AND r.content = upper(s.content)

-- name: bench_seed_dashboard_finished
-- %(count)s finished tasks of four operators over the past week, one in 20 failed with one of five errors (dashboard pages measurement).
INSERT INTO websurfing_task_queue
    (task_type, payload, status, attempts, max_attempts, scheduled_for, started_at,
     completed_at, failed_at, error_message, created_at, updated_at, worker_id)
SELECT (ARRAY['web_title', 'web_fetch', 'uppercase', 'summarise'])[mod(n, 4) + 1],
       jsonb_build_object('spreadsheet_id', md5(mod(n, 500)::text)::uuid, 'row', n),
       CASE WHEN mod(n, 20) = 0 THEN 'failed' ELSE 'completed' END,
       1, 1, ts - interval '2 seconds', ts - interval '1 second',
       CASE WHEN mod(n, 20) <> 0 THEN ts END, CASE WHEN mod(n, 20) = 0 THEN ts END,
       CASE WHEN mod(n, 20) = 0 THEN (ARRAY[
           'TimeoutError: https://site' || mod(n, 3) || '.example/page/' || n || ' took 30 s',
           'ConnectionError: could not reach https://down.example/' || n,
           'ValueError: no <title> in ' || n || ' bytes',
           'HTTPError: 503 from https://busy.example/item?id=' || n,
           'RuntimeError: model overloaded, request ' || md5(n::text)])[mod(n / 20, 5) + 1]
       END,
       ts - interval '2 seconds', ts, 'websurf-bench'
FROM (SELECT n, now() - mod(n::bigint * 7919, 604800) * interval '1 second' AS ts
      FROM generate_series(1, %(count)s) AS n) AS s

-- name: bench_seed_dashboard_pending
-- %(count)s pending tasks of 200 tenants (fairness keys, one in three of them in tenant-0), each with one of ten limit keys: nine in ten due later, one in 100 waiting for a retry after an error (dashboard pages measurement).
INSERT INTO websurfing_task_queue
    (task_type, payload, priority, attempts, error_message, scheduled_for, created_at,
     fairness_key, limit_key)
SELECT (ARRAY['web_title', 'web_fetch', 'uppercase', 'summarise'])[mod(n, 4) + 1],
       jsonb_build_object('spreadsheet_id', md5(mod(n, 500)::text)::uuid, 'row', n),
       mod(n, 10), CASE WHEN mod(n, 100) = 0 THEN 1 ELSE 0 END,
       CASE WHEN mod(n, 100) = 0 THEN 'TimeoutError: https://site1.example/page/' || n END,
       CASE WHEN mod(n, 10) = 0 THEN now() - mod(n, 600) * interval '1 second'
            ELSE now() + mod(n, 86400) * interval '1 second' END,
       now() - mod(n, 600) * interval '1 second',
       'tenant-' || CASE WHEN mod(n, 3) = 0 THEN 0 ELSE mod(n, 200) END,
       'site' || mod(n, 10) || '.example'
FROM generate_series(1, %(count)s) AS n

-- name: bench_seed_dashboard_limits
-- Limits as a busy cluster has them: a cap on one operator, a rate per site, one site paused (dashboard pages measurement).
INSERT INTO websurfing_task_limit
    (task_type, limit_key, max_running, rate, period_s, paused_until, pause_reason, source)
SELECT 'web_title', '', 8, NULL, NULL, NULL, NULL, 'cli'
UNION ALL
SELECT 'web_fetch', 'site' || n || '.example', NULL, 60, 60.0,
       CASE WHEN n = 0 THEN now() + interval '10 minutes' END,
       CASE WHEN n = 0 THEN 'HTTP 429: Retry-After 600' END, 'cli'
FROM generate_series(0, 9) AS n

-- name: bench_seed_dashboard_workers
-- Four live workers, each running ten tasks (dashboard pages measurement).
WITH workers AS (
    INSERT INTO websurf.worker (id, hostname, pid, task_types)
    SELECT 'bench-host-' || h || '/' || (1000 + h) || '/dash', 'bench-host-' || h, 1000 + h,
           '{web_title,web_fetch,uppercase,summarise}'
    FROM generate_series(1, 4) AS h
    RETURNING id
)
INSERT INTO websurfing_task_queue (task_type, payload, status, attempts, worker_id, started_at)
SELECT 'web_title', '{}'::jsonb, 'processing', 1, w.id, now() - n * interval '1 second'
FROM workers AS w, generate_series(1, 10) AS n

-- name: bench_vacuum_queue
-- Vacuum and analyse the seeded queue, as autovacuum keeps a live one (dashboard pages measurement).
VACUUM (ANALYZE) websurfing_task_queue

-- name: bench_cancelled_unspent
-- Tasks of one type that ended cancelled without spending an attempt (cancel-latency run).
SELECT count(*)
FROM websurfing_task_queue
WHERE task_type = %(task_type)s AND status = 'cancelled' AND attempts = 0

-- name: bench_paste_column
-- Fill every cell of a column in one UPDATE, as a person's paste does (fairness measurement;
-- the author is named in the same transaction, so the robot tasks carry their key).
UPDATE websurfing_cell
SET content = 'pasted row ' || row_number
WHERE column_id = %(column_id)s

-- name: bench_key_task_latencies
-- Completed tasks of one type and fairness key: created -> completed and created -> started
-- in ms, on the database clock (fairness measurement: the small tenant's edit -> robot
-- answer, and how much of it was the wait for a slot).
SELECT extract(epoch FROM completed_at - created_at) * 1000.0,
       extract(epoch FROM started_at - created_at) * 1000.0
FROM websurfing_task_queue
WHERE task_type = %(task_type)s AND fairness_key = %(key)s AND status = 'completed'
ORDER BY 1

-- name: bench_key_completed_within
-- Tasks of one type and key completed while another key's tasks were in the queue (from
-- the first one's creation to the last one's completion), and that window in seconds
-- (fairness measurement: the big tenant's throughput while the small one is served).
SELECT count(*) FILTER (WHERE t.completed_at BETWEEN w.first_at AND w.last_at),
       extract(epoch FROM w.last_at - w.first_at)::float8
FROM (SELECT min(created_at) AS first_at, max(completed_at) AS last_at
      FROM websurfing_task_queue
      WHERE task_type = %(task_type)s AND fairness_key = %(other_key)s) AS w
LEFT JOIN websurfing_task_queue AS t
  ON t.task_type = %(task_type)s AND t.fairness_key = %(key)s AND t.status = 'completed'
GROUP BY w.first_at, w.last_at

-- name: bench_insert_keyed_noop_tasks
-- Queue %(count)s noop tasks in one statement, spread round-robin over %(keys)s fairness keys
-- (the fairness measurement's no-op throughput with many keys against one).
INSERT INTO websurfing_task_queue (task_type, payload, fairness_key)
SELECT 'noop', jsonb_build_object('n', n), 'bench-key-' || mod(n, %(keys)s)
FROM generate_series(1, %(count)s) AS n
