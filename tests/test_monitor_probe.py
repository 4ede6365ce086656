"""``kfops probe`` against real KServe model servers on loopback (tests/model_servers.py):
``good`` passes every probe and gate; ``wrong`` answers wrongly; a missed gate and a
server that is down fail with their messages. V2 bodies are checked against the Open
Inference Protocol description; no token appears in any output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from kfops.cli import cli
from kfops.monitor import probes
from kfops.project import config
from kfops.serving import predict
from tests.conftest import DATA
from tests.model_servers import free_port, servers
from tests.test_serve import oip_validator

__all__ = ["servers"]  # the fixture

PROJECT = DATA / "monitor" / "project"
HEAD = (
    "version: 1\nname: iris\npipeline:\n  python: pipeline.py:iris_pipeline\n"
    "serving: {model: {uri: 's3://models/iris/v1'}, format: sklearn, protocol: v2}\n"
)


def _project(tmp_path: Path, monitoring: str, environments: str = "") -> Path:
    shutil.copy(PROJECT / "pipeline.py", tmp_path / "pipeline.py")
    shutil.copy(DATA / "monitor" / "holdout.jsonl", tmp_path / "holdout.jsonl")
    (tmp_path / "mlops.yaml").write_text(HEAD + environments + "monitoring:\n" + monitoring)
    return tmp_path


def _probe(path: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    # A wide console, so that rich does not wrap the table's sentences.
    return CliRunner().invoke(
        cli, ["probe", str(path), *args], env={"COLUMNS": "200", **(env or {})}
    )


def test_the_good_model_passes_every_probe_and_gate(servers: dict[str, str]) -> None:
    result = _probe(PROJECT, "--url", servers["good"], "--format", "json")
    assert result.exit_code == 0, result.output
    run = json.loads(result.output)
    assert run["passed"] is True and run["ready"] is True
    assert [(p["name"], p["passed"]) for p in run["probes"]] == [
        ("setosa", True),
        ("setosa-v2-body", True),
        ("virginica", True),
        ("holdout", True),
    ]
    holdout = run["probes"][3]
    assert holdout["metrics"] == {"accuracy": 1.0, "f1": 1.0}
    assert [g["name"] for g in run["gates"]] == ["error_rate", "latency_p95", "availability"]
    assert all(g["passed"] for g in run["gates"])
    assert run["error_rate"] == 0.0 and run["availability"] == 1.0
    assert run["latency_p95_ms"] > 0


def test_the_table(servers: dict[str, str]) -> None:
    result = _probe(PROJECT, "--url", servers["good"])
    assert result.exit_code == 0, result.output
    assert "all probes and gates passed" in result.output
    assert "0 of 4 requests failed (0.0%); within the gate 0.0%" in result.output


def test_a_wrong_model_fails_its_probes_but_is_no_error(servers: dict[str, str]) -> None:
    result = _probe(PROJECT, "--url", servers["wrong"], "--format", "json")
    assert result.exit_code == 1, result.output
    run = json.loads(result.output)
    by_name = {p["name"]: p for p in run["probes"]}
    assert by_name["setosa"]["passed"] is False
    assert by_name["setosa"]["detail"] == "expected predictions [0], got [1]"
    assert by_name["virginica"]["detail"] == "expected predictions [2], got [1]"
    assert by_name["setosa-v2-body"]["passed"] is True  # 1 is within min 0, max 2
    holdout = by_name["holdout"]
    assert holdout["passed"] is False
    assert holdout["detail"].startswith("accuracy 0.333 is below its min 0.9")
    # the server answered every request: a wrong answer is not an error
    assert run["error_rate"] == 0.0
    assert all(g["passed"] for g in run["gates"])


def test_missed_gates_say_by_how_much(servers: dict[str, str], tmp_path: Path) -> None:
    project = _project(
        tmp_path,
        "  probes:\n"
        "    requests:\n"
        "      - {name: setosa, rows: [[5.1, 3.5, 1.4, 0.2]]}\n"
        "      - {name: too-short, rows: [[5.1, 3.5]]}\n"
        "      - {name: rejected, rows: [[5.1, 3.5]], expect: {status: 500}}\n"
        "  gates: {error_rate: 0.1, latency_p95: 0.001ms, availability: 0.5}\n",
    )
    result = _probe(project, "--url", servers["good"], "--format", "json")
    assert result.exit_code == 1, result.output
    run = json.loads(result.output)
    by_name = {p["name"]: p for p in run["probes"]}
    assert by_name["setosa"]["passed"] is True
    assert by_name["too-short"]["passed"] is False
    assert by_name["too-short"]["detail"].startswith("HTTP 500 (expected 200): ")
    assert by_name["rejected"]["passed"] is True, by_name["rejected"]  # the status it expects
    gates = {g["name"]: g for g in run["gates"]}
    assert gates["error_rate"]["passed"] is False
    assert gates["error_rate"]["detail"] == "1 of 3 requests failed (33.3%); above the gate 10.0%"
    assert gates["latency_p95"]["passed"] is False
    assert gates["latency_p95"]["detail"].endswith("above the gate 0.001 ms")
    assert gates["availability"]["passed"] is True  # a 500 is an answer, still up


def test_a_server_that_is_down(tmp_path: Path) -> None:
    project = _project(
        tmp_path,
        "  probes: {requests: [{name: setosa, rows: [[5.1, 3.5, 1.4, 0.2]]}]}\n"
        "  gates: {error_rate: 0.0, latency_p95: 1s, availability: 0.99}\n",
    )
    url = f"http://127.0.0.1:{free_port()}"
    result = _probe(project, "--url", url)
    assert result.exit_code == 1, result.output
    assert "connection refused" in result.output
    assert "1 of 1 requests failed (100.0%); above the gate 0.0%" in result.output
    assert "no request answered; above the gate 1000 ms" in result.output
    assert "available in 0.0% of checks; below the gate 99.0%" in result.output
    assert "Traceback" not in result.output


def test_env_resolves_the_url_and_no_token_is_shown(
    servers: dict[str, str], tmp_path: Path
) -> None:
    token = "kfops-secret-token-0123456789"
    project = _project(
        tmp_path,
        "  probes: {requests: [{name: setosa, rows: [[5.1, 3.5, 1.4, 0.2]]}]}\n",
        "environments:\n  staging:\n"
        "    kfp: {host: 'https://kfp.example.com/pipeline', token_env: KFP_TOKEN}\n"
        f"    kubernetes: {{namespace: ml, url: '{servers['good']}'}}\n",
    )
    for output_format in ("table", "json"):
        result = _probe(
            project, "--env", "staging", "--format", output_format, env={"KFP_TOKEN": token}
        )
        assert result.exit_code == 0, result.output
        assert servers["good"] in result.output
        assert token not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give one of --local, --url URL or --env NAME"),
        (["--local", "--url", "http://x"], "give one of --local, --url URL or --env NAME"),
        (["--env", "prod"], "has no environment `prod`"),
    ],
)
def test_usage(args: list[str], message: str) -> None:
    result = _probe(PROJECT, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_project_without_probes() -> None:
    result = _probe(DATA / "mlops" / "valid" / "minimal.yaml", "--url", "http://127.0.0.1:9")
    assert result.exit_code == 2, result.output
    assert "has no `monitoring:`" in result.output


def test_v2_probe_bodies_follow_the_open_inference_protocol() -> None:
    monitoring = config.load(PROJECT).monitoring
    assert monitoring is not None
    validator = oip_validator("inference_request")
    for request in monitoring.requests:
        body = probes._body(request, "v2", "iris")
        errors = [e.message for e in validator.iter_errors(body)]
        assert not errors, (request.name, errors)
    rows = predict.read_rows("set", json.dumps([[5.1, 3.5, 1.4, 0.2]]))
    assert not list(validator.iter_errors(predict.request_body(rows, "v2", model_name="iris")))


@pytest.mark.parametrize(
    ("name", "predictions", "labels", "value"),
    [
        ("accuracy", [0, 1, 1, 2], [0, 1, 2, 2], 0.75),
        ("accuracy", [0.0, 1.0], [0, 1], 1.0),  # 1.0 and 1 are one class
        ("precision", [0, 0, 1, 1], [0, 1, 1, 1], (0.5 + 1.0) / 2),
        ("recall", [0, 0, 1, 1], [0, 1, 1, 1], (1.0 + 2 / 3) / 2),
        ("f1", [0, 0, 1, 1], [0, 1, 1, 1], (2 / 3 + 0.8) / 2),
        ("mae", [1.0, 2.0, 4.0], [1.0, 3.0, 2.0], 1.0),
        ("rmse", [1.0, 2.0, 4.0], [1.0, 3.0, 2.0], (5 / 3) ** 0.5),
    ],
)
def test_metrics(name: str, predictions: list[Any], labels: list[Any], value: float) -> None:
    assert probes.metric(name, predictions, labels) == pytest.approx(value)


def test_percentile_is_nearest_rank() -> None:
    assert probes.percentile([float(v) for v in range(1, 101)], 95) == 95.0
    assert probes.percentile([3.0], 95) == 3.0
    assert probes.percentile([1.0, 2.0], 95) == 2.0


def test_v1_and_local(servers: dict[str, str], tmp_path: Path) -> None:
    shutil.copy(DATA / "monitor" / "setosa-v1.json", tmp_path / "setosa-v1.json")
    project = _project(
        tmp_path,
        "  probes:\n    requests:\n"
        "      - {name: rows, rows: [[5.1, 3.5, 1.4, 0.2]], expect: {predictions: [0]}}\n"
        "      - {name: body, body: setosa-v1.json, expect: {predictions: [0]}}\n",
    )
    port = servers["good"].rsplit(":", 1)[1]
    result = _probe(project, "--local", "--port", port, "--protocol", "v1", "--format", "json")
    assert result.exit_code == 0, result.output
    run = json.loads(result.output)
    assert run["url"] == f"http://127.0.0.1:{port}" and run["protocol"] == "v1"
    assert [p["passed"] for p in run["probes"]] == [True, True]
