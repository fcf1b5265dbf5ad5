"""The maintenance lock: one reaper, or one pruner, at a time across all hosts.

A transaction-scoped advisory lock (a session lock would break through a transaction
pooler): it is taken at the start of each of the service's transactions and goes with
its commit.
"""

from __future__ import annotations

import hashlib
from typing import Any

import psycopg
from psycopg.rows import scalar_row

from websurf.sql import QUERIES


def lock_key(name: str) -> int:
    """The advisory lock key of a maintenance service (a 64-bit hash of its name)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def take(conn: psycopg.Connection[Any], key: int) -> bool:
    """Take the lock for this transaction; False when another transaction holds it."""
    with conn.cursor(row_factory=scalar_row) as cur:
        return bool(cur.execute(QUERIES["try_maintenance_lock"], {"key": key}).fetchone())
