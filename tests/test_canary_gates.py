"""Canary analysis: ``monitoring.gates.canary`` in ``kfops deploy`` and ``kfops probe
--compare-with``.

The releases go to a real Kubernetes API server (``tests/kube_env.py``) whose KServe
controller is played by ``tests/kserve_controller.py``; the canary's own URL (tag
``latest``), the stable model's (tag ``prev``) and the route's ``status.url`` each point at
a real KServe model server on loopback (``tests/model_servers.py``): ``good``, ``wrong``
(always class 1) and ``slow`` (good, 150 ms later). The comparison maths is unit-tested
at the end.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from kfops.cli import cli
from kfops.errors import KfopsError
from kfops.monitor import probes
from kfops.project.document import Mark
from kfops.project.model import CanaryGates
from tests.conftest import DATA
from tests.kserve_controller import KServeController, Timeline
from tests.kube_env import KubeEnv
from tests.model_servers import servers

__all__ = ["servers"]  # the fixture, imported for pytest

ROOT = Path(__file__).resolve().parents[1]
IRIS = ROOT / "pipelines" / "iris"
GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
MONITORING = """
monitoring:
  probes:
    requests:
      - name: setosa
        rows: [[5.1, 3.5, 1.4, 0.2]]
      - name: virginica
        rows: [[6.7, 3.0, 5.2, 2.3]]
    sets:
      - name: holdout
        file: holdout.jsonl
        metrics: {accuracy: {min: 0.1}}
  gates:
    error_rate: 0.0
    availability: 1.0
    canary: {latency_ratio: 1.5, agreement: 0.95, metric_delta: {accuracy: 0.02}}
