-- Trust no row (issue 21): what each role may change, enforced where the rows are.
--
-- 1. A robot writes only what its cell asked for. A cell's content or input_version
--    changes without a named author only for a robot result recorded in this
--    transaction (0007, 0013, 0015) whose task is a robot task OF THAT CELL
--    (websurf.robot_targets): the task's type is the cell's column's operator_type, its
--    payload names that cell (cell_id) and the source cell in the same row of the same
--    sheet (source_cell_id, in the column's source_column_id), and its input_version is
--    the version a real edit of that source cell took (or the version of the robot
--    output that source cell holds, for a column fed by a robot column). The cell then
--    gets exactly that
--    input_version. So no row the web app inserts can steer a robot into a person's
--    cell or another sheet, and no made-up input_version (9e18) can freeze a cell; and
--    input_version changes in no other way (the web app could UPDATE it freely).
--    Every person's edit now takes a version (it did only where robots were fed) and
--    records it on its websurfing_cell_edit_event row; a refresh round (0020) reuses the
--    version of its source cell's content (its latest edit's, or the one of the robot output
--    it holds, whichever is newer) instead of taking a new number.
--    The worker judges its results by the same function (sql/queries/audit.sql), so a
--    task that fails the rule is recorded as not written instead of failing its batch.
-- 2. The queue's outcomes (websurf.task_queue_guard). Roles other than the tables'
--    owner (and superusers) insert tasks only as new pending work: status pending,
--    attempts 0, no worker_id, started_at, completed_at, failed_at or error_message.
--    The web app's role changes a task's status only from pending to cancelled. The
--    worker's role moves pending -> processing (a claim) or cancelled, processing ->
--    completed, failed, pending or cancelled, failed or cancelled -> pending (`websurf
--    tasks retry`), and completed or failed -> cancelled only for a task this
--    transaction finished (its cell was deleted while it ran). Anything else is
--    refused. The rule names what is forbidden: columns it does not mention (other
--    branches add some) pass.
--    The worker's role may not name an author (websurf.user_id): a person's edit is the
--    web app's to make, so a member of websurf_worker that is not a superuser is
--    refused one (websurf.cell_person_edit_guard).
-- 3. Erasure leaves a record or is refused: deleting a blank cell that has edit
--    history needs an author and leaves a 'deleted' position event (blank-then-delete
--    used to erase a history silently; the event's foreign key then also keeps its
--    author from being deleted). A column cannot move to another spreadsheet, and a
--    cell's spreadsheet_id is its column's (websurf.cell_sheet_guard); rows that broke
--    that before are repaired below, each move recorded in the name of the sheet's owner.
-- 4. search_path: every trigger function here and before runs with
--    search_path = pg_catalog, pg_temp and names the tables with their schema. Before,
--    the tables' schema came first (`public, pg_catalog, pg_temp`): where public grants
--    CREATE, a public.current_setting(text, boolean) (or an overload of
--    jsonb_build_object, format, …, which wins over a VARIADIC "any" one) ran inside
--    the SECURITY DEFINER triggers as the schema owner. pg_catalog first is not enough
--    alone (an exact-type overload in a later schema still beats a VARIADIC "any"
--    one), so no schema an application can write is searched at all. The function
--    bodies are written with {home} for the tables' schema and created by a DO block.

-- 1. The version each edit takes, and where to find it.
ALTER TABLE websurfing_cell_edit_event ADD COLUMN input_version bigint;
CREATE INDEX cell_edit_version_idx ON websurfing_cell_edit_event (cell_id, input_version);

DO $migration$
DECLARE
    home text := (
        SELECT quote_ident(n.nspname)
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE c.oid = 'websurfing_cell'::regclass
    );
    body text;
    fn text;
BEGIN
    -- An integral JSON number that fits a bigint, else NULL (never an error).
    body := $fn$
