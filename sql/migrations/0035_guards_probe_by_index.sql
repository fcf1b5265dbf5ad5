-- The statement-level guards that meet a statement's rows (a transition table) with a big
-- table probe that table's index once per row, whatever its statistics say (issue 22,
-- "not slower").
--
-- robot_event_guard (0024) looks up the task of each robot row a batch inserts. After a
-- run of 100,000 no-op tasks, `websurf bench --only noop --only cells` recorded audited
-- cells at 2,200 a second in two runs of three instead of 11,000. auto_explain showed
-- why: with the queue's statistics from when it was empty (a TRUNCATE, a fresh table
-- filling fast), the planner read the whole primary key once into a Materialize node
-- and compared every robot row with every task (a join filter, not an index
-- condition): 300 to 400 ms per batch of 500 rows instead of about 4. Statistics lag
-- behind a queue that grows and empties; these guards must not depend on them:
--
-- * robot_event_guard looks each task up in a LATERAL subquery (OFFSET 0 keeps it a
--   lookup per row, as robot_targets does), without sequential scans, hash or merge
--   joins, or materialisation.
-- * cancel_tasks_of_deleted_cells finds the pending tasks of the deleted cells through
--   task_queue_unique_key_idx with one array of keys.
--
-- Not so cell_input_version_guard and cell_delete_audit: they join a statement's old and
-- new rows with each other (two transition tables, no index), where only a hash join
-- keeps a 100,000-row edit linear; their lookups into other tables are already LATERAL
-- per row.
--
-- A transition table is read by its own scan node, which these settings do not touch.
DO $migration$
DECLARE
    home text := (
        SELECT quote_ident(n.nspname)
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE c.oid = 'websurfing_cell'::regclass
    );
BEGIN
    EXECUTE replace($fn$
CREATE OR REPLACE FUNCTION websurf.robot_event_guard() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET jit = off
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET enable_material = off
AS $$
DECLARE
    worker_role boolean;
    bad record;
BEGIN
    IF to_regrole('websurf_worker') IS NOT NULL THEN
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
    LEFT JOIN LATERAL (
        SELECT q.id, q.worker_id, q.started_at, q.xmin, q.payload
        FROM {home}.websurfing_task_queue AS q
        WHERE q.id = n.task_id
        OFFSET 0
    ) AS t ON true
    WHERE t.id IS NULL
       OR t.worker_id IS NULL
       OR t.started_at IS NULL
       OR t.xmin::text::bigint <> pg_current_xact_id()::text::bigint % 4294967296
       -- uuid_or_null(…) IS DISTINCT FROM n.cell_id, the usual spelling compared first
       OR ((t.payload ->> 'cell_id') IS DISTINCT FROM n.cell_id::text
           AND websurf.uuid_or_null(t.payload ->> 'cell_id') IS DISTINCT FROM n.cell_id)
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

CREATE OR REPLACE FUNCTION websurf.cancel_tasks_of_deleted_cells() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
BEGIN
    UPDATE {home}.websurfing_task_queue AS t
    SET status = 'cancelled',
        error_message = 'cancelled: its cell was deleted (with its spreadsheet, column or'
                        ' row) before the task ran',
        updated_at = now()
    WHERE t.status = 'pending'
      AND t.unique_key = ANY(ARRAY(SELECT 'cell:' || d.id::text FROM deleted AS d));
    RETURN NULL;
END;
$$;
$fn$, '{home}', home);

END;
$migration$;
