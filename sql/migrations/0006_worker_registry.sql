-- websurf's own bookkeeping: the registry of worker processes. Every child process
-- inserts a row with a fresh random id when it boots (so a reused hostname or pid
-- never looks alive), updates last_heartbeat_at while it runs, and deletes its row on
-- a clean exit. The reaper treats a row whose heartbeat is older than its
-- stale_after_s as dead and hands its tasks back.

CREATE TABLE websurf.worker (
    id varchar(255) PRIMARY KEY,
    hostname text NOT NULL,
    pid integer NOT NULL,
    task_types text[] NOT NULL DEFAULT '{}',
    started_at timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at timestamptz NOT NULL DEFAULT now(),
    stale_after_s real NOT NULL DEFAULT 30
);
CREATE INDEX worker_heartbeat_idx ON websurf.worker (last_heartbeat_at);