-- No SET clause, so that it is inlined into its callers (and resolved with their
-- fixed search_path), like websurf.uuid_or_null.
CREATE FUNCTION websurf.bigint_or_null(value jsonb) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN jsonb_typeof(value) = 'number'
         AND scale(value::numeric) = 0
         AND value::numeric BETWEEN -9223372036854775808 AND 9223372036854775807
        THEN value::numeric::bigint
    END
$$;

-- Whether a payload's text names the uuid id: websurf.uuid_or_null(value) = id, with the
-- usual spelling (the lower-case text of id) answered by a text comparison first. The
-- regular expression of uuid_or_null cost about 5 us a call; the guards of rule 1 and
-- robot_targets made five such calls per robot result. No SET clause: inlined, as
-- websurf.uuid_or_null.
CREATE FUNCTION websurf.names_uuid(value text, id uuid) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT value = id::text OR websurf.uuid_or_null(value) = id
$$;

-- Of the given tasks (each with the cell it is to write, cell_ids[i] for task_ids[i]),
-- those that are robot tasks of that cell, which their payload names, with that cell
-- and the input_version its write must carry (rule 1; the cell guard and
-- the worker's insert_judged_robot_events). SECURITY DEFINER: the worker's role may not
-- read people's edits (0012); this tells only whether a task's version is real.
CREATE FUNCTION websurf.robot_targets(task_ids uuid[], cell_ids uuid[])
RETURNS TABLE (task_id uuid, cell_id uuid, input_version bigint)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- One primary-key or index probe per task and table, whatever the statistics say:
-- the cell guard calls this once per cell written, the worker once per batch, and a
-- hash join over a freshly filled sheet read it whole each time (a batch of 2,000
-- robot results took 40 s). plpgsql, not sql: its plan is cached for the session
-- instead of made again at each call.
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT t.id, c.id, websurf.bigint_or_null(t.payload -> 'input_version')
    FROM unnest(task_ids, cell_ids) AS i(id, cell_id)
    -- OFFSET 0 keeps each lookup a probe of one index by this task's values: joined flat,
    -- on a freshly filled sheet the planner read a column's cells whole and filtered
    -- them for each task (2 s a batch), or probed the source cell by sheet and row only.
    CROSS JOIN LATERAL (
        SELECT t.id, t.task_type, t.payload
        FROM {home}.websurfing_task_queue AS t
        WHERE t.id = i.id
        OFFSET 0
    ) AS t
    CROSS JOIN LATERAL (
        SELECT c.id, c.column_id, c.spreadsheet_id, c.row_number
        FROM {home}.websurfing_cell AS c
        WHERE c.id = i.cell_id
        OFFSET 0
    ) AS c
    JOIN {home}.websurfing_column AS k
      ON k.id = c.column_id
     AND k.spreadsheet_id = c.spreadsheet_id
     AND k.operator_type = t.task_type
    -- the source cell of the row, by its place, then checked against the payload's name
    CROSS JOIN LATERAL (
        SELECT s.id, s.input_version
        FROM {home}.websurfing_cell AS s
        WHERE s.spreadsheet_id = c.spreadsheet_id
          AND s.column_id = k.source_column_id
          AND s.row_number = c.row_number
        OFFSET 0
    ) AS s
    WHERE websurf.names_uuid(t.payload ->> 'cell_id', c.id)
      AND websurf.names_uuid(t.payload ->> 'source_cell_id', s.id)
      AND (
        -- a person's edit of the source cell took it
        EXISTS (
            SELECT 1
            FROM {home}.websurfing_cell_edit_event AS v
            WHERE v.cell_id = s.id
              AND v.input_version = websurf.bigint_or_null(t.payload -> 'input_version')
        )
        -- or the source cell holds a robot's output of it (a refresh of a column fed
        -- by another robot column; that write passed this same rule)
        OR s.input_version = websurf.bigint_or_null(t.payload -> 'input_version')
    );
END;
$$;

