-- The latest edit wins (SPEC section 7): a robot cell ends with the output computed from
-- the latest edit of its source cell, whatever order that cell's tasks finish in (one
-- batch, several processes, several hosts, retries).
--
-- * Every person's edit that asks robots to run takes a number from the sequence
--   websurf.cell_input_version and puts it in each task's payload as input_version.
--   Two edits of one source cell are ordered by that cell's row lock (the second UPDATE
--   waits for the first transaction to commit), and the AFTER trigger that takes the
--   number runs with the row lock held, so a later edit always carries a larger number.
--   (Timestamps cannot do this: now() is the transaction's start, and a transaction
--   that began earlier can edit the cell later.)
-- * websurfing_cell.input_version holds the input_version of the robot output the
--   cell holds. The worker writes a result only if its input_version is not older
--   (worker/queue.py record_robot_events, sql/queries/audit.sql); an older result is
--   still recorded in websurfing_robot_input_event, with superseded = true and the
--   reason in error_message, and the cell keeps the newer output. Of several results
--   for one cell in one batch, only the newest is written.
-- * The tasks of a robot cell carry unique_key 'cell:<target cell id>' (0017): while
--   one is pending, a newer edit replaces its payload instead of queueing another, so a
--   person typing fast queues one page fetch, not twenty.
--
-- Privileges: the edit trigger now runs as the schema owner (SECURITY DEFINER, with a
-- fixed search_path). Coalescing needs INSERT … ON CONFLICT DO UPDATE on the queue, and
-- the version nextval on a sequence in schema websurf; as the invoker, every role that
-- edits cells (the web app's) would need UPDATE on the queue and USAGE on websurf. As
-- the owner, such a role needs neither, nor INSERT on the audit or queue tables: what
-- the trigger writes is decided by the trigger, not by the role that fired it.

CREATE SEQUENCE websurf.cell_input_version AS bigint;

ALTER TABLE websurfing_cell ADD COLUMN input_version bigint;
ALTER TABLE websurfing_robot_input_event
    ADD COLUMN superseded boolean DEFAULT false NOT NULL;

-- Same function as in 0007, with input_version and unique_key, run as its owner.
CREATE OR REPLACE FUNCTION websurf.cell_edit_audit() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    old_content text;
    version bigint;
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

        version := nextval('websurf.cell_input_version');
        INSERT INTO websurfing_task_queue (task_type, payload, priority, unique_key)
        SELECT c.operator_type,
               coalesce(c.operator_options, '{}'::jsonb) || jsonb_build_object(
                   'cell_id', t.id,
                   'source_cell_id', NEW.id,
                   'input', NEW.content,
                   'input_version', version,
                   'spreadsheet_id', NEW.spreadsheet_id,
                   'column_id', c.id,
                   'row_number', NEW.row_number),
               8,
               'cell:' || t.id
        FROM websurfing_column AS c
        JOIN websurfing_cell AS t
          ON t.spreadsheet_id = NEW.spreadsheet_id
         AND t.column_id = c.id
         AND t.row_number = NEW.row_number
        WHERE c.source_column_id = NEW.column_id
          AND c.spreadsheet_id = NEW.spreadsheet_id
          AND c.operator_type IS NOT NULL
        ORDER BY c.position
        ON CONFLICT (unique_key) WHERE status = 'pending' DO UPDATE
        SET task_type = EXCLUDED.task_type,
            payload = EXCLUDED.payload,
            priority = EXCLUDED.priority,
            scheduled_for = EXCLUDED.scheduled_for;
    END IF;
    RETURN NULL;
END;
$$;
