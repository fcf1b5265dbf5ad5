"""A schedule declared in code, for the acceptance tests (``--operators`` loads it).

Not a test module: the worker subprocess imports it. Kept apart from
``operators_for_tests`` so that only the tests that ask for it get a schedule.
"""

from __future__ import annotations

from datetime import timedelta

from websurf.worker.core.schedules import schedule

schedule(None, "noop", name="code-tick", every=timedelta(seconds=1), payload={"from": "code"})
