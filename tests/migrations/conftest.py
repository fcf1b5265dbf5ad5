"""The pinned drizzle toolchain (sql/drizzle/package.json and its lockfile) for the
tests that run drizzle-kit, tsc and the TypeScript helper against real databases.

The npm packages are installed once per package.json/lockfile into
``$XDG_CACHE_HOME/websurf/drizzle-<hash>`` (default ``~/.cache``), outside the
repository, and reused by later runs. Needs Node.js; tests using it are skipped where
it is missing.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from psycopg import conninfo

DRIZZLE_DIR = Path(__file__).resolve().parents[2] / "sql" / "drizzle"
# Copied into each test's tmp_path, next to a symlink to the cached node_modules.
PROJECT_FILES = (
    "package.json",
    "schema.ts",
    "author.ts",
    "drizzle.config.ts",
    "tsconfig.json",
    "tsconfig.bare.json",
)
INSTALL_TIMEOUT_S = 240
RUN_TIMEOUT_S = 120


def _node_tools() -> dict[str, str]:
    tools = {name: shutil.which(name) for name in ("node", "npm", "npx")}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        pytest.skip(
            f"Node.js not found ({', '.join(missing)} missing on PATH): the Drizzle mirror "
            "test runs drizzle-kit on sql/drizzle/schema.ts"
        )
    return {name: path for name, path in tools.items() if path is not None}


def _run(
    args: list[str],
    cwd: Path,
    timeout: float,
    what: str,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a Node.js tool quietly; on failure, fail the test with its output."""
    try:
        result = subprocess.run(
            args,
            cwd=cwd,
            env={**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0", "CI": "1", **(env or {})},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what} timed out after {timeout:.0f}s: {' '.join(args)}", pytrace=False)
    if result.returncode != 0:
        pytest.fail(
            f"{what} failed (exit {result.returncode}): {' '.join(args)}\n"
            f"in {cwd}\n--- stdout ---\n{result.stdout[-4000:]}\n"
            f"--- stderr ---\n{result.stderr[-4000:]}",
            pytrace=False,
        )
    return result


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "websurf"


@dataclass(frozen=True)
class Toolchain:
    node: str
    node_modules: Path

    def bin(self, package: str, script: str) -> list[str]:
        return [self.node, str(self.node_modules / package / script)]

    def project(self, tmp_path: Path, extra: tuple[str, ...] = ()) -> Path:
        """A copy of sql/drizzle (plus ``extra`` files of it) using the cached node_modules."""
        work = _project(tmp_path, self)
        for name in extra:
            shutil.copy2(DRIZZLE_DIR / name, work / name)
        return work

    def run(
        self, args: list[str], cwd: Path, what: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return _run(args, cwd=cwd, timeout=RUN_TIMEOUT_S, what=what, env=env)

    def drizzle_kit(
        self, work: Path, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        command = [*self.bin("drizzle-kit", "bin.cjs"), *args, "--config", "drizzle.config.ts"]
        return self.run(command, work, f"drizzle-kit {args[0]}", env)

    def generate(self, work: Path) -> list[Path]:
        return _generate_sql(work, self)

    @staticmethod
    def node_url(dsn: str) -> str:
        return _node_postgres_url(dsn)


@pytest.fixture(scope="session")
def toolchain() -> Toolchain:
    """drizzle-kit, drizzle-orm and typescript as pinned, installed once into the cache."""
    tools = _node_tools()
    version = subprocess.run(
        [tools["node"], "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    key = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        key.update((DRIZZLE_DIR / name).read_bytes())
    # node_modules holds platform binaries (esbuild): one install per platform and Node major.
    key.update(f"{version.split('.')[0]}-{platform.system()}-{platform.machine()}".encode())
    target = _cache_root() / f"drizzle-{key.hexdigest()[:16]}"
    drizzle_kit = target / "node_modules" / "drizzle-kit" / "bin.cjs"
    if not drizzle_kit.is_file():
        if target.exists():  # damaged by hand: start afresh
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Install next to the target and rename it into place: a concurrent or
        # interrupted run never sees (or leaves) a half-installed directory.
        staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.installing-", dir=target.parent))
        try:
            for name in ("package.json", "package-lock.json"):
                shutil.copy2(DRIZZLE_DIR / name, staging / name)
            _run(
                [
                    tools["npm"],
                    "ci",
                    "--ignore-scripts",
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                ],
                cwd=staging,
                timeout=INSTALL_TIMEOUT_S,
                what="npm ci of sql/drizzle/package.json (needs the npm registry)",
            )
            try:
                staging.rename(target)
            except OSError:
                if not drizzle_kit.is_file():  # not a lost race: a real problem
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return Toolchain(node=tools["node"], node_modules=target / "node_modules")


def _project(tmp_path: Path, toolchain: Toolchain) -> Path:
    """A copy of sql/drizzle in tmp_path that uses the cached node_modules."""
    work = tmp_path / "drizzle"
    work.mkdir()
    for name in PROJECT_FILES:
        shutil.copy2(DRIZZLE_DIR / name, work / name)
    (work / "node_modules").symlink_to(toolchain.node_modules, target_is_directory=True)
    return work


def _generate_sql(work: Path, toolchain: Toolchain) -> list[Path]:
    _run(
        [*toolchain.bin("drizzle-kit", "bin.cjs"), "generate", "--config", "drizzle.config.ts"],
        cwd=work,
        timeout=RUN_TIMEOUT_S,
        what="drizzle-kit generate on sql/drizzle/schema.ts",
    )
    files = sorted((work / "out").glob("*.sql"))
    assert files, f"drizzle-kit generate wrote no .sql file into {work / 'out'}"
    return files


def _node_postgres_url(dsn: str) -> str:
    """psycopg's conninfo (URL or key=value) as the URL node-postgres understands."""
    params = conninfo.conninfo_to_dict(dsn)
    auth = quote(str(params.get("user", "")), safe="")
    if params.get("password"):
        auth += ":" + quote(str(params["password"]), safe="")
    host = str(params.get("host") or "localhost")
    query = {}
    if host.startswith("/"):  # unix socket directory
        query["host"], host = host, "localhost"
    netloc = f"{auth}@{host}" if auth else host
    if params.get("port"):
        netloc += f":{params['port']}"
    url = f"postgresql://{netloc}/{quote(str(params.get('dbname', '')), safe='')}"
    return f"{url}?{urlencode(query)}" if query else url
