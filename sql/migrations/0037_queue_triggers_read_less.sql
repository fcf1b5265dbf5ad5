-- The queue's two largest UPDATE trigger conditions, written to read less (issue 22,
-- "not slower").
--
-- PostgreSQL keeps a trigger's WHEN clause (and a CHECK constraint) as the text of its
-- expression tree, and reads that text back, plans and compiles it once per statement.
-- A claim or a finish of one task (a person's edit, picked up at once) is one statement:
-- `perf` on a backend claiming one task at a time put a quarter of its CPU in
-- stringToNode alone, for the 16 kB of WHEN text of the queue's UPDATE triggers and the
-- 13 kB of its CHECK constraints. Each status list of the old clauses was an array of
-- casts (`'pending'::character varying` …), each of its comparisons a cast of a column:
-- task_queue_guard_update's clause was 7.5 kB, task_queue_log_attempt's 3.8 kB.
--
-- Same rules, with each allowed move spelled as one 'old>new' string in one text
-- array constant:
-- * task_queue_guard_update: superusers pass; a member of websurf_worker passes a move
--   that keeps the status or is one of the worker's moves (0024); everything else calls
--   websurf.task_queue_guard.
-- * task_queue_log_attempt: an attempt that had started, handed back (processing ->
--   pending) or started again from a finished state (0029).
DROP TRIGGER task_queue_log_attempt ON websurfing_task_queue;
CREATE TRIGGER task_queue_log_attempt AFTER UPDATE ON websurfing_task_queue
    FOR EACH ROW
    WHEN (OLD.started_at IS NOT NULL
          AND OLD.status::text || '>' || NEW.status::text
              = ANY ('{processing>pending,failed>pending,failed>processing,cancelled>pending,cancelled>processing,completed>pending,completed>processing}'::text[]))
    EXECUTE FUNCTION websurf.task_queue_log_attempt();

DO $$
DECLARE
    worker_moves text := 'false';
BEGIN
    IF to_regrole('websurf_worker') IS NOT NULL THEN
        worker_moves := $when$pg_has_role('websurf_worker', 'MEMBER')
              AND (OLD.status::text = NEW.status::text
                   OR OLD.status::text || '>' || NEW.status::text
                      = ANY ('{pending>processing,pending>cancelled,processing>completed,processing>failed,processing>pending,processing>cancelled,failed>pending,cancelled>pending}'::text[]))$when$;
    END IF;
    DROP TRIGGER task_queue_guard_update ON websurfing_task_queue;
    EXECUTE format($trigger$
CREATE TRIGGER task_queue_guard_update BEFORE UPDATE ON websurfing_task_queue
    FOR EACH ROW
    WHEN (current_setting('is_superuser') <> 'on' AND NOT coalesce(%s, false))
    EXECUTE FUNCTION websurf.task_queue_guard()$trigger$, worker_moves);
END;
$$;
