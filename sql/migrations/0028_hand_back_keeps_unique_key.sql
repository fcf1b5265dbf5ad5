-- A task a worker hands back or puts back keeps its unique_key (issue 21).
--
-- 0017 made every task that returns to pending give its key up, so that the UPDATE
-- sending it back could never fail on task_queue_unique_key_idx. For a hand-back (no
-- room to start it, a stop) and a put-back (a Snooze: web_title's wait for a host
-- slot) that lost the robot cell's 'cell:<id>' key (0018): a newer edit of the source
-- cell queued a second task instead of replacing the pending one, and deleting the row
-- or the sheet (0019 finds pending tasks by their key) no longer cancelled it.
--
-- A hand-back is not an attempt: the finish or the recovery takes the attempt back, so
-- the row comes back to pending with fewer attempts than it left processing with. Such
-- a row takes its key back right after the statement that sent it back, in a trigger of
-- its own with its own subtransaction:
--
-- * 0017's BEFORE trigger still runs first: if a pending task already holds the key,
--   the returning task is cancelled as superseded; else the row goes back keyless, so
--   the statement (a whole batch of fenced finishes) can never fail on the index.
-- * This AFTER trigger then sets the key on the row again. If a transaction inserting
--   the same key had not committed yet, that UPDATE waits for it; should it commit, the
--   unique violation is caught (only the subtransaction rolls back) and the returning
--   task is cancelled as superseded, as 0017 does when it sees the newer task at once.
--
-- A retry (a counted attempt) still gives its key up, as before: a newer edit replacing
-- it would inherit its spent attempts.
--
-- The WHEN clause is evaluated without calling the function: claims, completions and
-- retries pay nothing for it. SECURITY DEFINER, as the cancel trigger (0019): what it
-- writes (the row's own key, or its cancellation) is the trigger's decision, whatever
-- columns the role that sent the task back may update. search_path = pg_catalog, pg_temp
-- and the queue named by its schema, {home} in the body (0024, rule 4).

DO $migration$
DECLARE
    home text := (
        SELECT quote_ident(n.nspname)
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE c.oid = 'websurfing_cell'::regclass
    );
BEGIN
    EXECUTE replace($fn$
CREATE OR REPLACE FUNCTION websurf.task_queue_keep_unique_key() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    BEGIN
        UPDATE {home}.websurfing_task_queue
        SET unique_key = OLD.unique_key
        WHERE id = NEW.id AND status = 'pending' AND unique_key IS NULL;
    EXCEPTION WHEN unique_violation THEN
        UPDATE {home}.websurfing_task_queue
        SET status = 'cancelled',
            error_message = format(
                'superseded: a newer task with unique key %s is pending (this attempt: %s)',
                OLD.unique_key, coalesce(NEW.error_message, 'handed back')),
            updated_at = now()
        WHERE id = NEW.id AND status = 'pending';
    END;
    RETURN NULL;
END;
$$
$fn$, '{home}', home);
END;
$migration$;
REVOKE EXECUTE ON FUNCTION websurf.task_queue_keep_unique_key() FROM PUBLIC;

CREATE OR REPLACE TRIGGER task_queue_keep_unique_key AFTER UPDATE ON websurfing_task_queue
    FOR EACH ROW
    WHEN (OLD.status = 'processing' AND NEW.status = 'pending'
          AND NEW.attempts < OLD.attempts AND OLD.unique_key IS NOT NULL)
    EXECUTE FUNCTION websurf.task_queue_keep_unique_key();
