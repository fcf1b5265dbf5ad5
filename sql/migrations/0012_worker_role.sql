-- The least-privilege role for worker daemons: websurf_worker, NOLOGIN. Give it to the
-- login the workers use (CREATE ROLE websurf_worker_app LOGIN PASSWORD '…' IN ROLE
-- websurf_worker); run `websurf migrate` as the schema owner instead.
--
-- What a worker does, and nothing more: claim, finish, reap and prune tasks (and enqueue
-- follow-ups); write robot audit rows and detach them from pruned tasks; read sheets and
-- write cells; run transformer sessions; keep its registry row; read the applied
-- migrations (its boot check). No DDL: it owns nothing, so it cannot ALTER or DROP, and
-- it gets no CREATE on any schema. It cannot read the auth tables or people's edits.
--
-- Role names belong to the whole server, not to one database: the role is created only
-- where it is missing (several databases on one server, concurrent migrations), and a
-- migrating user that may not create roles skips it with a notice instead of failing;
-- an administrator then creates the role and re-runs these GRANTs (README). Privileges
-- themselves are per database and granted here.
--
-- A later migration that adds a table the worker touches grants it in the same file.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'websurf_worker') THEN
        BEGIN
            CREATE ROLE websurf_worker NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;  -- another database's migration created it at the same moment
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'websurf_worker role not created: % may not create roles;'
                    ' see the README (worker role) to create it and grant its privileges',
                    current_user;
                RETURN;
        END;
    END IF;

    GRANT USAGE ON SCHEMA websurf TO websurf_worker;
    GRANT SELECT ON websurf.schema_migrations TO websurf_worker;
    GRANT SELECT, INSERT, UPDATE, DELETE ON websurf.worker TO websurf_worker;
    GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA websurf TO websurf_worker;

    GRANT SELECT, INSERT, UPDATE, DELETE ON websurfing_task_queue TO websurf_worker;
    GRANT SELECT, INSERT ON websurfing_robot_input_event TO websurf_worker;
    GRANT UPDATE (task_id) ON websurfing_robot_input_event TO websurf_worker;
    GRANT SELECT ON websurfing_spreadsheet, websurfing_column TO websurf_worker;
    GRANT SELECT, INSERT, UPDATE ON websurfing_cell TO websurf_worker;
    GRANT SELECT, INSERT, UPDATE ON websurfing_transformer_session TO websurf_worker;
END;
$$;