"""
# No smoke file: a wrong canary must be caught by the comparisons, not the smoke test.
NO_SMOKE = {"canary: {percent: 10, smoke: smoke.json, promote: auto}": "canary: {percent: 10}"}


def _project(tmp_path: Path, namespace: str, monitoring: str = MONITORING, **changes: str) -> Path:
    folder = tmp_path / "iris"
    folder.mkdir()
    (folder / "pipeline.py").write_text((IRIS / "pipeline.py").read_text())
    (folder / "holdout.jsonl").write_text((DATA / "monitor" / "holdout.jsonl").read_text())
    text = (IRIS / "mlops.yaml").read_text()
    text = text.replace("  format: sklearn\n", "  format: sklearn\n  timeout: 8\n")
    for old, new in {**NO_SMOKE, **changes}.items():
        assert old in text, old
        text = text.replace(old, new)
    text += f"\nenvironments:\n  prod:\n    kubernetes: {{namespace: {namespace}}}\n"
    (folder / "mlops.yaml").write_text(text + monitoring)
    (folder / "metrics.json").write_text(json.dumps({"accuracy": 0.95}))
    return folder


def _deploy(kube_env: KubeEnv, folder: Path, *args: str) -> tuple[int, str, str]:
    env = {
        "KUBECONFIG": str(kube_env.kubeconfig),
        "KFOPS_POLL_SECONDS": "0.05",
        "GITHUB_SHA": "",
        "GITHUB_REF": "",
        "COLUMNS": "300",
    }
    result = CliRunner().invoke(cli, [*args, str(folder), "--env", "prod"], env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def _release(kube_env: KubeEnv, folder: Path, version: str, *args: str) -> tuple[int, str, str]:
    model = (
        "--model-uri",
        f"s3://models/iris/{version}",
        "--metrics",
        str(folder / "metrics.json"),
    )
    return _deploy(kube_env, folder, "deploy", *model, *args)


def _live(kube_env: KubeEnv, namespace: str) -> dict[str, Any]:
    from kubernetes import client

    with kube_env.api_client() as api:
        found: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "iris"
        )
        return found


def _serving_v1(kube_env: KubeEnv, folder: Path, namespace: str, url: str) -> str:
    with KServeController(kube_env.api_client(), namespace, Timeline.ready_at_once(url=url)):
        code, _, err = _release(kube_env, folder, "v1")
    assert code == 0, err
    return err


def _by_name(analysis: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c.get("metric") or c["name"]: c for c in analysis["comparisons"]}


# -- kfops probe --compare-with ----------------------------------------------------------


def _probe_project(tmp_path: Path, monitoring: str = MONITORING) -> Path:
    (tmp_path / "pipeline.py").write_text((IRIS / "pipeline.py").read_text())
    (tmp_path / "holdout.jsonl").write_text((DATA / "monitor" / "holdout.jsonl").read_text())
    head = (
        "version: 1\nname: iris\npipeline:\n  python: pipeline.py:iris_pipeline\n"
        "serving: {model: {uri: 's3://models/iris/v1'}, format: sklearn, protocol: v2}\n"
    )
    (tmp_path / "mlops.yaml").write_text(head + monitoring)
    return tmp_path


def _probe(path: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["probe", str(path), *args], env={"COLUMNS": "300"})


def test_probe_compare_with_passes_for_the_same_model(
    servers: dict[str, str], tmp_path: Path
) -> None:
    folder = _probe_project(tmp_path)
    result = _probe(folder, "--url", servers["good"], "--compare-with", servers["good"])
    assert result.exit_code == 0, result.output
    assert "17 of 17 predictions agree (100.0%); at least the gate 95.0%" in result.stdout
    assert "metric_delta accuracy (holdout)" in result.stdout
    assert (
        f"iris at {servers['good']} (v2) against {servers['good']}: all probes and gates passed"
        in result.stdout
    )


def test_probe_compare_with_fails_for_a_wrong_model(
    servers: dict[str, str], tmp_path: Path
) -> None:
    folder = _probe_project(tmp_path)
    result = _probe(
        folder, "--url", servers["wrong"], "--compare-with", servers["good"], "--format", "json"
    )
    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    assert document["passed"] is False
    assert document["url"] == servers["wrong"]
    comparison = document["comparison"]
    assert comparison["stable_url"] == servers["good"] and comparison["passed"] is False
    assert {c.get("metric") or c["name"]: c["passed"] for c in comparison["comparisons"]} == {
        "latency_ratio": True,
        "agreement": False,
        "accuracy": False,
    }
    assert comparison["stable"]["passed"] is True
    # and the table says how many failed
    result = _probe(folder, "--url", servers["wrong"], "--compare-with", servers["good"])
    assert result.exit_code == 1
    assert f"iris at {servers['wrong']} (v2) against {servers['good']}: 2 failed" in result.stdout


def test_probe_compare_with_needs_gates_canary(servers: dict[str, str], tmp_path: Path) -> None:
    folder = _probe_project(tmp_path, MONITORING.replace("    canary: {latency_ratio", "    #"))
    result = _probe(folder, "--url", servers["good"], "--compare-with", servers["good"])
    assert result.exit_code == 2
    assert "monitoring.gates has no `canary:`, so there is nothing to compare" in result.stderr
    assert "add `monitoring: {gates: {canary: {latency_ratio: 1.5" in result.stderr


# -- the comparison maths ------------------------------------------------------------------

MARK = Mark(1, 1)


def _run(*results: probes.ProbeResult, p95: float | None = 5.0) -> probes.ProbeRun:
    return probes.ProbeRun("http://x", "iris", "v2", True, results, (), 0.0, p95, 1.0)


def _request(name: str, predictions: list[Any], error: str | None = None) -> probes.ProbeResult:
    exchange = probes.Exchange(200 if error is None else 500, 1.0, error, predictions)
    return probes.ProbeResult(name, "request", error is None, "", (exchange,))


def _set(name: str, predictions: list[Any], labels: list[Any]) -> probes.ProbeResult:
    exchange = probes.Exchange(200, 1.0, None, predictions)
    return probes.ProbeResult(
        name, "set", True, "", (exchange,), (), tuple(predictions), tuple(labels)
    )


def test_classes_agree_exactly_and_numbers_within_a_millionth() -> None:
    same = probes.same_prediction
    assert same(1, 1) and not same(1, 2)
    assert not same(1_000_000, 1_000_001)  # integers are classes: no tolerance
    assert same("setosa", "setosa") and not same("setosa", "virginica")
    assert same(1, 1.0)  # a class sent back as a float is the same class
    assert same(0.5, 0.5 * (1 + 5e-7)) and not same(0.5, 0.5 * (1 + 2e-6))
    assert same([0.1, 0.9], [0.1, 0.9]) and not same([0.1, 0.9], [0.1])
    assert same({"label": 1}, {"label": 1}) and not same({"label": 1}, {"label": 2})
    assert not same(True, 1)


def test_agreement_counts_the_predictions_both_answered() -> None:
    canary = _run(
        _request("a", [0, 1, 2]),
        _request("b", [1]),
        _request("c", [], error="HTTP 500"),
        _set("s", [0, 0], [0, 1]),
    )
    stable = _run(
        _request("a", [0, 1, 1]),
        _request("b", [1, 1]),  # one more prediction: it counts as disagreeing
        _request("c", [2]),  # the canary failed it: left to the error rate
        _set("s", [0, 1], [0, 1]),
    )
    assert probes.agreement(canary, stable) == (4, 7)
    (checked,) = probes.comparisons(CanaryGates(MARK, agreement=0.5), canary, stable)
    assert checked.passed and checked.value == 4 / 7
    assert checked.detail == "4 of 7 predictions agree (57.1%); at least the gate 50.0%"
    nothing = _run(_request("c", [], error="HTTP 500"))
    (checked,) = probes.comparisons(CanaryGates(MARK, agreement=0.5), nothing, stable)
    assert not checked.passed and checked.value is None
    assert checked.detail == "no prediction to compare: neither a probe answered on both"


def test_metric_delta_knows_that_lower_is_better_for_mae() -> None:
    labels = [1.0, 2.0, 3.0, 4.0]
    stable = _run(_set("s", [1.0, 2.0, 3.0, 4.5], labels))  # mae 0.125
    worse = _run(_set("s", [1.0, 2.0, 3.5, 4.5], labels))  # mae 0.25
    better = _run(_set("s", [1.0, 2.0, 3.0, 4.0], labels))  # mae 0
    gates = CanaryGates(MARK, metric_delta=(("mae", 0.1),))
    (checked,) = probes.comparisons(gates, worse, stable)
    assert not checked.passed and checked.value == pytest.approx(0.125)
    assert checked.detail == (
        "mae 0.250 on the canary, 0.125 on the stable model: worse by 0.125; more than the"
        " 0.1 allowed"
    )
    (checked,) = probes.comparisons(gates, better, stable)
    assert checked.passed and checked.value == pytest.approx(-0.125)
    assert "better by 0.125; within the 0.1 allowed" in checked.detail
    # accuracy: higher is better; a difference of exactly the threshold passes
    classes = [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    gates = CanaryGates(MARK, metric_delta=(("accuracy", 0.1),))
    (checked,) = probes.comparisons(
        gates,
        _run(_set("s", [0, 1, 2, 0, 1, 2, 0, 1, 2, 1], classes)),
        _run(_set("s", classes, classes)),
    )
    assert checked.passed and checked.value == pytest.approx(0.1)
    assert (checked.canary, checked.stable) == (pytest.approx(0.9), 1.0)


def test_metric_delta_without_answers_fails_and_says_why() -> None:
    failed = probes.ProbeResult("s", "set", False, "HTTP 500 (expected 200): boom")
    gates = CanaryGates(MARK, metric_delta=(("f1", 0.05),))
    (checked,) = probes.comparisons(gates, _run(failed), _run(_set("s", [0, 1], [0, 1])))
    assert not checked.passed and checked.value is None
    assert checked.detail == (
        "no f1 for the canary: its answers to the set are missing (HTTP 500 (expected 200): boom)"
    )


def test_latency_ratio_with_its_floor() -> None:
    gates = CanaryGates(MARK, latency_ratio=1.5)
    (checked,) = probes.comparisons(gates, _run(p95=160.0), _run(p95=40.0))
    assert not checked.passed and checked.value == 4.0
    assert checked.detail == (
        "p95 160.0 ms on the canary, 40.0 ms on the stable model: 4.00x; above the gate 1.5x"
    )
    # 4 ms against 2 ms is noise: both count as 10 ms
    (checked,) = probes.comparisons(gates, _run(p95=4.0), _run(p95=2.0))
    assert checked.passed and checked.value == 1.0
    assert "(a p95 under 10 ms counts as 10 ms); within the gate 1.5x" in checked.detail
    (checked,) = probes.comparisons(gates, _run(p95=None), _run(p95=2.0))
    assert not checked.passed
    assert checked.detail == "no request answered on the canary: no latency to compare"


def test_the_latency_compared_is_each_requests_median_over_the_rounds() -> None:
    def timed(*latencies: float) -> probes.ProbeRun:
        exchanges = tuple(probes.Exchange(200, ms, None, [0]) for ms in latencies)
        return _run(probes.ProbeResult("r", "request", True, "", exchanges))

    # one stalled request in one round is not the model being slow...
    assert probes.steady_p95([timed(5, 6, 900), timed(5, 6, 7), timed(5, 6, 8)]) == 8
    # ...a model slow at every request is
    assert probes.steady_p95([timed(150, 160), timed(155, 151), timed(152, 158)]) == 158
    unanswered = probes.ProbeResult("r", "request", False, "", (probes.Exchange(None, 1, "x"),))
    assert probes.steady_p95([_run(unanswered)]) is None
    gates = CanaryGates(MARK, latency_ratio=2.0)
    (checked,) = probes.comparisons(gates, _run(), _run(), latency=(30.0, 20.0), rounds=3)
    assert checked.passed and (checked.canary, checked.stable, checked.value) == (30, 20, 1.5)
    assert checked.detail == (
        "p95 (each request's median of 3 rounds) 30.0 ms on the canary, 20.0 ms on the stable"
        " model: 1.50x; within the gate 2x"
    )


def test_comparisons_need_probes_and_metric_delta_needs_a_set(tmp_path: Path) -> None:
    from kfops.project import config

    folder = _probe_project(tmp_path, MONITORING)
    monitoring = config.load(folder).monitoring
    assert monitoring is not None
    assert probes.comparable(monitoring).latency_ratio == 1.5
    no_sets = MONITORING.replace(
        "    sets:\n      - name: holdout\n        file: holdout.jsonl\n"
        "        metrics: {accuracy: {min: 0.1}}\n",
        "",
    )
    monitoring = config.load(_probe_project(tmp_path, no_sets)).monitoring
    assert monitoring is not None
    with pytest.raises(KfopsError) as raised:
        probes.comparable(monitoring)
    assert raised.value.message == (
        "monitoring.gates.canary.metric_delta (line 17) compares the metrics of labelled"
        " probe sets, and monitoring.probes has no `sets:`"
    )
    assert "or remove `metric_delta`" in raised.value.hint
    only_gates = "\nmonitoring:\n  gates:\n    canary: {agreement: 0.9}\n"
    monitoring = config.load(_probe_project(tmp_path, only_gates)).monitoring
    assert monitoring is not None
    with pytest.raises(KfopsError) as raised:
        probes.comparable(monitoring)
    assert raised.value.message == (
        "monitoring.gates.canary (line 9) compares the answers to probes, and monitoring has none"
    )
