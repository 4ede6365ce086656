"""Golden tests: every file in data/mlops/invalid has its exact messages in a .expected file;
every file in data/mlops/valid validates cleanly. Both run through the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from kfops.cli import cli
from tests.conftest import DATA, check_golden

INVALID = sorted((DATA / "mlops" / "invalid").glob("*.yaml"))
VALID = sorted((DATA / "mlops" / "valid").glob("*.yaml"))


def _validate(path: Path, in_dir: object, *args: str) -> tuple[int, str]:
    in_dir(path.parent)  # type: ignore[operator]
    result = CliRunner().invoke(cli, ["validate", path.name, *args])
    return result.exit_code, result.stdout


def test_corpus_is_large_enough() -> None:
    assert len(INVALID) >= 40
    assert len(VALID) >= 3


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid(path: Path, in_dir: object, regen: bool) -> None:
    original = path.read_bytes()
    code, out = _validate(path, in_dir)
    assert code == 1, out
    assert out.strip(), "an invalid file must produce at least one message"
    assert "Traceback" not in out
    for line in out.splitlines():
        if not line.startswith("  hint: "):
            assert line.startswith(f"{path.name}") or line.startswith("pipeline"), line
    check_golden(path.with_suffix(".expected"), out, regen)
    assert path.read_bytes() == original, "validate must never modify mlops.yaml"


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid(path: Path, in_dir: object) -> None:
    code, out = _validate(path, in_dir)
    assert (code, out) == (0, "")
