-- name: insert_robot_events
-- Record one robot_input_event per finished attempt that has a cell (child loop, same transaction).
INSERT INTO websurfing_robot_input_event
    (cell_id, task_id, operator_type, input_data, output_data, processing_time_ms, success,
     error_message)
SELECT * FROM unnest(%(cell_ids)b::uuid[], %(task_ids)b::uuid[], %(operator_types)b::text[],
                     %(inputs)b::jsonb[], %(outputs)b::jsonb[], %(durations_ms)b::int[],
                     %(successes)b::bool[], %(errors)b::text[])

-- name: write_robot_cells
-- Write operators' new cell contents and tell the web tier on cell_updated (child loop).
UPDATE websurfing_cell AS c
SET content = w.content, updated_at = now()
FROM unnest(%(cell_ids)b::uuid[], %(contents)b::text[]) AS w(cell_id, content)
WHERE c.id = w.cell_id
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