-- The version of a cell's content, for a refresh of the robot columns it feeds: its
-- latest edit's, or the one of the robot output it holds when that is newer (SECURITY
-- DEFINER for the worker's role, as robot_targets).
CREATE FUNCTION websurf.content_version(cell_id uuid) RETURNS bigint
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    -- plpgsql: the plan is cached for the session (a refresh calls this once per row)
    RETURN greatest(
        (SELECT c.input_version FROM {home}.websurfing_cell AS c
         WHERE c.id = content_version.cell_id),
        (SELECT max(e.input_version) FROM {home}.websurfing_cell_edit_event AS e
         WHERE e.cell_id = content_version.cell_id));
END;
$$;

-- Rule 1 for content without an author (TG_ARGV[0] = 'content') and for input_version
-- (TG_ARGV[0] = 'input_version', whoever writes it).
-- SECURITY DEFINER: it reads people's edits, which the worker's role may not (0012).
CREATE OR REPLACE FUNCTION websurf.cell_content_guard() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET enable_seqscan = off
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- xmin is the 32-bit id of the inserting transaction; pg_current_xact_id() carries
    -- an epoch on top of it. A row inserted by this very transaction (not by one of its
    -- savepoints) has xmin equal to the low 32 bits.
    -- The rule of websurf.robot_targets, written out for the one cell: called once per
    -- written cell, that function (its SET clauses, its result set) cost 40% of the
    -- audited cell throughput of `websurf bench`. The robot row's task is one this
    -- transaction ended (robot_event_guard); here it must also be a robot task of
    -- this cell, and the cell must get exactly its input_version.
    IF TG_OP = 'UPDATE' AND EXISTS (
        SELECT 1
        FROM {home}.websurfing_robot_input_event AS e
        JOIN {home}.websurfing_task_queue AS t ON t.id = e.task_id
        JOIN {home}.websurfing_column AS k ON k.id = NEW.column_id
        CROSS JOIN LATERAL (  -- the row's source cell, by its place (robot_targets)
            SELECT s.id, s.input_version
            FROM {home}.websurfing_cell AS s
            WHERE s.spreadsheet_id = NEW.spreadsheet_id
              AND s.column_id = k.source_column_id
              AND s.row_number = NEW.row_number
            OFFSET 0
        ) AS s
        WHERE e.cell_id = NEW.id
          AND e.created_at = now()
          AND e.success
          AND NOT e.superseded
          AND e.xmin::text::bigint = pg_current_xact_id()::text::bigint % 4294967296
          AND websurf.names_uuid(t.payload ->> 'cell_id', NEW.id)
          AND websurf.names_uuid(t.payload ->> 'source_cell_id', s.id)
          AND k.spreadsheet_id = NEW.spreadsheet_id
          AND k.operator_type = t.task_type
          AND websurf.bigint_or_null(t.payload -> 'input_version') = NEW.input_version
          AND (s.input_version = NEW.input_version
               OR EXISTS (SELECT 1 FROM {home}.websurfing_cell_edit_event AS v
                          WHERE v.cell_id = s.id AND v.input_version = NEW.input_version))
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

-- Rule 1 for input_version changed by an UPDATE, once per statement: the rule of
-- websurf.robot_targets applied to the robot rows this transaction recorded for the
-- changed cells, in one call. Per row (websurf.cell_content_guard, as for INSERT) it cost
-- about 50 us a cell written, the larger part of the audited cell throughput's drop in
-- `websurf bench`. An AFTER trigger: it sees each cell's final values, and its error
-- undoes the whole statement. SECURITY DEFINER as cell_content_guard.
CREATE FUNCTION websurf.cell_input_version_guard() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bad record;
BEGIN
    WITH changed AS MATERIALIZED (
        SELECT n.id, o.input_version AS old_version, n.input_version AS new_version
        FROM changed_cells AS n
        JOIN previous_cells AS o ON o.id = n.id
        WHERE o.input_version IS DISTINCT FROM n.input_version
    ),
    -- the robot rows of this transaction for those cells (robot_event_guard checked
    -- that their tasks were ended by it for that cell)
    robot AS MATERIALIZED (
        SELECT e.task_id, e.cell_id
        FROM changed AS c
        CROSS JOIN LATERAL (
            SELECT e.task_id, e.cell_id
            FROM {home}.websurfing_robot_input_event AS e
            WHERE e.cell_id = c.id
              -- `+ interval '0'`: probed by cell (robot_input_cell_idx), never by time,
              -- whose index holds every row of this transaction (one probe a cell read
              -- them all)
              AND e.created_at + interval '0' = now()
              AND e.success
              AND NOT e.superseded
              AND e.xmin::text::bigint = pg_current_xact_id()::text::bigint % 4294967296
            OFFSET 0
        ) AS e
    ),
    allowed AS MATERIALIZED (
        SELECT a.cell_id, a.input_version
        FROM websurf.robot_targets(ARRAY(SELECT task_id FROM robot ORDER BY task_id, cell_id),
                                   ARRAY(SELECT cell_id FROM robot ORDER BY task_id, cell_id))
             AS a
    ),
    -- EXCEPT, hashed: a NOT EXISTS was planned as a nested loop over both lists. (No
    -- input_version robot_targets returns is NULL, so NULLs never match here.)
    refused AS (
        SELECT id, new_version FROM changed
        EXCEPT
        SELECT cell_id, input_version FROM allowed
    )
    SELECT c.* INTO bad
    FROM changed AS c
    JOIN refused AS r ON r.id = c.id
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

-- 0018's edit trigger: every edit now takes a version and records it on its audit row.
CREATE OR REPLACE FUNCTION websurf.cell_edit_audit() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    old_content text;
    version bigint := nextval('websurf.cell_input_version');
BEGIN
    IF TG_OP = 'UPDATE' THEN
        old_content := OLD.content;
    END IF;
    INSERT INTO {home}.websurfing_cell_edit_event
        (cell_id, user_id, old_content, new_content, edit_type, input_version)
    VALUES (NEW.id, current_setting('websurf.user_id', true), old_content, NEW.content,
            coalesce(nullif(current_setting('websurf.edit_type', true), ''), 'manual'),
            version);

    IF EXISTS (SELECT 1 FROM {home}.websurfing_column AS c
               WHERE c.source_column_id = NEW.column_id AND c.operator_type IS NOT NULL) THEN
        INSERT INTO {home}.websurfing_cell (spreadsheet_id, column_id, row_number)
        SELECT NEW.spreadsheet_id, c.id, NEW.row_number
        FROM {home}.websurfing_column AS c
        WHERE c.source_column_id = NEW.column_id
          AND c.spreadsheet_id = NEW.spreadsheet_id
          AND c.operator_type IS NOT NULL
        ON CONFLICT (spreadsheet_id, column_id, row_number) DO NOTHING;

        INSERT INTO {home}.websurfing_task_queue (task_type, payload, priority, unique_key)
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
        FROM {home}.websurfing_column AS c
        JOIN {home}.websurfing_cell AS t
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

-- Rule 2, the worker's half: no person's edit from the worker's role.
CREATE FUNCTION websurf.cell_person_edit_guard() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF to_regrole('websurf_worker') IS NOT NULL
       AND pg_has_role(current_user, 'websurf_worker', 'MEMBER')
       AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RAISE EXCEPTION 'the worker''s role cannot make a person''s edit: % named author %',
            current_user, current_setting('websurf.user_id', true)
            USING ERRCODE = 'insufficient_privilege',
                  TABLE = TG_TABLE_NAME,
                  HINT = 'People edit cells through the web app; robots write through the'
                         ' worker, without websurf.user_id.';
    END IF;
    RETURN NEW;
END;
$$;

-- Rule 2: what a role other than the owner may do to a task.
CREATE FUNCTION websurf.task_queue_guard() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    change text;
BEGIN
    -- Superuser sessions never get here (the trigger's WHEN clause). The owner check
    -- (a catalog query) comes last: a worker's claims and finishes pass without it.
    IF TG_OP = 'INSERT' THEN
        IF (NEW.status IS DISTINCT FROM 'pending' OR NEW.attempts IS DISTINCT FROM 0
            OR num_nonnulls(NEW.worker_id, NEW.started_at, NEW.completed_at, NEW.failed_at,
                            NEW.error_message) > 0)
           AND NOT pg_has_role(current_user,
                               (SELECT relowner FROM pg_class WHERE oid = TG_RELID),
                               'USAGE') THEN
            RAISE EXCEPTION 'a new task must be plain pending work'
                USING ERRCODE = 'check_violation',
                      CONSTRAINT = 'task_queue_insert',
                      TABLE = TG_TABLE_NAME,
                      DETAIL = format('%s inserted a task with status %s, attempts %s and'
                                      ' %s of worker_id, started_at, completed_at, failed_at,'
                                      ' error_message set', current_user,
                                      coalesce(NEW.status, 'NULL'),
                                      coalesce(NEW.attempts::text, 'NULL'),
                                      num_nonnulls(NEW.worker_id, NEW.started_at,
                                                   NEW.completed_at, NEW.failed_at,
                                                   NEW.error_message)),
                      HINT = 'Insert task_type and payload (and priority, max_attempts,'
                             ' scheduled_for, unique_key); the workers set the rest.';
        END IF;
        RETURN NEW;
    END IF;

    change := OLD.status || ' -> ' || NEW.status;
    IF to_regrole('websurf_worker') IS NOT NULL
       AND pg_has_role(current_user, 'websurf_worker', 'MEMBER') THEN
        IF OLD.status IS NOT DISTINCT FROM NEW.status
           OR change IN ('pending -> processing', 'pending -> cancelled',
                         'processing -> completed', 'processing -> failed',
                         'processing -> pending', 'processing -> cancelled',
                         'failed -> pending', 'cancelled -> pending')
           OR (change IN ('completed -> cancelled', 'failed -> cancelled') AND EXISTS (
                   SELECT 1 FROM {home}.websurfing_task_queue AS t
                   WHERE t.id = OLD.id
                     AND t.xmin::text::bigint
                         = pg_current_xact_id()::text::bigint % 4294967296)) THEN
            RETURN NEW;
        END IF;
    ELSIF (OLD.status IS NOT DISTINCT FROM NEW.status OR change = 'pending -> cancelled')
          AND (OLD.attempts, OLD.worker_id, OLD.started_at, OLD.completed_at, OLD.failed_at,
               OLD.error_message)
              IS NOT DISTINCT FROM
              (NEW.attempts, NEW.worker_id, NEW.started_at, NEW.completed_at, NEW.failed_at,
               NEW.error_message) THEN
        RETURN NEW;
    END IF;
    IF pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID),
                   'USAGE') THEN
        RETURN NEW;  -- the schema owner, and the SECURITY DEFINER triggers that run as it
    END IF;
    RAISE EXCEPTION 'a task''s outcome is the workers'' to decide, along its life: %'
                    ' may not change %', current_user,
                    coalesce(change, 'its status to or from NULL')
        USING ERRCODE = 'insufficient_privilege',
              TABLE = TG_TABLE_NAME,
              DETAIL = format('task %s', OLD.id),
              HINT = 'The web app enqueues tasks and cancels pending ones (UPDATE … SET'
                     ' status = ''cancelled'' WHERE status = ''pending'').';
