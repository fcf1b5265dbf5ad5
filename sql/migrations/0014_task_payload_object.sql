-- websurf:no-transaction
-- A task's payload must be a JSON object. Every reader (the worker's Task, the reaper's
-- audit rows, the sheet triggers) looks keys up in it; before this CHECK a single
-- '[1]' row inserted by any client crashed every worker process that claimed it.
--
-- Rows already in a live database that break the rule are repaired, not refused, so
-- the migration cannot fail on data written before it:
-- * their payload is wrapped as {"payload": <the old value>} (nothing is lost);
-- * those still pending or processing are failed with a message saying why (a worker
--   holding one finds its claim gone: its late finish is fenced out, as after a reap).
-- The order keeps the table writable: the constraint is added NOT VALID first (a brief
-- ACCESS EXCLUSIVE lock, no scan; from then on every new row is checked), the old rows
-- are repaired, then VALIDATE scans the table under a lock that lets workers go on
-- claiming and finishing. No transaction around the file (so VALIDATE does not run
-- under the first lock); each statement is re-runnable.

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conname = 'task_queue_payload_object'
          AND conrelid = 'websurfing_task_queue'::regclass
    ) THEN
        ALTER TABLE websurfing_task_queue
            ADD CONSTRAINT task_queue_payload_object
            CHECK (jsonb_typeof(payload) = 'object') NOT VALID;
    END IF;
END;
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM websurfing_task_queue WHERE jsonb_typeof(payload) <> 'object') THEN
        UPDATE websurfing_task_queue
        SET payload = jsonb_build_object('payload', payload),
            status = CASE WHEN status IN ('pending', 'processing') THEN 'failed' ELSE status END,
            failed_at = CASE WHEN status IN ('pending', 'processing') THEN now()
                             ELSE failed_at END,
            error_message = CASE WHEN status IN ('pending', 'processing')
                THEN 'payload is not a JSON object (kept under "payload"); failed when websurf'
                     ' started refusing such payloads (migration 0014)'
                ELSE error_message END,
            updated_at = now()
        WHERE jsonb_typeof(payload) <> 'object';
    END IF;
END;
$$;

DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conname = 'task_queue_payload_object'
          AND conrelid = 'websurfing_task_queue'::regclass
          AND NOT convalidated
    ) THEN
        ALTER TABLE websurfing_task_queue VALIDATE CONSTRAINT task_queue_payload_object;
    END IF;
END;
$$;

-- The uuid a text names, or NULL when it is not one (instead of an error). Used where a
-- payload's cell_id is read in SQL (the reaper's audit rows, the robot-write guard), so
-- that a malformed value costs that one row its audit link, never the whole statement.
-- Accepts the spellings PostgreSQL's uuid input does that matter here: 32 hex digits,
-- optionally hyphenated in the canonical places, optionally in braces.
CREATE OR REPLACE FUNCTION websurf.uuid_or_null(value text) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN value ~* '^(\{[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\}|[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12})$'
        THEN value::uuid
    END
$$;
