"""Golden tests: every notebook in data/notebooks/invalid, given directly to `validate`
(no mlops.yaml beside it), fails with its exact messages in a .expected file. The
notebooks are made by data/notebooks/make_invalid.py; run it, then --regen-goldens."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from kfops.cli import cli
from tests.conftest import DATA, check_golden

INVALID_DIR = DATA / "notebooks" / "invalid"
INVALID = sorted(INVALID_DIR.glob("*.ipynb"))


def test_corpus_is_large_enough() -> None:
    assert len(INVALID) >= 24


def test_corpus_has_no_config() -> None:
    """An mlops.yaml beside the notebooks would be read instead of their own metadata."""
    assert not list(INVALID_DIR.glob("mlops.y*ml"))


def test_every_golden_has_its_notebook() -> None:
    stems = {p.stem for p in INVALID}
    assert sorted(p.name for p in INVALID_DIR.glob("*.expected") if p.stem not in stems) == []


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_notebook(path: Path, in_dir: object, regen: bool) -> None:
    original = path.read_bytes()
    in_dir(path.parent)  # type: ignore[operator]
    result = CliRunner().invoke(cli, ["validate", path.name])
    out = result.stdout
    shown = out + result.stderr  # a crash prints its traceback to stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), shown
    assert result.exit_code == 1, shown
    assert "Traceback" not in shown
    assert out.strip(), "an invalid notebook must produce at least one message"
    assert "error: " in out, out
    for line in out.splitlines():
        if not line.startswith("  hint: "):
            assert line.startswith(f"{path.name}"), line
    check_golden(path.with_suffix(".expected"), out, regen)
    assert path.read_bytes() == original, "validate must never modify the notebook"
