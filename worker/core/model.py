"""The queue's model: the words every part of websurf uses for a task and what became of it."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """A task's ``status`` column (the CHECK constraint in ``0003_task_queue.sql``).

    A ``StrEnum``: it compares equal to the column's text and psycopg sends it as that text.
    """

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Whether the task is done for good (nothing will run it again unless retried)."""
        return self in FINISHED


FINISHED = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
