-- name: insert_spreadsheet
-- Create a spreadsheet row (websurf.worker.app.sheets.create_spreadsheet).
INSERT INTO websurfing_spreadsheet (name, description, owner_id, is_public, default_columns,
                                    default_rows)
VALUES (%(name)s, %(description)s, %(owner_id)s, %(is_public)s, %(default_columns)s,
        %(default_rows)s)
RETURNING id, name, description, owner_id, is_public, default_columns, default_rows, created_at

-- name: get_spreadsheet
-- One spreadsheet by id (sheets API, CLI).
SELECT id, name, description, owner_id, is_public, default_columns, default_rows, created_at
FROM websurfing_spreadsheet
WHERE id = %(id)s

-- name: list_spreadsheets
-- Spreadsheets, newest first, optionally of one owner (websurf sheets list).
SELECT id, name, description, owner_id, is_public, default_columns, default_rows, created_at
FROM websurfing_spreadsheet
WHERE %(owner_id)s::varchar IS NULL OR owner_id = %(owner_id)s
ORDER BY created_at DESC, id
LIMIT %(limit)s

-- name: lock_spreadsheet
-- Serialise column layout changes of one spreadsheet (sheets API, inside its transaction).
SELECT id FROM websurfing_spreadsheet WHERE id = %(id)s FOR UPDATE

-- name: insert_columns
-- Add columns with the given titles at the given positions (create_spreadsheet, add_column).
INSERT INTO websurfing_column (spreadsheet_id, position, title, width)
SELECT %(spreadsheet_id)s, c.position, c.title, COALESCE(c.width, 150)
FROM unnest(%(positions)s::int[], %(titles)s::varchar[], %(widths)s::int[])
     AS c(position, title, width)
RETURNING id

-- name: list_columns
-- A spreadsheet's columns in position order (sheets API).
SELECT id, spreadsheet_id, position, title, width, is_visible, operator_type, source_column_id,
       operator_options
FROM websurfing_column
WHERE spreadsheet_id = %(spreadsheet_id)s
ORDER BY position

-- name: get_column
-- One column by id (sheets API).
SELECT id, spreadsheet_id, position, title, width, is_visible, operator_type, source_column_id,
       operator_options
FROM websurfing_column
WHERE id = %(id)s

-- name: park_column_positions
-- Move a spreadsheet's columns to negative positions, first half of a reorder (sheets API).
UPDATE websurfing_column SET position = -1 - position WHERE spreadsheet_id = %(spreadsheet_id)s

-- name: set_column_positions
-- Give columns their new positions, second half of a reorder (sheets API).
UPDATE websurfing_column AS c
SET position = p.position
FROM unnest(%(ids)s::uuid[], %(positions)s::int[]) AS p(id, position)
WHERE c.id = p.id AND c.spreadsheet_id = %(spreadsheet_id)s

-- name: update_column
-- Rename, resize, hide or show a column; NULL leaves a field as it is (sheets API).
UPDATE websurfing_column
SET title = COALESCE(%(title)s, title),
    width = COALESCE(%(width)s, width),
    is_visible = COALESCE(%(is_visible)s, is_visible)
WHERE id = %(id)s
RETURNING id

-- name: set_column_operator
-- Configure (or with NULLs, clear) the robot that fills a column (sheets API, CLI).
UPDATE websurfing_column
SET operator_type = %(operator_type)s,
    source_column_id = %(source_column_id)s,
    operator_options = %(operator_options)s
WHERE id = %(id)s
RETURNING id

-- name: insert_blank_cells
-- Create the missing empty cells of rows 1..%(rows)s, for all or one column (sheets API).
INSERT INTO websurfing_cell (spreadsheet_id, column_id, row_number)
SELECT c.spreadsheet_id, c.id, r
FROM websurfing_column AS c
CROSS JOIN generate_series(1, %(rows)s) AS r
WHERE c.spreadsheet_id = %(spreadsheet_id)s
  AND (%(column_id)s::uuid IS NULL OR c.id = %(column_id)s)
ON CONFLICT (spreadsheet_id, column_id, row_number) DO NOTHING

-- name: list_cells_in_rows
-- The cells of one page of rows of a spreadsheet (read_sheet).
-- Per column, so each is a range scan of cell_unique_position (spreadsheet, column, row).
SELECT cell.id, cell.column_id, cell.row_number, cell.content, cell.updated_at
FROM websurfing_column AS col
JOIN LATERAL (
    SELECT id, column_id, row_number, content, updated_at
    FROM websurfing_cell
    WHERE spreadsheet_id = col.spreadsheet_id
      AND column_id = col.id
      AND row_number BETWEEN %(first_row)s AND %(last_row)s
) AS cell ON true
WHERE col.spreadsheet_id = %(spreadsheet_id)s

-- name: last_cell_row
-- The highest row number with a cell in a spreadsheet, NULL when none (read_sheet).
-- One backward probe of cell_unique_position per column, however many cells there are.
SELECT max(last.row_number)
FROM websurfing_column AS col
CROSS JOIN LATERAL (
    SELECT row_number
    FROM websurfing_cell
    WHERE spreadsheet_id = col.spreadsheet_id AND column_id = col.id
    ORDER BY row_number DESC
    LIMIT 1
) AS last
WHERE col.spreadsheet_id = %(spreadsheet_id)s

