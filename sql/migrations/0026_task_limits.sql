-- Limits across the cluster (issue 22, items 2, 3 and 5): at most N tasks of an operator
-- running at once, at most N started per period, and a pause until a time ("slow down",
-- a 429 with Retry-After), for an operator as a whole or for one key inside it (a host,
-- an API account, a person's quota).
--
-- * websurfing_task_limit: one row per (operator, key); the empty key '' limits every
--   task of the operator together (not NULL: drizzle-kit cannot mirror a unique
--   constraint with NULLS NOT DISTINCT). The web app may write it (per-user quotas
--   are rows); the worker fills rows from code (source 'code', at start), `websurf
--   limits set` writes source 'cli', and a handler's SlowDown sets paused_until
--   (creating a row with no caps when there was none). A row written from the
--   terminal or the table is never overwritten by code.
-- * websurfing_task_queue.limit_key: the key a task counts against (NULL: only the
--   operator's own limit applies). Set at enqueue, by the web app or websurf.
-- * websurf.task_limit_start: when rate-limited tasks were claimed, one row per start
--   and rate-limited limit row, pruned by the claim itself past the period. A log rather
--   than a counter: a window can be counted exactly, and nothing can drift.
-- * websurf.claim_limited: the claim of an operator that has a limit. It takes a
--   transaction advisory lock per operator (claims of one limited operator are
--   serialised across the cluster), then counts, in statements that start after the
--   lock is granted, what runs (processing rows, so a crashed holder's share comes back
--   with the crash recovery that makes its tasks pending again) and what started in the
--   window, and claims at most what every applicable limit still allows.
--
-- Operators without a limit row keep using the claim_tasks statement: nothing here is
-- on their claim or finish path (no index reads limit_key, so it adds no index entry;
-- the one new trigger on the queue runs its function for web_title inserts only).

CREATE TABLE websurfing_task_limit (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
    task_type varchar(100) NOT NULL,
    limit_key varchar(255) DEFAULT '' NOT NULL,
    max_running integer,
    rate integer,
    period_s double precision,
    burst integer,
    paused_until timestamp with time zone,
    pause_reason text,
    source varchar(20) DEFAULT 'table' NOT NULL,
    created_at timestamp with time zone DEFAULT CURRENT_TIMESTAMP NOT NULL,
    updated_at timestamp with time zone DEFAULT CURRENT_TIMESTAMP NOT NULL,
    CONSTRAINT task_limit_max_running_check CHECK (max_running >= 0),
    CONSTRAINT task_limit_rate_check CHECK (rate >= 1),
    CONSTRAINT task_limit_period_check CHECK (period_s > 0 AND period_s <= 86400),
    CONSTRAINT task_limit_rate_period_check CHECK ((rate IS NULL) = (period_s IS NULL)),
    CONSTRAINT task_limit_burst_check CHECK (burst IS NULL OR (burst >= 1 AND rate IS NOT NULL)),
    CONSTRAINT task_limit_source_check CHECK (source IN ('code', 'cli', 'table', 'slowdown')),
    CONSTRAINT task_limit_operator_key_unique UNIQUE (task_type, limit_key)
);

CREATE TRIGGER task_limit_touch_updated_at BEFORE UPDATE ON websurfing_task_limit
    FOR EACH ROW WHEN (OLD.updated_at IS NOT DISTINCT FROM NEW.updated_at)
    EXECUTE FUNCTION websurf.touch_updated_at();

-- Nullable, no default: adding it rewrites nothing, and old rows count against no key.
ALTER TABLE websurfing_task_queue ADD COLUMN limit_key varchar(255);

-- web_title's tasks count against their URL's host (lower case, no port): a limit or a
-- SlowDown (a 429) for one site holds that site's fetches only. The WHEN clause keeps
-- the function off every other task's insert.
CREATE FUNCTION websurf.web_title_limit_key() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.limit_key := left(lower(substring(
        coalesce(NEW.payload->>'url', NEW.payload->>'input')
        FROM '^\s*(?:[A-Za-z][A-Za-z0-9+.-]*://)?(?:[^@/?#]*@)?(\[[^]]*\]|[^:/?#\s]+)')), 255);
    RETURN NEW;
END;
$$;

CREATE TRIGGER task_queue_web_title_limit_key BEFORE INSERT ON websurfing_task_queue
    FOR EACH ROW WHEN (NEW.task_type = 'web_title' AND NEW.limit_key IS NULL)
    EXECUTE FUNCTION websurf.web_title_limit_key();

CREATE TABLE websurf.task_limit_start (
    limit_id uuid NOT NULL REFERENCES websurfing_task_limit (id) ON DELETE CASCADE,
    started_at timestamp with time zone NOT NULL
);
CREATE INDEX task_limit_start_idx ON websurf.task_limit_start (limit_id, started_at);

-- The claimed tasks; then, when a limit held tasks back and its start log or pause says
-- when it opens again, one more row with a NULL id and reopens_in_s set.
-- search_path = pg_catalog, pg_temp and the tables named by their schema, {home} in the
-- body (0024, rule 4): no function an application creates in a schema it can write runs
-- inside a worker's claim.
DO $migration$
DECLARE
    home text := (
        SELECT quote_ident(n.nspname)
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE c.oid = 'websurfing_cell'::regclass
    );
BEGIN
    EXECUTE replace($fn$
CREATE FUNCTION websurf.claim_limited(
    p_worker_id text, p_task_type text, p_limit integer, p_min_priority integer
)
RETURNS TABLE (id uuid, task_type varchar, payload jsonb, attempts integer,
               max_attempts integer, priority integer, waited_s double precision,
               payload_bytes integer, fairness_key varchar, reopens_in_s double precision)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    total bigint := p_limit;
    op_room bigint;
    key_rooms jsonb;  -- key -> room left, for keys with a limit that has room
    blocked jsonb;  -- key -> true, for keys with a limit that has none
    reopens timestamptz;
    chosen uuid[] := '{}';
    candidate record;
    key_room bigint;
    claim_time timestamptz;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        -- a snapshot taken before the lock would miss the claims made while it waited
        RAISE EXCEPTION 'websurf.claim_limited runs at READ COMMITTED only, not %',
            current_setting('transaction_isolation');
    END IF;
    -- Every claim of this operator waits here for the one before it to commit. The
    -- counts below are separate statements, so their snapshots include that commit.
    PERFORM pg_advisory_xact_lock(hashtextextended('websurf.task_limit:' || p_task_type, 0));
    -- The claim's time, read after the lock: it grows in lock order, so each claim's
    -- window, its recorded starts and its pruning agree with every claim before it
    -- (now(), the transaction's start, may be older than a start another claim logged).
    claim_time := clock_timestamp();

    -- Each limit row's room now (NULL: unlimited), in one pass: running tasks from the
    -- processing rows, starts in the period and in the burst window from the start log;
    -- and, for a row without room, when the start log or its pause says it opens again
    -- (a running task's end cannot be foreseen).
    WITH lims AS (
        SELECT l.id, l.limit_key, l.max_running, l.rate, l.burst, l.paused_until,
               make_interval(secs => l.period_s) AS period_window,
               make_interval(secs => l.period_s * l.burst / l.rate) AS burst_window
        FROM {home}.websurfing_task_limit l
        WHERE l.task_type = p_task_type
    ), running AS (
        SELECT q.limit_key, count(*) AS n
        FROM {home}.websurfing_task_queue q
        WHERE q.status = 'processing' AND q.task_type = p_task_type
        GROUP BY q.limit_key
    ), starts AS (
        SELECT s.limit_id, count(*) AS in_period, min(s.started_at) AS first_in_period,
               count(*) FILTER (WHERE s.started_at > claim_time - l.burst_window)
                   AS in_burst,
               min(s.started_at) FILTER (WHERE s.started_at > claim_time - l.burst_window)
                   AS first_in_burst
        FROM lims l
        JOIN websurf.task_limit_start s
          ON s.limit_id = l.id AND s.started_at > claim_time - l.period_window
        GROUP BY s.limit_id
    ), rooms AS (
        SELECT l.limit_key, l.paused_until, l.period_window, l.burst_window,
               st.first_in_period, st.first_in_burst,
               CASE WHEN l.paused_until > claim_time THEN 0 ELSE least(
                   l.max_running - CASE WHEN l.limit_key = ''
                       THEN (SELECT coalesce(sum(n), 0) FROM running)
                       ELSE coalesce(r.n, 0) END,
                   l.rate - coalesce(st.in_period, 0),
                   l.burst - coalesce(st.in_burst, 0)
               ) END AS room
        FROM lims l
        LEFT JOIN running r ON r.limit_key = l.limit_key
        LEFT JOIN starts st ON st.limit_id = l.id
    )
    SELECT max(r.room) FILTER (WHERE r.limit_key = ''),
           coalesce(jsonb_object_agg(r.limit_key, r.room)
                        FILTER (WHERE r.limit_key <> '' AND r.room > 0), '{}'),
           coalesce(jsonb_object_agg(r.limit_key, true)
                        FILTER (WHERE r.limit_key <> '' AND r.room <= 0), '{}'),
           min(least(
               CASE WHEN r.paused_until > claim_time THEN r.paused_until END,
               r.first_in_period + r.period_window,
               r.first_in_burst + r.burst_window
           )) FILTER (WHERE r.room <= 0)
    INTO op_room, key_rooms, blocked, reopens
    FROM rooms r;
    total := least(total, op_room);
    IF total <= 0 THEN
        RETURN QUERY SELECT NULL::uuid, NULL::varchar, NULL::jsonb, NULL::int, NULL::int,
                            NULL::int, NULL::float8, NULL::int, NULL::varchar,
                            extract(epoch FROM reopens - claim_time)::float8
                     WHERE reopens IS NOT NULL;
        RETURN;
    END IF;

    -- The due tasks in claim order, a key's tasks only while its room lasts.
    FOR candidate IN
        SELECT q.id, q.limit_key
        FROM {home}.websurfing_task_queue q
        WHERE q.status = 'pending'
          AND q.scheduled_for <= claim_time
          AND q.task_type = p_task_type
          AND q.priority >= p_min_priority
          AND (q.limit_key IS NULL OR NOT blocked ? q.limit_key)
        ORDER BY q.priority DESC, q.fair_seq ASC, q.scheduled_for ASC
    LOOP
        key_room := (key_rooms ->> candidate.limit_key)::bigint;  -- NULL: no limit of its own
        IF key_room IS NOT NULL THEN
            CONTINUE WHEN key_room <= 0;
            key_rooms := key_rooms || jsonb_build_object(candidate.limit_key, key_room - 1);
        END IF;
        chosen := chosen || candidate.id;
        EXIT WHEN cardinality(chosen) >= total;
    END LOOP;
    RETURN QUERY SELECT NULL::uuid, NULL::varchar, NULL::jsonb, NULL::int, NULL::int,
                        NULL::int, NULL::float8, NULL::int, NULL::varchar,
                        extract(epoch FROM reopens - claim_time)::float8
                 WHERE reopens IS NOT NULL;
    IF cardinality(chosen) = 0 THEN
        RETURN;
    END IF;

    RETURN QUERY
    WITH claimed AS (
        UPDATE {home}.websurfing_task_queue AS t
        SET status = 'processing',
            started_at = claim_time,
            worker_id = p_worker_id,
            attempts = t.attempts + 1,
            updated_at = now()
        WHERE t.id = ANY (chosen) AND t.status = 'pending'
        RETURNING t.id, t.task_type, t.payload, t.attempts, t.max_attempts, t.priority,
                  extract(epoch FROM now() - GREATEST(t.scheduled_for, t.created_at))::float8
                      AS waited_s,
                  octet_length(t.payload::text) AS payload_bytes, t.fairness_key, t.limit_key
    ), rated_limits AS (
        SELECT l.id, l.limit_key, l.period_s
        FROM {home}.websurfing_task_limit l
        WHERE l.task_type = p_task_type AND l.rate IS NOT NULL
    ), logged AS (
        INSERT INTO websurf.task_limit_start (limit_id, started_at)
        SELECT r.id, claim_time
        FROM claimed c JOIN rated_limits r
          ON r.limit_key = '' OR r.limit_key = c.limit_key
    ), pruned AS (
        -- the rated limits of the claimed tasks only: a claim stays as cheap with
        -- thousands of per-user rows (another's old starts wait for its next claim)
        DELETE FROM websurf.task_limit_start s
        USING rated_limits r
        WHERE s.limit_id = r.id
          AND s.started_at <= claim_time - make_interval(secs => r.period_s)
          AND (r.limit_key = '' OR r.limit_key IN (SELECT c.limit_key FROM claimed c))
    )
    SELECT c.id, c.task_type, c.payload, c.attempts, c.max_attempts, c.priority, c.waited_s,
           c.payload_bytes, c.fairness_key, NULL::float8
    FROM claimed c;
END;
$$
$fn$, '{home}', home);
END;
$migration$;

-- A changed limit row tells the workers at once on the channel they already listen to
-- (new_task, with "limits": true): they move the operator to or from the limited claim
-- and claim its tasks again (a cap may have grown). The end of a pause or of a full
-- rate window needs no notification: the claim that met it said when (reopens_in_s).
CREATE FUNCTION websurf.notify_task_limit() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Identical notifications of one transaction are sent once (PostgreSQL folds them).
    IF TG_OP <> 'INSERT' THEN
        PERFORM pg_notify('new_task', json_build_object(
            'task_type', OLD.task_type, 'limits', true)::text);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM pg_notify('new_task', json_build_object(
            'task_type', NEW.task_type, 'limits', true)::text);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER task_limit_notify AFTER INSERT OR UPDATE OR DELETE ON websurfing_task_limit
    FOR EACH ROW EXECUTE FUNCTION websurf.notify_task_limit();

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'websurf_worker') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON websurfing_task_limit TO websurf_worker;
        GRANT SELECT, INSERT, DELETE ON websurf.task_limit_start TO websurf_worker;
        GRANT EXECUTE ON FUNCTION websurf.claim_limited(text, text, integer, integer)
            TO websurf_worker;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'websurf_app') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON websurfing_task_limit TO websurf_app;
    END IF;
END;
$$;
