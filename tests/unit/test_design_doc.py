"""docs/design.md names, for each invariant, the tests that pin it: every one it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DESIGN = (ROOT / "docs" / "design.md").read_text()
# The invariants section only: "QBO facts" also cites other projects' test files.
INVARIANTS = DESIGN.split("## Invariants", 1)[1].split("\n## ", 1)[0]
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`")
INVARIANT_START = re.compile(r"\n(?=\d+\. \*\*)")


def test_every_test_the_design_names_exists() -> None:
    references = REFERENCE.findall(INVARIANTS)
    assert len(references) >= 20
    for path, name in references:
        source = ROOT / path
        assert source.is_file(), path
        if name:
            defined = re.search(rf"^(async )?def {name}\(", source.read_text(), re.M)
            assert defined, f"{path}::{name}"


def test_every_invariant_names_a_test() -> None:
    blocks = [b for b in INVARIANT_START.split(INVARIANTS) if re.match(r"\d+\. \*\*", b)]
    assert len(blocks) >= 10
    for block in blocks:
        assert "Tests:" in block and REFERENCE.search(block), block.splitlines()[0]
