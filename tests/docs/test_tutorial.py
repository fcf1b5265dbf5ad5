"""The Getting started tutorial works as written: its commands (docs/snippets/tutorial.sh,
which the page includes) run from an empty database to a robot column filling itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from support.daemon import Daemons, clean_env, query
from support.waiting import wait_for

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "snippets" / "tutorial.sh"
COMMAND_TIMEOUT_S = 120


def _section(name: str) -> str:
    text = TUTORIAL.read_text(encoding="utf-8")
    match = re.search(rf"# --8<-- \[start:{name}\]\n(.*?)# --8<-- \[end:{name}\]", text, re.S)
    assert match, f"no section {name!r} in {TUTORIAL}"
    return match.group(1)


def _bash(script: str, url: str, **env: str) -> str:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env=clean_env(WEBSURF_DATABASE_URL=url, PATH=path, WEBSURF_LOG_LEVEL="warning", **env),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, f"{script}\nexit {result.returncode}\n{result.stderr[-3000:]}"
    return result.stdout


def test_the_tutorial_fills_a_robot_column_from_an_empty_database(
    empty_database_url: str, daemons: Daemons
) -> None:
    url = empty_database_url
    sheet = _bash(_section("migrate") + _section("sheet") + 'echo "SHEET=$SHEET"\n', url)
    [sheet_id] = re.findall(r"^SHEET=(\S+)$", sheet, re.M)
    daemons.worker(url, concurrency=1).wait_ready(1)

    _bash(_section("edit"), url, SHEET=sheet_id)

    wait_for(
        lambda: query(
            url,
            "SELECT 1 FROM websurfing_cell c JOIN websurfing_column col ON col.id = c.column_id"
            " WHERE col.operator_type = 'uppercase' AND c.content = 'HELLO ROBOTS'",
        ),
        "the robot column to fill itself",
    )
    shown = _bash(_section("show"), url, SHEET=sheet_id)
    assert re.search(r"1 \| hello robots \| HELLO ROBOTS", shown), shown
    assert re.search(r"B1\s+robot\s+uppercase", shown), shown
    assert re.search(r"A1\s+person\s+ada@example.com", shown), shown
