"""The worker roster: one row per live worker process in ``websurf.worker``.

Not to be confused with the operator registry (``core/registry.py``, which handler runs
which task type): the roster says which processes are alive and what each can run. A
process registers when it boots, heartbeats from its maintenance thread, and removes
itself on a clean exit; the reaper forgets one whose heartbeats stopped and hands its
tasks back (``maintenance/reaper.py``). ``websurf status`` and the robot-column check
read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row

from websurf.sql import QUERIES


@dataclass(frozen=True)
class WorkerRow:
    """A worker process on the roster (a ``list_workers`` row)."""

    id: str
    hostname: str
    pid: int
    task_types: list[str]
    started_at: datetime
    last_heartbeat_at: datetime
    stale: bool  # missed heartbeats for its stale_after_s: the reaper will forget it


@dataclass(frozen=True)
class ForgottenWorker:
    """A worker the reaper took off the roster (a ``delete_stale_workers`` row)."""

    id: str
    hostname: str
    pid: int
    last_heartbeat_at: datetime


def register(
    conn: psycopg.Connection[Any],
    worker_id: str,
    *,
    hostname: str,
    pid: int,
    task_types: Sequence[str],
    stale_after_s: float,
) -> None:
    """Put a process on the roster (again: a known id just refreshes its heartbeat)."""
    conn.execute(
        QUERIES["register_worker"],
        {
            "id": worker_id,
            "hostname": hostname,
            "pid": pid,
            "task_types": list(task_types),
            "stale_after_s": stale_after_s,
        },
    )


def heartbeat(conn: psycopg.Connection[Any], worker_id: str) -> bool:
    """Refresh a process's heartbeat; False when the roster had forgotten it (presumed dead)."""
    return conn.execute(QUERIES["heartbeat_worker"], {"id": worker_id}).fetchone() is not None


def deregister(conn: psycopg.Connection[Any], worker_id: str) -> None:
    """Take a process off the roster (its clean exit, or the supervisor seeing it die)."""
    conn.execute(QUERIES["deregister_worker"], {"id": worker_id})


def list_workers(conn: psycopg.Connection[Any]) -> list[WorkerRow]:
    """Every process on the roster, stale ones included, by host and start."""
    with conn.cursor(row_factory=class_row(WorkerRow)) as cur:
        return cur.execute(QUERIES["list_workers"]).fetchall()


def live_task_types(conn: psycopg.Connection[Any]) -> set[str]:
    """The task types some live (not stale) worker process can run."""
    return {t for worker in list_workers(conn) if not worker.stale for t in worker.task_types}


def forget_stale(conn: psycopg.Connection[Any]) -> list[ForgottenWorker]:
    """Take off the roster the processes whose heartbeats stopped (the reaper's first step)."""
    with conn.cursor(row_factory=class_row(ForgottenWorker)) as cur:
        return cur.execute(QUERIES["delete_stale_workers"]).fetchall()
