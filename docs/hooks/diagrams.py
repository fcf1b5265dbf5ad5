"""MkDocs hook: ```dot fences become inline SVG, drawn by Graphviz at build time.

The diagram's source stays in the page; the built page holds the picture (no script,
nothing fetched by the browser). Needs Graphviz's ``dot`` (Debian package ``graphviz``);
without it the build stops with a message saying so. Drawings are cached by source for
the life of the process, so ``make docs-serve`` redraws only what changed.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from typing import Any

from mkdocs.exceptions import PluginError

FENCE = re.compile(r"^```dot\n(.*?)^```$", re.MULTILINE | re.DOTALL)
DOT_TIMEOUT_S = 30


@functools.cache
def render(source: str) -> str:
    """The SVG element for a Graphviz source, on one line-block with no blank line (so
    Markdown leaves it as raw HTML)."""
    dot = shutil.which("dot")
    if dot is None:
        raise PluginError(
            "Graphviz's `dot` is not installed: the docs draw their diagrams with it at build"
            " time (Debian: apt-get install graphviz)"
        )
    result = subprocess.run(
        [dot, "-Tsvg"],
        input=source,
        capture_output=True,
        text=True,
        timeout=DOT_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise PluginError(f"dot could not draw a diagram: {result.stderr.strip()}")
    svg = result.stdout[result.stdout.index("<svg") :]
    svg = re.sub(r"<!--.*?-->", "", svg, flags=re.DOTALL)  # Graphviz's own comments
    lines = [line for line in svg.splitlines() if line.strip()]
    return '<div class="diagram">' + "\n".join(lines) + "</div>"


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    return FENCE.sub(lambda m: render(m.group(1)), markdown)
