"""The embedded PostgreSQL: real servers started from the wheel's binaries, no mocks."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import conninfo

from websurf.sql import embedded

EmbeddedServer = embedded.EmbeddedServer


def _postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().split()[0])


def _running(pid: int) -> bool:
    """Whether pid is a live process (an exited one awaiting its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def _select_one(dsn: str) -> int:
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        row = conn.execute("SELECT 1").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def home() -> Iterator[Path]:
    """A short, world-traversable parent dir for persistent clusters (the server runs as
    another account under root), removed afterwards; pytest's tmp_path is kept and deep."""
    path = Path(tempfile.mkdtemp(prefix="wspg-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def servers() -> Iterator[Callable[..., Any]]:
    """Build EmbeddedServers that are all stopped at teardown, even when a test fails."""
    made: list[Any] = []

    def make(*args: Any, **kwargs: Any) -> Any:
        made.append(EmbeddedServer(*args, **kwargs))
        return made[-1]

    yield make
    for server in reversed(made):
        server.stop()


@pytest.mark.parametrize("tcp", [True, False], ids=["tcp", "unix-socket"])
def test_throwaway_server_answers_then_leaves_nothing_behind(tcp: bool) -> None:
    server = EmbeddedServer(throwaway=True, fast=True, tcp=tcp)
    dsn = server.start()
    temp_dir = server.data_dir.parent
    pid = _postmaster_pid(server.data_dir)
    try:
        assert _select_one(dsn) == 1
        assert server.started_by_us
    finally:
        server.stop()
    assert not temp_dir.exists()
    assert not _running(pid)


def test_persistent_server_keeps_data_and_listens_on_a_socket_only(
    home: Path, servers: Callable[..., Any]
) -> None:
    first = servers(home / "pg")
    dsn = first.start()
    assert first.started_by_us
    assert conninfo.conninfo_to_dict(dsn)["host"] == str(home / "pg.run")
    listen_address = (home / "pg" / "postmaster.pid").read_text().splitlines()[5]
    assert listen_address == ""  # no TCP listener: trust auth is reachable only via the 0700 dir
    assert (home / "pg.run").stat().st_mode & 0o777 == 0o700
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (note text)")
        conn.execute("INSERT INTO kept VALUES ('still here')")
    pid = _postmaster_pid(home / "pg")
    first.stop()
    assert not _running(pid)

    second = servers(home / "pg")
    assert second.start() == dsn
    assert second.started_by_us
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT note FROM kept").fetchall() == [("still here",)]


def test_second_server_attaches_and_its_stop_leaves_the_first_running(
    home: Path, servers: Callable[..., Any]
) -> None:
    owner = servers(home / "pg", fast=True)
    dsn = owner.start()
    pid = _postmaster_pid(home / "pg")

    attached = servers(home / "pg", fast=True)
    assert attached.start() == dsn
    assert not attached.started_by_us
    attached.stop()

    assert _running(pid)
    assert _select_one(dsn) == 1
    with pytest.raises(RuntimeError):
        attached.restart()  # an attached process must not take the owner's server down


def test_concurrent_starts_on_one_data_dir_share_one_server(
    home: Path, servers: Callable[..., Any]
) -> None:
    contenders = [servers(home / "pg", fast=True) for _ in range(3)]
    barrier = threading.Barrier(len(contenders))
    dsns: list[str] = []
    errors: list[BaseException] = []

    def start(server: Any) -> None:
        barrier.wait()
        try:
            dsns.append(server.start())
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=start, args=(server,)) for server in contenders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(set(dsns)) == 1
    assert sorted(server.started_by_us for server in contenders) == [False, False, True]
    assert _select_one(dsns[0]) == 1


def test_restart_and_outage_keep_the_address(home: Path, servers: Callable[..., Any]) -> None:
    server = servers(home / "pg", fast=True)
    dsn = server.start()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE survives (n int)")
        conn.execute("INSERT INTO survives VALUES (1)")
        assert server.restart() == dsn
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")  # the restart dropped this connection
    assert _select_one(dsn) == 1

    server.stop_server_only(mode="immediate")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=2).close()
    server.start_server_only()
    assert server.dsn == dsn
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT n FROM survives").fetchall() == [(1,)]


def test_deep_data_dir_gets_a_short_socket_dir(home: Path, servers: Callable[..., Any]) -> None:
    deep = home / ("d" * 60) / ("e" * 60) / "pg"
    server = servers(deep, fast=True)
    dsn = server.start()
    socket_dir = Path(str(conninfo.conninfo_to_dict(dsn)["host"]))
    try:
        assert len(str(socket_dir)) < 60
        assert _select_one(dsn) == 1
        server.stop()
        assert servers(deep, fast=True).start() == dsn  # the same address on the next start
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


def test_missing_binaries_raise_embedded_unavailable(tmp_path: Path) -> None:
    server = EmbeddedServer(throwaway=True, fast=True, bindir=tmp_path)
    with pytest.raises(embedded.EmbeddedUnavailable, match=r"websurf\[embedded\]") as raised:
        server.start()
    assert "WEBSURF_DATABASE_URL" in str(raised.value)
    assert "\n" not in str(raised.value)
    assert not server.started_by_us


def test_failed_start_reports_the_server_log_and_keeps_the_data(
    home: Path, servers: Callable[..., Any]
) -> None:
    broken = home / "pg"
    broken.mkdir(mode=0o700)
    (broken / "PG_VERSION").write_text("18\n")  # looks initialised, but has no configuration
    server = servers(broken, fast=True)
    with pytest.raises(embedded.EmbeddedError, match="pg_ctl failed"):
        server.start()
    assert not server.started_by_us
    assert not (broken / "postmaster.pid").exists()
    assert (broken / "PG_VERSION").read_text() == "18\n"


def test_tcp_is_refused_for_the_persistent_server(home: Path) -> None:
    with pytest.raises(ValueError, match="TCP"):
        EmbeddedServer(home / "pg", tcp=True)


def test_default_data_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBSURF_EMBEDDED_DIR", "/srv/websurf/pg")
    assert embedded.default_data_dir() == Path("/srv/websurf/pg")
    monkeypatch.delenv("WEBSURF_EMBEDDED_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", "/home/ada/.data")
    expected = "/var/lib/websurf/embedded-pg" if os.geteuid() == 0 else "/home/ada/.data"
    assert str(embedded.default_data_dir()).startswith(expected)
