-- A task's payload limits (0023: 1 MiB of JSON text, 64 levels deep) are checked when the
-- payload is written, not at every update of the row (issue 24).
--
-- PostgreSQL evaluates every CHECK constraint of a row at every UPDATE, whichever columns
-- change. task_queue_payload_size (octet_length(payload::text): the payload rendered as
-- JSON text) and task_queue_payload_depth (a JSON path walking every value) therefore ran
-- at each claim and each finish, which never touch the payload: rendering the payloads
-- of robot tasks (eight keys, three UUIDs) to text was a fifth of the claiming
-- backends' CPU in `websurf bench --only cells` (perf), with the claim's own byte
-- counts (now pg_column_size, see claim_tasks).
--
-- The same limits now hold in a BEFORE INSERT OR UPDATE OF payload trigger whose WHEN
-- clause is the two checks (evaluated without calling the function; the function only
-- raises): an insert pays what the constraints cost it, a claim or a finish nothing. The
-- refusal is the one the constraints gave: SQLSTATE 23514 (check_violation), the same
-- message and constraint name, so callers that read diag.constraint_name (the CLI's "breaks
-- its limit task_queue_payload_size") see no difference. Rows already stored were
-- checked by 0023's validation.
--
-- The other CHECK constraints stay: each is a few comparisons of the row's own values.
CREATE OR REPLACE FUNCTION websurf.task_payload_limits() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    broken text := 'task_queue_payload_depth';
BEGIN
    IF octet_length(NEW.payload::text) > 1048576 THEN
        broken := 'task_queue_payload_size';
    END IF;
    RAISE EXCEPTION 'new row for relation "%" violates check constraint "%"', TG_TABLE_NAME, broken
        USING ERRCODE = 'check_violation', CONSTRAINT = broken, TABLE = TG_TABLE_NAME,
              SCHEMA = TG_TABLE_SCHEMA;
END;
$$;

DROP TRIGGER IF EXISTS task_queue_payload_limits ON websurfing_task_queue;
CREATE TRIGGER task_queue_payload_limits
    BEFORE INSERT OR UPDATE OF payload ON websurfing_task_queue
    FOR EACH ROW
    WHEN (octet_length(NEW.payload::text) > 1048576
          OR jsonb_path_exists(NEW.payload, 'strict $.**{65}'))
    EXECUTE FUNCTION websurf.task_payload_limits();

-- In a DO block, as 0023 added them: adopting tables that Drizzle built runs 0023's
-- block, and must run this one after it.
DO $migration$
BEGIN
    ALTER TABLE websurfing_task_queue
        DROP CONSTRAINT IF EXISTS task_queue_payload_size,
        DROP CONSTRAINT IF EXISTS task_queue_payload_depth;
END;
$migration$;