END;
$$;

-- Rule 3: a blank cell with edit history is deleted with an author, and leaves a record.
CREATE FUNCTION websurf.cell_blank_delete_audit() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM {home}.websurfing_cell_edit_event AS e WHERE e.cell_id = OLD.id)
    THEN
        INSERT INTO {home}.websurfing_cell_position_event
            (cell_id, user_id, action, content, spreadsheet_id, column_id, row_number)
        VALUES (OLD.id, websurf.cell_change_author('deleting'), 'deleted', NULL,
                OLD.spreadsheet_id, OLD.column_id, OLD.row_number);
    END IF;
    RETURN OLD;
END;
$$;

-- Rule 3: a cell lives in its column's spreadsheet; a column stays in its own.
CREATE FUNCTION websurf.cell_sheet_guard() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_TABLE_NAME = 'websurfing_column' THEN
        RAISE EXCEPTION 'a column cannot move to another spreadsheet'
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'column_spreadsheet_fixed',
                  TABLE = TG_TABLE_NAME,
                  DETAIL = format('column %s: spreadsheet %s -> %s', OLD.id,
                                  OLD.spreadsheet_id, NEW.spreadsheet_id),
                  HINT = 'Create a column in the other spreadsheet and copy the cells'
                         ' there, naming their author.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM {home}.websurfing_column AS k
                   WHERE k.id = NEW.column_id AND k.spreadsheet_id = NEW.spreadsheet_id) THEN
        RAISE EXCEPTION 'a cell belongs to its column''s spreadsheet'
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'cell_column_spreadsheet',
                  TABLE = TG_TABLE_NAME,
                  DETAIL = format('cell %s: column %s is not in spreadsheet %s', NEW.id,
                                  NEW.column_id, NEW.spreadsheet_id);
    END IF;
    RETURN NEW;
