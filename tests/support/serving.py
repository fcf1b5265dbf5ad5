"""Serve worker processes' loops in-process: a Runner per thread, always stopped.

Integration tests of the worker boot a :class:`Runner` against the test's database,
serve it on a background thread (its own event loop) and stop it as SIGTERM does.
"""

from __future__ import annotations

import faulthandler
import threading
from collections.abc import Callable
from typing import Any

from websurf.worker.config import WorkerConfig
from websurf.worker.core.registry import Registry
from websurf.worker.process.runner import Runner

STOP_DEADLINE_S = 30.0
POLL_INTERVAL_S = 0.2  # unless a test says otherwise: a missed hint costs little


class Serving:
    """Starts Runners with a fresh registry each; :meth:`close` stops and joins them all."""

    def __init__(self, database_url: str, registry: Callable[[], Registry]) -> None:
        self.database_url = database_url
        self.registry = registry
        self.started: list[tuple[Runner, threading.Thread]] = []

    def start(
        self, worker_id: str = "test/0/runner", *, url: str | None = None, **settings: Any
    ) -> Runner:
        """Boot a Runner (``settings``: WorkerConfig fields) and serve it on a thread."""
        settings.setdefault("poll_interval_s", POLL_INTERVAL_S)
        config = WorkerConfig(database_url=url or self.database_url, **settings)
        runner = Runner(config, worker_id, registry=self.registry())
        runner.boot()
        thread = threading.Thread(target=runner.serve, name=f"serve-{worker_id}")
        thread.start()
        self.started.append((runner, thread))
        return runner

    def close(self) -> None:
        for runner, thread in self.started:
            runner.request_stop()
            runner.request_stop()
            thread.join(STOP_DEADLINE_S)
            if thread.is_alive():
                faulthandler.dump_traceback()  # where it is stuck, for whoever reads the failure
            assert not thread.is_alive(), "the runner did not stop"
