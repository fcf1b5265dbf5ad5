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
-- on their path (no trigger, no index entry: limit_key is NULL for their tasks and no
-- index reads it).

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
SET search_path = public, pg_catalog, pg_temp
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

-- What one limit row still allows at claim_time, counted after the caller took the operator's
-- lock. NULL: unlimited.
CREATE FUNCTION websurf.limit_room(
    lim websurfing_task_limit, running bigint, claim_time timestamptz
)
RETURNS bigint
LANGUAGE sql STABLE
SET search_path = public, pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN lim.paused_until > claim_time THEN 0
        ELSE (SELECT min(room) FROM (VALUES
            (lim.max_running - running),
            (lim.rate - (SELECT count(*) FROM websurf.task_limit_start s
                         WHERE s.limit_id = lim.id
                           AND s.started_at > claim_time - make_interval(secs => lim.period_s))),
            -- the burst: at most `burst` in any burst/rate of the period
            (lim.burst - (SELECT count(*) FROM websurf.task_limit_start s
                          WHERE s.limit_id = lim.id
                            AND s.started_at > claim_time - make_interval(
                                secs => lim.period_s * lim.burst / lim.rate)))
        ) AS r(room))
    END
$$;

-- When a limit with no room now gets room again, as far as the start log and the pause
-- tell (a running task's end cannot be foreseen): the claimer's next look.
CREATE FUNCTION websurf.limit_reopens_at(lim websurfing_task_limit, claim_time timestamptz)
RETURNS timestamptz
LANGUAGE sql STABLE
SET search_path = public, pg_catalog, pg_temp
AS $$
    SELECT least(
        CASE WHEN lim.paused_until > claim_time THEN lim.paused_until END,
        (SELECT min(s.started_at) + make_interval(secs => lim.period_s)
         FROM websurf.task_limit_start s
         WHERE s.limit_id = lim.id
           AND s.started_at > claim_time - make_interval(secs => lim.period_s)),
        (SELECT min(s.started_at) + make_interval(secs => lim.period_s * lim.burst / lim.rate)
         FROM websurf.task_limit_start s
         WHERE s.limit_id = lim.id
           AND s.started_at > claim_time - make_interval(
               secs => lim.period_s * lim.burst / lim.rate))
    )
$$;

-- The claimed tasks; then, when a limit held tasks back and its start log or pause says
-- when it opens again, one more row with a NULL id and reopens_in_s set.
CREATE FUNCTION websurf.claim_limited(
    p_worker_id text, p_task_type text, p_limit integer, p_min_priority integer
)
RETURNS TABLE (id uuid, task_type varchar, payload jsonb, attempts integer,
               max_attempts integer, priority integer, waited_s double precision,
               reopens_in_s double precision)
LANGUAGE plpgsql
SET search_path = public, pg_catalog, pg_temp
AS $$
DECLARE
    total bigint := p_limit;
    op_room bigint;
    keys text[] := '{}';
    key_rooms bigint[] := '{}';
    blocked text[] := '{}';
    reopens timestamptz;
    chosen uuid[] := '{}';
    candidate record;
    slot integer;
    claim_time timestamptz;
BEGIN
    -- Every claim of this operator waits here for the one before it to commit. The
    -- counts below are separate statements, so their snapshots include that commit.
    PERFORM pg_advisory_xact_lock(hashtextextended('websurf.task_limit:' || p_task_type, 0));
    -- The claim's time, read after the lock: it grows in lock order, so each claim's
    -- window, its recorded starts and its pruning agree with every claim before it
    -- (now(), the transaction's start, may be older than a start another claim logged).
    claim_time := clock_timestamp();

    -- Each limit row's room, from the processing rows (grouped once) and the start log.
    FOR candidate IN
        WITH running AS (
            SELECT q.limit_key, count(*) AS n
            FROM websurfing_task_queue q
            WHERE q.status = 'processing' AND q.task_type = p_task_type
            GROUP BY q.limit_key
        )
        , rooms AS (
            SELECT l, websurf.limit_room(l, CASE WHEN l.limit_key = ''
                       THEN (SELECT coalesce(sum(n), 0) FROM running)
                       ELSE (SELECT coalesce(sum(n), 0) FROM running r
                             WHERE r.limit_key = l.limit_key) END::bigint, claim_time) AS room
            FROM websurfing_task_limit l
            WHERE l.task_type = p_task_type
        )
        SELECT (r.l).limit_key, r.room,
               CASE WHEN r.room <= 0 THEN websurf.limit_reopens_at(r.l, claim_time) END
                   AS reopens
        FROM rooms r
    LOOP
        reopens := least(reopens, candidate.reopens);
        IF candidate.limit_key = '' THEN
            op_room := candidate.room;
        ELSIF candidate.room IS NOT NULL AND candidate.room <= 0 THEN
            blocked := blocked || candidate.limit_key::text;
        ELSIF candidate.room IS NOT NULL THEN
            keys := keys || candidate.limit_key::text;
            key_rooms := key_rooms || candidate.room;
        END IF;
    END LOOP;
    total := least(total, op_room);
    IF total <= 0 THEN
        RETURN QUERY SELECT NULL::uuid, NULL::varchar, NULL::jsonb, NULL::int, NULL::int,
                            NULL::int, NULL::float8,
                            extract(epoch FROM reopens - claim_time)::float8
                     WHERE reopens IS NOT NULL;
        RETURN;
    END IF;

    -- The due tasks in claim order, a key's tasks only while its room lasts.
    FOR candidate IN
        SELECT q.id, q.limit_key
        FROM websurfing_task_queue q
        WHERE q.status = 'pending'
          AND q.scheduled_for <= claim_time
          AND q.task_type = p_task_type
          AND q.priority >= p_min_priority
          AND (q.limit_key IS NULL OR q.limit_key <> ALL (blocked))
        ORDER BY q.priority DESC, q.scheduled_for ASC
    LOOP
        IF candidate.limit_key IS NOT NULL THEN
            slot := array_position(keys, candidate.limit_key::text);
            IF slot IS NOT NULL THEN
                CONTINUE WHEN key_rooms[slot] <= 0;
                key_rooms[slot] := key_rooms[slot] - 1;
            END IF;
        END IF;
        chosen := chosen || candidate.id;
        EXIT WHEN cardinality(chosen) >= total;
    END LOOP;
    RETURN QUERY SELECT NULL::uuid, NULL::varchar, NULL::jsonb, NULL::int, NULL::int,
                        NULL::int, NULL::float8,
                        extract(epoch FROM reopens - claim_time)::float8
                 WHERE reopens IS NOT NULL;
    IF cardinality(chosen) = 0 THEN
        RETURN;
    END IF;

    RETURN QUERY
    WITH claimed AS (
        UPDATE websurfing_task_queue AS t
        SET status = 'processing',
            started_at = claim_time,
            worker_id = p_worker_id,
            attempts = t.attempts + 1,
            updated_at = now()
        WHERE t.id = ANY (chosen) AND t.status = 'pending'
        RETURNING t.id, t.task_type, t.payload, t.attempts, t.max_attempts, t.priority,
                  extract(epoch FROM now() - GREATEST(t.scheduled_for, t.created_at))::float8
                      AS waited_s,
                  t.limit_key
    ), rated_limits AS (
        SELECT l.id, l.limit_key, l.period_s
        FROM websurfing_task_limit l
        WHERE l.task_type = p_task_type AND l.rate IS NOT NULL
    ), logged AS (
        INSERT INTO websurf.task_limit_start (limit_id, started_at)
        SELECT r.id, claim_time
        FROM claimed c JOIN rated_limits r
          ON r.limit_key = '' OR r.limit_key = c.limit_key
    ), pruned AS (
        DELETE FROM websurf.task_limit_start s
        USING rated_limits r
        WHERE s.limit_id = r.id
          AND s.started_at <= claim_time - make_interval(secs => r.period_s)
    )
    SELECT c.id, c.task_type, c.payload, c.attempts, c.max_attempts, c.priority, c.waited_s,
           NULL::float8
    FROM claimed c;
END;
$$;

-- A changed limit row tells the workers at once on the channel they already listen to
-- (new_task, with "limits": true): they move the operator to or from the limited claim
-- and claim its tasks again (a cap may have grown). A pause that ends is noticed at the
-- poll interval.
CREATE FUNCTION websurf.notify_task_limit() RETURNS trigger
LANGUAGE plpgsql
SET search_path = public, pg_catalog, pg_temp
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
        GRANT EXECUTE ON FUNCTION websurf.claim_limited(text, text, integer, integer),
            websurf.limit_room(websurfing_task_limit, bigint, timestamptz),
            websurf.limit_reopens_at(websurfing_task_limit, timestamptz) TO websurf_worker;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'websurf_app') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON websurfing_task_limit TO websurf_app;
    END IF;
END;
$$;
