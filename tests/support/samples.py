"""The code samples of the README, for the tests in tests/docs/ that run them."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_block(language: str) -> str:
    """The README's one fenced sample in ``language``."""
    blocks = re.findall(rf"^```{language}\n(.*?)^```", README.read_text("utf-8"), re.S | re.M)
    assert len(blocks) == 1, f"expected one {language} sample in the README"
    return str(blocks[0])
