-- websurf:no-transaction
-- Fairness between tenants (issue 22, README "Fairness between tenants"): one person's
-- 10,000-row paste no longer makes everyone else's robots wait behind it.
--
-- * fairness_key names whose work a task is. The web app may set it at INSERT (SQL or
--   Drizzle); when it is NULL, the BEFORE INSERT trigger below fills it with the author
--   named in the transaction's websurf.user_id (a person's edit queues its robot tasks
--   in the edit's transaction, 0018), else the owner of the spreadsheet named by
--   payload.spreadsheet_id (refresh rounds, schedules), else it stays NULL: tasks
--   with no key share one anonymous key.
-- * fair_seq is the task's round (start-time fair queuing). Per operator (task_type)
--   and priority, a task takes its key's last pending round + 1, or, when its key has
--   no task waiting, the current round (the smallest round of a due pending task). A
--   key with a backlog numbers its tasks 1, 2, 3 ... ahead of it; a newcomer's one task
--   takes the current round, so the next claim of that operator picks it ahead of the
--   backlog, and keys with backlogs alternate. The trigger's queries see the rows
--   inserted earlier in the same statement (a volatile function), so a paste numbers
--   its rows in order.
-- * The claim orders by priority DESC, fair_seq, scheduled_for through
--   task_queue_fair_idx, so it stays one range scan of a partial index, as before (no
--   loop over keys). It replaces task_queue_processing_idx, whose order the claim no
--   longer uses; the other readers of pending rows (status counts, tasks list, the
--   wake-up timer) read every pending entry whichever index holds them.
-- * task_queue_fair_key_idx finds a key's last pending round for the trigger. Both are
--   partial on pending rows: a claim and a finish add no entry to them (0022); an
--   insert adds one more index entry than before.
-- * A task queued to run later (scheduled_for after now() at insert) takes a round in
--   the timed band: 2^62 + its due time in microseconds, behind every round, so it
--   never sits in front of due work for the claim to step over, and in due order among
--   its kind. Once due, the claim can take it after the rounds of its priority, and the
--   maintenance thread's promoter gives it a round as if it were inserted then
--   (task_queue_timed_idx finds those), so under load it waits its turn, not for the
--   whole backlog.
-- * A retry waiting out its backoff goes to the timed band too (finish_tasks), and the
--   promoter brings it back once due. Tasks that come back to pending due at once (a
--   reaped claim, a task handed back) keep their round, which is behind the current
--   one: they go first.
--
-- No transaction around the file, so the indexes build CONCURRENTLY while workers
-- claim; each statement is re-runnable. The indexes come before the trigger, whose
-- lookups need them. Pending and processing rows already in the table are numbered
-- last: their key by the spreadsheet owner, their round in due order within their key.

ALTER TABLE websurfing_task_queue
    ADD COLUMN IF NOT EXISTS fairness_key varchar(255),
    ADD COLUMN IF NOT EXISTS fair_seq bigint DEFAULT 0 NOT NULL;

CREATE INDEX CONCURRENTLY IF NOT EXISTS task_queue_fair_idx ON websurfing_task_queue
    (priority DESC, fair_seq, scheduled_for) WHERE status = 'pending';

CREATE INDEX CONCURRENTLY IF NOT EXISTS task_queue_fair_key_idx ON websurfing_task_queue
    (fairness_key, task_type, priority, fair_seq) WHERE status = 'pending';

-- The timed band alone, in due order: the promoter (worker/maintenance/promoter.py)
-- finds the tasks that have come due there without reading the rounds.
CREATE INDEX CONCURRENTLY IF NOT EXISTS task_queue_timed_idx ON websurfing_task_queue
    (fair_seq) WHERE status = 'pending' AND fair_seq >= 4611686018427387904;

-- Fills fairness_key when the insert left it NULL, and always sets fair_seq (a value
-- the inserter gives is replaced: nobody jumps the queue by writing a round). Per task
-- type and priority, the round is the key's last pending round + 1 when the key has
-- tasks waiting, else the current round (the smallest round of a due pending task).
-- * Cost per row, for a paste of 10,000: the round a row takes is remembered in the
--   transaction-local setting websurf.fair_last with the statement, type, priority and
--   key it was for, so the next row of the same run takes the next round without a
--   query (a paste is one top-level statement, however many nested INSERTs its edit
--   trigger makes). The lookups run for the first row of each run.
-- * Only a key's first task reads the current round: that lookup walks the index
--   entries of every task claimed since the last vacuum.
-- * Rounds of 2^62 and up are the timed band, 2^62 + the due time in microseconds, for
--   a task queued to run later; neither lookup reads them.
-- * Two key lookups, one per case of the key: a single one with `key = x OR both NULL`
--   cannot use the index and reads every pending row.
-- * No sequential scan or bitmap: the plans are cached for the session, and one made
--   while the queue looked empty (the statistics of an empty table) would read the
--   whole table for every row of the next big insert.
-- As the invoker: every role that inserts tasks (the web app's, the worker's) may read
-- the queue and the spreadsheets. search_path = pg_catalog, pg_temp and the tables named
-- by their schema, {home} in the body (0024, rule 4): no function an application creates
-- in a schema it can write runs inside an insert of anyone else's task.
DO $migration$
DECLARE
    home text := (
        SELECT quote_ident(n.nspname)
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE c.oid = 'websurfing_cell'::regclass
    );
