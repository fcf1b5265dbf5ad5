-- websurf:no-transaction
-- At most one pending task per key, for any producer (River's unique jobs, procrastinate's
-- queueing lock, pgqueuer's dedupe key are the models). A task inserted with a
-- unique_key that a pending task already holds does not add a second task: the producer
-- writes INSERT … ON CONFLICT (unique_key) WHERE status = 'pending' DO UPDATE and the
-- pending task takes the newer payload, priority, max_attempts and due time (the latest
-- request wins; websurf.worker.queue.enqueue does this, and the web app can do the same
-- in SQL). Tasks without a key (NULL) are never coalesced.
--
-- Only pending tasks hold their key: once a worker claims a task, a newer request
-- inserts a new pending task beside it, which runs after it. A task that comes back to
-- pending (a retry, a hand-back, `websurf tasks retry`) gives its key up, so that the
-- UPDATE that sends it back can never fail on this index, even while another
-- transaction is inserting the same key (a unique violation there would abort a whole
-- batch of fenced finishes). When a worker's retry or hand-back finds a newer pending
-- task with its key already queued, the retry is obsolete: it is cancelled instead,
-- with the reason in error_message.
--
-- new_task: PostgreSQL fires the statement-level INSERT trigger (0003) for an
-- INSERT … ON CONFLICT DO UPDATE, but its transition table holds only the rows really
-- inserted; a coalesced row was announced when it was first inserted (enqueue() sends a
-- new notification for it too, in case it moved earlier).
--
-- CONCURRENTLY (so outside a transaction, and each statement re-runnable): a plain
-- CREATE INDEX would block every enqueue, claim and finish for the length of the build.
-- The new column is NULL in every existing row, so the build cannot find duplicates.

ALTER TABLE websurfing_task_queue ADD COLUMN IF NOT EXISTS unique_key text;

CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS task_queue_unique_key_idx
    ON websurfing_task_queue (unique_key) WHERE status = 'pending';

CREATE OR REPLACE FUNCTION websurf.task_queue_release_unique_key() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'processing' AND EXISTS (
        SELECT 1
        FROM websurfing_task_queue AS q
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

-- The WHEN clause is evaluated without calling the function, so claims and finishes
-- (which never send a keyed task back to pending) pay nothing for it. OR REPLACE
-- (PostgreSQL 14+) keeps the file re-runnable.
CREATE OR REPLACE TRIGGER task_queue_release_unique_key BEFORE UPDATE ON websurfing_task_queue
    FOR EACH ROW
    WHEN (NEW.status = 'pending' AND OLD.status IS DISTINCT FROM 'pending'
          AND NEW.unique_key IS NOT NULL)
    EXECUTE FUNCTION websurf.task_queue_release_unique_key();
