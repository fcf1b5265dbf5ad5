"""The supervisor's /metrics while a child is creating its metric file.

A child creates its file empty and sizes it a moment later; a scrape in that moment used
to answer 500 (``{"error": "error"}``, a struct.error from merging the empty file).
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict, mmap_key

from websurf.worker.daemon.health import HealthServer


def test_metrics_answer_while_a_child_file_is_still_empty(tmp_path: Path) -> None:
    written = MmapedDict(str(tmp_path / "counter_101.db"))
    key = mmap_key("websurf_tasks_claimed", "websurf_tasks_claimed_total", [], [], "Tasks claimed.")
    written.write_value(key, 7.0, 0.0)
    written.close()
    (tmp_path / "counter_102.db").touch()  # a second child, between creating and sizing
    (tmp_path / "gauge_livemax_102.db").touch()

    server = HealthServer(
        0,
        alive=lambda: True,
        stopping=lambda: False,
        processes=lambda: (2, 2),
        ready_window_s=30.0,
        host="127.0.0.1",
        metrics_dir=str(tmp_path / "metrics"),
    )
    server.start()
    try:
        for name in ("counter_101.db", "counter_102.db", "gauge_livemax_102.db"):
            os.replace(tmp_path / name, Path(server.metrics_dir) / name)
        status, _type, body = server.answer("/metrics")
        ready_status, _, _ = server.answer("/readyz")
    finally:
        server.stop()

    assert status == 200, body
    assert b"websurf_tasks_claimed_total 7.0" in body
    assert ready_status == 503  # no child reported the database yet: not ready, not a 500
