-- Who may write which audit row, and what a person's change of a cell must leave behind.
--
-- 1. A robot write (websurfing_robot_input_event) is accepted only
--    (a) from the worker's role: current_user is a member of websurf_worker (0012).
--        Superusers are members of every role, so a superuser (the default setup runs
--        the worker as the migrating superuser) can still record robot rows: nothing
--        stops a superuser anyway. Everyone else is refused, the web app's role and a
--        non-superuser table owner included (an owner could still disable the trigger:
--        that is DDL, which no role but the owner's may run). Where websurf_worker does
--        not exist (the migrating user could not create it), only superusers pass.
--    (b) for a task this very transaction ended: the event names a task (task_id) that
--        was claimed (worker_id and started_at set), whose row this transaction has
--        written (its xmin is this transaction's id), and whose payload's cell_id names
--        the event's cell. Why not "status = 'processing'": the worker records its
--        robot rows in the transaction that finishes the task, after the fenced finish
--        (status = 'processing', same worker, same attempt) has already moved it to
--        completed / failed / pending; the reaper likewise records its success = false
--        rows after recovering the task. A task whose claim this transaction ended is
--        exactly a task the transaction held in processing. The check is one statement
--        per INSERT (a statement trigger over the inserted rows), whatever the batch size.
--    Like the cell guard (0007), the task must be written by the top-level transaction,
--    not inside a savepoint (the worker and the reaper do so).
--    Robot rows are append-only: the one change allowed is detaching a row from a pruned
--    task (task_id set to NULL, what the pruner does).
-- 2. A robot's content write (the cell guard, 0007/0013) is excused only by a successful
--    robot row of this transaction for that cell: the reaper's success = false rows, which
--    any recovery writes, no longer excuse a write.
-- 3. A person's change of a cell that has content, other than its content (which 0007
--    audits), must name its author with websurf.user_id (set_config(…, true)) or is
--    refused; the author is recorded in websurfing_cell_position_event, which has no
--    foreign key to the cell and so outlives it:
--    * moving it (spreadsheet_id, column_id or row_number changes): action 'moved', with
--      the old and the new position;
--    * deleting it, directly or through the ON DELETE CASCADE of its column or
--      spreadsheet: action 'deleted', with its last content and position. Deleting a
--      spreadsheet that has cells with content therefore needs an author too, and
--      leaves one row per such cell (one INSERT per deleting statement). The cell's own
--      edit history (cell_edit_event, robot_input_event) still goes with it, as planned.
--    Blank cells (content NULL) move and disappear without a record or an author.
-- 4. The worker's role may update a cell's content only (it never moves cells).
-- 5. The guard and audit functions look tables up in the schema that holds them, never
--    in pg_temp first: with the default search_path, a session's temporary table named
--    websurfing_robot_input_event would otherwise excuse a forged content write, and
--    temporary websurfing_cell_edit_event / _position_event tables would swallow the
--    audit rows of a real edit.

CREATE TABLE websurfing_cell_position_event (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
    cell_id uuid NOT NULL,
    user_id varchar(255) NOT NULL,
    action varchar(20) NOT NULL,
    content text,
    spreadsheet_id uuid NOT NULL,
    column_id uuid NOT NULL,
    row_number integer NOT NULL,
    new_spreadsheet_id uuid,
    new_column_id uuid,
    new_row_number integer,
    created_at timestamp with time zone DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT websurfing_cell_position_event_user_id_websurfing_user_id_fk
        FOREIGN KEY (user_id) REFERENCES websurfing_user (id),
    CONSTRAINT cell_position_event_action_check CHECK (action IN ('moved', 'deleted'))
);
CREATE INDEX cell_position_cell_idx ON websurfing_cell_position_event (cell_id);
CREATE INDEX cell_position_spreadsheet_idx
    ON websurfing_cell_position_event (spreadsheet_id, created_at);
CREATE INDEX cell_position_user_idx ON websurfing_cell_position_event (user_id);

-- 1(a) and 1(b).
CREATE FUNCTION websurf.robot_event_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    worker_role boolean;
    bad record;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'websurf_worker') THEN
        worker_role := pg_has_role(current_user, 'websurf_worker', 'MEMBER');
    ELSE
        worker_role := (SELECT rolsuper FROM pg_roles WHERE rolname = current_user);
    END IF;
    IF NOT coalesce(worker_role, false) THEN
        RAISE EXCEPTION 'only the worker records robot writes: % is not a member of websurf_worker',
            current_user
            USING ERRCODE = 'insufficient_privilege',
                  TABLE = TG_TABLE_NAME,
                  HINT = 'Robot rows are written by websurf workers; a person''s edit names its'
                         ' author with set_config(''websurf.user_id'', <user id>, true).';
    END IF;

    SELECT n.id, n.cell_id, n.task_id INTO bad
    FROM robot_rows AS n
    LEFT JOIN websurfing_task_queue AS t ON t.id = n.task_id
    WHERE t.id IS NULL
       OR t.worker_id IS NULL
       OR t.started_at IS NULL
       OR t.xmin::text::bigint <> pg_current_xact_id()::text::bigint % 4294967296
       OR websurf.uuid_or_null(t.payload ->> 'cell_id') IS DISTINCT FROM n.cell_id
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'a robot row must belong to a task this transaction finished for that cell'
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'robot_event_task',
                  TABLE = TG_TABLE_NAME,
                  DETAIL = format('robot row for cell %s names task %s, which is missing, was'
                                  ' never claimed, was not ended by this transaction, or whose'
                                  ' payload names another cell', bad.cell_id,
                                  coalesce(bad.task_id::text, 'none'));
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER robot_event_guard AFTER INSERT ON websurfing_robot_input_event
    REFERENCING NEW TABLE AS robot_rows
    FOR EACH STATEMENT EXECUTE FUNCTION websurf.robot_event_guard();

