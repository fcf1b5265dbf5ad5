"""A real PgBouncer in transaction mode in front of the test server (the ``pgbouncer`` fixture)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

from psycopg import conninfo

from support.daemon import free_port
from support.waiting import wait_for

PGBOUNCER_READY_S = 10.0  # for a started PgBouncer to accept connections
PGBOUNCER_STOP_S = 5.0


class PgBouncer:
    """A real PgBouncer in transaction mode, on a free local port, in front of the test server.

    Configured like a default install plus ``pool_mode = transaction``: it refuses the
    ``options`` startup parameter, and keeps server connections between transactions (so
    a session lock or a prepared statement left on one is met by the next client).
    """

    def __init__(self, server_dsn: str, binary: str) -> None:
        server = conninfo.conninfo_to_dict(server_dsn)
        self.binary = binary
        self.user = str(server.get("user") or "postgres")
        password = str(server.get("password") or "")
        self.dir = Path(tempfile.mkdtemp(prefix="websurf-pgbouncer-"))
        self.dir.chmod(0o755)  # it drops root for `nobody`, who must read its files
        self.port = free_port()
        target = f"host={server.get('host') or '127.0.0.1'} port={server.get('port') or 5432}"
        (self.dir / "users.txt").write_text(f'"{self.user}" "{password}"\n')
        (self.dir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = {target}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.dir / 'users.txt'}\n"
            "pool_mode = transaction\nmax_client_conn = 500\ndefault_pool_size = 20\n"
        )
        for name in ("users.txt", "pgbouncer.ini"):
            (self.dir / name).chmod(0o644)
        self.log_path = self.dir / "pgbouncer.log"
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, database_url: str) -> str:
        """``database_url`` (a database on the test server) reached through this PgBouncer."""
        return conninfo.make_conninfo(database_url, host="127.0.0.1", port=str(self.port))

    def start(self) -> None:
        as_user = ["-u", "nobody"] if os.geteuid() == 0 else []  # it refuses to run as root
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, *as_user, str(self.dir / "pgbouncer.ini")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

        def accepts() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"pgbouncer exited:\n{self.log()}")
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                return True

        try:
            wait_for(
                accepts,
                "pgbouncer to accept connections",
                PGBOUNCER_READY_S,
                tolerate=(OSError,),
                details=self.log,
            )
        except AssertionError:
            self.stop()
            raise

    def stop(self) -> None:
        """Immediate shutdown (SIGTERM): every client and server connection is cut."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=PGBOUNCER_STOP_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
