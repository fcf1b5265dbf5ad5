"""TLS connection strings, as hosted PostgreSQL hands them out: ``sslmode=require`` and
``verify-full`` work for ``websurf migrate``, ``status`` and the worker, a wrong CA is
refused at once in one line, and the password never shows.

The server is a throwaway one with a self-signed CA's certificate and password (SCRAM)
authentication over TLS only. The embedded PostgreSQL wheel is built without TLS, so it
runs a system PostgreSQL's binaries (skipped with a reason where there are none, or no
``openssl`` to make the certificates).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from support.daemon import Daemon, error_lines
from support.waiting import wait_for

from websurf.sql.embedded import EmbeddedServer

Start = Callable[..., Daemon]  # conftest's start_worker(database_url, *options)
WEBSURF = Path(sys.executable).with_name("websurf")
PASSWORD = "tls-pw-Zq8x7"
ROLE = "websurf_tls"
SYSTEM_BINDIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
CERT_DAYS = "2"


@dataclass(frozen=True)
class TlsServer:
    port: int
    ca: Path
    wrong_ca: Path
    admin_dsn: str

    def url(self, dbname: str, query: str) -> str:
        return f"postgresql://{ROLE}:{PASSWORD}@127.0.0.1:{self.port}/{dbname}?{query}"

    def verify_full(self, dbname: str, ca: Path | None = None) -> str:
        return self.url(dbname, f"sslmode=verify-full&sslrootcert={ca or self.ca}")

    def new_database(self) -> str:
        name = f"websurf_tls_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(ROLE)
                )
            )
        return name


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def _certificates(directory: Path) -> None:
    """A test CA, a server certificate it signed for 127.0.0.1, and an unrelated CA."""
    for ca in ("ca", "wrong-ca"):
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", CERT_DAYS,
            "-subj", f"/CN=websurf test {ca}",
            "-keyout", directory / f"{ca}.key", "-out", directory / f"{ca}.crt",
        )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", directory / "server.key", "-out", directory / "server.csr",
    )  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "x509", "-req", "-in", directory / "server.csr", "-days", CERT_DAYS,
        "-CA", directory / "ca.crt", "-CAkey", directory / "ca.key", "-CAcreateserial",
        "-extfile", directory / "san.ext", "-out", directory / "server.crt",
    )  # fmt: skip


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make the test certificates")
    bindir = next((b for b in SYSTEM_BINDIRS if (b / "postgres").exists()), None)
    if bindir is None:
        pytest.skip("no system PostgreSQL with TLS (the embedded build has none)")
    certs = tmp_path_factory.mktemp("tls")
    certs.chmod(0o755)  # the worker reads the CA as this user; the server as its own
    _certificates(certs)
    server = EmbeddedServer(throwaway=True, fast=True, tcp=True, bindir=bindir)
    dsn = server.start()
    try:
        data = server.data_dir
        owner = data.stat()
        for name in ("server.crt", "server.key"):
            shutil.copy(certs / name, data / name)
            os.chown(data / name, owner.st_uid, owner.st_gid)
            (data / name).chmod(0o600)
        hba = data / "pg_hba.conf"  # the role may only come in over TLS, with its password
        hba.write_text(
            f"hostssl all {ROLE} 127.0.0.1/32 scram-sha-256\n"
            f"host all {ROLE} 127.0.0.1/32 reject\n" + hba.read_text()
        )
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET ssl = on")
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEDB CREATEROLE PASSWORD {}").format(
                    sql.Identifier(ROLE), sql.Literal(PASSWORD)
                )
            )
            conn.execute("SELECT pg_reload_conf()")
        port = int(psycopg.conninfo.conninfo_to_dict(dsn)["port"])  # type: ignore[arg-type]
        tls = TlsServer(port, certs / "ca.crt", certs / "wrong-ca.crt", dsn)
        _wait_for_tls(tls)
        yield tls
    finally:
        server.stop()


def _wait_for_tls(tls: TlsServer) -> None:
    """The reload is asynchronous: wait until a verify-full connection gets in."""

    def tls_in_use() -> bool:
        with psycopg.connect(tls.verify_full("postgres")) as conn:
            return bool(conn.pgconn.ssl_in_use)

    wait_for(tls_in_use, "a verify-full connection", 10.0, tolerate=(psycopg.OperationalError,))


def websurf(*args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WEBSURF_", "PG")) and k not in ("DATABASE_URL", "DIRECT_URL")
    }
    return subprocess.run(
        [str(WEBSURF), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


@pytest.mark.parametrize("mode", ["require", "verify-full"])
def test_migrate_and_status_work_over_tls(tls_server: TlsServer, mode: str) -> None:
    dbname = tls_server.new_database()
    url = (
        tls_server.url(dbname, "sslmode=require")
        if mode == "require"
        else tls_server.verify_full(dbname)
    )

    migrated = websurf("migrate", "--database-url", url, "--log-level", "debug")
    status = websurf("status", "--database-url", url, "--direct-database-url", url)

    assert migrated.returncode == 0, migrated.stderr
    assert "applied 0001_" in migrated.stdout
    assert status.returncode == 0, status.stderr
    assert f"127.0.0.1:{tls_server.port}/{dbname} (direct)" in status.stdout
    for result in (migrated, status):
        assert PASSWORD not in result.stdout + result.stderr


@pytest.mark.parametrize("command", ["migrate", "status"])
def test_a_wrong_ca_is_refused_at_once_in_one_line(tls_server: TlsServer, command: str) -> None:
    url = tls_server.verify_full("postgres", tls_server.wrong_ca)

    result = websurf(command, "--database-url", url, "--log-format", "json")

    assert result.returncode == 3
    [line] = error_lines(result.stderr)
    assert line == (
        f"error: TLS with PostgreSQL at 127.0.0.1:{tls_server.port}/postgres failed:"
        " SSL error: certificate verify failed (check sslmode and sslrootcert in the"
        " database URL)"
    )
    assert "database_connect_retry" not in result.stderr  # nothing to retry
    assert PASSWORD not in result.stdout + result.stderr


def test_the_worker_runs_over_tls_and_never_logs_the_password(
    tls_server: TlsServer, start_worker: Start
) -> None:
    dbname = tls_server.new_database()
    url = tls_server.verify_full(dbname)
    assert websurf("migrate", "--database-url", url).returncode == 0
    daemon = start_worker(url, "--direct-database-url", url, "--log-level", "debug")
    daemon.wait_ready(1)
    daemon.query(
        "INSERT INTO websurfing_task_queue (task_type, payload)"
        " SELECT 'noop', '{}' FROM generate_series(1, 20)"
    )

    daemon.wait_for(
        lambda: (
            daemon.query("SELECT count(*) FROM websurfing_task_queue WHERE status = 'completed'")[
                0
            ][0]
            == 20
        ),
        "20 tasks to complete over TLS",
    )
    with psycopg.connect(url) as conn:
        ssl = conn.execute(
            "SELECT bool_and(s.ssl), count(*) FROM pg_stat_ssl AS s JOIN pg_stat_activity AS a"
            " USING (pid) WHERE a.application_name LIKE 'websurf-%%'"
        ).fetchone()
    daemon.send(signal.SIGTERM)
    assert daemon.wait() == 0
    assert ssl is not None and ssl[0] is True and ssl[1] >= 2  # claim and LISTEN, at least
    assert PASSWORD not in daemon.log()
