"""The enqueue samples of docs/queue.md, run by tests/docs/test_python_samples.py."""

# --8<-- [start:imports]
import psycopg

from websurf.worker.core.queue import NewTask, enqueue, enqueue_many

# --8<-- [end:imports]


def enqueue_from_python(url: str, cell_id: str) -> None:
    # --8<-- [start:enqueue]
    with psycopg.connect(url) as conn:  # one transaction
        enqueue(conn, "web_title", {"cell_id": cell_id, "url": "https://example.com"})
        enqueue_many(conn, [NewTask("noop", {"n": i}) for i in range(10_000)])  # one statement
    # --8<-- [end:enqueue]


def enqueue_with_keys(conn: psycopg.Connection, c: str, url: str) -> None:
    # --8<-- [start:unique-key]
    enqueue(conn, "web_title", {"cell_id": c, "input": url}, unique_key=f"cell:{c}")
    enqueue_many(conn, [NewTask("noop", {"n": i}, unique_key=f"n:{i % 10}") for i in range(100)])
    # --8<-- [end:unique-key]