END;
$$;

-- 0017 and 0019, with the queue named by its schema (rule 4).
CREATE OR REPLACE FUNCTION websurf.task_queue_release_unique_key() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF OLD.status = 'processing' AND EXISTS (
        SELECT 1
        FROM {home}.websurfing_task_queue AS q
        WHERE q.unique_key = NEW.unique_key AND q.status = 'pending' AND q.id <> NEW.id
    ) THEN
        NEW.status := 'cancelled';
        NEW.error_message := format(
            'superseded: a newer task with unique key %s is pending (this attempt: %s)',
            NEW.unique_key, coalesce(NEW.error_message, 'handed back'));
    ELSE
        NEW.unique_key := NULL;
    END IF;
    RETURN NEW;
END;
$$;

CREATE OR REPLACE FUNCTION websurf.cancel_tasks_of_deleted_cells() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE {home}.websurfing_task_queue AS t
    SET status = 'cancelled',
        error_message = 'cancelled: its cell was deleted (with its spreadsheet, column or'
                        ' row) before the task ran',
        updated_at = now()
    FROM deleted AS d
    WHERE t.status = 'pending'
      AND t.unique_key = 'cell:' || d.id::text;
    RETURN NULL;
END;
$$;

-- 0015, with the tables named by their schema (rule 4).
CREATE OR REPLACE FUNCTION websurf.robot_event_guard() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
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
    LEFT JOIN {home}.websurfing_task_queue AS t ON t.id = n.task_id
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

