"""Where did each fact of the old README go? A checklist for the move to docs/ (issue 25).

    python docs/tools/readme_moves.py OLD_README [--missing]

Splits the old README into its sections (by heading) and each section into sentences,
table rows, list items and code lines; looks each one up, whitespace and Markdown links
aside, in the pages (docs/**/*.md), the samples they include (docs/snippets/) and the new
README. Prints one line per old heading with the pages its text is now on, then every
piece found nowhere (the edits to check by hand). Exit 1 when something is missing.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def normal(text: str) -> str:
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # [text](target) -> text
    text = text.replace('"', "").replace("**", "")
    return " ".join(text.split()).strip(" -|*#>")


def pieces(body: str) -> list[str]:
    """Sentences of prose, rows of tables, lines of code."""
    found: list[str] = []
    fence = False
    paragraph: list[str] = []

    def flush() -> None:
        text = normal(" ".join(paragraph))
        found.extend(s for s in re.split(r"(?<=[.;:])\s+(?=[A-Z`(])", text) if len(s) > 12)
        paragraph.clear()

    for line in body.splitlines():
        if line.startswith("```"):
            flush()
            fence = not fence
            continue
        if fence or line.startswith("|"):
            if len(normal(line)) > 3 and not re.fullmatch(r"[\s|:-]+", line):
                found.append(normal(line))
            continue
        if not line.strip() or re.match(r"\s*([-*]|\d+\.)\s", line):
            flush()
        paragraph.append(line)
    flush()
    return found


def sections(readme: str) -> list[tuple[str, str]]:
    """(heading, body) in order; a ``#`` line inside a code block is code, not a heading."""
    found: list[tuple[str, list[str]]] = [("(top)", [])]
    fence = False
    for line in readme.splitlines():
        fence = fence != line.startswith("```")
        if not fence and re.match(r"#{1,4} ", line):
            found.append((line, []))
        else:
            found[-1][1].append(line)
    return [(heading, "\n".join(body)) for heading, body in found]


def main(argv: list[str]) -> int:
    old = Path(argv[1]).read_text(encoding="utf-8")
    pages = {
        str(p.relative_to(ROOT)): normal(p.read_text(encoding="utf-8"))
        for p in [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md"]
    }
    snippets = normal(
        " ".join(p.read_text("utf-8") for p in (ROOT / "docs" / "snippets").rglob("*.*"))
    )
    missing: list[str] = []
    for heading, body in sections(old):
        where: Counter[str] = Counter()
        for piece in pieces(body):
            hits = [name for name, text in pages.items() if piece in text]
            if hits:
                where.update(hits)
            elif piece not in snippets:
                missing.append(f"{heading.strip('# ')}: {piece}")
        placed = ", ".join(name for name, _ in where.most_common(3)) or "(samples only)"
        print(f"{heading.strip('# ')} -> {placed}")
    if missing:
        print(f"\n{len(missing)} pieces found nowhere:")
        print("\n".join(f"  {m}" for m in missing))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