-- name: get_cell
-- One cell by position (sheets API).
SELECT id, spreadsheet_id, column_id, row_number, content, updated_at
FROM websurfing_cell
WHERE spreadsheet_id = %(spreadsheet_id)s AND column_id = %(column_id)s
  AND row_number = %(row_number)s

-- name: get_cell_by_id
-- One cell by id (sheets API).
SELECT id, spreadsheet_id, column_id, row_number, content, updated_at
FROM websurfing_cell
WHERE id = %(id)s

-- name: name_edit_author
-- Name the person editing cells in this transaction, read by the audit trigger (edit_cell).
SELECT set_config('websurf.user_id', %(user_id)s, true),
       set_config('websurf.edit_type', %(edit_type)s, true)

-- name: upsert_cell_content
-- A person's edit of a cell by position, creating the cell if missing (edit_cell).
INSERT INTO websurfing_cell (spreadsheet_id, column_id, row_number, content)
VALUES (%(spreadsheet_id)s, %(column_id)s, %(row_number)s, %(content)s)
ON CONFLICT (spreadsheet_id, column_id, row_number) DO UPDATE SET content = EXCLUDED.content
RETURNING id, spreadsheet_id, column_id, row_number, content, updated_at

-- name: cell_history
-- Every change of one cell, people's (edits, moves, its deletion) and robots', oldest first (cell_history, CLI).
SELECT created_at, 'person' AS kind, user_id AS author, edit_type AS action, old_content,
       new_content, NULL::boolean AS success, NULL::text AS error_message, id
FROM websurfing_cell_edit_event
WHERE cell_id = %(cell_id)s
UNION ALL
SELECT created_at, 'robot', operator_type, 'task ' || task_id::text, NULL, output_data::text,
       success, error_message, id
FROM websurfing_robot_input_event
WHERE cell_id = %(cell_id)s
UNION ALL
SELECT created_at, 'person', user_id, action, content,
       CASE WHEN action = 'moved' THEN content END, NULL, NULL, id
FROM websurfing_cell_position_event
WHERE cell_id = %(cell_id)s
ORDER BY created_at, kind, id

-- name: spreadsheet_audit_trail
-- The latest changes of a spreadsheet's cells, people's and robots', and the cells moved or deleted (audit_trail, demo, CLI).
SELECT * FROM (
    SELECT a.created_at, a.kind, a.author, a.action, a.old_content, a.new_content, a.success,
           a.error_message, col.title::text AS column_title, cell.row_number
    FROM websurfing_cell AS cell
    JOIN websurfing_column AS col ON col.id = cell.column_id
    CROSS JOIN LATERAL (
        SELECT e.created_at, 'person' AS kind, COALESCE(u.email, e.user_id)::text AS author,
               e.edit_type::text AS action, e.old_content, e.new_content,
               NULL::boolean AS success, NULL::text AS error_message
        FROM websurfing_cell_edit_event AS e
        LEFT JOIN websurfing_user AS u ON u.id = e.user_id
        WHERE e.cell_id = cell.id
        UNION ALL
        SELECT r.created_at, 'robot', r.operator_type::text, 'task', NULL, r.output_data::text,
               r.success, r.error_message
        FROM websurfing_robot_input_event AS r
        WHERE r.cell_id = cell.id
    ) AS a
    WHERE cell.spreadsheet_id = %(spreadsheet_id)s
    UNION ALL
    SELECT p.created_at, 'person', COALESCE(u.email, p.user_id)::text, p.action::text, p.content,
           CASE WHEN p.action = 'moved' THEN p.content END, NULL, NULL,
           COALESCE(col.title::text, '(deleted column)'), p.row_number
    FROM websurfing_cell_position_event AS p
    LEFT JOIN websurfing_user AS u ON u.id = p.user_id
    LEFT JOIN websurfing_column AS col ON col.id = p.column_id
    WHERE p.spreadsheet_id = %(spreadsheet_id)s
) AS trail
ORDER BY created_at DESC, kind
LIMIT %(limit)s

-- name: find_user
-- A websurfing_user by id or email (sheets CLI, demo).
SELECT id, name, email FROM websurfing_user WHERE id = %(ref)s OR email = %(ref)s
ORDER BY (id = %(ref)s) DESC
LIMIT 1

-- name: insert_user
-- Create a websurfing_user (demo, `websurf sheets create --create-owner`).
INSERT INTO websurfing_user (id, name, email)
VALUES (%(id)s, %(name)s, %(email)s)
ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name
RETURNING id, name, email

-- name: task_counts_since
-- Tasks created since a time, by status (websurf demo's progress lines).
SELECT status, count(*)::int
FROM websurfing_task_queue
WHERE created_at >= %(since)s
GROUP BY status

-- name: live_workers
-- How many worker processes are registered (websurf demo waits for its worker).
SELECT count(*)::int FROM websurf.worker
