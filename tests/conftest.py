"""Fixtures: a real PostgreSQL server and a fresh database per test.

The server comes from, in order: ``WEBSURF_TEST_DATABASE_URL`` (any database on a
server where we may CREATE DATABASE); a testcontainers PostgreSQL when
``WEBSURF_TEST_PG=docker`` and a Docker engine answers; the embedded server, started
for this test session in a throwaway directory. The session migrates one template
database, and each test gets a clone of it (``CREATE DATABASE … TEMPLATE``); every
database created here is dropped at the end.

Also shared: ``daemons`` (start ``websurf`` in a subprocess, always stopped; see
``support.daemon``) and ``pgbouncer`` (``support.pgbouncer``).
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import conninfo, sql
from support.daemon import Daemons
from support.pgbouncer import PgBouncer
from support.rows import new_column, robot_payloads

from websurf.sql import migrate as migrator


def _docker_answers(timeout: float = 1.0) -> bool:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(timeout)
            sock.connect(host[len("unix://") :])
        elif host.startswith("tcp://"):
            name, _, port = host[len("tcp://") :].partition(":")
            sock = socket.create_connection((name, int(port or 2375)), timeout=timeout)
        else:
            return False
        with sock:
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in sock.recv(64)
    except OSError:
        return False


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """DSN of a server on which the tests may create and drop databases."""
    url = os.environ.get("WEBSURF_TEST_DATABASE_URL")
    if url:
        yield url
        return
    if os.environ.get("WEBSURF_TEST_PG") == "docker" and _docker_answers():
        from testcontainers.community.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url()
        return
    from websurf.sql.embedded import EmbeddedServer

    server = EmbeddedServer(throwaway=True, fast=True, tcp=True)
    try:
        yield server.start()
    finally:
        server.stop()


class Databases:
    """Creates databases on the test server and drops them all at the end."""

    def __init__(self, server_dsn: str) -> None:
        self.server_dsn = server_dsn
        self.created: list[str] = []

    def url(self, name: str) -> str:
        return conninfo.make_conninfo(self.server_dsn, dbname=name)

    def create(self, template: str | None = None) -> str:
        name = f"websurf_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.server_dsn, autocommit=True) as conn:
            statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template:
                statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
            conn.execute(statement)
        self.created.append(name)
        return name

    def drop(self, name: str) -> None:
        with psycopg.connect(self.server_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        if name in self.created:
            self.created.remove(name)

    def drop_all(self) -> None:
        for name in list(reversed(self.created)):
            self.drop(name)


@pytest.fixture(scope="session")
def databases(pg_server: str) -> Iterator[Databases]:
    dbs = Databases(pg_server)
    try:
        yield dbs
    finally:
        dbs.drop_all()


@pytest.fixture(scope="session")
def template_database(databases: Databases) -> str:
    """A database migrated to head once per session, cloned by each test."""
    name = databases.create()
    with psycopg.connect(databases.url(name), autocommit=True) as conn:
        migrator.migrate(conn)
    return name


@pytest.fixture
def database_url(databases: Databases, template_database: str) -> Iterator[str]:
    """URL of a fresh, fully migrated database for this test."""
    name = databases.create(template=template_database)
    yield databases.url(name)
    databases.drop(name)


@pytest.fixture
def empty_database_url(databases: Databases) -> Iterator[str]:
    """URL of a fresh database with no schema at all (migration tests)."""
    name = databases.create()
    yield databases.url(name)
    databases.drop(name)


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to this test's migrated database."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def make_user(conn: psycopg.Connection[Any]) -> Callable[..., str]:
    """Insert a websurfing_user and return its id."""

    def make(name: str = "Ada") -> str:
        user_id = str(uuid.uuid4())
        conn.execute(
            "INSERT INTO websurfing_user (id, name, email) VALUES (%s, %s, %s)",
            (user_id, name, f"{user_id}@example.test"),
        )
        return user_id

    return make


@pytest.fixture
def make_cell(conn: psycopg.Connection[Any], make_user: Callable[..., str]) -> Callable[[], str]:
    """Insert a cell with NULL content (and its spreadsheet and column once); return its id."""
    sheet, column = new_column(conn, make_user())
    rows = iter(range(1_000_000))

    def make() -> str:
        cell = conn.execute(
            "INSERT INTO websurfing_cell (spreadsheet_id, column_id, row_number)"
            " VALUES (%s, %s, %s) RETURNING id",
            (sheet, column, next(rows)),
        ).fetchone()
        assert cell is not None
        return str(cell[0])

    return make


@pytest.fixture
def make_robot_cell(conn: psycopg.Connection[Any]) -> Callable[[str], dict[str, Any]]:
    """The payload of a real robot task of ``operator`` for a new, empty robot cell: only
    such a task may write its cell (migration 0024; support.rows.robot_payloads)."""

    def make(operator: str) -> dict[str, Any]:
        return robot_payloads(conn, operator, 1)[0]

    return make


@pytest.fixture
def make_login(database_url: str, pg_server: str) -> Iterator[Callable[..., str]]:
    """Make LOGIN roles in this test's database; returns their URLs; drops them at the end.

    ``groups``: roles it is a member of (websurf_worker, websurf_app); ``owns``: tables
    handed to it (a non-superuser owner). Role names are global to the server, so each
    is random and dropped, with what it owns reassigned, when the test ends.
    """
    made: list[str] = []

    def make(*groups: str, owns: tuple[str, ...] = ()) -> str:
        name = f"websurf_test_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
            for group in groups:
                admin.execute(
                    sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(name))
                )
        made.append(name)
        with psycopg.connect(database_url, autocommit=True) as db:
            for table in owns:
                db.execute(
                    sql.SQL("ALTER TABLE {} OWNER TO {}").format(
                        sql.Identifier(table), sql.Identifier(name)
                    )
                )
        return conninfo.make_conninfo(database_url, user=name)

    yield make
    with psycopg.connect(database_url, autocommit=True) as db:
        for name in made:
            db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (name,),
            )
            db.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(sql.Identifier(name)))
            db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
    with psycopg.connect(pg_server, autocommit=True) as admin:
        for name in made:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture
def pgbouncer(pg_server: str) -> Iterator[PgBouncer]:
    """A PgBouncer in transaction mode in front of the test server, stopped afterwards."""
    binary = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None
    )
    if binary is None:
        pytest.skip("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    bouncer = PgBouncer(pg_server, binary)
    try:
        bouncer.start()
        yield bouncer
    finally:
        bouncer.stop()
        shutil.rmtree(bouncer.dir, ignore_errors=True)


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    """Starts ``websurf`` processes (``daemons.worker(url, *options)``); all stopped at the end."""
    started = Daemons(tmp_path)
    try:
        yield started
    finally:
        started.close()
