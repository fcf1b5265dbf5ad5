-- The least-privilege role for the web app: websurf_app, NOLOGIN. Give it to the login
-- the web app uses (CREATE ROLE websurf_web LOGIN PASSWORD '…' IN ROLE websurf_app).
--
-- What the web app does, and nothing more:
-- * next-auth: read and write the four auth tables;
-- * spreadsheets, columns and cells: read, create, change, delete. Changing a cell's
--   content, or moving or deleting a cell that has content (deleting its column or
--   spreadsheet included), needs the author named in the same transaction
--   (select set_config('websurf.user_id', <user id>, true)); the database then writes
--   the audit rows in the app's name, which is why it may INSERT (never UPDATE or
--   DELETE) cell_edit_event and cell_position_event rows;
-- * tasks: enqueue them (the edit trigger also does, in the app's name), read them,
--   and cancel pending ones (status and updated_at only);
-- * transformer sessions: start them, read them, answer and cancel them;
-- * read the robots' audit rows and the worker registry (which workers are alive).
-- It cannot write robot rows (websurfing_robot_input_event is read-only to it, and the
-- robot-row guard of 0015 refuses anyone outside websurf_worker), cannot change or
-- erase audit rows, owns nothing (no DDL) and cannot read the applied migrations.
-- Rows the ON DELETE CASCADE of a spreadsheet removes (its cells' edit history and
-- robot rows) are removed by the database, not with the app's privileges.
--
-- Created like websurf_worker (0012): only where missing, skipped with a notice when the
-- migrating user may not create roles (an administrator then creates it and re-runs
-- these GRANTs; README). A later migration that adds a table the app uses grants it in
-- the same file.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'websurf_app') THEN
        BEGIN
            CREATE ROLE websurf_app NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;  -- another database's migration created it at the same moment
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'websurf_app role not created: % may not create roles;'
                    ' see the README (web app role) to create it and grant its privileges',
                    current_user;
                RETURN;
        END;
    END IF;

    GRANT USAGE ON SCHEMA websurf TO websurf_app;
    GRANT SELECT ON websurf.worker TO websurf_app;
    GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA websurf TO websurf_app;

    GRANT SELECT, INSERT, UPDATE, DELETE
        ON websurfing_user, websurfing_account, websurfing_session,
           websurfing_verification_token
        TO websurf_app;
    GRANT SELECT, INSERT, UPDATE, DELETE
        ON websurfing_spreadsheet, websurfing_column, websurfing_cell
        TO websurf_app;
    GRANT SELECT, INSERT ON websurfing_cell_edit_event, websurfing_cell_position_event
        TO websurf_app;
    GRANT SELECT ON websurfing_robot_input_event TO websurf_app;
    GRANT SELECT, INSERT ON websurfing_task_queue TO websurf_app;
    GRANT UPDATE (status, updated_at) ON websurfing_task_queue TO websurf_app;
    GRANT SELECT, INSERT, UPDATE ON websurfing_transformer_session TO websurf_app;
END;
$$;