BEGIN
    EXECUTE replace($fn$
CREATE OR REPLACE FUNCTION websurf.task_queue_fair_place() RETURNS trigger
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_bitmapscan = off
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    key_next bigint;
    run text;
    last text;
    last_seq text;
BEGIN
    IF NEW.fairness_key IS NULL THEN
        NEW.fairness_key := left(nullif(current_setting('websurf.user_id', true), ''), 255);
        IF NEW.fairness_key IS NULL AND NEW.payload ? 'spreadsheet_id' THEN
            SELECT s.owner_id INTO NEW.fairness_key
            FROM {home}.websurfing_spreadsheet AS s
            WHERE s.id = websurf.uuid_or_null(NEW.payload ->> 'spreadsheet_id');
        END IF;
    END IF;
    -- isfinite: an 'infinity' has no round; task_queue_times_in_range (0023) refuses it.
    IF NEW.scheduled_for > now() AND isfinite(NEW.scheduled_for) THEN
        NEW.fair_seq := 4611686018427387904
            + floor(extract(epoch FROM NEW.scheduled_for) * 1000000)::bigint;
        RETURN NEW;
    END IF;
    -- Length-prefixed, so no two runs read alike whatever their names hold.
    run := format('%s|%s|%s:%s|%s', statement_timestamp(), NEW.priority,
                  length(NEW.task_type), NEW.task_type,
                  coalesce(length(NEW.fairness_key) || ':' || NEW.fairness_key, '-'));
    last := current_setting('websurf.fair_last', true);
    last_seq := split_part(last, ' ', 1);
    IF last_seq <> '' AND substr(last, length(last_seq) + 2) = run THEN
        key_next := last_seq::bigint + 1;
    ELSIF NEW.fairness_key IS NULL THEN
        SELECT q.fair_seq + 1 INTO key_next
        FROM {home}.websurfing_task_queue AS q
        WHERE q.status = 'pending' AND q.fairness_key IS NULL
          AND q.task_type = NEW.task_type AND q.priority = NEW.priority
          AND q.fair_seq < 4611686018427387904
        ORDER BY q.fair_seq DESC
        LIMIT 1;
    ELSE
        SELECT q.fair_seq + 1 INTO key_next
        FROM {home}.websurfing_task_queue AS q
        WHERE q.status = 'pending' AND q.fairness_key = NEW.fairness_key
          AND q.task_type = NEW.task_type AND q.priority = NEW.priority
          AND q.fair_seq < 4611686018427387904
        ORDER BY q.fair_seq DESC
        LIMIT 1;
    END IF;
    IF key_next IS NULL THEN
        SELECT q.fair_seq INTO key_next
        FROM {home}.websurfing_task_queue AS q
        WHERE q.status = 'pending' AND q.priority = NEW.priority
          AND q.fair_seq < 4611686018427387904
          AND q.task_type = NEW.task_type AND q.scheduled_for <= now()
        ORDER BY q.priority DESC, q.fair_seq
        LIMIT 1;
        key_next := coalesce(key_next, 0);
    END IF;
    NEW.fair_seq := key_next;
    PERFORM set_config('websurf.fair_last', key_next || ' ' || run, true);
    RETURN NEW;
END;
$$
$fn$, '{home}', home);
END;
$migration$;

-- Only pending rows take part (a row inserted finished, as imports do, needs no round).
CREATE OR REPLACE TRIGGER task_queue_fair_place BEFORE INSERT ON websurfing_task_queue
    FOR EACH ROW WHEN (NEW.status = 'pending')
    EXECUTE FUNCTION websurf.task_queue_fair_place();

-- Pending and processing rows from before this file: keys from their spreadsheet's
-- owner, rounds in due order within each key (a processing task keeps its round if it
-- comes back to pending). Re-running it numbers them again, which is as good.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM websurfing_task_queue WHERE status IN ('pending', 'processing'))
    THEN
        UPDATE websurfing_task_queue AS t
        SET fairness_key = n.fairness_key, fair_seq = n.fair_seq
        FROM (
            SELECT k.id, k.fairness_key,
                   CASE WHEN k.scheduled_for > now()
                        THEN 4611686018427387904
                             + floor(extract(epoch FROM k.scheduled_for) * 1000000)::bigint
                        ELSE row_number() OVER (
                            PARTITION BY k.fairness_key, k.task_type, k.priority,
                                         k.scheduled_for > now()
                            ORDER BY k.scheduled_for, k.created_at) - 1
                   END AS fair_seq
            FROM (
                SELECT q.id, q.task_type, q.priority, q.scheduled_for, q.created_at,
                       coalesce(q.fairness_key, s.owner_id) AS fairness_key
                FROM websurfing_task_queue AS q
                LEFT JOIN websurfing_spreadsheet AS s
                  ON s.id = websurf.uuid_or_null(q.payload ->> 'spreadsheet_id')
                WHERE q.status IN ('pending', 'processing')
            ) AS k
        ) AS n
        WHERE t.id = n.id AND t.status IN ('pending', 'processing');
    END IF;
END;
$$;

DROP INDEX CONCURRENTLY IF EXISTS task_queue_processing_idx;