CREATE OR REPLACE FUNCTION websurf.cell_move_audit() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO {home}.websurfing_cell_position_event
        (cell_id, user_id, action, content, spreadsheet_id, column_id, row_number,
         new_spreadsheet_id, new_column_id, new_row_number)
    VALUES (OLD.id, websurf.cell_change_author('moving'), 'moved', OLD.content,
            OLD.spreadsheet_id, OLD.column_id, OLD.row_number,
            NEW.spreadsheet_id, NEW.column_id, NEW.row_number);
    RETURN NEW;
END;
$$;

CREATE OR REPLACE FUNCTION websurf.cell_delete_audit() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM removed_cells WHERE content IS NOT NULL) THEN
        INSERT INTO {home}.websurfing_cell_position_event
            (cell_id, user_id, action, content, spreadsheet_id, column_id, row_number)
        SELECT id, websurf.cell_change_author('deleting'), 'deleted', content,
               spreadsheet_id, column_id, row_number
        FROM removed_cells
        WHERE content IS NOT NULL;
    END IF;
    RETURN NULL;
END;
$$;
$fn$;
    EXECUTE replace(body, '{home}', home);

    -- Rule 4 for the functions that name no table: the same fixed search_path.
    FOREACH fn IN ARRAY ARRAY['websurf.touch_updated_at()', 'websurf.notify_new_task()',
                              'websurf.robot_event_frozen()',
                              'websurf.cell_change_author(text)']
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp', fn);
    END LOOP;

    -- Run as the owner only when a trigger calls them.
    FOREACH fn IN ARRAY ARRAY['websurf.cell_blank_delete_audit()']
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', fn);
    END LOOP;
