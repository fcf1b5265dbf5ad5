-- A task's story (issue 23, item 3): every attempt with its worker, timing and error.
--
-- A task row describes one attempt only, its latest (worker_id, started_at, the end
-- times, error_message): the next claim writes over it. websurfing_task_attempt keeps
-- each attempt the row stops describing, written by one trigger on the queue, so every
-- path is covered in one place (the recorder, the reaper, a hand-back, a cancel, `websurf
-- tasks retry`, SQL from anyone):
--
-- * processing -> pending: the attempt ended without an outcome of its own. Its
--   outcome says how: 'retried' (the attempt counted: the handler failed or timed out,
--   or the reaper took it back from a worker that died, stopped heartbeating or ran
--   past the timeout; its error says which), 'handed_back' (not counted, due at once: a
--   shutdown, no room to start it, a dead worker's task that was not running),
--   'put_back' (not counted, due later: a Snooze) or 'slowed_down' (not counted, due
--   later, with a reason: a SlowDown; a second SlowDown with the very same reason as
--   the row's last error reads as 'put_back', the trigger cannot tell them apart).
-- * failed, cancelled or completed -> pending or processing (`websurf tasks retry`, or
--   SQL): the finished attempt the row described, with that outcome, before the next
--   claim writes over it. An attempt already logged (a task handed back, then
--   cancelled while pending, then retried) is not logged twice.
--
-- So the final or current attempt is always the one the task row describes, and the
-- happy path (claim, then complete on the first try) writes nothing here: the trigger's
-- WHEN clause is evaluated without calling the function, and an AFTER trigger whose
-- WHEN is false queues no event (issue 24's no-op benchmark).
--
-- Rows are the database's to write: the function runs as the schema owner (SECURITY
-- DEFINER), and no other role may write the table (the web app and the worker read
-- it). A pruned task takes its attempts with it (ON DELETE CASCADE, run as the owner).
-- search_path = pg_catalog, pg_temp and the tables named by their schema, {home} in the
-- body (0024, rule 4).

CREATE TABLE websurfing_task_attempt (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
    task_id uuid NOT NULL
        CONSTRAINT websurfing_task_attempt_task_id_websurfing_task_queue_id_fk
        REFERENCES websurfing_task_queue (id) ON DELETE CASCADE,
    attempt integer NOT NULL,
    worker_id varchar(255),
    started_at timestamp with time zone NOT NULL,
    ended_at timestamp with time zone NOT NULL,
    outcome varchar(20) NOT NULL,
    counted boolean NOT NULL,
    error_message text,
    CONSTRAINT task_attempt_outcome_check CHECK (outcome IN (
        'retried', 'handed_back', 'put_back', 'slowed_down', 'failed', 'cancelled',
        'completed'))
);

-- A task's attempts in order, and the one-row-per-attempt rule (a claim's start time is
-- its transaction's, so no two attempts of a task share one).
CREATE UNIQUE INDEX task_attempt_task_started_idx ON websurfing_task_attempt (task_id, started_at);

DO $migration$
DECLARE
    home text := (
        SELECT quote_ident(n.nspname)
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE c.oid = 'websurfing_cell'::regclass
    );
BEGIN
    EXECUTE replace($fn$
CREATE FUNCTION websurf.task_queue_log_attempt() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    counted boolean;
    outcome text;
    error text;
    ended timestamptz;
BEGIN
    IF OLD.status = 'processing' THEN
        counted := NEW.attempts >= OLD.attempts;
        -- An error the row kept from an earlier attempt is not this one's.
        error := CASE WHEN counted OR NEW.error_message IS DISTINCT FROM OLD.error_message
                      THEN NEW.error_message END;
        outcome := CASE
            WHEN counted THEN 'retried'
            WHEN NEW.scheduled_for > now() AND error IS NOT NULL THEN 'slowed_down'
            WHEN NEW.scheduled_for > now() THEN 'put_back'
            ELSE 'handed_back'
        END;
        ended := now();
    ELSE
        outcome := OLD.status;
        counted := OLD.status <> 'cancelled';  -- a cancel gives its attempt back (0027)
        error := CASE WHEN OLD.status <> 'completed' THEN OLD.error_message END;
        ended := CASE OLD.status WHEN 'failed' THEN OLD.failed_at
                                 WHEN 'completed' THEN OLD.completed_at END;
        ended := coalesce(ended, OLD.updated_at, now());
    END IF;
    INSERT INTO {home}.websurfing_task_attempt
        (task_id, attempt, worker_id, started_at, ended_at, outcome, counted, error_message)
    VALUES (OLD.id, OLD.attempts, OLD.worker_id, OLD.started_at, greatest(ended, OLD.started_at),
            outcome, counted, left(error, 2000))
    ON CONFLICT (task_id, started_at) DO NOTHING;
    RETURN NULL;
END;
$$
$fn$, '{home}', home);
END;
$migration$;
REVOKE EXECUTE ON FUNCTION websurf.task_queue_log_attempt() FROM PUBLIC;

CREATE TRIGGER task_queue_log_attempt AFTER UPDATE ON websurfing_task_queue
    FOR EACH ROW
    WHEN (OLD.started_at IS NOT NULL
          AND ((OLD.status = 'processing' AND NEW.status = 'pending')
               OR (OLD.status IN ('failed', 'cancelled', 'completed')
                   AND NEW.status IN ('pending', 'processing'))))
    EXECUTE FUNCTION websurf.task_queue_log_attempt();

REVOKE ALL ON websurfing_task_attempt FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'websurf_worker') THEN
        REVOKE ALL ON websurfing_task_attempt FROM websurf_worker;
        GRANT SELECT ON websurfing_task_attempt TO websurf_worker;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'websurf_app') THEN
        REVOKE ALL ON websurfing_task_attempt FROM websurf_app;
        GRANT SELECT ON websurfing_task_attempt TO websurf_app;
    END IF;
END;
$$;
