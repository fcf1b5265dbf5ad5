-- websurf's PL/pgSQL functions never JIT-compile their queries (issue 22's fairness run).
--
-- Every query in these functions reads or writes a few rows through an index (a trigger
-- per row or per statement, a claim, a cancel). PostgreSQL decides to JIT-compile a
-- query from its estimated cost (jit_above_cost, 100,000 by default, where the server
-- was built with JIT, as Debian's and most hosted servers are). Right after a big paste,
-- before autovacuum has analysed the queue, the robot-write guard's query was estimated
-- at 4.2 million for an index lookup of 0 or 1 rows: each person's edit of a cell then
-- spent 0.2 to 0.6 s compiling machine code for a query that ran in microseconds (with
-- jit off: 4 to 54 ms under the same load). The function-level setting applies to every
-- query planned inside the function, whoever calls it (the web app's edits included),
-- and costs nothing more per call: each function already sets search_path (0024).
--
-- A later migration that replaces one of these functions with CREATE OR REPLACE must
-- say SET jit = off again (tests/integration/test_robot_writes.py checks every one).
DO $migration$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN
        SELECT p.oid::regprocedure
        FROM pg_proc AS p
        JOIN pg_language AS l ON l.oid = p.prolang
        WHERE p.pronamespace = 'websurf'::regnamespace AND l.lanname = 'plpgsql'
        ORDER BY 1
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET jit = off', fn);
    END LOOP;
END;
$migration$;
