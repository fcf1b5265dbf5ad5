"""The TypeScript samples of the docs (and the README's) type-check against the shipped
schema.ts and author.ts, with the settings of the T3 app (sql/drizzle/tsconfig.json):
the pages include them from docs/snippets/webapp/. (db.ts, the Drizzle client, also
runs against a real database in tests/migrations/test_webapp_typescript.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from migrations.conftest import toolchain  # noqa: F401  (the pinned drizzle toolchain fixture)
from support.samples import readme_block

pytestmark = pytest.mark.node

SAMPLES = Path(__file__).resolve().parents[2] / "docs" / "snippets" / "webapp"
# What the T3 app's `~/env` gives its client (db.ts imports it).
ENV_MODULE = "export const env = { DATABASE_URL: '', NODE_ENV: 'development' as string };\n"
# What the README's short sample takes from its surroundings in the app.
README_CONTEXT = """import { eq } from "drizzle-orm";
import type { PostgresJsDatabase } from "drizzle-orm/postgres-js";
import * as schema from "~/server/db/schema";
import { cells } from "~/server/db/schema";
declare const db: PostgresJsDatabase<typeof schema>;
declare const ctx: { session: { user: { id: string } } };
declare const input: { cellId: string; content: string };
"""


def test_the_web_app_samples_type_check(toolchain: Any, tmp_path: Path) -> None:  # noqa: F811
    work = toolchain.project(tmp_path)
    (work / "server" / "db").mkdir(parents=True)
    for name in ("schema.ts", "author.ts"):  # where the samples import them from (~/server/db)
        shutil.copy2(work / name, work / "server" / "db" / name)
    samples = sorted(SAMPLES.glob("*.ts"))
    assert samples, f"no TypeScript samples in {SAMPLES}"
    for sample in samples:
        shutil.copy2(sample, work / sample.name)
    readme = work / "readme_sample.ts"
    readme.write_text(README_CONTEXT + readme_block("ts") + "export {};\n", encoding="utf-8")
    samples.append(readme)
    (work / "env.ts").write_text(ENV_MODULE, encoding="utf-8")
    config = json.loads((work / "tsconfig.json").read_text(encoding="utf-8"))
    config["compilerOptions"]["baseUrl"] = "."
    config["compilerOptions"]["paths"] = {"~/*": ["./*"]}
    config["files"] = [sample.name for sample in samples]
    (work / "tsconfig.docs.json").write_text(json.dumps(config), encoding="utf-8")

    toolchain.run(
        [*toolchain.bin("typescript", "bin/tsc"), "-p", "tsconfig.docs.json"],
        work,
        "tsc -p tsconfig.docs.json (the docs' TypeScript samples)",
    )
