"""Golden tests of two notebook corpora, both written for this project:

- data/notebooks/invalid: every notebook, given directly to `validate` (no mlops.yaml
  beside it), fails with its exact messages in a .expected file (made by
  data/notebooks/make_invalid.py);
- data/notebooks/corpus: notebooks in the shapes of public Kale-tagged notebooks (made
  by data/notebooks/make_corpus.py) validate with the warnings in their .expected file,
  compile, and run where their libraries are installed, with the metrics expected.

Run the make_*.py script, then --regen-goldens, and review the diffs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from kfops.cli import cli
from tests.conftest import DATA, check_golden

INVALID_DIR = DATA / "notebooks" / "invalid"
INVALID = sorted(INVALID_DIR.glob("*.ipynb"))
CORPUS_DIR = DATA / "notebooks" / "corpus"
CORPUS = sorted(CORPUS_DIR.glob("*.ipynb"))
# What each corpus notebook needs installed to run, and the metrics it must log; None:
# it imports libraries that no test environment has (it is validated and compiled only).
RUNS: dict[str, tuple[tuple[str, ...], dict[str, dict[str, float]]] | None] = {
    "candies": ((), {"share": {"candies": 36.0, "left": 14.0}}),
    "feature-store-export": None,  # pyspark, minio
    "helpers-in-steps": (("numpy",), {"check": {"largest": 1.5666989036012806}}),
    "kaggle-magics": (("pandas",), {"fit": {"slope": 7.0}}),
    "kale-2-lenient": ((), {"summarise": {"median": 2.0, "threshold": 1.5}}),
    "titanic-models": (("pandas", "sklearn"), {"results": {"best_score": 100.0}}),
    "xgboost-dmatrix": (("numpy", "xgboost"), {"evaluate": {"accuracy": 1.0}}),
}


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


def test_every_corpus_notebook_has_an_expected_run() -> None:
    assert sorted(p.stem for p in CORPUS) == sorted(RUNS)
    assert len(CORPUS) >= 7


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_corpus_notebook_validates_and_compiles(path: Path, in_dir: object, regen: bool) -> None:
    in_dir(path.parent)  # type: ignore[operator]
    validated = CliRunner().invoke(cli, ["validate", path.name])
    assert validated.exit_code == 0, validated.output
    check_golden(path.with_suffix(".expected"), validated.stdout, regen)
    compiled = CliRunner().invoke(cli, ["compile", path.name, "-o", "-"])
    assert compiled.exit_code == 0, compiled.output
    ir = yaml.safe_load(compiled.stdout.split("\n---\n")[0])
    assert ir["root"]["dag"]["tasks"], "a pipeline with no tasks"


@pytest.mark.slow
@pytest.mark.parametrize(
    "path", [p for p in CORPUS if RUNS.get(p.stem) is not None], ids=lambda p: p.stem
)
def test_corpus_notebook_runs(path: Path, tmp_path: Path) -> None:
    needs, metrics = RUNS[path.stem] or ((), {})
    for module in needs:
        pytest.importorskip(module)
    runs = tmp_path / "runs"
    result = CliRunner().invoke(cli, ["run", str(path), "--no-cache", "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    [found] = runs.glob("*/result.json")
    assert json.loads(found.read_text())["metrics"] == metrics
