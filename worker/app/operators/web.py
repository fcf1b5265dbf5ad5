"""``web_title``: fetch the URL in the edited cell and write the page's <title>.

Registered here; the fetching (aiohttp, the SSRF guard, per-host limits) lives in
``web_fetch`` and is imported on the first fetch, so a worker process that never runs
``web_title`` never pays for importing an HTTP client. Every name of ``web_fetch``
(``fetch``, ``FetchPolicy``, ``ALLOW_ENV`` ...) is also reachable from this module.
"""

from __future__ import annotations

import sys
from typing import Any

from websurf.worker.core.registry import Context, Result, Task, on_stop, operator

FETCH_TIMEOUT_S = 10.0  # one fetch, whole: lookups, connects, every hop, every byte
ALLOW_ENV = "WEBSURF_FETCH_ALLOW"  # read without importing the client (the demo sets it)
_FETCH_MODULE = "websurf.worker.app.operators.web_fetch"


@operator("web_title", timeout_s=FETCH_TIMEOUT_S + 5.0)
async def web_title(task: Task, context: Context) -> Result:
    from websurf.worker.app.operators import web_fetch

    return await web_fetch.web_title(task, context)


@on_stop
async def close_sessions() -> None:
    """Close the process's HTTP sessions, if it ever opened any."""
    fetching = sys.modules.get(_FETCH_MODULE)
    if fetching is not None:
        await fetching.close_sessions()


def __getattr__(name: str) -> Any:
    from websurf.worker.app.operators import web_fetch

    return getattr(web_fetch, name)
