-- The fairness trigger's cost per row (issue 22 item 6: "not slower"). 0025's
-- websurf.task_queue_fair_place runs for every pending task inserted; in a bulk insert
-- (enqueue_many, a paste's robot tasks) nearly every row takes the next round of the
-- row before it, remembered in a transaction-local setting, and never looks at the
-- queue. That path still paid, per row: the trigger's three SET clauses (each call
-- saves and restores every setting it names), a format() of the run, and the split of
-- one setting holding both the round and the run. Measured with EXPLAIN ANALYZE of a
-- 5,000-row INSERT (trigger time per row, median of 6, interleaved on one machine):
-- 0025's trigger 7.6 us, this one 6.1 us; an empty trigger with only the search_path
-- clause costs 1.4 us.
--
-- * The lookups (a key's last pending round, else the current round) move, unchanged,
--   into websurf.task_queue_fair_round, which keeps their SET clauses (no sequential
--   scan or bitmap: see 0025). Only the first row of each run calls it.
-- * The run (statement, priority, type, key) and the last round given are two settings,
--   websurf.fair_run and websurf.fair_seq, so a row of the same run compares one
--   string and writes one number. The run is built by concatenation, length-prefixed
--   as before so no two runs read alike.
-- The rounds given are the same as 0025's, row for row.

DO $migration$
DECLARE
    home text := (
        SELECT quote_ident(n.nspname)
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE c.oid = 'websurfing_cell'::regclass
    );
BEGIN
    EXECUTE replace($fn$
-- The round a task of this key, type and priority takes when its run has none yet: the
-- key's last pending round + 1, else the current round (the smallest round of a due
-- pending task of the type and priority), else 0. The rule and the plans of 0025.
CREATE OR REPLACE FUNCTION websurf.task_queue_fair_round(
    fairness_key text, task_type text, priority integer
) RETURNS bigint
-- Volatile, as the trigger: its queries see the rows inserted earlier in the same
-- statement (rows of other runs in between: a key's rows interleaved with another's).
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_bitmapscan = off
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    key_next bigint;
BEGIN
    -- Two key lookups, one per case of the key: `key = x OR both NULL` is not indexable.
    IF task_queue_fair_round.fairness_key IS NULL THEN
        SELECT q.fair_seq + 1 INTO key_next
        FROM {home}.websurfing_task_queue AS q
        WHERE q.status = 'pending' AND q.fairness_key IS NULL
          AND q.task_type = task_queue_fair_round.task_type
          AND q.priority = task_queue_fair_round.priority
          AND q.fair_seq < 4611686018427387904
        ORDER BY q.fair_seq DESC
        LIMIT 1;
    ELSE
        SELECT q.fair_seq + 1 INTO key_next
        FROM {home}.websurfing_task_queue AS q
        WHERE q.status = 'pending' AND q.fairness_key = task_queue_fair_round.fairness_key
          AND q.task_type = task_queue_fair_round.task_type
          AND q.priority = task_queue_fair_round.priority
          AND q.fair_seq < 4611686018427387904
        ORDER BY q.fair_seq DESC
        LIMIT 1;
    END IF;
    IF key_next IS NULL THEN
        SELECT q.fair_seq INTO key_next
        FROM {home}.websurfing_task_queue AS q
        WHERE q.status = 'pending' AND q.priority = task_queue_fair_round.priority
          AND q.fair_seq < 4611686018427387904
          AND q.task_type = task_queue_fair_round.task_type AND q.scheduled_for <= now()
        ORDER BY q.priority DESC, q.fair_seq
        LIMIT 1;
    END IF;
    RETURN coalesce(key_next, 0);
END;
$$;

-- 0025's trigger: fills fairness_key when the insert left it NULL, and always sets
-- fair_seq (a value the inserter gives is replaced). Rows of one run (one top-level
-- statement, priority, type and key) take consecutive rounds from the first one's.
CREATE OR REPLACE FUNCTION websurf.task_queue_fair_place() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    run text;
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
    run := statement_timestamp() || '|' || NEW.priority || '|' || length(NEW.task_type)
           || ':' || NEW.task_type || '|'
           || coalesce(length(NEW.fairness_key) || ':' || NEW.fairness_key, '-');
    IF current_setting('websurf.fair_run', true) = run THEN
        NEW.fair_seq := current_setting('websurf.fair_seq')::bigint + 1;
        PERFORM set_config('websurf.fair_seq', NEW.fair_seq::text, true);
        RETURN NEW;
    END IF;
    NEW.fair_seq := websurf.task_queue_fair_round(NEW.fairness_key, NEW.task_type,
                                                  NEW.priority);
    PERFORM set_config('websurf.fair_run', run, true),
            set_config('websurf.fair_seq', NEW.fair_seq::text, true);
    RETURN NEW;
END;
$$;
$fn$, '{home}', home);
END;
$migration$;
