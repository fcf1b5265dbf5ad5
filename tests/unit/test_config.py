"""The worker's settings: defaults within the plan's bounds, and nonsense refused."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from websurf.worker import config as defaults
from websurf.worker.config import WorkerConfig

URL = "postgresql://u@localhost/db"


def test_defaults_are_valid_and_within_the_plans_bounds() -> None:
    config = WorkerConfig(URL).validate()

    # The plan: at most 20 connections, 30 s idle, 2 s connect timeout.
    assert config.pool_min_size <= config.pool_max_size <= 20
    assert config.pool_max_idle_s <= 30.0
    assert config.connect_timeout_s <= 2.0
    assert config.stale_after_s > 2 * config.heartbeat_interval_s
    assert config.shutdown_timeout_s == defaults.SHUTDOWN_TIMEOUT_S
    assert config.boot_db_wait_s == defaults.BOOT_DB_WAIT_S


def test_config_is_frozen() -> None:
    config = WorkerConfig(URL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.concurrency = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"shutdown_timeout_s": -1.0}, "shutdown timeout"),
        ({"poll_interval_s": 0.0}, "poll interval"),
        ({"batch_max": 0}, "batch size"),
        ({"heartbeat_interval_s": 0.0}, "heartbeat interval"),
        ({"heartbeat_interval_s": 5.0, "stale_after_s": 10.0}, "stale-after"),
        ({"pool_min_size": 0}, "pool min"),
        ({"pool_min_size": 5, "pool_max_size": 4}, "pool min"),
        ({"pool_max_size": 21}, "capped at 20"),
        ({"connect_timeout_s": 0.0}, "connect timeout"),
    ],
)
def test_validate_names_the_setting_that_makes_no_sense(
    change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        WorkerConfig(URL, **change).validate()


def test_config_round_trips_through_json_for_the_child() -> None:
    """The supervisor sends the config to each child as JSON; nothing may be lost."""
    import json

    config = WorkerConfig(URL, operator_modules=("a.b", "c"), concurrency=3, metrics_port=9100)
    data = json.loads(json.dumps(dataclasses.asdict(config)))
    data["operator_modules"] = tuple(data["operator_modules"])
    assert WorkerConfig(**data) == config
