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
-- taken once). The payload names the type and the highest priority inserted, and the
-- task id when the statement inserted exactly one row of that type.
CREATE FUNCTION websurf.notify_new_task() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT task_type, max(priority) AS priority, count(*) AS n, min(id::text) AS any_id
        FROM inserted
        WHERE status = 'pending'
        GROUP BY task_type
    LOOP
        PERFORM pg_notify('new_task', CASE
            WHEN r.n = 1 THEN json_build_object(
                'task_type', r.task_type, 'priority', r.priority, 'id', r.any_id)
            ELSE json_build_object('task_type', r.task_type, 'priority', r.priority)
        END::text);
    END LOOP;
    RETURN NULL;
END;
$$;

CREATE TRIGGER task_queue_notify_new_task AFTER INSERT ON websurfing_task_queue
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION websurf.notify_new_task();
