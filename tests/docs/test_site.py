"""The documentation site: its reference pages follow the code, every code sample is a
tested snippet, and the built site loads nothing from the network.

The generators live in docs/hooks/ (MkDocs hooks, not part of the package) and are
loaded here by path; the build itself needs the ``docs`` extra (``make docs``).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import click
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
BUILD_TIMEOUT_S = 240


def _hook(name: str) -> ModuleType:
    module_name = f"websurf_docs_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, DOCS / "hooks" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        sys.modules[module_name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[module_name])
    return sys.modules[module_name]


def _table_rows(markdown: str, table: str) -> list[str]:
    """The lines of the schema page's section for ``table`` (up to the next heading)."""
    match = re.search(rf"^### `{re.escape(table)}`\n(.*?)(?=^#)", markdown, re.S | re.M)
    assert match, f"no section for {table}"
    return match.group(1).splitlines()


def _migrations_with(tmp_path: Path, name: str, sql: str) -> Path:
    folder = tmp_path / "migrations"
    shutil.copytree(ROOT / "sql" / "migrations", folder)
    (folder / name).write_text(sql, encoding="utf-8")
    return folder


def test_a_column_a_new_migration_adds_appears_on_the_schema_page(tmp_path: Path) -> None:
    reference = _hook("reference")
    before = reference.schema_markdown()
    assert "docs_probe" not in before
    migrations = _migrations_with(
        tmp_path,
        "0999_docs_probe.sql",
        "-- A probe for the docs test.\n"
        "ALTER TABLE websurfing_task_queue ADD COLUMN IF NOT EXISTS docs_probe integer"
        " NOT NULL DEFAULT 7;\n\n"
        "-- Says hello to the docs.\n"
        "CREATE FUNCTION websurf.docs_probe() RETURNS trigger LANGUAGE plpgsql\n"
        "SET search_path = pg_catalog, pg_temp AS $$ BEGIN RETURN NEW; END; $$;\n"
        "CREATE TRIGGER task_queue_docs_probe BEFORE INSERT ON websurfing_task_queue\n"
        "    FOR EACH ROW EXECUTE FUNCTION websurf.docs_probe();\n",
    )

    after = reference.schema_markdown(migrations)

    rows = _table_rows(after, "websurfing_task_queue")
    assert "| `docs_probe` | `integer` | `NOT NULL DEFAULT 7` | 0999 |" in rows
    assert any(r.startswith("| `task_queue_docs_probe` | BEFORE INSERT |") for r in rows)
    assert "`websurf.docs_probe()`, defined in 0999. Says hello to the docs." in after


def test_a_dropped_or_renamed_column_leaves_the_schema_page(tmp_path: Path) -> None:
    reference = _hook("reference")
    migrations = _migrations_with(
        tmp_path,
        "0999_docs_probe.sql",
        "ALTER TABLE websurfing_cell DROP COLUMN formatted_content;\n"
        "ALTER TABLE websurfing_cell RENAME COLUMN cell_type TO kind;\n",
    )

    rows = _table_rows(reference.schema_markdown(migrations), "websurfing_cell")

    assert not [r for r in rows if "`formatted_content`" in r or "`cell_type`" in r]
    assert any(r.startswith("| `kind` |") and r.endswith("(changed in 0999) |") for r in rows)


def test_the_schema_page_reads_functions_created_inside_do_blocks() -> None:
    """0024 to 0028 create their functions with EXECUTE inside DO blocks."""
    schema = _hook("schema").read_migrations(ROOT / "sql" / "migrations")

    assert schema.functions["websurf.claim_limited"].defined_in == "0026"
    assert schema.functions["websurf.task_queue_guard"].defined_in == "0024"
    assert schema.functions["websurf.cell_content_guard"].replaced_in[-1] == "0036"
    assert "cancel_requested_at" in schema.tables["websurfing_task_queue"].columns


def test_the_cli_reference_shows_a_new_command_and_option() -> None:
    reference = _hook("reference")

    @click.group()
    def root() -> None:
        """A group."""

    @root.command("probe")
    @click.option("--depth", type=click.IntRange(1, 9), default=3, envvar="WEBSURF_DEPTH")
    @click.argument("target")
    def probe(depth: int, target: str) -> None:
        """Probe TARGET to some depth."""

    page = reference.cli_markdown(root)

    assert "#### `websurf probe`" in page
    assert "websurf probe [OPTIONS] TARGET" in page
    assert "| `--depth` | integer range 1..9 | `3` | `WEBSURF_DEPTH` |  |" in page
    assert "Probe TARGET to some depth." in page


def test_the_configuration_reference_holds_every_environment_variable() -> None:
    page = _hook("reference").configuration_markdown()

    for name in ("WEBSURF_DURABLE_CLAIMS", "WEBSURF_FETCH_ALLOW", "WEBSURF_EMBEDDED_DIR"):
        assert f"`{name}`" in page
    assert "| `SHUTDOWN_TIMEOUT_S` | `30.0` |" in page
    assert re.search(r"\| `STALE_AFTER_S` \| `30.0` \| a worker that has not heartbeaten", page)


def test_every_python_and_typescript_sample_is_a_tested_snippet() -> None:
    """A sample written straight into a page would be tested by nothing: the pages
    include them from docs/snippets/, whose files the other tests here run."""
    untested = []
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        for match in re.finditer(
            r"^```(python|py|ts|typescript|tsx)\n(.*?)^```", text, re.S | re.M
        ):
            if not match.group(2).lstrip().startswith("--8<--"):
                line = text[: match.start()].count("\n") + 1
                untested.append(f"{page.relative_to(ROOT)}:{line}")
    assert untested == []


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None, reason="the docs extra is not installed (make docs)"
)
def test_the_site_builds_strict_and_loads_nothing_from_the_network(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
        env={
            "NO_MKDOCS_2_WARNING": "1",
            "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
        },
    )
    assert result.returncode == 0, result.stderr[-4000:]

    external = [
        f"{page.relative_to(site)}: {tag}"
        for page in site.rglob("*.html")
        for tag in re.findall(r"<(?:script|link|img|iframe)\b[^>]*>", page.read_text("utf-8"))
        if re.search(r"""(?:src|href)=["']?(?:https?:)?//""", tag)
    ]
    assert external == []
    schema = (site / "reference" / "schema" / "index.html").read_text(encoding="utf-8")
    assert "cancel_requested_at" in schema
    drawn = (site / "queue" / "index.html").read_text(encoding="utf-8")
    assert re.search(r'<div class="diagram"><svg', drawn)  # Graphviz ran at build time
