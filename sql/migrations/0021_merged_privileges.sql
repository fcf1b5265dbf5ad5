-- Privileges and function security where issue 11 (audit guards, websurf_app, 0015-0016),
-- issue 12 (latest edit wins, unique keys, cancel on delete, 0017-0019) and issue 14
-- (refreshing columns, 0020) meet. Each was right on its own; together:
--
-- 1. Fixed search_path, pg_temp last (0015, point 5). 0018 and 0019 redefined or added
--    trigger functions with `SET search_path = pg_catalog, public`: pg_temp, not
--    listed, is then searched FIRST, so a session's temporary websurfing_cell_edit_event
--    swallowed a real edit's audit row again (and it named `public`, not the schema that
--    holds the tables). Both run as the schema owner (SECURITY DEFINER), where a
--    temporary table standing in is worse still.
-- 2. The move and delete audit triggers (0015) run as the schema owner, like the edit
--    trigger (0018) and the cancel trigger (0019): what a trigger writes is decided by
--    the trigger, not by the role that fired it. A role that may only edit cells (issue
--    12's story) can then delete a sheet, naming its author, without USAGE on schema
--    websurf (cell_change_author) or INSERT on the audit tables.
-- 3. So websurf_app no longer needs INSERT on websurfing_cell_edit_event and
--    websurfing_cell_position_event (0016 granted it for the invoker's triggers): it is
--    revoked, and the web app can no longer write an audit row the database did not.
-- 4. The worker's role (0012, narrowed by 0015 to UPDATE (content, updated_at) on cells)
--    writes the input_version of a robot result (0018, record_robot_events), and a
--    refresh batch (0020) takes a number from websurf.cell_input_version.

DO $$
DECLARE
    home text := (
        SELECT quote_ident(n.nspname)
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE c.oid = 'websurfing_cell'::regclass
    );
    fn text;
BEGIN
    -- 1 and 2.
    FOREACH fn IN ARRAY ARRAY['websurf.cell_edit_audit()',
                              'websurf.cancel_tasks_of_deleted_cells()',
                              'websurf.cell_move_audit()', 'websurf.cell_delete_audit()']
    LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = %s, pg_catalog,'
                       ' pg_temp', fn, home);
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', fn);
    END LOOP;

    -- 3.
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'websurf_app') THEN
        REVOKE INSERT ON websurfing_cell_edit_event, websurfing_cell_position_event
            FROM websurf_app;
    END IF;

    -- 4.
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'websurf_worker') THEN
        GRANT UPDATE (input_version) ON websurfing_cell TO websurf_worker;
        GRANT USAGE ON SEQUENCE websurf.cell_input_version TO websurf_worker;
    END IF;
END;
$$;
