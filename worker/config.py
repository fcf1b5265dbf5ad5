"""The worker's settings: defaults as named constants with units, one frozen object."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

CONCURRENCY = 2  # worker processes (CPU and crash isolation)
# Tasks in flight per process: async handlers waiting on the network cost little, so
# this is large; it bounds memory (about 50 kB per task in flight) and the claim size.
TASKS_PER_PROCESS = 4000
THREADS_PER_PROCESS = 32  # plain (non-async) handlers run in this many threads per process
STUCK_GRACE_S = 5.0  # a plain handler past its timeout may take this long to return, then
# the process is recycled (a thread cannot be killed)
SHUTDOWN_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 1.0
BATCH_MAX = 500  # tasks claimed per round trip, at most
BATCH_WINDOW_S = 0.05  # claim about this much work at a time (batch = window / task time)
HEARTBEAT_INTERVAL_S = 5.0
STALE_AFTER_S = 30.0  # a worker that has not heartbeaten for this long is presumed dead
REAPER_INTERVAL_S = 10.0
POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 4  # claim loop + heartbeat + a handler's read connection, with room to spare
POOL_MAX_IDLE_S = 30.0
CONNECT_TIMEOUT_S = 2.0
DB_RETRY_MAX_WAIT_S = 3.0  # cap of the backoff while the database is away: resume within 3 s
BOOT_DB_WAIT_S = 30.0  # how long a booting child waits for the database before giving up
RESTART_BACKOFF_MAX_S = 30.0
METRICS_HOST = "0.0.0.0"  # the health/metrics endpoint listens here (container probes)
PRUNE_INTERVAL_S = 3600.0  # the daemon prunes this often when --prune-older-than is set
PRUNE_BATCH_SIZE = 1000  # tasks deleted per transaction
PRUNE_TIME_BUDGET_S = 2.0  # per maintenance turn, so heartbeats keep their pace


@dataclass(frozen=True)
class WorkerConfig:
    database_url: str  # claims, outcomes, maintenance: may go through a transaction pooler
    direct_database_url: str | None = None  # LISTEN (a session); None: the main URL
    concurrency: int = CONCURRENCY
    tasks_per_process: int = TASKS_PER_PROCESS
    threads_per_process: int = THREADS_PER_PROCESS
    stuck_grace_s: float = STUCK_GRACE_S
    operator_modules: tuple[str, ...] = ()
    shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S
    poll_interval_s: float = POLL_INTERVAL_S
    batch_max: int = BATCH_MAX
    batch_window_s: float = BATCH_WINDOW_S
    durable_claims: bool = False  # wait for the WAL flush on every claim (see runner)
    heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S
    stale_after_s: float = STALE_AFTER_S
    reaper_interval_s: float = REAPER_INTERVAL_S
    pool_min_size: int = POOL_MIN_SIZE
    pool_max_size: int = POOL_MAX_SIZE
    pool_max_idle_s: float = POOL_MAX_IDLE_S
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    db_retry_max_wait_s: float = DB_RETRY_MAX_WAIT_S
    boot_db_wait_s: float = BOOT_DB_WAIT_S
    metrics_port: int | None = None
    metrics_dir: str | None = None
    metrics_host: str = METRICS_HOST
    prune_older_than_s: float | None = None  # None: the daemon does not prune
    prune_interval_s: float = PRUNE_INTERVAL_S
    prune_batch_size: int = PRUNE_BATCH_SIZE
    log_level: str = "info"
    log_format: str = "auto"
    hostname: str = field(default_factory=socket.gethostname)

    def validate(self) -> WorkerConfig:
        """Raise ValueError naming the first setting that makes no sense."""
        checks = [
            (self.concurrency >= 1, "concurrency must be at least 1"),
            (
                1 <= self.tasks_per_process <= 100_000,
                "tasks per process must be between 1 and 100000",
            ),
            (
                1 <= self.threads_per_process <= 1000,
                "threads per process must be between 1 and 1000",
            ),
            (self.shutdown_timeout_s >= 0, "shutdown timeout must not be negative"),
            (self.poll_interval_s > 0, "poll interval must be positive"),
            (self.batch_max >= 1, "batch size must be at least 1"),
            (self.heartbeat_interval_s > 0, "heartbeat interval must be positive"),
            (
                self.stale_after_s > 2 * self.heartbeat_interval_s,
                "stale-after must be more than twice the heartbeat interval",
            ),
            (1 <= self.pool_min_size <= self.pool_max_size, "need 1 <= pool min <= pool max"),
            (self.pool_max_size <= 20, "pool max size is capped at 20 connections per process"),
            (self.connect_timeout_s > 0, "connect timeout must be positive"),
            (
                self.prune_older_than_s is None or self.prune_older_than_s >= 0,
                "prune age must not be negative",
            ),
            (self.prune_interval_s > 0, "prune interval must be positive"),
            (self.prune_batch_size >= 1, "prune batch size must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        return self
