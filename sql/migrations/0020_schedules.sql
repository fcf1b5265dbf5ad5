-- Recurring work: schedules, and robot columns that refresh themselves.
--
-- websurf.schedule holds every recurring task: those registered in code (@schedule,
-- upserted by each worker at boot), those added with `websurf schedules add`, and one
-- per robot column with a refresh_every (kept in step with the column by the workers).
-- It lives in the websurf schema, beside the worker registry: it is the worker's
-- bookkeeping, which the web app neither reads through Drizzle nor should drop with
-- `drizzle-kit push`; the web app says what it wants on the column (refresh_every).
--
-- Exactly once per tick: a worker claims a due tick and enqueues its task in ONE
-- transaction, by compare-and-set on next_run_at (websurf.worker.scheduler). A worker
-- that dies before the commit leaves the tick due for the next one; two that race see
-- one winner.

CREATE TABLE websurf.schedule (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    -- code: @schedule in an operator module; cli: websurf schedules add (or SQL);
    -- column: a robot column's refresh_every
    source text NOT NULL DEFAULT 'cli',
    cron text,  -- 5-field cron expression, evaluated in time_zone
    every interval,  -- or a fixed interval, counted from the previous tick
    time_zone text NOT NULL DEFAULT 'UTC',
    task_type varchar(100) NOT NULL,
    payload jsonb NOT NULL DEFAULT '{}',
    priority integer NOT NULL DEFAULT 5,
    max_attempts integer,
    -- ticks missed while no worker ran: 'once' runs the latest of them once,
    -- 'skip' runs none (only a tick less than a minute late still runs)
    catch_up text NOT NULL DEFAULT 'once',
    paused boolean NOT NULL DEFAULT false,
    next_run_at timestamptz NOT NULL,
    last_run_at timestamptz,  -- the tick that ran last
    last_enqueued_at timestamptz,  -- when a worker enqueued it
    last_task_id uuid,  -- no foreign key: pruning deletes old tasks
    ticks_run bigint NOT NULL DEFAULT 0,
    ticks_skipped bigint NOT NULL DEFAULT 0,
    -- a robot column's refresh (source = 'column'): the rows <= refresh_after_row of
    -- the current round are enqueued, refresh_in_flight are its tasks not yet known to
    -- be finished; both NULL between rounds
    column_id uuid UNIQUE REFERENCES websurfing_column (id) ON DELETE CASCADE,
    refresh_after_row integer,
    refresh_in_flight uuid[],
    refresh_rows bigint NOT NULL DEFAULT 0,  -- rows enqueued by the current/last round
    refresh_failed bigint NOT NULL DEFAULT 0,  -- of which failed for good
    refresh_done_at timestamptz,  -- when the last round finished
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schedule_name_unique UNIQUE (name),
    CONSTRAINT schedule_name_length CHECK (length(name) BETWEEN 1 AND 200),
    CONSTRAINT schedule_source_check CHECK (source IN ('code', 'cli', 'column')),
    CONSTRAINT schedule_cron_or_every CHECK (num_nonnulls(cron, every) = 1),
    CONSTRAINT schedule_every_positive CHECK (every IS NULL OR every > interval '0'),
    CONSTRAINT schedule_payload_object CHECK (jsonb_typeof(payload) = 'object'),
    CONSTRAINT schedule_catch_up_check CHECK (catch_up IN ('once', 'skip')),
    CONSTRAINT schedule_max_attempts_check CHECK (max_attempts IS NULL OR max_attempts >= 1),
    CONSTRAINT schedule_column_source CHECK ((source = 'column') = (column_id IS NOT NULL))
);

-- Each worker's maintenance turn looks for due ticks and running refresh rounds.
CREATE INDEX schedule_due_idx ON websurf.schedule (next_run_at) WHERE NOT paused;
CREATE INDEX schedule_refreshing_idx ON websurf.schedule (id)
    WHERE refresh_after_row IS NOT NULL;

CREATE TRIGGER schedule_touch_updated_at BEFORE UPDATE ON websurf.schedule
    FOR EACH ROW WHEN (OLD.updated_at IS NOT DISTINCT FROM NEW.updated_at)
    EXECUTE FUNCTION websurf.touch_updated_at();

-- A robot column re-runs its operator for every filled row this often (NULL: only when
-- its source cell is edited). At least a minute: a refresh of a big sheet takes a while.
ALTER TABLE websurfing_column
    ADD COLUMN refresh_every interval,
    ADD CONSTRAINT column_refresh_every_minimum
        CHECK (refresh_every IS NULL OR refresh_every >= interval '1 minute');
CREATE INDEX column_refresh_idx ON websurfing_column (id) WHERE refresh_every IS NOT NULL;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'websurf_worker') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON websurf.schedule TO websurf_worker;
    END IF;
END;
$$;
