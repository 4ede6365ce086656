"""``kfops monitor --once`` and ``kfops monitor baseline`` through the real CLI: verdicts
and exit codes on synthetic served inputs (no shift, a shift, too few), report.json
against its JSON Schema, and the reference profile's round trip."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator

from kfops.cli import cli
from kfops.monitor import profile
from kfops.monitor.samples import read_jsonl
from tests.conftest import DATA, ROOT

MONITOR = DATA / "monitor"
PROJECT = MONITOR / "project"
REPORT_SCHEMA = json.loads((ROOT / "schemas" / "monitor-report.schema.json").read_text())


@pytest.fixture(autouse=True)
def _state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own monitor state, and no GitHub repository to report to."""
    state = tmp_path / "state" / "monitor.json"
    monkeypatch.setenv("KFOPS_MONITOR_STATE", str(state))
    for name in ("GITHUB_TOKEN", "GITHUB_REPOSITORY", "GITHUB_STEP_SUMMARY"):
        monkeypatch.delenv(name, raising=False)
    return state


def _iris() -> list[dict[str, Any]]:
    with (MONITOR / "iris.csv").open() as f:
        return [
            {k: float(v) if k != "species" else int(v) for k, v in r.items()}
            for r in csv.DictReader(f)
        ]


def _inputs(tmp_path: Path, rows: list[dict[str, Any]], *, named: bool = True) -> Path:
    path = tmp_path / "inputs.jsonl"
    with path.open("w") as f:
        for row in rows:
            features = {k: v for k, v in row.items() if k != "species"}
            inputs = features if named else list(features.values())
            f.write(json.dumps({"inputs": inputs, "prediction": row["species"]}) + "\n")
    return path


def _monitor(*args: str) -> Any:
    return CliRunner().invoke(cli, ["monitor", str(PROJECT), "--once", *args])