CREATE FUNCTION websurf.robot_event_frozen() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'robot rows are append-only; only detaching one from its task is allowed'
        USING ERRCODE = 'check_violation',
              CONSTRAINT = 'robot_event_append_only',
              TABLE = TG_TABLE_NAME,
              DETAIL = format('robot row %s', OLD.id);
END;
$$;

CREATE TRIGGER robot_event_frozen BEFORE UPDATE ON websurfing_robot_input_event
    FOR EACH ROW
    WHEN (NEW.task_id IS NOT NULL
          OR (OLD.id, OLD.cell_id, OLD.operator_type, OLD.input_data, OLD.output_data,
              OLD.processing_time_ms, OLD.success, OLD.error_message, OLD.created_at)
             IS DISTINCT FROM
             (NEW.id, NEW.cell_id, NEW.operator_type, NEW.input_data, NEW.output_data,
              NEW.processing_time_ms, NEW.success, NEW.error_message, NEW.created_at))
    EXECUTE FUNCTION websurf.robot_event_frozen();

-- 2. Same function as in 0013 with `e.success` added.
CREATE OR REPLACE FUNCTION websurf.cell_content_guard() RETURNS trigger
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
BEGIN
    -- xmin is the 32-bit id of the inserting transaction; pg_current_xact_id() carries
    -- an epoch on top of it. A row inserted by this very transaction (not by one of its
    -- savepoints) has xmin equal to the low 32 bits.
    IF TG_OP = 'UPDATE' AND EXISTS (
        SELECT 1
        FROM websurfing_robot_input_event AS e
        WHERE e.cell_id = NEW.id
          AND e.created_at = now()
          AND e.success
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
                              ' successful robot_input_event was recorded for it in this'
                              ' transaction', NEW.id),
              HINT = 'Inside the transaction that edits the cell, first run: '
                     'SELECT set_config(''websurf.user_id'', <the user''s id>, true); '
                     'robots write cells through the worker, which records their audit row.';
END;
$$;

-- 3. The author of a move or a deletion, or the refusal.
CREATE FUNCTION websurf.cell_change_author(what text) RETURNS varchar
LANGUAGE plpgsql AS $$
DECLARE
    author varchar := nullif(current_setting('websurf.user_id', true), '');
BEGIN
    IF author IS NULL THEN
        RAISE EXCEPTION '% a cell with content must name its author: run SELECT set_config('
            '''websurf.user_id'', ''<user id>'', true) in the same transaction', what
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'cell_change_author',
                  TABLE = 'websurfing_cell',
                  HINT = 'Deleting a spreadsheet or a column deletes its cells too.';
    END IF;
    RETURN author;
END;
$$;

CREATE FUNCTION websurf.cell_move_audit() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO websurfing_cell_position_event
        (cell_id, user_id, action, content, spreadsheet_id, column_id, row_number,
         new_spreadsheet_id, new_column_id, new_row_number)
    VALUES (OLD.id, websurf.cell_change_author('moving'), 'moved', OLD.content,
            OLD.spreadsheet_id, OLD.column_id, OLD.row_number,
            NEW.spreadsheet_id, NEW.column_id, NEW.row_number);
    RETURN NEW;
END;
$$;

CREATE TRIGGER cell_move_audit BEFORE UPDATE OF spreadsheet_id, column_id, row_number
    ON websurfing_cell
    FOR EACH ROW
    WHEN (OLD.content IS NOT NULL
          AND (OLD.spreadsheet_id, OLD.column_id, OLD.row_number)
              IS DISTINCT FROM (NEW.spreadsheet_id, NEW.column_id, NEW.row_number))
    EXECUTE FUNCTION websurf.cell_move_audit();

CREATE FUNCTION websurf.cell_delete_audit() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM removed_cells WHERE content IS NOT NULL) THEN
        INSERT INTO websurfing_cell_position_event
            (cell_id, user_id, action, content, spreadsheet_id, column_id, row_number)
        SELECT id, websurf.cell_change_author('deleting'), 'deleted', content,
               spreadsheet_id, column_id, row_number
        FROM removed_cells
        WHERE content IS NOT NULL;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER cell_delete_audit AFTER DELETE ON websurfing_cell
    REFERENCING OLD TABLE AS removed_cells
    FOR EACH STATEMENT EXECUTE FUNCTION websurf.cell_delete_audit();

-- 4. Column privileges: the worker's UPDATE (write_robot_cells) sets content and
-- updated_at only.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'websurf_worker') THEN
        REVOKE UPDATE ON websurfing_cell FROM websurf_worker;
        GRANT UPDATE (content, updated_at) ON websurfing_cell TO websurf_worker;
        GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA websurf TO websurf_worker;
    END IF;
END;
$$;

-- 5. search_path of the guard and audit functions: the tables' schema, then pg_temp last.
DO $$
DECLARE
    home text := (
        SELECT quote_ident(n.nspname)
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE c.oid = 'websurfing_cell'::regclass
    );
    fn text;
BEGIN
    FOREACH fn IN ARRAY ARRAY['websurf.cell_content_guard()', 'websurf.cell_edit_audit()',
                              'websurf.robot_event_guard()', 'websurf.cell_move_audit()',
                              'websurf.cell_delete_audit()', 'websurf.cell_change_author(text)']
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %s, pg_catalog, pg_temp', fn, home);
    END LOOP;
END;
$$;
