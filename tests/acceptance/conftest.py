"""``start_worker(database_url, *options)``: the real ``websurf worker`` with this folder's
test operators (``operators_for_tests``) loadable, one process unless ``concurrency=``
says otherwise; stopped at the end of the test (``support.daemon``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest
from support.daemon import Daemon, Daemons

HERE = Path(__file__).resolve().parent
TEST_OPERATORS = "operators_for_tests"


@pytest.fixture
def start_worker(daemons: Daemons) -> Callable[..., Daemon]:
    return functools.partial(
        daemons.worker, operators=[TEST_OPERATORS], pythonpath=[HERE], concurrency=1
    )
