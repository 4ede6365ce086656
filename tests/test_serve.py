"""``kfops serve``: the real KServe model server, on a real local run of pipelines/iris.

The server runs as a subprocess of the real CLI on a free port (it listens on all
interfaces: KServe has no host option) and is stopped with SIGINT, as a user's ^C.
Answers are checked against the Open Inference Protocol description in
../shared/specs/oip/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner

from kfops.cli import cli
from kfops.errors import KfopsError
from kfops.project import config
from kfops.serving import server
from tests.conftest import ROOT

OIP_SPEC = ROOT.parent / "shared" / "specs" / "oip" / "open_inference_rest.yaml"
KFOPS = [sys.executable, "-m", "kfops"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]

pytestmark = pytest.mark.slow


# ------------------------------------------------------------------ shared helpers


def oip_validator(schema: str) -> Any:
    """A validator for ``components.schemas.SCHEMA`` of the OIP REST description."""
    from openapi_schema_validator import OAS30Validator

    if not OIP_SPEC.is_file():
        pytest.fail(f"the Open Inference Protocol description is missing: {OIP_SPEC}")
    spec = yaml.safe_load(OIP_SPEC.read_text(encoding="utf-8"))
    return OAS30Validator({"$ref": f"#/components/schemas/{schema}", **spec})


def without_nulls(answer: dict[str, Any]) -> dict[str, Any]:
    """kserve 0.21 writes optional fields it has no value for as null (`model_version`,
    `id`, `parameters`), which the OIP description does not allow (it declares them
    `type: string` / `object`, not nullable). Drop exactly those, recursively."""
    if isinstance(answer, dict):
        return {k: without_nulls(v) for k, v in answer.items() if v is not None}
    if isinstance(answer, list):
        return [without_nulls(v) for v in answer]
    return answer


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        return int(probe.getsockname()[1])


_RUNS: dict[str, Path] = {}


def iris_project(base: Path) -> tuple[Path, Path]:
    """A copy of pipelines/iris with one real local run, made once per session.

    Returns the project folder and its runs folder (as ``--runs-dir``)."""
    if "root" not in _RUNS:
        root = base / "iris-served"
        shutil.copytree(ROOT / "pipelines" / "iris", root / "iris")
        runs = root / "runs"
        done = subprocess.run(
            [*KFOPS, "run", str(root / "iris"), "--runs-dir", str(runs)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        _RUNS["root"] = root
    return _RUNS["root"] / "iris", _RUNS["root"] / "runs"


@dataclass
class Served:
    """A running `kfops serve`: its base URL, and what it printed so far."""

    process: subprocess.Popen[str]
    port: int
    lines: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(re.search(pattern, line) for line in self.lines):
            if self.process.poll() is not None and not self.reading.is_alive():
                pytest.fail(f"kfops serve exited ({self.process.returncode}):\n{self.stderr()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {pattern!r} from kfops serve in {timeout}s:\n{self.stderr()}")
            time.sleep(0.05)

    def start_reading(self) -> None:
        def read() -> None:
            assert self.process.stderr is not None
            for line in self.process.stderr:
                self.lines.append(line.rstrip("\n"))

        self.reading = threading.Thread(target=read, daemon=True)
        self.reading.start()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=30)
        self.reading.join(timeout=5)
        if self.process.stderr is not None:
            self.process.stderr.close()
        return code


def start_serve(project: Path, runs: Path, *extra: str, cwd: Path | None = None) -> Served:
    port = free_port()
    process = subprocess.Popen(
        [*KFOPS, "serve", str(project), "--runs-dir", str(runs), "--port", str(port), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
    )
    served = Served(process, port)
    served.start_reading()
    return served


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    project, runs = iris_project(tmp_path_factory.getbasetemp())
    running = start_serve(project, runs, cwd=project.parent)
    try:
        running.wait_for(r"^ready; Ctrl-C stops$")
        yield running
    finally:
        running.stop()


# ------------------------------------------------------------------ the running server


def test_ready_message_names_the_model_urls_and_a_predict_command(served: Served) -> None:
    run_id = next(
        p.name for p in (served_runs(served)).iterdir() if p.is_dir() and p.name[0] != "."
    )
    text = served.stderr().replace(str(served.port), "PORT").replace(run_id, "RUN")
    expected = (
        "starting the KServe model server for iris ...\n"
        "serving iris (sklearn, run RUN, step train-model, artifact model) on port PORT\n"
        "  V1 predict: POST http://127.0.0.1:PORT/v1/models/iris:predict\n"
        "  V2 infer:   POST http://127.0.0.1:PORT/v2/models/iris/infer\n"
        "  ready:      GET  http://127.0.0.1:PORT/v2/models/iris/ready\n"
        "  try: kfops predict iris --local --port PORT --data rows.json\n"
        "ready; Ctrl-C stops"
    )
    assert text.startswith(expected), text


def served_runs(served: Served) -> Path:
    return _RUNS["root"] / "runs"


def test_v1_predict(served: Served) -> None:
    answer = httpx.post(f"{served.base}/v1/models/iris:predict", json={"instances": ROWS})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": [0, 2]}


def test_v2_infer_answers_by_the_open_inference_protocol(served: Served) -> None:
    request = {
        "inputs": [
            {"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": ROWS[0] + ROWS[1]}
        ]
    }
    oip_validator("inference_request").validate(request)
    answer = httpx.post(f"{served.base}/v2/models/iris/infer", json=request)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    oip_validator("inference_response").validate(without_nulls(body))
    assert body["model_name"] == "iris"
    assert body["outputs"] == [
        {"name": "output-0", "shape": [2], "datatype": "INT64", "parameters": None, "data": [0, 2]}
    ]


def test_kserve_writes_unset_optional_fields_as_null(served: Served) -> None:
    """Why without_nulls exists: if kserve stops sending nulls, drop it."""
    request = {
        "inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": ROWS[0]}]
    }
    body = httpx.post(f"{served.base}/v2/models/iris/infer", json=request).json()
    errors = list(oip_validator("inference_response").iter_errors(body))
    assert errors, "kserve's answer now validates as is: remove without_nulls"
    assert all(e.instance is None for e in errors), [e.message for e in errors]
    assert {e.absolute_path[-1] for e in errors} <= {"model_version", "id", "parameters"}


def test_health_and_readiness(served: Served) -> None:
    assert httpx.get(f"{served.base}/v2/health/live").status_code == 200
    assert httpx.get(f"{served.base}/v2/health/ready").status_code == 200
    assert httpx.get(f"{served.base}/v2/models/iris/ready").json() == {
        "name": "iris",
        "ready": True,
    }
    assert httpx.get(f"{served.base}/v1/models/iris").json() == {"name": "iris", "ready": True}
    assert httpx.get(f"{served.base}/v1/models").json() == {"models": ["iris"]}


def test_v2_metadata_lists_the_models_inputs_and_outputs(served: Served) -> None:
    body = httpx.get(f"{served.base}/v2/models/iris").json()
    oip_validator("metadata_model_response").validate(without_nulls(body))
    assert body["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert body["outputs"] == [{"name": "output-0", "datatype": "INT64", "shape": [-1]}]
    server_metadata = httpx.get(f"{served.base}/v2").json()
    oip_validator("metadata_server_response").validate(server_metadata)


def test_each_request_is_logged_in_one_line(served: Served) -> None:
    httpx.post(f"{served.base}/v1/models/iris:predict", json={"instances": ROWS * 3})
    served.wait_for(r"^  v1 predict: 6 rows in \d+\.\d ms$")
    assert "Traceback" not in served.stderr()


def test_a_failing_prediction_is_an_http_error_with_the_reason(served: Served) -> None:
    answer = httpx.post(f"{served.base}/v1/models/iris:predict", json={"instances": [[1, 2]]})
    assert answer.status_code == 500
    assert "features" in answer.json()["error"]
    served.wait_for(r"^  v1 predict failed: ValueError: .*features")


# ------------------------------------------------------------------ starting and stopping


def test_sigint_stops_cleanly(tmp_path_factory: pytest.TempPathFactory) -> None:
    project, runs = iris_project(tmp_path_factory.getbasetemp())
    running = start_serve(project, runs)
    running.wait_for(r"^ready; Ctrl-C stops$")
    assert running.stop() == 0
    assert running.lines[-1] == "stopped"
    assert "Traceback" not in running.stderr()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{running.base}/v2/health/live")


def test_a_port_in_use_is_a_clear_error(tmp_path_factory: pytest.TempPathFactory) -> None:
    project, runs = iris_project(tmp_path_factory.getbasetemp())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*KFOPS, "serve", str(project), "--runs-dir", str(runs), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1
    assert done.stderr.splitlines()[-2:] == [
        f"error: port {port} is in use (another server, or an earlier `kfops serve`?)",
        "  hint: pass --port N with a free port, or stop what listens on it",
    ]


def test_serve_a_model_file_given_with_model(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    project, runs = iris_project(tmp_path_factory.getbasetemp())
    model = next(runs.glob("*/artifacts/*/train-model/model"))
    remote = _edited(tmp_path, project, "model: {uri: s3://models/iris}")
    running = start_serve(remote, tmp_path / "no-runs", "--model", str(model))
    try:
        running.wait_for(r"^ready; Ctrl-C stops$")
        assert f"(sklearn, {model}) on port" in running.stderr()
        answer = httpx.post(f"{running.base}/v1/models/iris:predict", json={"instances": ROWS})
        assert answer.json() == {"predictions": [0, 2]}
    finally:
        assert running.stop() == 0


# ------------------------------------------------------------------ finding the model: errors


def _edited(tmp_path: Path, project: Path, model_line: str) -> Path:
    """A copy of the iris project whose serving.model line is changed."""
    copy = tmp_path / "iris"
    if not copy.exists():
        shutil.copytree(project, copy, ignore=shutil.ignore_patterns(".kfops"))
    text = (project / "mlops.yaml").read_text(encoding="utf-8")
    text = text.replace("model: {from_step: train-model, artifact: model}", model_line)
    (copy / "mlops.yaml").write_text(text, encoding="utf-8")
    return copy


def _serve_error(project: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["serve", str(project), *args])
    return result.exit_code, result.output


def _message(project: Path, runs: Path, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(KfopsError) as caught:
        server.find_model(config.load(project), runs_dir=runs, **kwargs)
    return caught.value.message, caught.value.hint


def test_no_local_run(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, in_dir: Any
) -> None:
    project, _ = iris_project(tmp_path_factory.getbasetemp())
    copy = _edited(tmp_path, project, "model: {from_step: train-model, artifact: model}")
    in_dir(tmp_path)
    code, output = _serve_error(copy)
    assert code == 1
    assert output == (
        "error: no local run of iris in iris/.kfops/runs, so there is no model to serve\n"
        "  hint: run `kfops run iris` first\n"
    )


def test_a_failed_run(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    project, runs = iris_project(tmp_path_factory.getbasetemp())
    good = next(p for p in runs.iterdir() if (p / "result.json").is_file())
    failed = tmp_path / "runs" / "29991231-235959-dead"
    shutil.copytree(good, tmp_path / "runs" / good.name)
    failed.mkdir(parents=True)
    result = json.loads((good / "result.json").read_text())
    result.update(succeeded=False, run_id=failed.name)
    result["steps"]["train-model"]["status"] = "FAILED"
    (failed / "result.json").write_text(json.dumps(result))
    message, hint = _message(project, tmp_path / "runs")
    assert (
        message == "run 29991231-235959-dead failed (at train-model), so it has no model to serve"
    )
    assert hint.startswith("fix the pipeline and run it again: `kfops run ")
    assert hint.endswith(f", or serve an earlier run: --run {good.name}")
    # the earlier run is still there to serve
    source = server.find_model(config.load(project), runs_dir=tmp_path / "runs", run_id=good.name)
    assert source.run_id == good.name


def test_an_unknown_run_id(tmp_path_factory: pytest.TempPathFactory) -> None:
    project, runs = iris_project(tmp_path_factory.getbasetemp())
    run_id = next(p.name for p in runs.iterdir() if (p / "result.json").is_file())
    message, hint = _message(project, runs, run_id=run_id[:-1] + "x")
    assert message.startswith(f"--run {run_id[:-1]}x: no such run in ")
    assert hint == f"did you mean `{run_id}`?"


@pytest.mark.parametrize(
    ("model_line", "message", "hint"),
    [
        (
            "model: {from_step: train-modle, artifact: model}",
            "serving.model.from_step: run RUN has no step `train-modle` (iris/mlops.yaml:15)",
            "did you mean `train-model`?",
        ),
        (
            "model: {from_step: train-model, artifact: modle}",
            "serving.model.artifact: step train-model has no output `modle` (iris/mlops.yaml:15)",
            "did you mean `model`?",
        ),
        (
            "model: {from_step: evaluate, artifact: metrics}",
            "serving.model.artifact: `metrics` of evaluate is system.Metrics, not a system.Model"
            " (iris/mlops.yaml:15)",
            "name the step's Output[Model]",
        ),
        (
            "model: {from_step: load-data}",
            "step load-data has no Model output (iris/mlops.yaml:15)",
            "set serving.model.artifact to one of: `test`, `train`",
        ),
        (
            "model: {uri: s3://models/iris}",
            "serving.model.uri is s3://models/iris (iris/mlops.yaml:15): `kfops serve` serves"
            " the model of a local run, not a remote one",
            "pass --model FILE to serve a model file on this machine, or set"
            " serving.model.from_step to serve a local run's model",
        ),
    ],
    ids=["wrong-step", "wrong-artifact", "not-a-model", "no-model-output", "uri"],
)
def test_serving_model_errors(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    in_dir: Any,
    model_line: str,
    message: str,
    hint: str,
) -> None:
    project, runs = iris_project(tmp_path_factory.getbasetemp())
    run_id = next(p.name for p in runs.iterdir() if (p / "result.json").is_file())
    copy = _edited(tmp_path, project, model_line)
    in_dir(tmp_path)
    code, output = _serve_error(copy, "--runs-dir", str(runs))
    assert code == 2, output
    assert output == f"error: {message.replace('RUN', run_id)}\n  hint: {hint}\n"


def test_no_serving_section(tmp_path: Path, in_dir: Any) -> None:
    copy = tmp_path / "iris"
    shutil.copytree(ROOT / "pipelines" / "iris", copy)
    text = (copy / "mlops.yaml").read_text(encoding="utf-8")
    (copy / "mlops.yaml").write_text(text.split("\nserving:")[0] + "\n", encoding="utf-8")
    in_dir(tmp_path)
    code, output = _serve_error(copy)
    assert code == 2
    assert output.splitlines() == [
        "error: iris/mlops.yaml has no `serving:` section, so kfops does not know which model"
        " to serve",
        "  hint: add `serving: {model: {from_step: STEP, artifact: OUTPUT}, format: sklearn}`"
        " to iris/mlops.yaml",
    ]


def test_an_unsupported_format(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    project, runs = iris_project(tmp_path_factory.getbasetemp())
    copy = _edited(tmp_path, project, "model: {from_step: train-model, artifact: model}")
    text = (copy / "mlops.yaml").read_text().replace("format: sklearn", "format: onnx")
    (copy / "mlops.yaml").write_text(text)
    code, output = _serve_error(copy, "--runs-dir", str(runs))
    assert code == 2
    assert output == (
        "error: serving.format is onnx: `kfops serve` serves sklearn, xgboost and lightgbm"
        " models\n  hint: serve a onnx model on KServe with its runtime (`kfops deploy`)\n"
    )


@pytest.mark.parametrize("framework", ["xgboost", "lightgbm"])
def test_a_missing_framework_names_its_pip_package(tmp_path: Path, framework: str) -> None:
    try:
        __import__(framework)
    except ImportError:
        pass
    else:
        pytest.skip(f"{framework} is installed here")
    (tmp_path / "model.bst").write_bytes(b"\0")
    with pytest.raises(KfopsError) as caught:
        server.load_model(framework, tmp_path)
    assert caught.value.message == (
        f"serving.format is {framework}, but {framework} is not installed here"
    )
    assert caught.value.hint == f"pip install {framework}"


def test_a_folder_artifact_with_model_joblib(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    _, runs = iris_project(tmp_path_factory.getbasetemp())
    model = next(runs.glob("*/artifacts/*/train-model/model"))
    (tmp_path / "model.joblib").write_bytes(model.read_bytes())
    loaded = server.load_model("sklearn", tmp_path)
    assert loaded.file == tmp_path / "model.joblib"
    assert loaded.n_features == 4
    assert loaded.feature_names == (
        "sepal length (cm)",
        "sepal width (cm)",
        "petal length (cm)",
        "petal width (cm)",
    )
    import numpy as np

    assert loaded.predict(np.array(ROWS)).tolist() == [0, 2]


def test_a_folder_without_a_model_file(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(KfopsError) as caught:
        server.load_model("sklearn", tmp_path)
    assert caught.value.message.endswith(
        "holds no sklearn model file (model.joblib, model.pkl, model.pickle)"
    )
    assert caught.value.hint == "files there: notes.txt"


def test_a_file_that_is_not_a_model(tmp_path: Path) -> None:
    import joblib

    joblib.dump({"not": "a model"}, tmp_path / "model")
    with pytest.raises(KfopsError) as caught:
        server.load_model("sklearn", tmp_path / "model")
    assert caught.value.message.endswith("holds a dict, which has no predict()")
    (tmp_path / "junk").write_text("not a pickle")
    with pytest.raises(KfopsError) as caught:
        server.load_model("sklearn", tmp_path / "junk")
    assert caught.value.message.startswith("cannot load ")
    assert " as a sklearn model: " in caught.value.message


def test_serve_does_not_import_kserve_before_the_command_runs() -> None:
    code = (
        "import sys\n"
        "import kfops, kfops.cli, kfops.serving.server, kfops.serving.predict\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'kserve', 'sklearn', 'httpx',"
        " 'fastapi', 'rich'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout == "[]\n"


def test_frames_are_ordered_by_the_fitted_names(tmp_path_factory: pytest.TempPathFactory) -> None:
    import numpy as np
    import pandas as pd

    _, runs = iris_project(tmp_path_factory.getbasetemp())
    loaded = server.load_model("sklearn", next(runs.glob("*/artifacts/*/train-model/model")))
    assert loaded.names_checked_here  # the model itself now takes arrays, without warning
    names = list(loaded.feature_names or ())
    reversed_frame = pd.DataFrame(np.array(ROWS)[:, ::-1], columns=names[::-1])
    assert loaded.predict(reversed_frame).tolist() == [0, 2]
    with pytest.raises(ValueError, match=r"missing: sepal length \(cm\)$"):
        loaded.predict(pd.DataFrame(np.array(ROWS), columns=["x", *names[1:]]))


def test_string_classes_answer_bytes_over_v2(tmp_path: Path) -> None:
    import joblib
    from sklearn.tree import DecisionTreeClassifier

    model = DecisionTreeClassifier().fit([[0, 0], [1, 1]], ["cat", "dog"])
    joblib.dump(model, tmp_path / "model.joblib")
    running = start_serve(ROOT / "pipelines" / "iris", tmp_path, "--model", str(tmp_path))
    try:
        running.wait_for(r"^ready; Ctrl-C stops$")
        request = {
            "inputs": [
                {"name": "input-0", "shape": [2, 2], "datatype": "INT64", "data": [0, 0, 1, 1]}
            ]
        }
        answer = httpx.post(f"{running.base}/v2/models/iris/infer", json=request)
        assert answer.status_code == 200, answer.text
        oip_validator("inference_response").validate(without_nulls(answer.json()))
        output = answer.json()["outputs"][0]
        assert (output["datatype"], output["data"]) == ("BYTES", ["cat", "dog"])
        metadata = httpx.get(f"{running.base}/v2/models/iris").json()
        assert metadata["outputs"] == [{"name": "output-0", "datatype": "BYTES", "shape": [-1]}]
        assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 2]}]
    finally:
        assert running.stop() == 0


def test_a_lightgbm_model_when_installed(tmp_path: Path) -> None:
    lightgbm = pytest.importorskip("lightgbm")
    import numpy as np
    from sklearn.datasets import load_iris

    features, target = load_iris(return_X_y=True)
    params = {"objective": "multiclass", "num_class": 3, "verbose": -1}
    booster = lightgbm.train(params, lightgbm.Dataset(features, target), 10)
    booster.save_model(str(tmp_path / "model.txt"))
    loaded = server.load_model("lightgbm", tmp_path)  # a folder with model.txt
    assert (loaded.file.name, loaded.n_features) == ("model.txt", 4)
    probabilities = loaded.predict(np.array(ROWS))
    assert probabilities.shape == (2, 3)
    assert probabilities.argmax(axis=1).tolist() == [0, 2]
