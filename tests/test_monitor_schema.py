"""``monitoring:`` in mlops.yaml: the model built from a valid section, defaults, and
``kfops validate`` staying light. Bad input is in the golden corpus
(tests/data/mlops/invalid/monitoring-*.yaml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kfops.project import config
from kfops.project.model import DriftTest
from tests.conftest import DATA

PROJECT = DATA / "monitor" / "project"
MINIMAL = "version: 1\nname: iris\npipeline:\n  python: pipeline.py:iris_pipeline\n"


def test_the_full_section_becomes_the_model() -> None:
    monitoring = config.load(PROJECT).monitoring
    assert monitoring is not None
    assert [r.name for r in monitoring.requests] == ["setosa", "setosa-v2-body", "virginica"]
    setosa, body, _ = monitoring.requests
    assert setosa.rows == ([5.1, 3.5, 1.4, 0.2],)
    assert setosa.status == 200
    assert dict(setosa.expect) == {"predictions": [0], "max_latency_ms": 5000}
    assert body.body == (DATA / "monitor" / "setosa-v2.json").resolve()
    (holdout,) = monitoring.sets
    assert holdout.file == (DATA / "monitor" / "holdout.jsonl").resolve()
    assert [(b.metric, b.min, b.max) for b in holdout.metrics] == [
        ("accuracy", 0.9, None),
        ("f1", 0.9, None),
    ]
    gates = monitoring.gates
    assert gates is not None
    assert (gates.error_rate, gates.latency_p95_ms, gates.availability) == (0.0, 2000.0, 1.0)
    drift = monitoring.drift
    assert drift is not None
    assert drift.reference == (DATA / "monitor" / "reference.json").resolve()
    assert (drift.source, drift.window_seconds, drift.min_samples) == ("probes", 86400.0, 50)
    assert drift.test_for("sepal_length", "numeric") == DriftTest("psi", 0.2)
    assert drift.test_for("sepal_width", "numeric") == DriftTest("ks", 0.2)
    # a method without a threshold takes the usual one for it
    assert drift.test_for("petal_width", "numeric") == DriftTest("wasserstein", 0.1)
    assert drift.test_for("colour", "categorical") == DriftTest("jensen_shannon", 0.1)
    assert drift.prediction == DriftTest("jensen_shannon", 0.2)
    assert monitoring.schedule == "0 * * * *"
    assert monitoring.on_breach.consecutive == 3
    assert monitoring.on_breach.cooldown_seconds == 12 * 3600
    assert monitoring.on_breach.retrain == "issue"


def test_defaults(tmp_path: Path) -> None:
    (tmp_path / "pipeline.py").write_text((PROJECT / "pipeline.py").read_text())
    (tmp_path / "ref.json").write_text("{}")
    (tmp_path / "mlops.yaml").write_text(MINIMAL + "monitoring:\n  drift: {reference: ref.json}\n")
    monitoring = config.load(tmp_path).monitoring
    assert monitoring is not None and monitoring.drift is not None
    drift = monitoring.drift
    assert (drift.min_samples, drift.window, drift.drift_share) == (100, "24h", 0.5)
    assert drift.prediction is None
    assert drift.numeric == DriftTest("psi", 0.2)
    assert monitoring.gates is None
    assert monitoring.on_breach.retrain == "issue"
    assert monitoring.on_breach.consecutive == 1


def test_a_project_without_monitoring_has_none() -> None:
    assert config.load(DATA / "mlops" / "valid" / "minimal.yaml").monitoring is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("1.5s", 1.5), ("30m", 1800), ("24h", 86400), ("7d", 604800)],
)
def test_durations(text: str, seconds: float) -> None:
    assert config.duration_seconds(text) == pytest.approx(seconds)


def test_validate_of_a_monitored_project_imports_no_statistics() -> None:
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from kfops.cli import cli\n"
        f"r = CliRunner().invoke(cli, ['validate', {str(PROJECT)!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'scipy', 'numpy', 'kserve',"
        " 'kfp', 'httpx'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout == "[]\n"


CYCLE = """\
environments:
  prod:
    kubernetes: {namespace: models}
    kfp: {host: "http://kfp.example:8888"}
serving:
  model: {from_step: train-model, run: run-42}
  format: sklearn
  logger: {url: "http://kfops-sink.monitoring.svc:8099", mode: request}
monitoring:
  gates:
    canary: {latency_ratio: 1.5, agreement: 0.95, metric_delta: {accuracy: 0.02, mae: 0.5}}
  drift:
    source: logger
    logs: monitor/logs
    reference: ref.json
    signature: [sepal_length, sepal_width, petal_length, petal_width]
  schedule: {cron: "*/30 * * * *", runner: kfp, environment: prod, image: "reg.example/kfops:1"}
  on_breach: {close_after: 4, workflow: retrain.yaml, retrain: auto}
"""


def test_the_cycle_keys_become_the_model(tmp_path: Path) -> None:
    (tmp_path / "pipeline.py").write_text((PROJECT / "pipeline.py").read_text())
    (tmp_path / "ref.json").write_text("{}")
    (tmp_path / "mlops.yaml").write_text(MINIMAL + CYCLE)
    project = config.load(tmp_path)
    serving, monitoring = project.serving, project.monitoring
    assert serving is not None and monitoring is not None
    assert (serving.from_step, serving.run) == ("train-model", "run-42")
    assert serving.logger is not None
    assert (serving.logger.url, serving.logger.mode) == (
        "http://kfops-sink.monitoring.svc:8099",
        "request",
    )
    assert serving.logger.mark.line == 12
    assert monitoring.gates is not None and monitoring.gates.canary is not None
    canary = monitoring.gates.canary
    assert (canary.latency_ratio, canary.agreement) == (1.5, 0.95)
    assert canary.metric_delta == (("accuracy", 0.02), ("mae", 0.5))
    drift = monitoring.drift
    assert drift is not None
    assert drift.logs == str((tmp_path / "monitor" / "logs").resolve())
    assert drift.signature == ("sepal_length", "sepal_width", "petal_length", "petal_width")
    assert (monitoring.schedule, monitoring.runner) == ("*/30 * * * *", "kfp")
    assert (monitoring.schedule_environment, monitoring.image) == ("prod", "reg.example/kfops:1")
    assert (monitoring.on_breach.close_after, monitoring.on_breach.workflow) == (4, "retrain.yaml")


def test_cycle_defaults_and_an_s3_store(tmp_path: Path) -> None:
    (tmp_path / "pipeline.py").write_text((PROJECT / "pipeline.py").read_text())
    (tmp_path / "ref.json").write_text("{}")
    (tmp_path / "mlops.yaml").write_text(
        MINIMAL
        + "monitoring:\n  drift: {source: logger, logs: 's3://mon/iris', reference: ref.json}\n"
        + "  schedule: '0 * * * *'\n"
    )
    monitoring = config.load(tmp_path).monitoring
    assert monitoring is not None and monitoring.drift is not None
    assert monitoring.drift.logs == "s3://mon/iris"
    assert monitoring.drift.signature == ()
    assert (monitoring.schedule, monitoring.runner, monitoring.schedule_environment) == (
        "0 * * * *",
        "github",
        None,
    )
    assert (monitoring.on_breach.close_after, monitoring.on_breach.workflow) == (
        2,
        "kfops-retrain.yml",
    )
    assert monitoring.gates is None
