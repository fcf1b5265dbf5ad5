-- name: insert_robot_events
-- Record one robot_input_event per attempt that has a cell (reaper: recovered attempts, success = false).
INSERT INTO websurfing_robot_input_event
    (cell_id, task_id, operator_type, input_data, output_data, processing_time_ms, success,
     error_message)
SELECT * FROM unnest(%(cell_ids)b::uuid[], %(task_ids)b::uuid[], %(operator_types)b::text[],
                     %(inputs)b::jsonb[], %(outputs)b::jsonb[], %(durations_ms)b::int[],
                     %(successes)b::bool[], %(errors)b::text[])

-- name: insert_judged_robot_events
-- Record one robot_input_event per finished attempt whose cell still exists, marking results older than what their cell holds, and attempts cancelled while running, as superseded, and results of tasks that are not robot tasks of their cell as not written; returns each row's task, whether it is to be written, and the input_version to write (queue.record_robot_events, in the finishing transaction).
-- The cells are locked first, in id order, so that two transactions recording results
-- for one cell agree on which is newer (and never deadlock on each other). A result is
-- written only for a task websurf.robot_targets accepts (migration 0024: the cell's
-- operator, its source cell's real edit version), the rule the cell guard enforces: a
-- task the web app made up is recorded, unwritten, instead of failing the batch.
WITH outcome AS (
    SELECT *
    FROM unnest(%(cell_ids)b::uuid[], %(task_ids)b::uuid[], %(operator_types)b::text[],
                %(inputs)b::jsonb[], %(outputs)b::jsonb[], %(durations_ms)b::int[],
                %(successes)b::bool[], %(errors)b::text[], %(writes)b::bool[],
                %(cancelled)b::bool[])
         WITH ORDINALITY
         AS o(cell_id, task_id, operator_type, input, output, duration_ms, success, error,
              writes, cancelled, n)
),
locked AS MATERIALIZED (
    SELECT c.id, c.input_version
    FROM websurfing_cell AS c
    -- ARRAY(SELECT …) hides the ids' count from the planner, which then always probes
    -- the primary key: seeing 500 ids, it read a table of 100,000 cells whole instead
    -- (12 ms a batch for what the index does in one or two).
    WHERE c.id = ANY(ARRAY(SELECT unnest(%(cell_ids)b::uuid[])))
    ORDER BY c.id
    FOR UPDATE
),
targets AS MATERIALIZED (
    SELECT * FROM websurf.robot_targets(
        ARRAY(SELECT task_id FROM outcome WHERE writes ORDER BY n),
        ARRAY(SELECT cell_id FROM outcome WHERE writes ORDER BY n)
    )
),
allowed AS (
    SELECT o.*, r.input_version AS version, o.writes AND r.task_id IS NOT NULL AS writable
    FROM outcome AS o
    LEFT JOIN targets AS r ON r.task_id = o.task_id AND r.cell_id = o.cell_id
),
-- Of several results for one cell in this batch, the newest input (then the last one).
newest AS (
    SELECT DISTINCT ON (cell_id) n
    FROM allowed
    WHERE writable
    ORDER BY cell_id, version DESC, n DESC
),
judged AS MATERIALIZED (
    SELECT a.*, gen_random_uuid() AS event_id,
           greatest(l.input_version, max(a.version) FILTER (WHERE a.writable)
                                         OVER (PARTITION BY a.cell_id)) AS newest_version,
           a.writable AND (
               NOT EXISTS (SELECT 1 FROM newest WHERE newest.n = a.n)
               OR coalesce(a.version < l.input_version, false)
           ) AS superseded,
           -- stopped while running (0027): its error is the reason (NULL array: none was)
           coalesce(a.cancelled, false) AS cancelled_running
    FROM allowed AS a
    JOIN locked AS l ON l.id = a.cell_id
),
recorded AS (
    INSERT INTO websurfing_robot_input_event
        (id, cell_id, task_id, operator_type, input_data, output_data, processing_time_ms,
         success, error_message, superseded)
    SELECT event_id, cell_id, task_id, operator_type, input, output, duration_ms,
           success AND (writable OR NOT writes),
           CASE WHEN cancelled_running THEN error
                WHEN superseded
                THEN format('superseded by a newer edit: not written (input_version %%s;'
                            ' the cell holds or gets %%s)',
                            version, coalesce(newest_version::text, 'none'))
                WHEN writes AND NOT writable
                THEN 'not written: the task is not a robot task of this cell (its type must'
                     ' be the column''s operator, its payload must name the source cell of'
                     ' the same row and an input_version an edit of that cell took)'
                ELSE error
           END,
           superseded OR cancelled_running
    FROM judged
    ORDER BY n
    RETURNING id
)
-- writable: to be written (not superseded), with the input_version the cell guard expects.
SELECT j.task_id, j.writable AND NOT j.superseded AND NOT j.cancelled_running AS writable,
       j.version
FROM recorded AS r
JOIN judged AS j ON j.event_id = r.id

-- name: write_robot_cells
-- Write operators' new cell contents with the input_version they came from, never over a newer one, and tell the web tier on cell_updated (queue.record_robot_events).
UPDATE websurfing_cell AS c
SET content = w.content,
    input_version = w.version,
    updated_at = now()
FROM (
    -- One row per cell: an UPDATE … FROM with two rows for one cell applies an
    -- arbitrary one of them (the first, under a nested loop).
    SELECT DISTINCT ON (cell_id) cell_id, content, version
    FROM unnest(%(cell_ids)b::uuid[], %(contents)b::text[], %(versions)b::bigint[])
         WITH ORDINALITY AS u(cell_id, content, version, n)
    ORDER BY cell_id, version DESC, n DESC
) AS w
-- The redundant = ANY drives the plan through the primary key (ARRAY(SELECT …): see
-- insert_judged_robot_events).
WHERE c.id = ANY(ARRAY(SELECT unnest(%(cell_ids)b::uuid[])))
  AND c.id = w.cell_id
  AND (c.input_version IS NULL OR w.version >= c.input_version)
RETURNING pg_notify('cell_updated', json_build_object(
    'spreadsheet_id', c.spreadsheet_id, 'column_id', c.column_id,
    'row_number', c.row_number, 'cell_id', c.id)::text)

-- name: insert_recovery_events
-- One success=false robot row per recovered task whose payload names an existing cell (reaper).
-- The cell id is read with websurf.uuid_or_null and joined to the cell, so a payload
-- that names no cell, a malformed id or a deleted cell just gets no audit row.
INSERT INTO websurfing_robot_input_event
    (cell_id, task_id, operator_type, input_data, success, error_message)
SELECT c.id, t.id, t.task_type, t.payload, false, t.error_message
FROM websurfing_task_queue AS t
JOIN websurfing_cell AS c ON c.id = websurf.uuid_or_null(t.payload ->> 'cell_id')
WHERE t.id = ANY(%(task_ids)s::uuid[])

-- name: cancel_tasks_of_deleted_cells
-- Cancel finished-just-now tasks whose cell was deleted while they ran, instead of failing them on the audit row's foreign key (queue.record_robot_events).
UPDATE websurfing_task_queue
SET status = 'cancelled',
    error_message = 'cancelled: its cell was deleted (with its spreadsheet, column or row)'
                    ' while the task ran; nothing was written',
    updated_at = now()
WHERE id = ANY(%(ids)b::uuid[])
RETURNING id
