"""The web app's TypeScript side: schema.ts and author.ts type-check in both setups a
T3 app has, and the helper works against a real database with both drivers.

What it covers (see also "TypeScript for the web app" in docs/web-app.md):
* ``tsc --strict`` of schema.ts and author.ts with the DOM lib (the T3 default) and with
  neither the DOM lib nor ``@types/node`` (the ``crypto`` global must not be needed).
* tests/migrations/webapp/driver_check.ts, compiled with the pinned TypeScript and run
  by Node against a database websurf migrated, once through postgres-js and once
  through node-postgres (Drizzle, ``casing: "snake_case"``): an edit without an author is
  refused and ``isCellAuthorError`` recognises it (and not another error), as it does
  the refusal of a delete without an author (constraint ``cell_change_author``);
  ``withAuthor`` commits the edit with its audit row (edit type passed through) and its
  robot task, whose payload reads through the exported types; a throw inside it rolls
  the edit back; the new relations (a column's source column and the columns it feeds,
  a user's sessions) load through the relational query API.

Run: ``WEBSURF_TEST_DATABASE_URL=… .venv/bin/pytest tests/migrations/test_webapp_typescript.py``
(Node.js 20+ and the npm registry the first time; the packages are cached, see conftest).
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from websurf.worker.app import sheets

pytestmark = pytest.mark.node

WEBAPP_DIR = Path(__file__).resolve().parent / "webapp"
# The docs' Drizzle client for the web app (docs/web-app.md includes this very file).
CLIENT = Path(__file__).resolve().parents[2] / "docs" / "snippets" / "webapp" / "db.ts"
# What the T3 app's `~/env` gives the client, for Node. In development the client keeps
# its pool on globalThis, where driver_check.ts finds it to close it.
ENV_MODULE = (
    "export const env = {"
    ' DATABASE_URL: process.env.DATABASE_URL ?? "", NODE_ENV: "development" };\n'
)


@pytest.mark.parametrize("config", ["tsconfig.json", "tsconfig.bare.json"])
def test_schema_and_helper_typecheck_with_and_without_dom_or_node_types(
    toolchain: Any, tmp_path: Path, config: str
) -> None:
    work = toolchain.project(tmp_path)
    toolchain.run([*toolchain.bin("typescript", "bin/tsc"), "-p", config], work, f"tsc -p {config}")


def _fixture(url: str) -> dict[str, str]:
    with psycopg.connect(url, autocommit=True) as conn:
        user = sheets.ensure_user(conn, "ts@example.test")
        conn.execute(
            "INSERT INTO websurfing_session (session_token, user_id, expires)"
            " VALUES (%s, %s, now() + interval '1 day')",
            (uuid.uuid4().hex, user),
        )
        sheet = sheets.create_spreadsheet(conn, user, "typed", columns=2, rows=1)
        a, b = sheets.list_columns(conn, sheet.id)
        sheets.set_column_operator(conn, b.id, "uppercase", source_column_id=a.id)
        cell = sheets.get_cell(conn, sheet.id, a.id, 1)
        assert cell is not None
    return {
        "userId": user,
        "sheetId": str(sheet.id),
        "sourceColumnId": str(a.id),
        "robotColumnId": str(b.id),
        "cellId": str(cell.id),
    }


def _docs_client() -> str:
    """The docs' Drizzle client, with its two imports pointed at files Node can load
    (the app's bundler resolves ``~/env`` and ``./schema``; NodeNext wants ``.js``)."""
    client = CLIENT.read_text(encoding="utf-8")
    assert 'casing: "snake_case"' in client
    return client.replace('from "~/env"', 'from "./env.js"').replace(
        'from "./schema"', 'from "./schema.js"'
    )


def test_the_author_helper_works_with_postgres_js_and_node_postgres(
    toolchain: Any, tmp_path: Path, database_url: str
) -> None:
    work = toolchain.project(tmp_path)
    for name in ("driver_check.ts", "tsconfig.check.json"):
        shutil.copy2(WEBAPP_DIR / name, work / name)
    (work / "db.ts").write_text(_docs_client(), encoding="utf-8")
    (work / "env.ts").write_text(ENV_MODULE, encoding="utf-8")
    toolchain.run(
        [*toolchain.bin("typescript", "bin/tsc"), "-p", "tsconfig.check.json"],
        work,
        "tsc -p tsconfig.check.json (driver_check.ts)",
    )
    fixture = _fixture(database_url)

    result = toolchain.run(
        [toolchain.node, "dist/driver_check.js"],
        work,
        "node dist/driver_check.js",
        env={"DATABASE_URL": toolchain.node_url(database_url), "FIXTURE": json.dumps(fixture)},
    )

    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert [r["driver"] for r in report["results"]] == ["postgres-js", "pg"]
    for seen in report["results"]:
        driver = seen["driver"]
        assert seen["anonymousEdit"] == "refused: cell author error", driver
        assert seen["anonymousDelete"] == "refused: cell author error", driver
        assert seen["otherError"] == "not an author error", driver
        assert seen["withAuthorReturned"] == "done", driver
        assert seen["auditRow"] == {"userId": fixture["userId"], "editType": "paste"}, driver
        assert seen["task"] == {
            "status": "pending",
            "input": f"typed through {driver}",
            "versionIsNumber": True,
            "uniqueKey": f"cell:{_robot_cell(database_url, fixture)}",
        }, driver
        assert seen["afterRollback"] == f"typed through {driver}", driver
        assert seen["relations"] == {
            "sourceColumnTitle": "A",
            "fedColumnTitles": ["B"],
            "sessionCount": 1,
        }, driver
    assert report["notificationType"] == ["cell_id", "column_id", "row_number", "spreadsheet_id"]
    assert report["readmeClient"] == "ts@example.test"
    assert 'column "emailVerified" does not exist' in report["withoutCasing"]
    # The second edit coalesced into the first one's pending task: one task, latest input.
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT payload->>'input' FROM websurfing_task_queue").fetchall()
    assert rows == [("typed through pg",)]


def _robot_cell(url: str, fixture: dict[str, str]) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT id FROM websurfing_cell WHERE column_id = %s AND row_number = 1",
            (fixture["robotColumnId"],),
        ).fetchone()
    assert row is not None
    return str(row[0])
