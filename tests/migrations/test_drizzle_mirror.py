"""sql/drizzle/schema.ts describes exactly the tables that sql/migrations creates.

drizzle-kit (versions pinned in sql/drizzle/package.json and package-lock.json) turns
schema.ts into SQL, offline; that SQL goes into one empty database, websurf's migrations
into another, and the catalogs of the ``websurfing_*`` tables in schema ``public`` must
be equal: tables, columns (position, type, nullability, default), constraints and
indexes. What only SQL can add (triggers, functions, the ``websurf`` schema) is not
compared. Two names PostgreSQL would truncate compare equal but are not: so every
identifier must fit in 63 bytes, and ``drizzle-kit push`` against a database websurf
migrated (what the web app runs) must find nothing to change. schema.ts must also pass
strict ``tsc``, which drizzle-kit (it only transpiles) does not check.

The npm packages are installed once per package.json/lockfile into
``$XDG_CACHE_HOME/websurf/drizzle-<hash>`` (default ``~/.cache``), outside the
repository, and reused by later runs. Needs Node.js; skipped where it is missing.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, LiteralString
from urllib.parse import quote, urlencode

import psycopg
import pytest
from psycopg import conninfo
from psycopg.rows import namedtuple_row

pytestmark = pytest.mark.node

DRIZZLE_DIR = Path(__file__).resolve().parents[2] / "sql" / "drizzle"
# Copied into each test's tmp_path, next to a symlink to the cached node_modules.
PROJECT_FILES = ("package.json", "schema.ts", "drizzle.config.ts", "tsconfig.json")
STATEMENT_BREAKPOINT = "--> statement-breakpoint"
# PostgreSQL keeps NAMEDATALEN - 1 bytes of an identifier and silently cuts the rest.
MAX_IDENTIFIER_BYTES = 63
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


@pytest.fixture(scope="module")
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


def _apply(url: str, files: Iterable[Path]) -> None:
    with psycopg.connect(url) as conn, conn.transaction():
        for file in files:
            for statement in file.read_text(encoding="utf-8").split(STATEMENT_BREAKPOINT):
                if statement.strip():
                    # bytes: a query read from a file is no LiteralString.
                    conn.execute(statement.encode("utf-8"))


_TABLES = """
SELECT c.relname AS table, c.relkind AS kind, c.relpersistence AS persistence,
       c.relrowsecurity AS row_security
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relname LIKE 'websurfing\\_%' AND c.relkind IN ('r', 'p')
"""
_COLUMNS = """
SELECT c.relname AS table, a.attname AS column,
       row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum) AS position,
       format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null,
       pg_get_expr(d.adbin, d.adrelid) AS default, a.attidentity AS identity,
       a.attgenerated AS generated
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname = 'public' AND c.relname LIKE 'websurfing\\_%' AND c.relkind IN ('r', 'p')
  AND a.attnum > 0 AND NOT a.attisdropped
