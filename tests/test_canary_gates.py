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

import io
import json
from collections.abc import Iterator
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
from tests.model_servers import free_port, serving

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
    # 2x: on a busy 2-core machine, two loopback answers of the same model differed by 1.4x
    # (five rounds, each request's median); the slow model is more than 5x.
    canary: {latency_ratio: 2, agreement: 0.95, metric_delta: {accuracy: 0.02}}
"""


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, str]]:
    """The model servers ``good``, ``wrong`` and ``slow``, by URL."""
    with serving("good", "wrong", "slow") as found:
        yield found


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


# -- kfops deploy, Knative mode ----------------------------------------------------------


@pytest.mark.kube
def test_a_canary_that_agrees_and_is_as_fast_is_promoted(
    kube_env: KubeEnv, servers: dict[str, str], tmp_path: Path
) -> None:
    namespace = kube_env.namespace("agree")
    folder = _project(tmp_path, namespace)
    err = _serving_v1(kube_env, folder, namespace, servers["good"])
    assert (
        "canary analysis: comparisons skipped: first release here: there is no stable model"
        " to compare the new one with" in err
    )
    # The route's status.url leads to the wrong server: a comparison through it would fail,
    # so passing shows that each model was reached at its own tagged URL.
    timeline = Timeline.canary(
        url=servers["wrong"], canary_url=servers["good"], stable_url=servers["good"]
    )
    with KServeController(kube_env.api_client(), namespace, timeline):
        code, out, err = _release(kube_env, folder, "v2", "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    assert report["stage"] == "promoted"
    analysis = report["canary_analysis"]
    assert analysis["skipped"] == "" and analysis["passed"] is True
    assert analysis["rounds"] == 5
    assert (analysis["canary_url"], analysis["stable_url"]) == (servers["good"], servers["good"])
    comparisons = _by_name(analysis)
    assert [c["name"] for c in analysis["comparisons"]] == [
        "latency_ratio",
        "agreement",
        "metric_delta",
    ]
    ratio = comparisons["latency_ratio"]
    assert ratio["threshold"] == 2 and ratio["passed"] is True
    assert ratio["canary"] > 0 and ratio["stable"] > 0 and ratio["value"] <= 2
    assert comparisons["agreement"] == {
        "name": "agreement",
        "canary": None,
        "stable": None,
        "value": 1.0,
        "threshold": 0.95,
        "passed": True,
        "detail": "17 of 17 predictions agree (100.0%); at least the gate 95.0%",
    }
    accuracy = comparisons["accuracy"]
    assert (accuracy["canary"], accuracy["stable"], accuracy["value"]) == (1.0, 1.0, 0.0)
    assert accuracy["probe"] == "holdout" and accuracy["threshold"] == 0.02
    assert accuracy["detail"] == (
        "accuracy 1.000 on the canary, 1.000 on the stable model: equal; within the 0.02 allowed"
    )
    assert analysis["canary"]["passed"] is True
    assert [g["name"] for g in analysis["canary"]["gates"]] == ["error_rate", "availability"]
    assert analysis["stable"]["url"] == servers["good"]
    steps = {s["what"]: s for s in report["steps"]}
    assert steps["canary analysis"]["ok"] is True
    assert steps["canary analysis"]["detail"] == (
        f"3 probes to the canary ({servers['good']}) and to release"
        f" s3://models/iris/v1 ({servers['good']}): every comparison passed"
    )
    assert "canary agreement: 17 of 17 predictions agree (100.0%)" in err
    assert "canary error_rate: 0 of 3 requests failed" in err
    live = _live(kube_env, namespace)
    assert live["spec"]["predictor"]["model"]["storageUri"] == "s3://models/iris/v2"
    assert "canaryTrafficPercent" not in live["spec"]["predictor"]


@pytest.mark.kube
def test_a_wrong_canary_fails_agreement_and_metric_delta_and_is_rolled_back(
    kube_env: KubeEnv, servers: dict[str, str], tmp_path: Path
) -> None:
    namespace = kube_env.namespace("wrong")
    folder = _project(tmp_path, namespace)
    _serving_v1(kube_env, folder, namespace, servers["good"])
    timeline = Timeline.canary(
        url=servers["good"], canary_url=servers["wrong"], stable_url=servers["good"]
    )
    with KServeController(kube_env.api_client(), namespace, timeline):
        code, out, err = _release(kube_env, folder, "v2", "--format", "json")
        assert code == 1
        report = json.loads(out)
        assert report["stage"] == "rolled-back"
        analysis = report["canary_analysis"]
        assert analysis["passed"] is False
        assert analysis["canary_url"] == servers["wrong"]
        comparisons = _by_name(analysis)
        assert comparisons["latency_ratio"]["passed"] is True
        agreement = comparisons["agreement"]
        # setosa and virginica disagree; of the 15 labelled inputs, the 5 of class 1 agree
        assert agreement["passed"] is False and agreement["value"] == round(5 / 17, 6)
        accuracy = comparisons["accuracy"]
        assert accuracy["passed"] is False
        assert (accuracy["canary"], accuracy["stable"]) == (round(5 / 15, 6), 1.0)
        assert accuracy["value"] == round(10 / 15, 6)
        message = (
            "the canary analysis failed: agreement: 5 of 17 predictions agree (29.4%); below"
            " the gate 95.0%; metric_delta accuracy (holdout): accuracy 0.333 on the canary,"
            " 1.000 on the stable model: worse by 0.667; more than the 0.02 allowed"
        )
        assert message in report["error"]
        assert message in err
        assert "is serving, as before" in err
        live = _live(kube_env, namespace)
        assert live["spec"]["predictor"]["model"]["storageUri"] == "s3://models/iris/v1"
        assert "canaryTrafficPercent" not in live["spec"]["predictor"]
        # the model serving answers as before: kfops probe of the environment passes
        result = CliRunner().invoke(
            cli,
            ["probe", str(folder), "--env", "prod", "--format", "json"],
            env={"KUBECONFIG": str(kube_env.kubeconfig)},
        )
    assert result.exit_code == 0, result.output
    run = json.loads(result.stdout)
    assert run["url"] == servers["good"] and run["passed"] is True
    assert run["probes"][2]["metrics"] == {"accuracy": 1.0}


@pytest.mark.kube
def test_a_slow_canary_fails_latency_ratio_and_is_rolled_back(
    kube_env: KubeEnv, servers: dict[str, str], tmp_path: Path
) -> None:
    namespace = kube_env.namespace("slow")
    folder = _project(tmp_path, namespace)
    _serving_v1(kube_env, folder, namespace, servers["good"])
    timeline = Timeline.canary(
        url=servers["good"], canary_url=servers["slow"], stable_url=servers["good"]
    )
    with KServeController(kube_env.api_client(), namespace, timeline):
        code, out, err = _release(kube_env, folder, "v2", "--format", "json")
    assert code == 1
    report = json.loads(out)
    assert report["stage"] == "rolled-back"
    comparisons = _by_name(report["canary_analysis"])
    ratio = comparisons["latency_ratio"]
    assert ratio["passed"] is False
    assert ratio["canary"] >= 135  # 150 ms, less at most 10%
    assert ratio["value"] > 2
    assert comparisons["agreement"]["passed"] is True
    assert comparisons["accuracy"]["passed"] is True
    assert "the canary analysis failed: latency_ratio: p95 " in err
    assert "x; above the gate 2x" in err
    assert ratio["detail"].startswith("p95 (each request's median of 5 rounds) ")
    assert _live(kube_env, namespace)["spec"]["predictor"]["model"]["storageUri"].endswith("v1")


@pytest.mark.kube
def test_dry_run_and_plan_say_that_canary_analysis_will_run(
    kube_env: KubeEnv, servers: dict[str, str], tmp_path: Path
) -> None:
    namespace = kube_env.namespace("dry")
    folder = _project(tmp_path, namespace)
    code, out, _ = _deploy(kube_env, folder, "plan", "--model-uri", "s3://models/iris/v1")
    assert code == 0
    assert (
        "canary analysis: skipped: first release here: there is no stable model to compare"
        " the new one with" in out
    )
    _serving_v1(kube_env, folder, namespace, servers["good"])
    before = _live(kube_env, namespace)["metadata"]["resourceVersion"]
    code, _, err = _release(kube_env, folder, "v2", "--dry-run")
    assert code == 0, err
    assert (
        "canary analysis: will run after the smoke test: 3 probes to the canary and to release"
        " s3://models/iris/v1; the canary must meet latency_ratio at most 2x, agreement at"
        " least 95.0%, accuracy at most 0.02 worse" in err
    )
    code, out, err = _deploy(kube_env, folder, "plan", "--model-uri", "s3://models/iris/v2")
    assert code == 0, err
    assert (
        "canary analysis: after the smoke test, the probes go to the canary and to release"
        " s3://models/iris/v1; the canary must meet latency_ratio at most 2x" in out
    )
    assert _live(kube_env, namespace)["metadata"]["resourceVersion"] == before


@pytest.mark.kube
def test_without_a_canary_the_comparisons_are_skipped_with_a_line(
    kube_env: KubeEnv, servers: dict[str, str], tmp_path: Path
) -> None:
    namespace = kube_env.namespace("nocanary")
    folder = _project(tmp_path, namespace, **{"canary: {percent: 10}": "canary: {promote: auto}"})
    _serving_v1(kube_env, folder, namespace, servers["good"])
    timeline = Timeline.ready_at_once(url=servers["good"])
    with KServeController(kube_env.api_client(), namespace, timeline):
        code, out, err = _release(kube_env, folder, "v2", "--format", "json")
    assert code == 0, err
    why = (
        "there is no canary (`serving.canary.percent` is not set): the new model takes all"
        " traffic at once, with no stable model beside it to compare with"
    )
    assert f"canary analysis: comparisons skipped: {why}" in err
    assert json.loads(out)["canary_analysis"] == {
        "skipped": why,
        "passed": None,
        "comparisons": [],
    }


@pytest.mark.kube
def test_one_url_for_both_models_is_refused_before_any_change(
    kube_env: KubeEnv, servers: dict[str, str], tmp_path: Path
) -> None:
    namespace = kube_env.namespace("oneurl")
    folder = _project(tmp_path, namespace)
    text = (folder / "mlops.yaml").read_text()
    fixed = f"{{namespace: {namespace}, url: {servers['good']}}}"
    (folder / "mlops.yaml").write_text(text.replace(f"{{namespace: {namespace}}}", fixed))
    _serving_v1(kube_env, folder, namespace, servers["good"])
    before = _live(kube_env, namespace)["metadata"]["resourceVersion"]
    code, _, err = _release(kube_env, folder, "v2")
    assert code == 1
    assert (
        f"environments.prod.kubernetes.url ({servers['good']}) is one address for the canary"
        " and the stable model alike, so monitoring.gates.canary" in err
    )
    assert "remove `kubernetes.url`" in err and "nothing was changed" in err
    assert _live(kube_env, namespace)["metadata"]["resourceVersion"] == before


@pytest.mark.kube
def test_a_probe_file_that_cannot_be_read_is_an_error_before_any_change(
    kube_env: KubeEnv, servers: dict[str, str], tmp_path: Path
) -> None:
    namespace = kube_env.namespace("nofile")
    folder = _project(tmp_path, namespace)
    _serving_v1(kube_env, folder, namespace, servers["good"])
    (folder / "holdout.jsonl").write_text("not json\n")
    before = _live(kube_env, namespace)["metadata"]["resourceVersion"]
    code, _, err = _release(kube_env, folder, "v2")
    assert code == 1
    assert "holdout.jsonl:1: not JSON" in err and "nothing was changed" in err
    assert _live(kube_env, namespace)["metadata"]["resourceVersion"] == before


# -- kfops deploy, Standard mode ---------------------------------------------------------


def _rollout(
    kube_env: KubeEnv, folder: Path, services: dict[str, str], asked: list[str] | None = None
) -> Any:
    """The release machinery, with Standard mode's Services found on loopback (outside a
    cluster, their names do not resolve); ``asked`` collects the (Service, namespace)
    names kfops looked up."""
    from rich.console import Console

    from kfops.project import config
    from kfops.serving.kube import Kube
    from kfops.serving.rollout import Rollout

    project = config.load(folder)
    environment = project.environment("prod", "")
    console = Console(file=io.StringIO(), width=300)
    return Rollout(
        project,
        environment,
        Kube(environment),
        console,
        poll_seconds=0.05,
        service_url=lambda name, namespace: _service(services, asked, name, namespace),
    )


def _service(services: dict[str, str], asked: list[str] | None, name: str, namespace: str) -> str:
    if asked is not None:
        asked.append(f"{name}.{namespace}")
    # the stable predictor's Service, else the canary's (NAME-CANARY-predictor)
    return services["stable" if name == "iris-predictor" else "canary"]


@pytest.mark.kube
def test_standard_mode_compares_the_canary_service_with_the_stable_one(
    kube_env: KubeEnv, servers: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kfops.serving.render import Release
    from kfops.serving.rollout import Failed

    monkeypatch.setenv("KUBECONFIG", str(kube_env.kubeconfig))
    namespace = kube_env.namespace("standard")
    folder = _project(tmp_path, namespace)
    text = (folder / "mlops.yaml").read_text()
    standard = f"{{namespace: {namespace}, deployment_mode: Standard}}"
    (folder / "mlops.yaml").write_text(text.replace(f"{{namespace: {namespace}}}", standard))
    services = {"stable": servers["good"], "canary": servers["good"]}
    release = {v: Release(f"s3://models/iris/v{v}", "", metrics={"accuracy": 0.95}) for v in "123"}
    with KServeController(
        kube_env.api_client(), namespace, Timeline.ready_at_once(url=servers["good"])
    ):
        first = _rollout(kube_env, folder, services).deploy(release["1"])
        assert first.stage == "promoted" and first.analysis is None
        assert first.analysis_skipped.startswith("first release here")
        asked: list[str] = []
        passed = _rollout(kube_env, folder, services, asked).deploy(release["2"])
        assert asked == [f"iris-canary-predictor.{namespace}", f"iris-predictor.{namespace}"]
        assert passed.stage == "promoted"
        assert passed.analysis is not None and passed.analysis.passed
        assert passed.to_json()["canary_analysis"]["canary_url"] == servers["good"]
        # a canary whose Service answers wrongly is dropped from spec.canary
        services["canary"] = servers["wrong"]
        with pytest.raises(Failed) as failed:
            _rollout(kube_env, folder, services).deploy(release["3"])
        outcome = failed.value.outcome
        assert outcome.stage == "rolled-back"
        assert outcome.analysis is not None
        assert [c.name for c in outcome.analysis.comparisons if not c.passed] == [
            "agreement",
            "metric_delta",
        ]
        assert "the canary analysis failed: agreement: 5 of 17" in outcome.error
        live = _live(kube_env, namespace)
        assert live["spec"]["predictor"]["model"]["storageUri"] == "s3://models/iris/v2"
        assert "canary" not in live["spec"]
        # a canary Service that does not answer (kfops outside the cluster)
        services["canary"] = f"http://127.0.0.1:{free_port()}"
        with pytest.raises(Failed) as failed:
            _rollout(kube_env, folder, services).deploy(release["3"])
    assert (
        f"the canary analysis failed: the canary does not answer at"
        f" {services['canary']} (a Standard-mode canary is reached at its own"
        " Service, from inside the cluster only)" in failed.value.outcome.error
    )
    # then what the canary's own probes and gates found, as kfops probe would report them
    assert "; canary probe setosa: " in failed.value.outcome.error
    assert (
        "; canary error_rate: 3 of 3 requests failed (100.0%); above the gate 0.0%"
        in failed.value.outcome.error
    )


class _Status:
    """A Kube that only reads one InferenceService, for the addresses' messages."""

    def __init__(self, live: dict[str, Any]) -> None:
        self.live = live

    def get(self, name: str) -> dict[str, Any]:
        return self.live