END;
$migration$;

-- Rule 1, rows from before: the latest edit of each cell gets the newest version a task
-- queued from it carries (so results of tasks already queued are still written), else a
-- new one. Earlier edits keep none: no new result can come from them.
WITH queued AS (
    SELECT websurf.uuid_or_null(payload ->> 'source_cell_id') AS cell_id,
           max(websurf.bigint_or_null(payload -> 'input_version')) AS version
    FROM websurfing_task_queue
    WHERE payload ? 'input_version'
    GROUP BY 1
), latest AS (
    SELECT DISTINCT ON (cell_id) id, cell_id
    FROM websurfing_cell_edit_event
    ORDER BY cell_id, created_at DESC, id DESC
)
UPDATE websurfing_cell_edit_event AS e
SET input_version = coalesce(
    (SELECT q.version FROM queued AS q
     WHERE q.cell_id = latest.cell_id
       AND q.version BETWEEN 1 AND (SELECT last_value FROM websurf.cell_input_version)),
    nextval('websurf.cell_input_version'))
FROM latest
WHERE e.id = latest.id;

-- The triggers of rules 1-3. Trigger names decide the order of BEFORE triggers on one
-- table (alphabetical): task_queue_guard sees a change before
-- task_queue_release_unique_key and task_queue_touch_updated_at add theirs.
DROP TRIGGER cell_content_guard_update ON websurfing_cell;
CREATE TRIGGER cell_content_guard_update BEFORE UPDATE OF content ON websurfing_cell
    FOR EACH ROW
    WHEN (OLD.content IS DISTINCT FROM NEW.content
          AND OLD.input_version IS NOT DISTINCT FROM NEW.input_version
          AND coalesce(current_setting('websurf.user_id', true), '') = '')
    EXECUTE FUNCTION websurf.cell_content_guard('content');
CREATE TRIGGER cell_input_version_guard_insert BEFORE INSERT ON websurfing_cell
    FOR EACH ROW
    WHEN (NEW.input_version IS NOT NULL)
    EXECUTE FUNCTION websurf.cell_content_guard('input_version');
-- Transition tables allow no column list: every UPDATE of cells gives one call.
CREATE TRIGGER cell_input_version_guard_update AFTER UPDATE ON websurfing_cell
    REFERENCING OLD TABLE AS previous_cells NEW TABLE AS changed_cells
    FOR EACH STATEMENT
    EXECUTE FUNCTION websurf.cell_input_version_guard();
CREATE TRIGGER cell_person_edit_guard BEFORE INSERT OR UPDATE OF content ON websurfing_cell
    FOR EACH ROW
    WHEN (current_setting('websurf.user_id', true) <> ''
          AND current_setting('is_superuser') <> 'on')
    EXECUTE FUNCTION websurf.cell_person_edit_guard();
CREATE TRIGGER cell_blank_delete_audit BEFORE DELETE ON websurfing_cell
    FOR EACH ROW
    WHEN (OLD.content IS NULL)
    EXECUTE FUNCTION websurf.cell_blank_delete_audit();
CREATE TRIGGER cell_sheet_guard BEFORE INSERT OR UPDATE OF spreadsheet_id, column_id
    ON websurfing_cell
    FOR EACH ROW
    EXECUTE FUNCTION websurf.cell_sheet_guard();