def _valid_report(path: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(path.read_text())
    errors = sorted(Draft202012Validator(REPORT_SCHEMA).iter_errors(report), key=str)
    assert not errors, [e.message for e in errors]
    return report


def test_no_shift_is_ok(tmp_path: Path) -> None:
    rows = _iris()
    random.Random(0).shuffle(rows)
    report_file = tmp_path / "report.json"
    result = _monitor("--inputs", str(_inputs(tmp_path, rows)), "--report", str(report_file))
    assert result.exit_code == 0, result.output
    report = _valid_report(report_file)
    assert report["schema"] == "kfops.monitor/v1"
    assert report["verdict"] == "ok" and report["reasons"] == []
    assert report["samples"] == {"count": 150, "min": 50}
    assert {f["name"]: f["method"] for f in report["features"]} == {
        "sepal_length": "psi",
        "sepal_width": "ks",
        "petal_length": "psi",
        "petal_width": "wasserstein",
    }
    assert all(not f["drifted"] for f in report["features"])
    assert report["prediction"]["method"] == "jensen_shannon"
    assert report["prediction"]["score"] == pytest.approx(0.0, abs=1e-6)
    assert report["reference"]["rows"] == 150
    assert "iris in local: ok: 150 served inputs" in result.output


def test_a_shift_is_a_breach_worst_features_first(tmp_path: Path) -> None:
    rows = [
        {**r, "sepal_length": r["sepal_length"] + 1.5, "petal_length": r["petal_length"] + 2.5}
        for r in _iris()
    ]
    report_file = tmp_path / "report.json"
    result = _monitor("--inputs", str(_inputs(tmp_path, rows)), "--report", str(report_file))
    assert result.exit_code == 1, result.output
    report = _valid_report(report_file)
    assert report["verdict"] == "breach"
    names = [f["name"] for f in report["features"]]
    assert set(names[:2]) == {"sepal_length", "petal_length"}
    assert [f["drifted"] for f in report["features"]] == [True, True, False, False]
    ratios = [f["score"] / f["threshold"] for f in report["features"]]
    assert ratios == sorted(ratios, reverse=True)
    assert report["drift_share"] == {"value": 0.5, "threshold": 0.5, "drifted": 2, "total": 4}
    assert report["reasons"] == [
        f"2 of 4 features drifted (`{names[0]}`, `{names[1]}`): 50%, at least drift_share 50%"
    ]
    # the console table lists the worst feature first
    lines = result.output.splitlines()
    first = next(i for i, line in enumerate(lines) if names[0] in line)
    assert all(first <= i for i, line in enumerate(lines) if "sepal_width" in line)


def test_prediction_drift_alone_is_a_breach(tmp_path: Path) -> None:
    rows = [{**r, "species": 2} for r in _iris()]
    result = _monitor(
        "--inputs", str(_inputs(tmp_path, rows)), "--report", str(tmp_path / "r.json")
    )
    assert result.exit_code == 1, result.output
    report = _valid_report(tmp_path / "r.json")
    assert report["prediction"]["drifted"] is True
    assert report["reasons"][0].startswith("the predictions drifted: jensen_shannon 0.")


def test_too_few_samples_is_never_ok(tmp_path: Path) -> None:
    rows = _iris()[::10]  # 15 rows, of the same distribution
    report_file = tmp_path / "report.json"
    result = _monitor("--inputs", str(_inputs(tmp_path, rows)), "--report", str(report_file))
    assert result.exit_code == 4, result.output
    report = _valid_report(report_file)
    assert report["verdict"] == "insufficient_data"
    assert report["reasons"] == ["15 served inputs, fewer than min_samples 50: too few to tell"]


def test_no_inputs_at_all(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = _monitor("--inputs", str(empty), "--report", str(tmp_path / "r.json"))
    assert result.exit_code == 4, result.output
    assert _valid_report(tmp_path / "r.json")["samples"]["count"] == 0


def test_rows_as_lists_are_matched_by_position(tmp_path: Path) -> None:
    inputs = _inputs(tmp_path, _iris(), named=False)
    result = _monitor("--inputs", str(inputs), "--dry-run", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["verdict"] == "ok"


def test_dry_run_writes_nothing_and_markdown(tmp_path: Path, in_dir: Any) -> None:
    in_dir(tmp_path)
    result = _monitor(
        "--inputs", str(_inputs(tmp_path, _iris())), "--dry-run", "--format", "markdown"
    )
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "report.json").exists()
    assert result.output.startswith("### kfops monitor: iris in local: ok\n")
    assert "| feature | kind | method | score | threshold | drifted |" in result.output


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ([], 2, "give --inputs FILE.jsonl"),
        (["--once"], 2, "give --inputs FILE.jsonl"),
        (["--once", "--local", "--url", "http://x"], 2, "give at most one of --local"),
        (["--once", "--inputs", "missing.jsonl"], 2, "missing.jsonl: no such file"),
    ],
)
def test_usage_errors(
    args: list[str], code: int, message: str, tmp_path: Path, in_dir: Any
) -> None:
    in_dir(tmp_path)
    result = CliRunner().invoke(cli, ["monitor", str(PROJECT), *args])
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    if code == 2 and "Usage:" in result.output:  # users never type `check`
        assert "Try 'cli monitor --help' for help." in result.output


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ('{"inputs": [1, 2, 3, 4]}\n{"inputs": [1, 2, 3', "inputs.jsonl:2:"),
        ("[1, 2, 3]\n", "the served rows have 3 values, the reference"),
        ('{"inputs": {"sepal_length": 1}}\n', "the served inputs have no `sepal_width`"),
        ('{"inputs": ["a", 2, 3, 4]}\n', "feature `sepal_length` is numeric in the reference"),
    ],
)
def test_bad_inputs(lines: str, message: str, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text(lines)
    result = _monitor("--inputs", str(inputs), "--dry-run")
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_a_project_without_drift(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["monitor", str(DATA / "mlops" / "valid" / "minimal.yaml"), "--once", "--inputs", "x"]
    )
    assert result.exit_code == 2, result.output
    assert "has no `monitoring: drift:`" in result.output


def test_help_documents_the_exit_codes_and_the_source() -> None:
    result = CliRunner().invoke(cli, ["monitor", "--help"])
    assert result.exit_code == 0
    assert "4 insufficient data" in result.output
    assert "payload logger" in result.output
    assert "kfops monitor baseline --help" in result.output
    assert result.output.splitlines()[0].endswith(" monitor [OPTIONS] [PATH]")
    baseline = CliRunner().invoke(cli, ["monitor", "baseline", "--help"])
    assert baseline.exit_code == 0 and "--prediction-column" in baseline.output


# ------------------------------------------------------------------ baseline


def test_baseline_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "reference.json"
    result = CliRunner().invoke(
        cli,
        [
            "monitor",
            "baseline",
            str(PROJECT),
            "--data",
            str(MONITOR / "iris.csv"),
            "--prediction-column",
            "species",
            "--model",
            str(MONITOR / "iris.csv"),
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "150 rows; features sepal_length (numeric)" in result.output
    loaded = profile.load(out)
    assert [f.name for f in loaded.features] == [
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
    ]
    assert loaded.prediction is not None and loaded.prediction.kind == "numeric"
    assert loaded.model_sha256 == profile.model_sha256(str(MONITOR / "iris.csv"))
    assert loaded.dumps() == out.read_text()  # stable: load and dump give the same file
    assert out.stat().st_size < 10_000
    # the committed reference of the test project is this same profile
    assert loaded.features == profile.load(MONITOR / "reference.json").features


def test_baseline_from_jsonl_and_its_default_output(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / "pipeline.py").write_text((PROJECT / "pipeline.py").read_text())
    (project / "mlops.yaml").write_text(
        "version: 1\nname: iris\npipeline:\n  python: pipeline.py:iris_pipeline\n"
        "monitoring:\n  drift: {reference: ref.json}\n"
    )
    (project / "ref.json").write_text("{}")
    inputs = _inputs(tmp_path, _iris())
    result = CliRunner().invoke(cli, ["monitor", "baseline", str(project), "--data", str(inputs)])
    assert result.exit_code == 0, result.output
    built = profile.load(project / "ref.json")
    assert built.rows == 150 and built.prediction is not None
    assert built.model_sha256 is None
    assert len(read_jsonl(inputs).predictions) == 150


def test_model_hash_of_text_and_folder(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.joblib").write_bytes(b"weights")
    first = profile.model_sha256(str(tmp_path / "m"))
    (tmp_path / "m" / "model.joblib").write_bytes(b"other weights")
    assert profile.model_sha256(str(tmp_path / "m")) != first
    assert profile.model_sha256("s3://models/iris/v1") != profile.model_sha256(
        "s3://models/iris/v2"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "cannot read it"),
        ('{"schema": "other"}', "is not a kfops reference profile"),
        ('{"schema": "kfops.profile/v1"}', "a malformed profile (KeyError"),
    ],
)
def test_bad_profiles(text: str, message: str, tmp_path: Path) -> None:
    from kfops.errors import KfopsError

    path = tmp_path / "ref.json"
    path.write_text(text)
    with pytest.raises(KfopsError, match=message.replace("(", r"\(")):
        profile.load(path)


def _shifted() -> list[dict[str, Any]]:
    return [
        {**r, "sepal_length": r["sepal_length"] + 1.5, "petal_length": r["petal_length"] + 2.5}
        for r in _iris()
    ]


def test_three_breaching_runs_make_a_breach_recorded_in_the_state(
    tmp_path: Path, _state: Path
) -> None:
    inputs = str(_inputs(tmp_path, _shifted()))
    outputs = [_monitor("--inputs", inputs, "--report", str(tmp_path / "r.json")) for _ in range(3)]
    assert [r.exit_code for r in outputs] == [1, 1, 1]
    assert "breaching run 1 of 3: 2 more in a row make a breach" in outputs[0].output
    assert "breaching run 2 of 3" in outputs[1].output
    # on_breach.retrain is issue: with no repository, it says what it would have done
    assert "no GitHub repository to report to, so kfops would have: opened an issue" in (
        outputs[2].output.replace("\n", " ").replace("  ", " ")
    )
    state = json.loads(_state.read_text())
    assert state["breaches"] == 3 and state["episode"]
    assert [h["verdict"] for h in state["history"]] == ["breach"] * 3
    report = _valid_report(tmp_path / "r.json")
    assert report["cycle"]["actions"] == ["open_issue"]
    assert report["cycle"]["state"]["episode"] == state["episode"]


def test_dry_run_keeps_no_state(tmp_path: Path, _state: Path) -> None:
    inputs = str(_inputs(tmp_path, _shifted()))
    result = _monitor("--inputs", inputs, "--dry-run")
    assert result.exit_code == 1
    assert "dry run: nothing to do" in result.output
    assert not _state.exists()


def test_an_error_run_is_recorded(tmp_path: Path, _state: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("[1, 2, 3]\n")
    result = _monitor("--inputs", str(bad))
    assert result.exit_code == 1
    assert [h["verdict"] for h in json.loads(_state.read_text())["history"]] == ["error"]


def test_an_unreadable_state_says_how_to_start_afresh(tmp_path: Path, _state: Path) -> None:
    _state.parent.mkdir(parents=True)
    _state.write_text("{not json")
    result = _monitor("--inputs", str(_inputs(tmp_path, _iris())))
    assert result.exit_code == 1
    assert f"the monitor's state {_state} is unreadable (JSONDecodeError)" in result.output
    assert "delete it to start counting afresh" in result.output


def test_without_once_it_checks_on_the_schedule_until_ctrl_c(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    naps: list[float] = []

    def nap(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", nap)
    report_file = tmp_path / "r.json"
    result = CliRunner().invoke(
        cli,
        [
            "monitor",
            str(PROJECT),
            "--inputs",
            str(_inputs(tmp_path, _iris())),
            "--report",
            str(report_file),
        ],
    )
    assert result.exit_code == 130, result.output
    assert "watching iris in local on `0 * * * *` (UTC); Ctrl-C stops" in result.output
    assert result.output.count("iris in local: ok") == 2
    # it sleeps until each tick: the next hour, then an hour after it
    assert 0 <= naps[0] <= 3600
    assert naps[1] - naps[0] == pytest.approx(3600, abs=5)
    assert _valid_report(report_file)["verdict"] == "ok"


def test_without_once_or_a_schedule(tmp_path: Path) -> None:
    (tmp_path / "ref.json").write_text((MONITOR / "reference.json").read_text())
    (tmp_path / "pipeline.py").write_text((PROJECT / "pipeline.py").read_text())
    (tmp_path / "mlops.yaml").write_text(
        "version: 1\nname: iris\npipeline:\n  python: pipeline.py:iris_pipeline\n"
        "monitoring:\n  drift: {reference: ref.json}\n"
    )
    result = CliRunner().invoke(
        cli, ["monitor", str(tmp_path), "--inputs", str(_inputs(tmp_path, _iris()))]
    )
    assert result.exit_code == 2
    assert "give --once, or set monitoring.schedule" in result.output


def test_status_shows_the_last_verdict_from_the_state(tmp_path: Path, _state: Path) -> None:
    from kfops.delivery import status as live
    from kfops.project import config
    from kfops.project.model import Environment

    inputs = str(_inputs(tmp_path, _shifted()))
    for _ in range(3):
        _monitor("--inputs", inputs, "--report", str(tmp_path / "r.json"))
    project = config.load(PROJECT)
    environment = Environment(name="local", mark=project.monitoring.mark)  # type: ignore[union-attr]
    found = live.collect(project, environment, {"KFOPS_MONITOR_STATE": str(_state)})
    assert found.monitor is not None
    assert (found.monitor["verdict"], found.monitor["breaches"]) == ("breach", 3)
    assert found.monitor["breach"] == json.loads(_state.read_text())["episode"]
    assert found.monitor["source"] == str(_state)
    text = found.text()
    assert "monitor breach at " in text and "breaching runs in a row: 3" in text
    fresh = live.collect(project, environment, {"KFOPS_MONITOR_STATE": str(tmp_path / "none")})
    assert "monitor: no verdict recorded yet (run `kfops monitor --once`)" in fresh.text()


def test_plot_draws_one_panel_per_feature(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "drift.png"
    inputs = str(_inputs(tmp_path, _shifted()))
    result = _monitor("--inputs", inputs, "--plot", str(png), "--report", str(tmp_path / "r.json"))
    assert result.exit_code == 1, result.output
    assert f"drew the drift in {png}" in result.output
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    # four features and the predictions: five panels, three to a row
    assert (width, height) == (1200, 660)
