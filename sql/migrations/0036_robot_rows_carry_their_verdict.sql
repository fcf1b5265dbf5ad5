-- A robot row records what its result wrote, so the cell guards trust the row instead of
-- judging the task again (issue 22, "not slower").
--
-- Rule 1 of 0024 was checked twice for every robot result: once by the worker's
-- insert_judged_robot_events, to record a result that fails it as not written, and again
-- by cell_input_version_guard when the cell was written, through websurf.robot_targets
-- both times (five index probes a result: the task, the cell, its column, the row's
-- source cell and the edit that took the version). That second pass was a fifth of the
-- PostgreSQL time of an audited cell task in `websurf bench`.
--
-- Now the judgement is made once, where it cannot be forged:
--
-- * websurfing_robot_input_event.written_version: the input_version the result is to
--   write to its cell, NULL when it writes nothing (a failure, a superseded or cancelled
--   result, a task that is not a robot task of the cell).
-- * websurf.record_robot_results() is the only way the worker's role sets it: the
--   worker's judged insert, moved into a SECURITY DEFINER function that applies
--   websurf.robot_targets and inserts the rows as its owner (who migrated). The worker's role
--   may insert every other column of a robot row (its recovery rows, success = false),
--   not this one (column privileges), and the web app's role inserts none.
-- * The cell guards accept a robot write when this transaction recorded a successful,
--   not superseded robot row for that cell whose written_version is exactly the cell's
--   new input_version: one probe of robot_input_cell_idx per cell, as before, and no
--   second robot_targets.
--
-- robot_event_guard (the robot row's task was ended by this transaction, for that cell)
-- still checks every robot row, those the function inserts too. Inside the function the
-- current user is its owner, so the guard asks there whether the login that called it
-- is a member of websurf_worker (the owner's own login still is refused: where the web
-- app's login built and owns the tables, it must not record robot writes).
ALTER TABLE websurfing_robot_input_event ADD COLUMN written_version bigint;

DO $migration$
DECLARE
    home text := (
        SELECT quote_ident(n.nspname)
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE c.oid = 'websurfing_cell'::regclass
    );
BEGIN
    EXECUTE replace($fn$
-- Record one robot row per finished attempt whose cell still exists (the arrays are one
-- attempt per index), judged by rule 1: a result whose task is not a robot task of its
-- cell is recorded as not written, one older than what its cell holds (or than another
-- result for that cell in this call) as superseded, an attempt cancelled while it ran
-- as superseded with its reason. Returns each recorded row's task, whether it is to be
-- written, and the input_version to write (the cell guards accept exactly that).
-- The cells are locked first, in id order, so that two transactions recording results
-- for one cell agree on which is newer (and never deadlock on each other).
-- SECURITY DEFINER: it alone sets written_version, which the cell guards trust.
CREATE FUNCTION websurf.record_robot_results(
    cell_ids uuid[], task_ids uuid[], operator_types text[], inputs jsonb[],
    outputs jsonb[], durations_ms integer[], successes boolean[], errors text[],
    writes boolean[], cancelled boolean[]
)
RETURNS TABLE (task_id uuid, writable boolean, input_version bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
BEGIN
    -- EXECUTE: planned for each batch with its arrays' sizes, as the worker's statement
    -- was (a cached generic plan guesses 100 rows a batch).
    RETURN QUERY EXECUTE $q$
    WITH outcome AS (
        SELECT *
        FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) WITH ORDINALITY
             AS o(cell_id, task_id, operator_type, input, output, duration_ms, success,
                  error, writes, cancelled, n)
    ),
    locked AS MATERIALIZED (
        SELECT c.id, c.input_version
        FROM {home}.websurfing_cell AS c
        -- ARRAY(SELECT …) hides the ids' count from the planner, which then always
        -- probes the primary key (seeing 500 ids, it read 100,000 cells whole instead)
        WHERE c.id = ANY(ARRAY(SELECT unnest($1)))
        ORDER BY c.id
        FOR UPDATE
    ),
    targets AS MATERIALIZED (
        SELECT * FROM websurf.robot_targets(
            ARRAY(SELECT o.task_id FROM outcome AS o WHERE o.writes ORDER BY o.n),
            ARRAY(SELECT o.cell_id FROM outcome AS o WHERE o.writes ORDER BY o.n)
        )
    ),
    allowed AS (
        SELECT o.*, r.input_version AS version,
               o.writes AND r.task_id IS NOT NULL AS writable
        FROM outcome AS o
        LEFT JOIN targets AS r ON r.task_id = o.task_id AND r.cell_id = o.cell_id
    ),
    -- Of several results for one cell in this call, the newest input (then the last one).
    newest AS (
        SELECT DISTINCT ON (a.cell_id) a.n
        FROM allowed AS a
        WHERE a.writable
        ORDER BY a.cell_id, a.version DESC, a.n DESC
    ),
    judged AS MATERIALIZED (
        SELECT a.*, gen_random_uuid() AS event_id,
               greatest(l.input_version, max(a.version) FILTER (WHERE a.writable)
                                             OVER (PARTITION BY a.cell_id)) AS newest_version,
               a.writable AND (
                   NOT EXISTS (SELECT 1 FROM newest WHERE newest.n = a.n)
                   OR coalesce(a.version < l.input_version, false)
               ) AS superseded,
               -- stopped while running (0027): its error is the reason (NULL: none was)
               coalesce(a.cancelled, false) AS cancelled_running
        FROM allowed AS a
        JOIN locked AS l ON l.id = a.cell_id
    ),
    verdict AS (
        SELECT j.*, j.writable AND NOT j.superseded AND NOT j.cancelled_running AS writes_cell
        FROM judged AS j
    ),
    recorded AS (
        INSERT INTO {home}.websurfing_robot_input_event
            (id, cell_id, task_id, operator_type, input_data, output_data,
             processing_time_ms, success, error_message, superseded, written_version)
        SELECT v.event_id, v.cell_id, v.task_id, v.operator_type, v.input, v.output,
               v.duration_ms,
               v.success AND (v.writable OR NOT v.writes),
               CASE WHEN v.cancelled_running THEN v.error
                    WHEN v.superseded
                    THEN format('superseded by a newer edit: not written (input_version %s;'
                                ' the cell holds or gets %s)',
                                v.version, coalesce(v.newest_version::text, 'none'))
                    WHEN v.writes AND NOT v.writable
                    THEN 'not written: the task is not a robot task of this cell (its type'
                         ' must be the column''s operator, its payload must name the source'
                         ' cell of the same row and an input_version an edit of that cell'
                         ' took)'
                    ELSE v.error
               END,
               v.superseded OR v.cancelled_running,
               CASE WHEN v.writes_cell THEN v.version END
        FROM verdict AS v
        ORDER BY v.n
        RETURNING id
    )
    SELECT v.task_id, v.writes_cell, v.version
    FROM recorded AS r
    JOIN verdict AS v ON v.event_id = r.id
    $q$
    USING cell_ids, task_ids, operator_types, inputs, outputs, durations_ms, successes,
          errors, writes, cancelled;
END;
$$;

-- Rule 1 per cell (INSERT with an input_version; content changed without an author and
-- input_version kept): this transaction recorded a successful, not superseded robot row
-- for the cell that writes exactly the cell's new input_version.
CREATE OR REPLACE FUNCTION websurf.cell_content_guard() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET enable_seqscan = off
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
BEGIN
    -- xmin is the 32-bit id of the inserting transaction; pg_current_xact_id() carries
    -- an epoch on top of it. A row inserted by this very transaction (not by one of its
    -- savepoints) has xmin equal to the low 32 bits.
    IF TG_OP = 'UPDATE' AND EXISTS (
        SELECT 1
        FROM {home}.websurfing_robot_input_event AS e
        WHERE e.cell_id = NEW.id
          AND e.created_at = now()
          AND e.success
          AND NOT e.superseded
          AND e.written_version = NEW.input_version
          AND e.xmin::text::bigint = pg_current_xact_id()::text::bigint % 4294967296
    ) THEN
        RETURN NEW;
    END IF;
    IF TG_ARGV[0] = 'input_version' THEN
        RAISE EXCEPTION 'a cell''s input_version is written only with a robot''s result'
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'cell_input_version',
                  TABLE = TG_TABLE_NAME,
                  DETAIL = format('cell %s: input_version %s -> %s without a robot result of'
                                  ' a real edit of its source cell in this transaction',
                                  NEW.id, coalesce(OLD.input_version::text, 'none'),
                                  coalesce(NEW.input_version::text, 'none')),
                  HINT = 'Leave input_version out of INSERT and UPDATE statements: the'
                         ' worker sets it when it writes a robot result.';
    END IF;
    RAISE EXCEPTION 'cell edits must name their author: run SET LOCAL websurf.user_id = '
        '''<user id>'' (or select set_config(''websurf.user_id'', ''<user id>'', true)) in '
        'the same transaction'
        USING ERRCODE = 'check_violation',
              CONSTRAINT = 'cell_edit_author',
              TABLE = TG_TABLE_NAME,
              DETAIL = format('cell %s: its content changed but no author was named and no'
                              ' robot result for it was recorded in this transaction by a'
                              ' task of its column''s operator, for a real edit of its'
                              ' source cell', NEW.id),
              HINT = 'Inside the transaction that edits the cell, first run: '
                     'SELECT set_config(''websurf.user_id'', <the user''s id>, true); '
                     'robots write cells through the worker, which records their audit row.';
END;
$$;

-- Rule 1 for input_version changed by an UPDATE, once per statement: every changed cell
-- has a robot row of this transaction that writes exactly its new input_version.
CREATE OR REPLACE FUNCTION websurf.cell_input_version_guard() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    bad record;
BEGIN
    -- The statement's old and new rows meet first, alone (a hash join: a 100,000-row
    -- edit stays linear), then each changed cell is looked up once.
    WITH changed AS MATERIALIZED (
        SELECT n.id, o.input_version AS old_version, n.input_version AS new_version
        FROM changed_cells AS n
        JOIN previous_cells AS o ON o.id = n.id
        WHERE o.input_version IS DISTINCT FROM n.input_version
    )
    SELECT c.* INTO bad
    FROM changed AS c
    -- a LATERAL lookup with a LIMIT: one probe of robot_input_cell_idx per changed cell
    -- (NOT EXISTS became an anti join that read the transaction's robot rows whole)
    LEFT JOIN LATERAL (
        SELECT e.id
        FROM {home}.websurfing_robot_input_event AS e
        WHERE e.cell_id = c.id
          -- `+ interval '0'`: probed by cell (robot_input_cell_idx), never by time,
          -- whose index holds every row of this transaction
          AND e.created_at + interval '0' = now()
          AND e.success
          AND NOT e.superseded
          AND e.written_version = c.new_version
          AND e.xmin::text::bigint = pg_current_xact_id()::text::bigint % 4294967296
        LIMIT 1
    ) AS e ON true
    WHERE e.id IS NULL
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'a cell''s input_version is written only with a robot''s result'
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'cell_input_version',
                  TABLE = TG_TABLE_NAME,
                  DETAIL = format('cell %s: input_version %s -> %s without a robot result of'
                                  ' a real edit of its source cell in this transaction',
                                  bad.id, coalesce(bad.old_version::text, 'none'),
                                  coalesce(bad.new_version::text, 'none')),
                  HINT = 'Leave input_version out of INSERT and UPDATE statements: the'
                         ' worker sets it when it writes a robot result.';
    END IF;
    RETURN NULL;
END;
$$;
$fn$, '{home}', home);

    -- robot_event_guard: the worker's role, or its login through record_robot_results.
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
        worker_role := pg_has_role(current_user, 'websurf_worker', 'MEMBER')
            -- inside websurf.record_robot_results, which runs as its owner: the login
            -- that called it must be the worker's (the owner's own login is not)
            OR (current_user = (
                    SELECT r.rolname
                    FROM pg_proc AS p
                    JOIN pg_namespace AS n ON n.oid = p.pronamespace
                    JOIN pg_roles AS r ON r.oid = p.proowner
                    WHERE n.nspname = 'websurf' AND p.proname = 'record_robot_results')
                AND pg_has_role(session_user, 'websurf_worker', 'MEMBER'));
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
$fn$, '{home}', home);

    REVOKE EXECUTE ON FUNCTION websurf.record_robot_results(
        uuid[], uuid[], text[], jsonb[], jsonb[], integer[], boolean[], text[], boolean[],
        boolean[]) FROM PUBLIC;
    IF to_regrole('websurf_worker') IS NOT NULL THEN
        GRANT EXECUTE ON FUNCTION websurf.record_robot_results(
            uuid[], uuid[], text[], jsonb[], jsonb[], integer[], boolean[], text[],
            boolean[], boolean[]) TO websurf_worker;
        -- every column of a robot row but the verdict, which only the function above sets
        REVOKE INSERT ON websurfing_robot_input_event FROM websurf_worker;
        GRANT INSERT (id, cell_id, task_id, operator_type, input_data, output_data,
                      processing_time_ms, success, error_message, created_at, superseded)
            ON websurfing_robot_input_event TO websurf_worker;
    END IF;
END;
$migration$;