"""
_CONSTRAINTS = """
SELECT c.relname AS table, con.conname AS name, con.contype AS type,
       pg_get_constraintdef(con.oid) AS definition
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relname LIKE 'websurfing\\_%'
"""
_INDEXES = """
SELECT t.relname AS table, i.relname AS name, pg_get_indexdef(i.oid) AS definition
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = 'public' AND t.relname LIKE 'websurfing\\_%'
"""
CATALOG_QUERIES: dict[str, LiteralString] = {
    "tables": _TABLES,
    "columns": _COLUMNS,
    "constraints": _CONSTRAINTS,
    "indexes": _INDEXES,
}


def _catalog(url: str) -> dict[str, set[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=namedtuple_row) as cur:
        return {kind: set(cur.execute(query).fetchall()) for kind, query in CATALOG_QUERIES.items()}


def _differences(
    drizzle: dict[str, set[tuple[Any, ...]]], websurf: dict[str, set[tuple[Any, ...]]]
) -> list[str]:
    problems = []
    for kind in CATALOG_QUERIES:
        only_drizzle = sorted(drizzle[kind] - websurf[kind], key=repr)
        only_websurf = sorted(websurf[kind] - drizzle[kind], key=repr)
        if not (only_drizzle or only_websurf):
            continue
        lines = [f"{kind} differ:"]
        lines.append("  only in drizzle-kit's SQL from sql/drizzle/schema.ts:")
        lines += [f"    {row}" for row in only_drizzle] or ["    (none)"]
        lines.append("  only in the database built by sql/migrations:")
        lines += [f"    {row}" for row in only_websurf] or ["    (none)"]
        problems.append("\n".join(lines))
    return problems


def test_drizzle_schema_matches_migrations(
    toolchain: Toolchain, tmp_path: Path, empty_database_url: str, database_url: str
) -> None:
    work = _project(tmp_path, toolchain)
    generated = _generate_sql(work, toolchain)
    _apply(empty_database_url, generated)

    drizzle = _catalog(empty_database_url)
    websurf = _catalog(database_url)

    assert websurf["tables"], "websurf migrate created no websurfing_* table in schema public"
    problems = _differences(drizzle, websurf)
    if problems:
        pytest.fail(
            "sql/drizzle/schema.ts does not mirror sql/migrations "
            "(update schema.ts, or the migration if drizzle-kit names things differently).\n"
            f"drizzle-kit's SQL: {', '.join(str(path) for path in generated)}\n\n"
            + "\n\n".join(problems),
            pytrace=False,
        )


def test_drizzle_identifiers_fit_postgres(toolchain: Toolchain, tmp_path: Path) -> None:
    """A name PostgreSQL truncates still compares equal above, but `drizzle-kit push`
    then finds it "missing" and drops and re-adds it on every run."""
    work = _project(tmp_path, toolchain)
    text = "\n".join(path.read_text("utf-8") for path in _generate_sql(work, toolchain))
    too_long = sorted(
        {
            name
            for name in re.findall(r'"([^"]+)"', text)
            if len(name.encode()) > MAX_IDENTIFIER_BYTES
        }
    )
    assert not too_long, (
        f"identifiers longer than {MAX_IDENTIFIER_BYTES} bytes in drizzle-kit's SQL; "
        "PostgreSQL would truncate them, so name them explicitly in schema.ts "
        f"(and in sql/migrations): {too_long}"
    )


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


def test_drizzle_kit_push_finds_nothing_to_change(
    toolchain: Toolchain, tmp_path: Path, database_url: str
) -> None:
    """What the web app runs: `drizzle-kit push` against a database websurf migrated."""
    with psycopg.connect(database_url) as conn:
        version = conn.info.server_version
    if version >= 180000:
        # drizzle-kit 0.31 reads PostgreSQL 18's catalogued NOT NULL constraints as
        # changed primary and unique keys and proposes to re-create them (seen here;
        # the same schema.ts pushes clean on PostgreSQL 15). The catalog comparison
        # above still checks this server.
        pytest.skip(f"drizzle-kit 0.31 push misreads PostgreSQL {version // 10000} catalogs")
    work = _project(tmp_path, toolchain)
    # --force: never prompt (stdin is closed); the database is this test's throwaway clone.
    result = _run(
        [
            *toolchain.bin("drizzle-kit", "bin.cjs"),
            "push",
            "--config",
            "drizzle.config.ts",
            "--verbose",
            "--strict=false",
            "--force",
        ],
        cwd=work,
        timeout=RUN_TIMEOUT_S,
        what="drizzle-kit push of sql/drizzle/schema.ts",
        env={"DATABASE_URL": _node_postgres_url(database_url)},
    )
    if "No changes detected" not in result.stdout:
        output = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", result.stdout)
        output = "\n".join(line for line in output.splitlines() if "Pulling schema" not in line)
        pytest.fail(
            "drizzle-kit push of sql/drizzle/schema.ts would change a database built by "
            f"sql/migrations:\n{output[-4000:]}",
            pytrace=False,
        )


def test_drizzle_schema_typechecks(toolchain: Toolchain, tmp_path: Path) -> None:
    """drizzle-kit only transpiles schema.ts; the web app compiles it under strict tsc."""
    work = _project(tmp_path, toolchain)
    _run(
        [*toolchain.bin("typescript", "bin/tsc"), "-p", "tsconfig.json"],
        cwd=work,
        timeout=RUN_TIMEOUT_S,
        what="tsc -p sql/drizzle/tsconfig.json",
    )