CREATE TRIGGER column_sheet_guard BEFORE UPDATE OF spreadsheet_id ON websurfing_column
    FOR EACH ROW
    WHEN (OLD.spreadsheet_id IS DISTINCT FROM NEW.spreadsheet_id)
    EXECUTE FUNCTION websurf.cell_sheet_guard();
-- The queue guard's WHEN clauses keep the function out of the hot path: superuser
-- sessions (is_superuser follows SET ROLE), plain pending inserts, and a worker's
-- claims, finishes, hand-backs and retries never call it (each call cost about 20 µs
-- a row for a least-privilege worker); everything else gets the full rule.
DO $$
DECLARE
    worker_moves text := 'false';
BEGIN
    IF to_regrole('websurf_worker') IS NOT NULL THEN
        worker_moves := $when$pg_has_role('websurf_worker', 'MEMBER')
              AND (OLD.status = NEW.status
                   OR (OLD.status = 'pending' AND NEW.status IN ('processing', 'cancelled'))
                   OR (OLD.status = 'processing'
                       AND NEW.status IN ('completed', 'failed', 'pending', 'cancelled'))
                   OR (OLD.status IN ('failed', 'cancelled') AND NEW.status = 'pending'))$when$;
    END IF;
    EXECUTE $trigger$
CREATE TRIGGER task_queue_guard_insert BEFORE INSERT ON websurfing_task_queue
    FOR EACH ROW
    WHEN (current_setting('is_superuser') <> 'on'
          AND NOT coalesce(NEW.status = 'pending' AND NEW.attempts = 0
                           AND num_nonnulls(NEW.worker_id, NEW.started_at, NEW.completed_at,
                                            NEW.failed_at, NEW.error_message) = 0,
                           false))
    EXECUTE FUNCTION websurf.task_queue_guard()$trigger$;
    EXECUTE format($trigger$
CREATE TRIGGER task_queue_guard_update BEFORE UPDATE ON websurfing_task_queue
    FOR EACH ROW
    WHEN (current_setting('is_superuser') <> 'on' AND NOT coalesce(%s, false))
    EXECUTE FUNCTION websurf.task_queue_guard()$trigger$, worker_moves);
END;
$$;

-- Rule 3, rows from before: a cell whose spreadsheet is not its column's moves to its
-- column's, recorded (cell_move_audit) in the name of that spreadsheet's owner; a cell
-- whose place there is taken stays, with a notice.
DO $$
DECLARE
    owner varchar;
    skipped bigint;
BEGIN
    FOR owner IN
        SELECT DISTINCT s.owner_id
        FROM websurfing_cell AS c
        JOIN websurfing_column AS k ON k.id = c.column_id
        JOIN websurfing_spreadsheet AS s ON s.id = k.spreadsheet_id
        WHERE c.spreadsheet_id <> k.spreadsheet_id
    LOOP
        PERFORM set_config('websurf.user_id', owner, true);
        UPDATE websurfing_cell AS c
        SET spreadsheet_id = k.spreadsheet_id
        FROM websurfing_column AS k, websurfing_spreadsheet AS s
        WHERE k.id = c.column_id
          AND s.id = k.spreadsheet_id
          AND s.owner_id = owner
          AND c.spreadsheet_id <> k.spreadsheet_id
          AND NOT EXISTS (
              SELECT 1 FROM websurfing_cell AS o
              WHERE o.spreadsheet_id = k.spreadsheet_id
                AND o.column_id = c.column_id
                AND o.row_number = c.row_number
          );
    END LOOP;
    PERFORM set_config('websurf.user_id', '', true);
    SELECT count(*) INTO skipped
    FROM websurfing_cell AS c JOIN websurfing_column AS k ON k.id = c.column_id
    WHERE c.spreadsheet_id <> k.spreadsheet_id;
    IF skipped > 0 THEN
        RAISE NOTICE '% cells are not in their column''s spreadsheet and could not move there'
                     ' (their place is taken); fix them by hand', skipped;
    END IF;
END;
$$;
