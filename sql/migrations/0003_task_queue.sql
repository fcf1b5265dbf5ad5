-- Phase 2 of the plan: the task queue and its `new_task` notification.

CREATE TABLE websurfing_task_queue (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
    task_type varchar(100) NOT NULL,
    payload jsonb NOT NULL,
    status varchar(20) DEFAULT 'pending',
    priority integer DEFAULT 5,
    attempts integer DEFAULT 0,
    max_attempts integer DEFAULT 3,
    scheduled_for timestamp with time zone DEFAULT CURRENT_TIMESTAMP,
    started_at timestamp with time zone,
    completed_at timestamp with time zone,
    failed_at timestamp with time zone,
    error_message text,
    worker_id varchar(255),
    created_at timestamp with time zone DEFAULT CURRENT_TIMESTAMP,
    updated_at timestamp with time zone DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT task_queue_status_check
        CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'cancelled'))
);

-- The claim query walks this index in order: pending only, highest priority first,
-- then oldest due date. Definition from the plan's SQL, name from its Drizzle code.
CREATE INDEX task_queue_processing_idx ON websurfing_task_queue
    (status, priority DESC, scheduled_for ASC) WHERE status = 'pending';
CREATE INDEX task_queue_worker_idx ON websurfing_task_queue (worker_id, status, started_at);
CREATE INDEX task_queue_type_idx ON websurfing_task_queue (task_type);
-- Retention (`websurf prune`) deletes finished rows oldest first through this one.
CREATE INDEX task_queue_cleanup_idx ON websurfing_task_queue (status, created_at)
    WHERE status IN ('completed', 'failed');

CREATE TRIGGER task_queue_touch_updated_at BEFORE UPDATE ON websurfing_task_queue
    FOR EACH ROW WHEN (OLD.updated_at IS NOT DISTINCT FROM NEW.updated_at)
    EXECUTE FUNCTION websurf.touch_updated_at();

-- One notification per task type per INSERT statement, however many rows it inserts,
-- so a bulk enqueue does not flood the channel (and the commit-time notify lock is
-- taken once). The payload names the type and the highest priority inserted, the task
-- id when the statement inserted exactly one row of that type, and `scheduled_for`
-- when none of them is due yet, so a worker can set its timer instead of polling.
CREATE FUNCTION websurf.notify_new_task() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    payload jsonb;
BEGIN
    FOR r IN
        SELECT task_type, max(priority) AS priority, count(*) AS n, min(id::text) AS any_id,
               min(scheduled_for) AS first_due
        FROM inserted
        WHERE status = 'pending'
        GROUP BY task_type
    LOOP
        payload := jsonb_build_object('task_type', r.task_type, 'priority', r.priority);
        IF r.n = 1 THEN
            payload := payload || jsonb_build_object('id', r.any_id);
        END IF;
        IF r.first_due > now() THEN
            payload := payload || jsonb_build_object('scheduled_for', r.first_due);
        END IF;
        PERFORM pg_notify('new_task', payload::text);
    END LOOP;
    RETURN NULL;
END;
$$;

CREATE TRIGGER task_queue_notify_new_task AFTER INSERT ON websurfing_task_queue
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION websurf.notify_new_task();
