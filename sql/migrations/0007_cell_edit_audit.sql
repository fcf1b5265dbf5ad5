-- Every change to a cell's content leaves exactly one audit row, enforced here so that
-- no client can skip it (SPEC section 7), and a person's edit asks its robots to run in
-- the same transaction.
--
-- Who changed the content is decided per transaction:
-- * a person: the transaction named its author with
--       SET LOCAL websurf.user_id = '<user id>'
--   or  select set_config('websurf.user_id', '<user id>', true)
--   (and optionally websurf.edit_type, default 'manual'). An AFTER trigger writes the
--   websurfing_cell_edit_event row and enqueues the follow-up tasks of the columns
--   fed by the edited one.
-- * a robot: the worker inserted a websurfing_robot_input_event row for this cell in
--   the same transaction (worker/queue.py record_robot_events), which is its audit row.
--   Recognised by that row's xmin being the current transaction's id.
-- * neither: refused, with a message saying how to name the author.
--
-- Which robot fills which column is configured on the column itself: operator_type
-- (the task type to enqueue), source_column_id (the column whose edits feed it) and
-- operator_options (a JSON object merged into each task's payload).

ALTER TABLE websurfing_column
    ADD COLUMN operator_type varchar(100),
    ADD COLUMN source_column_id uuid,
    ADD COLUMN operator_options jsonb,
    ADD CONSTRAINT websurfing_column_source_column_id_websurfing_column_id_fk
        FOREIGN KEY (source_column_id) REFERENCES websurfing_column (id) ON DELETE SET NULL,
    ADD CONSTRAINT column_source_not_self CHECK (source_column_id <> id),
    ADD CONSTRAINT column_operator_options_object
        CHECK (operator_options IS NULL OR jsonb_typeof(operator_options) = 'object');
CREATE INDEX column_source_idx ON websurfing_column (source_column_id);

-- Runs only for a content change that names no author (the triggers' WHEN clauses), so
-- a person's edit never calls it, and a robot's write costs one index probe.
CREATE FUNCTION websurf.cell_content_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- xmin is the 32-bit id of the inserting transaction; pg_current_xact_id() carries
    -- an epoch on top of it. A row inserted by this very transaction (not by one of its
    -- savepoints) has xmin equal to the low 32 bits.
    IF TG_OP = 'UPDATE' AND EXISTS (
        SELECT 1
        FROM websurfing_robot_input_event AS e
        WHERE e.cell_id = NEW.id
          AND e.xmin::text::bigint = pg_current_xact_id()::text::bigint % 4294967296
    ) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'cell edits must name their author: run SET LOCAL websurf.user_id = '
        '''<user id>'' (or select set_config(''websurf.user_id'', ''<user id>'', true)) in '
        'the same transaction'
        USING ERRCODE = 'check_violation',
              CONSTRAINT = 'cell_edit_author',
              TABLE = TG_TABLE_NAME,
              DETAIL = format('cell %s: its content changed but no author was named and no'
                              ' robot_input_event was recorded for it in this transaction',
                              NEW.id),
              HINT = 'Inside the transaction that edits the cell, first run: '
                     'SELECT set_config(''websurf.user_id'', <the user''s id>, true); '
                     'robots write cells through the worker, which records their audit row.';
END;
$$;

-- The probe must be an index lookup even when the statistics say the event table is
-- empty (a fresh database): plpgsql caches the plan for the session, and a cached
-- sequential scan makes a worker's batch of cell writes quadratic (measured: 315 ms
-- instead of 8 ms per 500 cells).
ALTER FUNCTION websurf.cell_content_guard() SET enable_seqscan = off;

CREATE TRIGGER cell_content_guard_insert BEFORE INSERT ON websurfing_cell
    FOR EACH ROW
    WHEN (NEW.content IS NOT NULL
          AND coalesce(current_setting('websurf.user_id', true), '') = '')
    EXECUTE FUNCTION websurf.cell_content_guard();
CREATE TRIGGER cell_content_guard_update BEFORE UPDATE OF content ON websurfing_cell
    FOR EACH ROW
    WHEN (OLD.content IS DISTINCT FROM NEW.content
          AND coalesce(current_setting('websurf.user_id', true), '') = '')
    EXECUTE FUNCTION websurf.cell_content_guard();

-- A person's edit: its audit row, then one task per column fed by the edited column
-- (same spreadsheet, same row; the target cell is created when missing). Priority 8,
-- above the default 5, so that what a person waits for overtakes bulk work.
CREATE FUNCTION websurf.cell_edit_audit() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    old_content text;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        old_content := OLD.content;
    END IF;
    INSERT INTO websurfing_cell_edit_event (cell_id, user_id, old_content, new_content, edit_type)
    VALUES (NEW.id, current_setting('websurf.user_id', true), old_content, NEW.content,
            coalesce(nullif(current_setting('websurf.edit_type', true), ''), 'manual'));

    IF EXISTS (SELECT 1 FROM websurfing_column AS c
               WHERE c.source_column_id = NEW.column_id AND c.operator_type IS NOT NULL) THEN
        INSERT INTO websurfing_cell (spreadsheet_id, column_id, row_number)
        SELECT NEW.spreadsheet_id, c.id, NEW.row_number
        FROM websurfing_column AS c
        WHERE c.source_column_id = NEW.column_id
          AND c.spreadsheet_id = NEW.spreadsheet_id
          AND c.operator_type IS NOT NULL
        ON CONFLICT (spreadsheet_id, column_id, row_number) DO NOTHING;

        INSERT INTO websurfing_task_queue (task_type, payload, priority)
        SELECT c.operator_type,
               coalesce(c.operator_options, '{}'::jsonb) || jsonb_build_object(
                   'cell_id', t.id,
                   'source_cell_id', NEW.id,
                   'input', NEW.content,
                   'spreadsheet_id', NEW.spreadsheet_id,
                   'column_id', c.id,
                   'row_number', NEW.row_number),
               8
        FROM websurfing_column AS c
        JOIN websurfing_cell AS t
          ON t.spreadsheet_id = NEW.spreadsheet_id
         AND t.column_id = c.id
         AND t.row_number = NEW.row_number
        WHERE c.source_column_id = NEW.column_id
          AND c.spreadsheet_id = NEW.spreadsheet_id
          AND c.operator_type IS NOT NULL
        ORDER BY c.position;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER cell_edit_audit_insert AFTER INSERT ON websurfing_cell
    FOR EACH ROW
    WHEN (NEW.content IS NOT NULL AND current_setting('websurf.user_id', true) <> '')
    EXECUTE FUNCTION websurf.cell_edit_audit();
CREATE TRIGGER cell_edit_audit_update AFTER UPDATE OF content ON websurfing_cell
    FOR EACH ROW
    WHEN (OLD.content IS DISTINCT FROM NEW.content
          AND current_setting('websurf.user_id', true) <> '')
    EXECUTE FUNCTION websurf.cell_edit_audit();
