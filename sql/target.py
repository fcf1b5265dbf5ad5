"""Which database a command uses: the configured URL, or none (the embedded default).

Kept free of psycopg so that commands that only need to know *where* the database is
(the worker's supervisor, which never connects) start quickly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

URL_ENV_VARS = ("WEBSURF_DATABASE_URL", "DATABASE_URL")
# The URL for what needs a session (LISTEN, migrations, session locks) when the main
# one goes through a transaction pooler; DIRECT_URL is the name Prisma and Supabase use.
DIRECT_URL_ENV_VARS = ("WEBSURF_DIRECT_DATABASE_URL", "DIRECT_URL")


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
    return _configured(option, URL_ENV_VARS)


def configured_direct_url(option: str | None) -> DatabaseTarget | None:
    """The configured direct URL, or None: then everything takes the main URL."""
    return _configured(option, DIRECT_URL_ENV_VARS)


def _configured(option: str | None, env_vars: tuple[str, ...]) -> DatabaseTarget | None:
    if option:
        return DatabaseTarget(option, "option")
    for var in env_vars:
        value = os.environ.get(var)
        if value:
            return DatabaseTarget(value, var)
    return None
