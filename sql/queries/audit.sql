-- name: insert_robot_events
-- Record one robot_input_event per attempt that has a cell (reaper: recovered attempts, success = false).
INSERT INTO websurfing_robot_input_event
    (cell_id, task_id, operator_type, input_data, output_data, processing_time_ms, success,
     error_message)
SELECT * FROM unnest(%(cell_ids)b::uuid[], %(task_ids)b::uuid[], %(operator_types)b::text[],
                     %(inputs)b::jsonb[], %(outputs)b::jsonb[], %(durations_ms)b::int[],
                     %(successes)b::bool[], %(errors)b::text[])

-- name: insert_judged_robot_events
-- Record one robot_input_event per finished attempt whose cell still exists, judged by rule 1 (superseded, cancelled while running, not a robot task of its cell: not written); returns each row's task, whether it is to be written, and the input_version to write (queue.record_robot_events, in the finishing transaction).
-- websurf.record_robot_results (migration 0036) does it as the tables' owner: it alone
-- sets the row's written_version, which the cell guards then trust.
SELECT task_id, writable, input_version
FROM websurf.record_robot_results(
    %(cell_ids)b::uuid[], %(task_ids)b::uuid[], %(operator_types)b::text[],
    %(inputs)b::jsonb[], %(outputs)b::jsonb[], %(durations_ms)b::int[],
    %(successes)b::bool[], %(errors)b::text[], %(writes)b::bool[], %(cancelled)b::bool[])

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
