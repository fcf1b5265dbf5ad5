"""Which database a command uses: the configured URL, or none (the embedded default).

Kept free of psycopg so that commands that only need to know *where* the database is
(the worker's supervisor, which never connects) start quickly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

URL_ENV_VARS = ("WEBSURF_DATABASE_URL", "DATABASE_URL")


class DatabaseUnavailable(RuntimeError):
    """The database could not be reached within the retry budget."""


@dataclass(frozen=True)
class DatabaseTarget:
    url: str
    source: str  # "option", an environment variable name, or "embedded"

    @property
    def safe(self) -> str:
        from websurf.sql.database import redact

        return redact(self.url)


def configured_url(option: str | None) -> DatabaseTarget | None:
    """The configured database, or None when the embedded default should be used."""
    if option:
        return DatabaseTarget(option, "option")
    for var in URL_ENV_VARS:
        value = os.environ.get(var)
        if value:
            return DatabaseTarget(value, var)
    return None
