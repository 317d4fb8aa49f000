"""Sources cited in code and docs are public (URLs or public repository paths), never files outside
this repository (the ISA cost formulas and chip constants once pointed at ../shared/reference/...)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = re.compile(r"shared/reference|\.\./|(?<![\w.])/work/|trainium-hardware\.md|nki-semantics\.md")


def _files():
    yield from (ROOT / "src" / "trnlab").rglob("*.py")
    yield from (ROOT / "docs").rglob("*.md")
    yield ROOT / "README.md"


def test_no_citation_points_outside_the_repository():
    hits = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
            for p in _files() for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if OUTSIDE.search(line)]
    assert hits == []


def test_preset_sources_are_public_urls():
    text = (ROOT / "src" / "trnlab" / "hw" / "__init__.py").read_text(encoding="utf-8")
    for short in ("RTD", "SDK"):
        assert re.search(rf"^  {short} += https://", text, re.M), short
    assert "aws-neuron-sdk/blob/1514f0161870766f551b0aee69da9a48b9ae6b7f" in text      # the ISA docstrings commit
