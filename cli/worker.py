"""``websurf worker``: the daemon."""

from __future__ import annotations

import importlib.util
import sys

import click

from websurf.cli.options import (
    Runtime,
    direct_url_option,
    operators_option,
    option,
    parse_duration,
    pass_runtime,
)
from websurf.cli.render import EXIT_USAGE, CommandError
from websurf.worker import config as defaults
from websurf.worker.config import WorkerConfig
from websurf.worker.daemon.supervisor import EXIT_BOOT_FAILURE, Supervisor


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@click.command("worker")
@pass_runtime
@direct_url_option
@option(
    "--concurrency",
    "-c",
    type=click.IntRange(1, 256),
    default=defaults.CONCURRENCY,
    help="Worker processes to run.",
)
@option(
    "--tasks-per-process",
    type=click.IntRange(1, 100_000),
    default=defaults.TASKS_PER_PROCESS,
    help="Tasks one process runs at once (async handlers on its event loop, plain ones in"
    " its threads).",
)
@option(
    "--threads-per-process",
    type=click.IntRange(1, 1000),
    default=defaults.THREADS_PER_PROCESS,
    help="Threads per process for plain (non-async) handlers.",
)
@operators_option("Module that registers operators (repeatable).")
@option(
    "--shutdown-timeout",
    type=click.FloatRange(0),
    default=defaults.SHUTDOWN_TIMEOUT_S,
    help="Seconds in-flight tasks get to finish after SIGTERM before they are handed back.",
)
@option(
    "--poll-interval",
    type=click.FloatRange(0.01),
    default=defaults.POLL_INTERVAL_S,
    help="Seconds between polls when no notification arrives.",
)
@option(
    "--batch-size",
    type=click.IntRange(1, 10000),
    default=defaults.BATCH_MAX,
    help="Most tasks one process claims per round trip.",
)
@option(
    "--durable-claims",
    is_flag=True,
    default=False,
    help="Flush every claim to disk before running its tasks. Without it a database"
    " crash can forget the last claims, whose tasks then run again under the same"
    " attempt number; with it each pickup waits for the disk (about 1 ms).",
)
@option(
    "--heartbeat-interval",
    type=click.FloatRange(0.05),
    default=defaults.HEARTBEAT_INTERVAL_S,
    help="Seconds between a process's heartbeats.",
)
@option(
    "--stale-after",
    type=click.FloatRange(0.2),
    default=defaults.STALE_AFTER_S,
    help="Seconds without a heartbeat after which a worker is presumed dead.",
)
@option(
    "--reaper-interval",
    type=click.FloatRange(0.05),
    default=defaults.REAPER_INTERVAL_S,
    help="Seconds between reaper runs (one at a time across all hosts).",
)
@option(
    "--pool-size",
    type=click.IntRange(1, 20),
    default=defaults.POOL_MAX_SIZE,
    help="Most database connections per process (plus one for LISTEN).",
)
@option(
    "--pool-max-idle",
    type=click.FloatRange(1),
    default=defaults.POOL_MAX_IDLE_S,
    help="Seconds an idle pooled connection is kept.",
)
@option(
    "--connect-timeout",
    type=click.FloatRange(0.1, 2.0),
    default=defaults.CONNECT_TIMEOUT_S,
    help="Seconds to wait for a database connection to open.",
)
@option(
    "--boot-timeout",
    type=click.FloatRange(0),
    default=defaults.BOOT_DB_WAIT_S,
    help="Seconds a starting process waits for the database before giving up.",
)
@option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus metrics (/metrics) and health checks (/healthz, /readyz) on this"
    " port (0: any free port, logged).",
)
@option(
    "--metrics-host",
    default=defaults.METRICS_HOST,
    help="Address the metrics and health endpoint listens on.",
)
@option(
    "--prune-older-than",
    default=None,
    help="Also delete finished tasks older than this (e.g. 7d), every --prune-interval"
    " (one host at a time). Off unless given.",
)
@option(
    "--prune-interval",
    default="1h",
    help="How often the daemon prunes, when --prune-older-than is given.",
)
def worker_command(
    rt: Runtime,
    concurrency: int,
    tasks_per_process: int,
    threads_per_process: int,
    operator_modules: tuple[str, ...],
    shutdown_timeout: float,
    poll_interval: float,
    batch_size: int,
    durable_claims: bool,
    heartbeat_interval: float,
    stale_after: float,
    reaper_interval: float,
    pool_size: int,
    pool_max_idle: float,
    connect_timeout: float,
    boot_timeout: float,
    metrics_port: int | None,
    metrics_host: str,
    prune_older_than: str | None,
    prune_interval: str,
) -> None:
    """Run the worker daemon: N processes claiming and running tasks."""
    direct = rt.direct_database()
    # Fail fast on a module that does not exist, without importing it here: the
    # processes import the operators themselves, and one that fails to import stops
    # the daemon with its error (importing them here too delayed every start).
    for module in operator_modules:
        if not _module_exists(module.split(":", 1)[0]):
            raise CommandError(
                f"cannot import operator module {module!r}: no such module", EXIT_BOOT_FAILURE
            )
    try:
        config = WorkerConfig(
            database_url=rt.database().url,
            direct_database_url=direct.url if direct else None,
            concurrency=concurrency,
            tasks_per_process=tasks_per_process,
            threads_per_process=threads_per_process,
            operator_modules=operator_modules,
            shutdown_timeout_s=shutdown_timeout,
            poll_interval_s=poll_interval,
            batch_max=batch_size,
            durable_claims=durable_claims,
            heartbeat_interval_s=heartbeat_interval,
            stale_after_s=stale_after,
            reaper_interval_s=reaper_interval,
            pool_max_size=pool_size,
            pool_max_idle_s=pool_max_idle,
            connect_timeout_s=connect_timeout,
            boot_db_wait_s=boot_timeout,
            metrics_port=metrics_port,
            metrics_host=metrics_host,
            prune_older_than_s=(
                parse_duration(prune_older_than).total_seconds() if prune_older_than else None
            ),
            prune_interval_s=parse_duration(prune_interval).total_seconds(),
            log_level=rt.log_level,
            log_format=rt.log_format,
        ).validate()
    except ValueError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    supervisor = Supervisor(config)
    try:
        code = supervisor.run()
    finally:  # whatever stopped it: no metrics directory left behind
        if supervisor.health is not None:
            supervisor.health.stop()
    if code != 0:
        raise CommandError(supervisor.fatal_reason or "the worker daemon stopped", code)
    sys.stdout.flush()
