-- name: insert_robot_events
-- Record one robot_input_event per attempt that has a cell (reaper: recovered attempts, success = false).
INSERT INTO websurfing_robot_input_event
    (cell_id, task_id, operator_type, input_data, output_data, processing_time_ms, success,
     error_message)
SELECT * FROM unnest(%(cell_ids)b::uuid[], %(task_ids)b::uuid[], %(operator_types)b::text[],
                     %(inputs)b::jsonb[], %(outputs)b::jsonb[], %(durations_ms)b::int[],
                     %(successes)b::bool[], %(errors)b::text[])

-- name: insert_judged_robot_events
-- Record one robot_input_event per finished attempt whose cell still exists, marking results older than what their cell holds, and attempts cancelled while running, as superseded; returns the recorded rows (queue.record_robot_events, in the finishing transaction).
-- The cells are locked first, in id order, so that two transactions recording results
-- for one cell agree on which is newer (and never deadlock on each other).
WITH outcome AS (
    SELECT *
    FROM unnest(%(cell_ids)b::uuid[], %(task_ids)b::uuid[], %(operator_types)b::text[],
                %(inputs)b::jsonb[], %(outputs)b::jsonb[], %(durations_ms)b::int[],
                %(successes)b::bool[], %(errors)b::text[], %(writes)b::bool[],
                %(versions)b::bigint[], %(cancelled)b::bool[])
         WITH ORDINALITY
         AS o(cell_id, task_id, operator_type, input, output, duration_ms, success, error,
              writes, version, cancelled, n)
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
-- Of several results for one cell in this batch, the newest input (then the last one).
newest AS (
    SELECT DISTINCT ON (cell_id) n
    FROM outcome
    WHERE writes
    ORDER BY cell_id, version DESC NULLS LAST, n DESC
),
judged AS (
    SELECT o.*,
           greatest(l.input_version, max(o.version) FILTER (WHERE o.writes)
                                         OVER (PARTITION BY o.cell_id)) AS newest_version,
           o.writes AND (
               NOT EXISTS (SELECT 1 FROM newest WHERE newest.n = o.n)
               OR coalesce(o.version < l.input_version, false)
           ) AS superseded,
           -- stopped while running (0027): its error is the reason (NULL array: none was)
           coalesce(o.cancelled, false) AS cancelled_running
    FROM outcome AS o
    JOIN locked AS l ON l.id = o.cell_id
)
INSERT INTO websurfing_robot_input_event
    (cell_id, task_id, operator_type, input_data, output_data, processing_time_ms, success,
     error_message, superseded)
SELECT cell_id, task_id, operator_type, input, output, duration_ms, success,
       CASE WHEN cancelled_running THEN error
            WHEN superseded
            THEN format('superseded by a newer edit: not written (input_version %%s;'
                        ' the cell holds or gets %%s)',
                        coalesce(version::text, 'none'), coalesce(newest_version::text, 'none'))
            ELSE error
       END,
       superseded OR cancelled_running
FROM judged
ORDER BY n
RETURNING task_id, superseded

-- name: write_robot_cells
-- Write operators' new cell contents with the input_version they came from, never over a newer one, and tell the web tier on cell_updated (queue.record_robot_events).
UPDATE websurfing_cell AS c
SET content = w.content,
    input_version = coalesce(w.version, c.input_version),
    updated_at = now()
FROM (
    -- One row per cell: an UPDATE … FROM with two rows for one cell applies an
    -- arbitrary one of them (the first, under a nested loop).
    SELECT DISTINCT ON (cell_id) cell_id, content, version
    FROM unnest(%(cell_ids)b::uuid[], %(contents)b::text[], %(versions)b::bigint[])
         WITH ORDINALITY AS u(cell_id, content, version, n)
    ORDER BY cell_id, version DESC NULLS LAST, n DESC
) AS w
-- The redundant = ANY drives the plan through the primary key (ARRAY(SELECT …): see
-- insert_judged_robot_events).
WHERE c.id = ANY(ARRAY(SELECT unnest(%(cell_ids)b::uuid[])))
  AND c.id = w.cell_id
  AND (w.version IS NULL OR c.input_version IS NULL OR w.version >= c.input_version)
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
