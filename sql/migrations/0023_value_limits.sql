-- websurf:no-transaction
-- Limits on the values of every websurf table a role can write (issue 21, "one row from
-- the web app stops all processing"). Before this file one row could stop every worker:
-- a payload nested 2,000 deep (Python's json gives up at about 1,000), attempts =
-- 2147483647 (the claim's attempts + 1 overflowed, failing the whole claim), created_at =
-- 'infinity' (the claim's now() - created_at), a 50 MB payload per row (a claim of 20
-- took 2.2 GB), a schedule every 178000000 years (no Python timedelta holds it), a
-- timestamp psycopg cannot read (before year 1 or after 9999, or infinite: every admin
-- command that showed it failed). Each limit below is a CHECK with its own name, so a
-- refused write says which limit it broke (README, "Hostile and careless input"):
--
-- * JSON a worker reads (task and schedule payloads, a column's operator_options, a
--   transformer session's input and step data): at most 64 levels deep (no value more
--   than 64 objects or arrays down; jsonb_path_exists with a strict `$.**{65}` stops
--   descending at level 65, so even a 5,000-deep value costs little to refuse), and for
--   payloads, options and session inputs at most 1 MiB (1,048,576 bytes) of JSON text.
-- * Timestamps between 1900-01-01 and 9000-01-01 UTC: finite, and readable as Python
--   datetimes in any time zone, with room for a schedule's interval on top.
-- * Task priority -1000..1000; max_attempts 1..1000; attempts 0..max_attempts, and below
--   max_attempts while pending (so the claim's attempts + 1 can never break a limit).
-- * A schedule's interval from 1 second to 10 years; a column's refresh_every at most 10
--   years; a worker's stale_after_s above 0 and at most a day.
-- * Sheets: default sizes at most 1,000 columns and 100,000 rows (websurf sheets show
--   draws that many rows).
--
-- Rows already in a live database that break a rule are repaired, never refused, as 0014
-- does: each constraint is added NOT VALID (a brief lock, no scan; new rows are checked
-- from then on), old rows are repaired, then VALIDATE scans under a lock that lets
-- workers go on. Repairs: numbers and timestamps are clamped into range (a NULL where a
-- value is needed gets the column's default); a pending or processing task whose payload
-- is beyond the limits, or whose attempts are used up, is failed with the reason (its
-- payload replaced by {"payload_removed": <why>, "bytes": <its size>}, keeping a valid
-- cell_id); an over-long unique_key is dropped. No transaction around the file, and each
-- statement is re-runnable.

DO $$
DECLARE
    lo constant text := '''1900-01-01 00:00:00+00''';
    hi constant text := '''9000-01-01 00:00:00+00''';
    item text[];
BEGIN
    FOREACH item SLICE 1 IN ARRAY ARRAY[
        ['websurfing_task_queue', 'task_queue_priority_range',
         'priority IS NOT NULL AND priority BETWEEN -1000 AND 1000'],
        ['websurfing_task_queue', 'task_queue_max_attempts_range',
         'max_attempts IS NOT NULL AND max_attempts BETWEEN 1 AND 1000'],
        ['websurfing_task_queue', 'task_queue_attempts_range',
         'attempts IS NOT NULL AND attempts >= 0 AND attempts <= max_attempts'
         ' AND (attempts < max_attempts OR status <> ''pending'')'],
        ['websurfing_task_queue', 'task_queue_status_not_null', 'status IS NOT NULL'],
        ['websurfing_task_queue', 'task_queue_times_in_range',
         format('scheduled_for IS NOT NULL AND created_at IS NOT NULL AND updated_at IS NOT NULL'
                ' AND scheduled_for BETWEEN %1$s AND %2$s AND created_at BETWEEN %1$s AND %2$s'
                ' AND updated_at BETWEEN %1$s AND %2$s AND started_at BETWEEN %1$s AND %2$s'
                ' AND completed_at BETWEEN %1$s AND %2$s AND failed_at BETWEEN %1$s AND %2$s',
                lo, hi)],
        ['websurfing_task_queue', 'task_queue_payload_size',
         'octet_length(payload::text) <= 1048576'],
        ['websurfing_task_queue', 'task_queue_payload_depth',
         'NOT jsonb_path_exists(payload, ''strict $.**{65}'')'],
        ['websurfing_task_queue', 'task_queue_unique_key_length',
         'octet_length(unique_key) BETWEEN 1 AND 1000'],
        ['websurfing_column', 'column_operator_options_size',
         'octet_length(operator_options::text) <= 1048576'],
        ['websurfing_column', 'column_operator_options_depth',
         'NOT jsonb_path_exists(operator_options, ''strict $.**{65}'')'],
        ['websurfing_column', 'column_refresh_every_maximum',
         'refresh_every <= ''10 years''::interval'],
        ['websurfing_column', 'column_created_at_in_range',
         format('created_at BETWEEN %s AND %s', lo, hi)],
        ['websurfing_cell', 'cell_times_in_range',
         format('created_at BETWEEN %1$s AND %2$s AND updated_at BETWEEN %1$s AND %2$s', lo, hi)],
        ['websurfing_spreadsheet', 'spreadsheet_times_in_range',
         format('created_at BETWEEN %1$s AND %2$s AND updated_at BETWEEN %1$s AND %2$s', lo, hi)],
        ['websurfing_spreadsheet', 'spreadsheet_default_size_range',
         'default_columns BETWEEN 0 AND 1000 AND default_rows BETWEEN 0 AND 100000'],
        ['websurfing_transformer_session', 'transformer_session_times_in_range',
         format('created_at BETWEEN %1$s AND %2$s AND updated_at BETWEEN %1$s AND %2$s'
                ' AND completed_at BETWEEN %1$s AND %2$s AND cancelled_at BETWEEN %1$s AND %2$s',
                lo, hi)],
        ['websurfing_transformer_session', 'transformer_session_input_size',
         'octet_length(initial_input::text) <= 1048576'],
        ['websurfing_transformer_session', 'transformer_session_json_depth',
         'NOT jsonb_path_exists(initial_input, ''strict $.**{65}'')'
         ' AND NOT jsonb_path_exists(step_data, ''strict $.**{65}'')'],
        ['websurfing_transformer_session', 'transformer_session_steps_range',
         'current_step BETWEEN 0 AND 10000 AND total_steps BETWEEN 0 AND 10000'],
        ['websurf.schedule', 'schedule_priority_range', 'priority BETWEEN -1000 AND 1000'],
        ['websurf.schedule', 'schedule_max_attempts_range', 'max_attempts <= 1000'],
        ['websurf.schedule', 'schedule_every_range',
         'every BETWEEN ''1 second''::interval AND ''10 years''::interval'],
        ['websurf.schedule', 'schedule_times_in_range',
         format('next_run_at BETWEEN %1$s AND %2$s AND last_run_at BETWEEN %1$s AND %2$s'
                ' AND last_enqueued_at BETWEEN %1$s AND %2$s'
                ' AND refresh_done_at BETWEEN %1$s AND %2$s'
                ' AND created_at BETWEEN %1$s AND %2$s AND updated_at BETWEEN %1$s AND %2$s',
                lo, hi)],
        ['websurf.schedule', 'schedule_payload_size', 'octet_length(payload::text) <= 1048576'],
        ['websurf.schedule', 'schedule_payload_depth',
         'NOT jsonb_path_exists(payload, ''strict $.**{65}'')'],
        ['websurf.schedule', 'schedule_text_lengths',
         'length(cron) <= 200 AND length(time_zone) <= 100'],
        ['websurf.schedule', 'schedule_counts_range',
         'ticks_run BETWEEN 0 AND 1000000000000000 AND ticks_skipped BETWEEN 0 AND 1000000000000000'
         ' AND refresh_rows BETWEEN 0 AND 1000000000000000'
         ' AND refresh_failed BETWEEN 0 AND 1000000000000000'
         ' AND refresh_after_row BETWEEN 0 AND 1000000'],
        ['websurf.worker', 'worker_stale_after_range', 'stale_after_s > 0 AND stale_after_s <= 86400'],
        ['websurf.worker', 'worker_times_in_range',
         format('started_at BETWEEN %1$s AND %2$s AND last_heartbeat_at BETWEEN %1$s AND %2$s',
                lo, hi)]
    ]
    LOOP
        IF NOT EXISTS (
            SELECT 1 FROM pg_constraint
            WHERE conname = item[2] AND conrelid = item[1]::regclass
        ) THEN
            EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I CHECK (%s) NOT VALID',
                           item[1], item[2], item[3]);
        END IF;
    END LOOP;
END;
$$;

-- Each table is repaired by one UPDATE that mends every limit its rows break: a row
-- updated for one rule is checked against all the new (NOT VALID) rules at once.
-- A timestamp out of range moves to the nearest bound (pg_temp: gone with the session).
-- No SET clause, so that the repair scans inline them (as websurf.bigint_or_null, 0024):
-- their types and operators are named in pg_catalog instead (0024, rule 4).
CREATE OR REPLACE FUNCTION pg_temp.bounded(value pg_catalog.timestamptz)
RETURNS pg_catalog.timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT least(greatest(value, '1900-01-01 00:00:00+00'::pg_catalog.timestamptz),
                 '9000-01-01 00:00:00+00'::pg_catalog.timestamptz)
$$;

CREATE OR REPLACE FUNCTION pg_temp.out_of_range(value pg_catalog.timestamptz)
RETURNS pg_catalog.bool
LANGUAGE sql IMMUTABLE AS $$
    SELECT value OPERATOR(pg_catalog.<) '1900-01-01 00:00:00+00'::pg_catalog.timestamptz
        OR value OPERATOR(pg_catalog.>) '9000-01-01 00:00:00+00'::pg_catalog.timestamptz
$$;

-- The repairs, in one statement: while any limit is still to be validated (a re-run
-- after that scans nothing).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE contype = 'c' AND NOT convalidated) THEN
        RETURN;
    END IF;

    -- Tasks: a payload a worker cannot take, or attempts used up, fail a pending or
    -- processing task with the reason; other values are clamped.
    WITH broken AS (
        SELECT id,
               CASE WHEN octet_length(payload::text) > 1048576
                    THEN 'its payload is larger than 1 MiB'
                    WHEN jsonb_path_exists(payload, 'strict $.**{65}')
                    THEN 'its payload is nested more than 64 levels deep'
               END AS payload_problem,
               least(greatest(coalesce(max_attempts, 3), 1), 1000) AS max_attempts
        FROM websurfing_task_queue
        WHERE octet_length(payload::text) > 1048576
           OR jsonb_path_exists(payload, 'strict $.**{65}')
           OR status IS NULL
           OR priority IS NULL OR priority NOT BETWEEN -1000 AND 1000
           OR max_attempts IS NULL OR max_attempts NOT BETWEEN 1 AND 1000
           OR attempts IS NULL OR attempts < 0 OR attempts > max_attempts
           OR (attempts >= max_attempts AND status = 'pending')
           OR octet_length(unique_key) NOT BETWEEN 1 AND 1000
           OR pg_temp.out_of_range(scheduled_for) IS NOT FALSE
           OR pg_temp.out_of_range(created_at) IS NOT FALSE
           OR pg_temp.out_of_range(updated_at) IS NOT FALSE
           OR pg_temp.out_of_range(started_at) OR pg_temp.out_of_range(completed_at)
           OR pg_temp.out_of_range(failed_at)
    ), judged AS (
        SELECT b.id, b.payload_problem, b.max_attempts,
               least(greatest(coalesce(t.attempts, 0), 0), b.max_attempts) AS attempts,
               CASE WHEN t.status IS NULL THEN 'its status was empty'
                    WHEN t.status NOT IN ('pending', 'processing') THEN NULL
                    WHEN b.payload_problem IS NOT NULL THEN b.payload_problem
                    WHEN coalesce(t.attempts, 0) >= b.max_attempts AND t.status = 'pending'
                    THEN 'its attempts were used up'
               END AS failure
        FROM broken AS b JOIN websurfing_task_queue AS t ON t.id = b.id
    )
    UPDATE websurfing_task_queue AS t
    SET priority = least(greatest(coalesce(t.priority, 5), -1000), 1000),
        max_attempts = j.max_attempts,
        attempts = j.attempts,
        status = CASE WHEN j.failure IS NOT NULL THEN 'failed' ELSE t.status END,
        failed_at = CASE WHEN j.failure IS NOT NULL THEN now() ELSE pg_temp.bounded(t.failed_at) END,
        error_message = CASE WHEN j.failure IS NOT NULL
            THEN format('failed when websurf started limiting task values (migration 0023): %s',
                        j.failure)
            ELSE t.error_message END,
        payload = CASE WHEN j.payload_problem IS NULL THEN t.payload
            ELSE jsonb_strip_nulls(jsonb_build_object(
                'payload_removed', j.payload_problem,
                'bytes', octet_length(t.payload::text),
                'cell_id', websurf.uuid_or_null(t.payload ->> 'cell_id')))
            END,
        unique_key = CASE WHEN octet_length(t.unique_key) BETWEEN 1 AND 1000 THEN t.unique_key END,
        scheduled_for = pg_temp.bounded(coalesce(t.scheduled_for, now())),
        created_at = pg_temp.bounded(coalesce(t.created_at, now())),
        started_at = pg_temp.bounded(t.started_at),
        completed_at = pg_temp.bounded(t.completed_at),
        updated_at = now()
    FROM judged AS j
    WHERE t.id = j.id;

    UPDATE websurfing_column
    SET operator_options = CASE
            WHEN octet_length(operator_options::text) > 1048576
              OR jsonb_path_exists(operator_options, 'strict $.**{65}')
            THEN jsonb_build_object('options_removed',
                                    'larger than 1 MiB or nested more than 64 levels deep')
            ELSE operator_options END,
        refresh_every = least(refresh_every, interval '10 years'),
        created_at = pg_temp.bounded(created_at)
    WHERE octet_length(operator_options::text) > 1048576
       OR jsonb_path_exists(operator_options, 'strict $.**{65}')
       OR refresh_every > interval '10 years'
       OR pg_temp.out_of_range(created_at);

    UPDATE websurfing_cell
    SET created_at = pg_temp.bounded(created_at), updated_at = pg_temp.bounded(updated_at)
    WHERE pg_temp.out_of_range(created_at) OR pg_temp.out_of_range(updated_at);

    UPDATE websurfing_spreadsheet
    SET default_columns = least(greatest(default_columns, 0), 1000),
        default_rows = least(greatest(default_rows, 0), 100000),
        created_at = pg_temp.bounded(created_at), updated_at = pg_temp.bounded(updated_at)
    WHERE default_columns NOT BETWEEN 0 AND 1000 OR default_rows NOT BETWEEN 0 AND 100000
       OR pg_temp.out_of_range(created_at) OR pg_temp.out_of_range(updated_at);

    UPDATE websurfing_transformer_session
    SET initial_input = CASE
            WHEN octet_length(initial_input::text) > 1048576
              OR jsonb_path_exists(initial_input, 'strict $.**{65}')
            THEN jsonb_build_object('input_removed',
                                    'larger than 1 MiB or nested more than 64 levels deep')
            ELSE initial_input END,
        step_data = CASE WHEN jsonb_path_exists(step_data, 'strict $.**{65}')
            THEN jsonb_build_object('steps_removed', 'nested more than 64 levels deep')
            ELSE step_data END,
        current_step = least(greatest(current_step, 0), 10000),
        total_steps = least(greatest(total_steps, 0), 10000),
        created_at = pg_temp.bounded(created_at), updated_at = pg_temp.bounded(updated_at),
        completed_at = pg_temp.bounded(completed_at), cancelled_at = pg_temp.bounded(cancelled_at)
    WHERE octet_length(initial_input::text) > 1048576
       OR jsonb_path_exists(initial_input, 'strict $.**{65}')
       OR jsonb_path_exists(step_data, 'strict $.**{65}')
       OR current_step NOT BETWEEN 0 AND 10000
       OR total_steps NOT BETWEEN 0 AND 10000
       OR pg_temp.out_of_range(created_at) OR pg_temp.out_of_range(updated_at)
       OR pg_temp.out_of_range(completed_at) OR pg_temp.out_of_range(cancelled_at);

    UPDATE websurf.schedule
    SET priority = least(greatest(priority, -1000), 1000),
        max_attempts = least(max_attempts, 1000),
        every = least(greatest(every, interval '1 second'), interval '10 years'),
        payload = CASE
            WHEN octet_length(payload::text) > 1048576 OR jsonb_path_exists(payload, 'strict $.**{65}')
            THEN '{}'::jsonb ELSE payload END,
        -- a schedule whose payload had to go stops until someone looks at it
        paused = paused OR octet_length(payload::text) > 1048576
                 OR jsonb_path_exists(payload, 'strict $.**{65}'),
        cron = left(cron, 200),
        time_zone = CASE WHEN length(time_zone) > 100 THEN 'UTC' ELSE time_zone END,
        ticks_run = least(greatest(ticks_run, 0), 1000000000000000),
        ticks_skipped = least(greatest(ticks_skipped, 0), 1000000000000000),
        refresh_rows = least(greatest(refresh_rows, 0), 1000000000000000),
        refresh_failed = least(greatest(refresh_failed, 0), 1000000000000000),
        refresh_after_row = least(greatest(refresh_after_row, 0), 1000000),
        next_run_at = pg_temp.bounded(next_run_at), last_run_at = pg_temp.bounded(last_run_at),
        last_enqueued_at = pg_temp.bounded(last_enqueued_at),
        refresh_done_at = pg_temp.bounded(refresh_done_at),
        created_at = pg_temp.bounded(created_at), updated_at = pg_temp.bounded(updated_at)
    WHERE priority NOT BETWEEN -1000 AND 1000 OR max_attempts > 1000
       OR every NOT BETWEEN interval '1 second' AND interval '10 years'
       OR octet_length(payload::text) > 1048576 OR jsonb_path_exists(payload, 'strict $.**{65}')
       OR length(cron) > 200 OR length(time_zone) > 100
       OR ticks_run NOT BETWEEN 0 AND 1000000000000000
       OR ticks_skipped NOT BETWEEN 0 AND 1000000000000000
       OR refresh_rows NOT BETWEEN 0 AND 1000000000000000
       OR refresh_failed NOT BETWEEN 0 AND 1000000000000000
       OR refresh_after_row NOT BETWEEN 0 AND 1000000
       OR pg_temp.out_of_range(next_run_at) OR pg_temp.out_of_range(last_run_at)
       OR pg_temp.out_of_range(last_enqueued_at) OR pg_temp.out_of_range(refresh_done_at)
       OR pg_temp.out_of_range(created_at) OR pg_temp.out_of_range(updated_at);

    UPDATE websurf.worker
    SET stale_after_s = CASE WHEN stale_after_s > 0 THEN least(stale_after_s, 86400) ELSE 30 END,
        started_at = pg_temp.bounded(started_at),
        last_heartbeat_at = pg_temp.bounded(last_heartbeat_at)
    WHERE NOT (stale_after_s > 0 AND stale_after_s <= 86400)
       OR pg_temp.out_of_range(started_at) OR pg_temp.out_of_range(last_heartbeat_at);
END;
$$;

-- Every row now keeps the limits: the scans that prove it.
DO $$
DECLARE
    found record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE contype = 'c' AND NOT convalidated) THEN
        RETURN;  -- validated already (a re-run)
    END IF;
    FOR found IN
        SELECT conrelid::regclass AS tbl, conname
        FROM pg_constraint
        WHERE NOT convalidated AND contype = 'c'
          AND conname IN (
              'task_queue_priority_range', 'task_queue_max_attempts_range',
              'task_queue_attempts_range', 'task_queue_status_not_null',
              'task_queue_times_in_range', 'task_queue_payload_size', 'task_queue_payload_depth',
              'task_queue_unique_key_length', 'column_operator_options_size',
              'column_operator_options_depth', 'column_refresh_every_maximum',
              'column_created_at_in_range', 'cell_times_in_range',
              'spreadsheet_times_in_range', 'spreadsheet_default_size_range',
              'transformer_session_times_in_range', 'transformer_session_input_size',
              'transformer_session_json_depth', 'transformer_session_steps_range',
              'schedule_priority_range', 'schedule_max_attempts_range', 'schedule_every_range',
              'schedule_times_in_range', 'schedule_payload_size', 'schedule_payload_depth',
              'schedule_text_lengths', 'schedule_counts_range', 'worker_stale_after_range',
              'worker_times_in_range')
    LOOP
        EXECUTE format('ALTER TABLE %s VALIDATE CONSTRAINT %I', found.tbl, found.conname);
    END LOOP;
END;
$$;
