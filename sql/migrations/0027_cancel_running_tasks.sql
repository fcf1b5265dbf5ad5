-- websurf:no-transaction
-- Cancelling running tasks (issue 22, item 4). Until now only a pending task could be
-- cancelled; a running one (a 30 s model call for text a newer edit has replaced, or
-- that a person no longer wants) ran to the end and wrote its cell.
--
-- * cancel_requested_at: when someone asked a running task to stop. Set only by the two
--   functions below (running as the schema owner); the worker whose task it is cancels
--   its handler (async: the asyncio task is cancelled; plain function: a flag it can
--   read) as soon as the NOTIFY on channel 'task_cancel' (payload: the task id) reaches
--   it, or at its next heartbeat if the notification was missed (a listener
--   reconnecting), from task_queue_claimed_idx.
-- * websurf.cancel_task(id): the one way to cancel a task, for `websurf tasks cancel`
--   and the web app (`SELECT websurf.cancel_task($1)`). A pending task is cancelled at
--   once ('cancelled'); a running one is asked to stop ('cancel_requested'); a finished
--   or unknown one is left alone (NULL). The row is locked first, so a claim racing
--   with it either skips the task (SKIP LOCKED) or has claimed it already, and then it
--   is asked to stop.
-- * Superseding: the robot tasks of a cell carry unique_key 'cell:<id>' (0017/0018) and
--   only pending tasks hold their key, so a newer edit of the source cell inserts a new
--   pending task beside the running one. An AFTER INSERT trigger asks the running task
--   of each inserted key to stop. It is a trigger on the queue, not part of
--   websurf.cell_edit_audit, so any producer's keyed insert (enqueue(), the web app)
--   supersedes the same way. A coalesced insert (ON CONFLICT DO UPDATE into a pending
--   task) inserts nothing: its running task was asked when that pending task came.
--   The request is a row write: until the inserting transaction (a person's edit)
--   commits, the worker's finish of the superseded task waits for it, as for any row
--   lock. Keep edit transactions short.
-- * The outcome is decided here, whatever the worker sends: a running task whose cancel
--   was asked ends 'cancelled' when its attempt is recorded (a finish, a retry, a
--   hand-back, the reaper's recovery), with the reason given at the request (and the
--   attempt's own error after it, if it had one), its completion or failure times
--   untouched and the attempt not spent (a person or a newer edit stopped it; the task
--   did not fail). The worker reads that back from its fenced
--   finish, writes no cell for it, and records the attempt's audit row as superseded.
--   So a handler that finishes anyway (a plain function that never reads its flag) never
--   overwrites the cell.
-- * task_queue_running_key_idx finds the running task of a key: processing rows with a
--   key only (robot tasks while they run), so the claim of a task without a key (a
--   no-op, a script's task) adds no entry to it.
-- * `websurf tasks retry` of a task cancelled while running clears cancel_requested_at
--   (sql/queries/tasks.sql), so its next attempt is not stopped again.
--
-- No-transaction for the CONCURRENTLY build (claims, finishes and enqueues go on); every
-- statement is re-runnable. The new column is NULL in every existing row: nothing to
-- repair.

ALTER TABLE websurfing_task_queue ADD COLUMN IF NOT EXISTS cancel_requested_at timestamptz;

CREATE INDEX CONCURRENTLY IF NOT EXISTS task_queue_running_key_idx ON websurfing_task_queue
    (unique_key) WHERE status = 'processing' AND unique_key IS NOT NULL;

-- search_path = pg_catalog, pg_temp and the queue named by its schema, {home} in the
-- bodies (0024, rule 4): no function an application creates in a schema it can write
-- runs inside these, two of them as the schema owner.
DO $migration$
DECLARE
    home text := (
        SELECT quote_ident(n.nspname)
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE c.oid = 'websurfing_cell'::regclass
    );
    fn text;
BEGIN
    EXECUTE replace($fn$
CREATE OR REPLACE FUNCTION websurf.cancel_task(task_id uuid) RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found_status text;
BEGIN
    SELECT q.status INTO found_status
    FROM {home}.websurfing_task_queue AS q
    WHERE q.id = task_id
    FOR UPDATE;
    IF found_status = 'pending' THEN
        UPDATE {home}.websurfing_task_queue
        SET status = 'cancelled', updated_at = pg_catalog.now()
        WHERE id = task_id;
        RETURN 'cancelled';
    ELSIF found_status = 'processing' THEN
        UPDATE {home}.websurfing_task_queue
        SET cancel_requested_at = coalesce(cancel_requested_at, pg_catalog.now()),
            error_message = CASE WHEN cancel_requested_at IS NULL
                                 THEN 'cancelled while running (websurf.cancel_task)'
                                 ELSE error_message END  -- the first reason stays
        WHERE id = task_id;
        -- Again on a repeated request: harmless, and it reaches a worker that missed it.
        PERFORM pg_catalog.pg_notify('task_cancel', task_id::text);
        RETURN 'cancel_requested';
    END IF;
    RETURN NULL;  -- no such task, or it has finished: nothing to stop
END;
$$;

CREATE OR REPLACE FUNCTION websurf.supersede_running_task() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    running_id uuid;
BEGIN
    -- SKIP LOCKED: a locked row is being finished (its result is judged by its
    -- input_version as before) or cancelled already. Never waiting here also means
    -- that two recorders writing chained robot cells never deadlock on each other.
    SELECT q.id INTO running_id
    FROM {home}.websurfing_task_queue AS q
    WHERE q.unique_key = NEW.unique_key
      AND q.status = 'processing'
      AND q.unique_key IS NOT NULL
      AND q.cancel_requested_at IS NULL
      AND q.id <> NEW.id
    FOR UPDATE SKIP LOCKED;
    IF FOUND THEN
        UPDATE {home}.websurfing_task_queue
        SET cancel_requested_at = pg_catalog.now(),
            error_message = pg_catalog.format(
                'superseded while running: a newer task with unique key %s was queued',
                NEW.unique_key)
        WHERE id = running_id;
        PERFORM pg_catalog.pg_notify('task_cancel', running_id::text);
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION websurf.task_queue_honour_cancel() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.status := 'cancelled';
    NEW.attempts := least(NEW.attempts, OLD.attempts - 1);
    NEW.completed_at := OLD.completed_at;
    NEW.failed_at := OLD.failed_at;
    NEW.scheduled_for := OLD.scheduled_for;
    -- The reason, written with the request; and what the attempt itself said, if anything.
    NEW.error_message := CASE
        WHEN NEW.error_message IS NULL OR NEW.error_message = OLD.error_message
        THEN OLD.error_message
        ELSE pg_catalog.format('%s (this attempt: %s)', OLD.error_message, NEW.error_message)
    END;
    RETURN NEW;
END;
$$
$fn$, '{home}', home);
    FOREACH fn IN ARRAY ARRAY['websurf.cancel_task(uuid)', 'websurf.supersede_running_task()',
                              'websurf.task_queue_honour_cancel()']
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', fn);
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'websurf_app') THEN
        GRANT EXECUTE ON FUNCTION websurf.cancel_task(uuid) TO websurf_app;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'websurf_worker') THEN
        GRANT EXECUTE ON FUNCTION websurf.cancel_task(uuid) TO websurf_worker;
    END IF;
END;
$migration$;

-- A row trigger whose WHEN clause is evaluated without calling the function: an insert
-- without a key (a no-op, a script's task, a bulk enqueue) pays nothing for it. An edit
-- inserts one keyed task per statement, where a statement trigger over the transition
-- table measured the same (about 20-25 us a call, track_functions, 10,000 inserts).
CREATE OR REPLACE TRIGGER task_queue_supersede_running AFTER INSERT ON websurfing_task_queue
    FOR EACH ROW
    WHEN (NEW.unique_key IS NOT NULL)
    EXECUTE FUNCTION websurf.supersede_running_task();

-- Named to fire before task_queue_release_unique_key (BEFORE triggers fire in name
-- order): a cancelled task keeps its key, as no pending task needs it. The WHEN clause
-- is evaluated without calling the function: finishes of tasks nobody cancelled pay
-- nothing for it.
CREATE OR REPLACE TRIGGER task_queue_honour_cancel BEFORE UPDATE ON websurfing_task_queue
    FOR EACH ROW
    WHEN (OLD.status = 'processing' AND NEW.status IS DISTINCT FROM 'processing'
          AND OLD.cancel_requested_at IS NOT NULL)
    EXECUTE FUNCTION websurf.task_queue_honour_cancel();
