-- websurf:no-transaction
-- The cell guard (0007) recognises a robot's write by a robot_input_event row for the
-- cell inserted by the same transaction. Through robot_input_cell_idx (cell_id) that
-- probe visited every robot row the cell ever had, so a cell a robot rewrites often got
-- slower to write each time (about 1 µs per earlier row). Rows inserted by this
-- transaction carry created_at = now() (the column's default is the transaction's
-- start), so an index on (cell_id, created_at) finds exactly them.
--
-- Write cost: one more index entry per robot row. CONCURRENTLY (so outside a
-- transaction): on a production table a plain CREATE INDEX would block the workers'
-- audit writes for the length of the build. Re-runnable: IF NOT EXISTS, OR REPLACE.

CREATE INDEX CONCURRENTLY IF NOT EXISTS robot_input_cell_time_idx
    ON websurfing_robot_input_event (cell_id, created_at);

-- Same function as in 0007 with the created_at condition added. SET enable_seqscan:
-- the probe must be an index lookup even when the statistics say the table is empty
-- (plpgsql caches the plan for the session; see 0007).
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