def test_addresses_without_tag_urls_or_canary_names_are_explained(tmp_path: Path) -> None:
    from rich.console import Console

    from kfops.project import config
    from kfops.serving.rollout import Rollout, _NotReleased

    folder = _project(tmp_path, "ns")
    project = config.load(folder)
    environment = project.environment("prod", "")
    untagged = {
        "status": {
            "components": {
                "predictor": {
                    "traffic": [
                        {"revisionName": "b", "percent": 10, "latestRevision": True, "url": "u"},
                        {"revisionName": "a", "percent": 90, "latestRevision": False},
                    ]
                }
            }
        }
    }
    rollout = Rollout(project, environment, _Status(untagged), Console(file=io.StringIO()))  # type: ignore[arg-type]
    with pytest.raises(_NotReleased) as raised:
        rollout._addresses("Knative")
    assert str(raised.value) == (
        "the InferenceService's status has no URL of its own for the stable model (tag `prev`)"
        " in status.components.predictor.traffic: is tag routing"
        " (serving.kserve.io/enable-tag-routing) on?"
    )
    rollout.kube = _Status({"status": {"canaryStatuses": []}})  # type: ignore[assignment]
    with pytest.raises(_NotReleased) as raised:
        rollout._addresses("Standard")
    assert str(raised.value) == (
        "the InferenceService's status names no canary (canaryStatuses[].name), so the"
        " canary's own Service is not known"
    )
    named = {
        "spec": {"predictor": {"name": "blue"}},
        "status": {"canaryStatuses": [{"name": "green"}]},
    }
    rollout.kube = _Status(named)  # type: ignore[assignment]
    assert rollout._addresses("Standard") == (
        "http://iris-green-predictor.ns.svc.cluster.local",
        "http://iris-blue-predictor.ns.svc.cluster.local",
    )


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
    assert probes.comparable(monitoring).latency_ratio == 2
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
        "monitoring.gates.canary.metric_delta (line 19) compares the metrics of labelled"
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
