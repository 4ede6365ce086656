"""``kfops predict`` and the data plane client: reading rows, building V1/V2 bodies
(checked against the Open Inference Protocol description), and predictions from the
real KServe server that ``kfops serve`` runs on a real local run of pipelines/iris."""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner

import kfops
from kfops.cli import cli
from kfops.errors import KfopsError
from kfops.serving.predict import (
    Prediction,
    Rows,
    _env_url,
    endpoint,
    predict,
    read_rows,
    ready,
    request_body,
)
from tests.conftest import DATA, check_golden
from tests.test_serve import ROWS, Served, free_port, iris_project, oip_validator, start_serve

SERVING = DATA / "serving"


# ------------------------------------------------------------------ read_rows


def test_json_list_of_rows() -> None:
    assert read_rows("rows.json", "[[5.1, 3.5], [6, 3]]") == Rows([[5.1, 3.5], [6, 3]])


def test_json_list_of_objects_keeps_the_columns() -> None:
    rows = read_rows(SERVING / "objects.json")
    assert rows.columns == ("sepal_length", "sepal_width", "petal_length", "petal_width")
    assert rows.rows == ROWS


def test_json_instances() -> None:
    assert read_rows("x.json", '{"instances": [[1, 2]]}') == Rows([[1, 2]])


def test_a_v2_body_is_taken_as_is() -> None:
    body = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [1, 2, 3, 4]}]}
    rows = read_rows("v2.json", json.dumps(body))
    assert rows.body == body
    assert rows.rows == [[1, 2], [3, 4]]
    assert (
        request_body(rows, "v2", model_name="iris") is body
        or request_body(rows, "v2", model_name="iris") == body
    )


def test_csv_with_a_header() -> None:
    rows = read_rows(SERVING / "rows.csv")
    assert rows.columns == ("sepal_length", "sepal_width", "petal_length", "petal_width")
    assert rows.rows == ROWS


def test_stdin_text() -> None:
    assert read_rows("-", "a,b\n1,x\n") == Rows([[1, "x"]], ("a", "b"))
    assert read_rows("-", "[[1]]") == Rows([[1]])


@pytest.mark.parametrize(
    ("name", "text", "message", "hint"),
    [
        (
            "bad.json",
            "[[5.1, 3.5],\n [6.7, 3.0,]]",
            "bad.json:2:12: not valid JSON: Expecting value",
            "rows",
        ),
        (
            "x.json",
            '{"rows": [[1]]}',
            "x.json: a JSON object needs `instances` or `inputs` (it has `rows`)",
            "rows",
        ),
        (
            "x.json",
            "[5.1, 3.5]",
            "x.json: [0] is a JSON number, not a row (a list)",
            "[[5.1, 3.5, 1.4, 0.2]]",
        ),
        ("x.json", "[]", "x.json: the document is an empty list, not rows", "rows"),
        ("x.json", '{"instances": 3}', "x.json: instances is a JSON number, not rows", "rows"),
        ("x.json", "[[1, 2], [3]]", "x.json: [1] has 1 value, [0] has 2", "one value per column"),
        ("x.json", "[[1, null]]", "x.json: [0][1] is null", "fill in every value"),
        (
            "x.json",
            "[[1, [2]]]",
            "x.json: [0][1] is a JSON array; rows hold numbers, strings or booleans",
            "V2 body",
        ),
        (
            "x.json",
            '[{"a": 1, "b": 2}, {"a": 1}]',
            "x.json: [1] has the keys `a`, but [0] has `a`, `b`",
            "same keys",
        ),
        (
            "x.json",
            '{"inputs": [{"name": "x"}]}',
            "x.json: inputs[0] lacks `shape`, `datatype`, `data`",
            "Open Inference Protocol",
        ),
        (
            "x.csv",
            "a,b\n1,2\n3\n",
            "x.csv:3: 1 value, the header has 2",
            "one value per header column",
        ),
        ("x.csv", "a,b\n1,2\n3,\n", "x.csv:3: column 2 (`b`) is empty", "fill in every value"),
        ("x.csv", "a,b\n", "x.csv: a header but no rows", "below the header"),
        (
            "x.csv",
            "5.1,3.5\n6.7,3.0\n",
            "x.csv:1: the first line holds values, not column names",
            "header",
        ),
        ("x.csv", 'a,b\n1,"2\n', "x.csv:2: not valid CSV: unexpected end of data", "rows"),
        ("empty.json", "  \n", "empty.json: empty: there are no rows to send", "rows"),
    ],
)
def test_bad_input_says_where_and_how(name: str, text: str, message: str, hint: str) -> None:
    with pytest.raises(KfopsError) as caught:
        read_rows(name, text)
    assert caught.value.message == message
    assert hint in caught.value.hint


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KfopsError) as caught:
        read_rows(tmp_path / "nope.json")
    assert caught.value.message == f"--data {tmp_path / 'nope.json'}: no such file"


# ------------------------------------------------------------------ request bodies


@pytest.mark.parametrize(
    ("rows", "datatype", "data"),
    [
        ([[5.1, 3.5], [6, 3]], "FP64", [5.1, 3.5, 6.0, 3.0]),
        ([[1, 2], [3, 4]], "INT64", [1, 2, 3, 4]),
        ([[True, False]], "BOOL", [True, False]),
        ([["a", "b"]], "BYTES", ["a", "b"]),
    ],
)
def test_v2_datatype_follows_the_values(
    rows: list[list[Any]], datatype: str, data: list[Any]
) -> None:
    body = request_body(Rows(rows), "v2", model_name="m")
    oip_validator("inference_request").validate(body)
    assert body == {
        "inputs": [
            {
                "name": "input-0",
                "shape": [len(rows), len(rows[0])],
                "datatype": datatype,
                "data": data,
            }
        ]
    }


def test_mixed_columns_are_one_tensor_per_column() -> None:
    body = request_body(
        Rows([[1.5, "red", 3], [2.0, "blue", 4]], ("x", "colour", "n")), "v2", model_name="m"
    )
    oip_validator("inference_request").validate(body)
    assert body == {
        "inputs": [
            {"name": "x", "shape": [2], "datatype": "FP64", "data": [1.5, 2.0]},
            {"name": "colour", "shape": [2], "datatype": "BYTES", "data": ["red", "blue"]},
            {"name": "n", "shape": [2], "datatype": "INT64", "data": [3, 4]},
        ],
        "parameters": {"content_type": "pd"},
    }


def test_v1_body_and_errors() -> None:
    assert request_body(Rows([[1, 2]]), "v1", model_name="m") == {"instances": [[1, 2]]}
    v2 = Rows([], None, {"inputs": []})
    with pytest.raises(KfopsError, match="is asked over v1"):
        request_body(v2, "v1", model_name="m")
    with pytest.raises(KfopsError, match="unknown protocol `v3`"):
        request_body(Rows([[1]]), "v3", model_name="m")


def test_endpoints() -> None:
    assert endpoint("http://h:1/", "iris", "v1") == "http://h:1/v1/models/iris:predict"
    assert endpoint("http://h:1", "iris", "v2") == "http://h:1/v2/models/iris/infer"


# ------------------------------------------------------------------ against the real server


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    project, runs = iris_project(tmp_path_factory.getbasetemp())
    running = start_serve(project, runs)
    try:
        running.wait_for(r"^ready; Ctrl-C stops$")
        yield running
    finally:
        running.stop()


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_predict_against_kserve(served: Served, protocol: str) -> None:
    answer = predict(served.base, "iris", Rows(ROWS), protocol)
    assert isinstance(answer, Prediction)
    assert answer.predictions == [0, 2]
    assert answer.url == endpoint(served.base, "iris", protocol)
    assert answer.latency_ms > 0
    assert ready(served.base, "iris", protocol)


@pytest.mark.slow
def test_mixed_column_tensors_reach_the_model_as_a_frame(served: Served) -> None:
    names = ("sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)")
    rows = Rows([[5.1, 3.5, 1, 0.2]], names)  # an INT64 column among FP64 ones
    assert predict(served.base, "iris", rows, "v2").predictions == [0]


@pytest.mark.slow
def test_an_unknown_model_suggests_the_served_one(served: Served) -> None:
    with pytest.raises(KfopsError) as caught:
        predict(served.base, "irsi", Rows(ROWS), "v2")
    url = f"{served.base}/v2/models/irsi/infer"
    assert caught.value.message == f"{url} answered HTTP 404: Model with name irsi does not exist."
    assert caught.value.hint == "the model name: did you mean `iris`?"
    assert not ready(served.base, "irsi", "v2")


@pytest.mark.slow
def test_a_server_error_carries_its_text(served: Served) -> None:
    with pytest.raises(KfopsError) as caught:
        predict(served.base, "iris", Rows([[1, 2]]), "v1")
    assert caught.value.message.startswith(
        f"{served.base}/v1/models/iris:predict answered HTTP 500:"
    )
    assert "features" in caught.value.message


def test_connection_refused() -> None:
    port = free_port()
    with pytest.raises(KfopsError) as caught:
        predict(f"http://127.0.0.1:{port}", "iris", Rows(ROWS), "v2")
    assert caught.value.message == (
        f"cannot connect to http://127.0.0.1:{port}/v2/models/iris/infer: connection refused"
    )
    assert caught.value.hint == (
        "is the server running? start it with `kfops serve PATH` (and match --port)"
    )
    assert not ready(f"http://127.0.0.1:{port}", "iris", "v2")


def test_a_server_that_never_answers_times_out() -> None:
    with socket.socket() as silent:  # accepts connections (the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        base = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(KfopsError) as caught:
            predict(base, "iris", Rows(ROWS), "v1", timeout=0.3)
    assert caught.value.message == f"{base}/v1/models/iris:predict did not answer within 0.3s"


class _StandIn(http.server.BaseHTTPRequestHandler):
    """Not KServe: a server answering each POST with a fixed status and body."""

    status = 200
    body = b"{}"
    seen: ClassVar[list[dict[str, str]]] = []

    def do_POST(self) -> None:
        _StandIn.seen.append(dict(self.headers))
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stand_in() -> Iterator[tuple[str, type[_StandIn]]]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StandIn)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _StandIn
    httpd.shutdown()
    httpd.server_close()
    _StandIn.status, _StandIn.body, _StandIn.seen = 200, b"{}", []


def test_an_answer_that_is_not_v1_or_v2(stand_in: tuple[str, type[_StandIn]]) -> None:
    base, handler = stand_in
    handler.body = b'{"result": [1]}'
    with pytest.raises(KfopsError) as caught:
        predict(base, "m", Rows([[1]]), "v1")
    assert caught.value.message == (
        f'{base}/v1/models/m:predict answered {{"result": [1]}}, not a V1 answer'
        ' ({"predictions": [...]})'
    )
    with pytest.raises(KfopsError, match="not a V2 answer"):
        predict(base, "m", Rows([[1]]), "v2")
    handler.body = b"<html>hello</html>"
    with pytest.raises(KfopsError, match="answered with something that is not JSON: <html>"):
        predict(base, "m", Rows([[1]]), "v1")


def test_auth_headers_are_sent_and_never_shown(stand_in: tuple[str, type[_StandIn]]) -> None:
    base, handler = stand_in
    handler.status, handler.body = 401, b'{"error": "bad token"}'
    with pytest.raises(KfopsError) as caught:
        predict(base, "m", Rows([[1]]), "v1", headers={"Authorization": "Bearer s3cret"})
    assert handler.seen[0]["Authorization"] == "Bearer s3cret"
    shown = caught.value.message + caught.value.hint
    assert "s3cret" not in shown
    assert caught.value.message == f"{base}/v1/models/m:predict answered HTTP 401: bad token"


# ------------------------------------------------------------------ the CLI and the Python API


@pytest.mark.slow
def test_cli_table(served: Served, regen: bool) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "predict",
            str(_project(served)),
            "--local",
            "--port",
            str(served.port),
            "--data",
            str(SERVING / "rows.csv"),
        ],
        env={"COLUMNS": "100"},
    )
    assert result.exit_code == 0, result.output
    *table, last = result.output.rstrip("\n").splitlines()
    check_golden(SERVING / "predict-table.txt", "\n".join(table) + "\n", regen)
    assert last.startswith(f"2 predictions from {served.base}/v2/models/iris/infer (v2) in ")


@pytest.mark.slow
def test_cli_json_from_stdin(served: Served) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "predict",
            "--url",
            served.base,
            "--model-name",
            "iris",
            "--protocol",
            "v1",
            "--data",
            "-",
            "--format",
            "json",
        ],
        input=json.dumps(ROWS),
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert set(document) == {"url", "protocol", "predictions", "latency_ms"}
    assert document["predictions"] == [0, 2]
    assert document["url"] == f"{served.base}/v1/models/iris:predict"
    assert document["protocol"] == "v1"


@pytest.mark.slow
def test_cli_env_uses_the_environments_url(served: Served, tmp_path: Path) -> None:
    project = _with_environment(tmp_path, f"kubernetes: {{namespace: ml, url: '{served.base}'}}")
    result = CliRunner().invoke(
        cli, ["predict", str(project), "--env", "staging", "--data", str(SERVING / "objects.json")]
    )
    assert result.exit_code == 0, result.output
    assert f"from {served.base}/v2/models/iris/infer (v2)" in result.output


def test_cli_env_without_a_url(tmp_path: Path) -> None:
    project = _with_environment(tmp_path, "registry: ghcr.io/acme/iris")
    result = CliRunner().invoke(
        cli, ["predict", str(project), "--env", "staging", "--data", str(SERVING / "rows.csv")]
    )
    assert result.exit_code == 2
    assert (
        "error: --env staging: the model's URL is not known: environments.staging has no"
        " `kubernetes:`" in result.output
    )
    assert "set `kubernetes: {namespace: NAME}` (or `url: https://...`) under" in result.output
    from kfops.project import config

    with pytest.raises(KfopsError, match="has no environment `prod`"):
        _env_url(config.load(project), "prod")


def test_cli_failures_exit_1_with_the_message() -> None:
    port = free_port()
    result = CliRunner().invoke(
        cli,
        [
            "predict",
            "--url",
            f"http://127.0.0.1:{port}",
            "--model-name",
            "iris",
            "--protocol",
            "v2",
            "--data",
            str(SERVING / "rows.csv"),
        ],
    )
    assert result.exit_code == 1
    assert result.output.startswith(
        f"error: cannot connect to http://127.0.0.1:{port}/v2/models/iris/infer"
    )
    result = CliRunner().invoke(cli, ["predict", "--local", "--url", "http://x", "--data", "-"])
    assert result.exit_code == 2
    assert "give one of --local, --url URL or --env NAME" in result.output


@pytest.mark.slow
def test_python_api(served: Served) -> None:
    assert kfops.predict([[5.1, 3.5, 1.4, 0.2]], url=served.base, model="iris", protocol="v2") == [
        0
    ]
    answer = kfops.predict(
        [{"a": 6.7, "b": 3.0, "c": 5.2, "d": 2.3}],
        project=_project(served),
        local=True,
        port=served.port,
        full=True,
    )
    assert isinstance(answer, kfops.Prediction)
    assert answer.predictions == [2]
    assert answer.url.endswith("/v2/models/iris/infer")
    assert kfops.predict(SERVING / "rows.csv", url=served.base, model="iris", protocol="v1") == [
        0,
        2,
    ]
    with pytest.raises(KfopsError, match="give one of url"):
        kfops.predict(ROWS, model="iris", protocol="v1")


def _project(served: Served) -> Path:
    from tests.test_serve import _RUNS

    return _RUNS["root"] / "iris"


def _with_environment(tmp_path: Path, kubernetes: str) -> Path:
    from tests.conftest import ROOT

    copy = tmp_path / "iris"
    shutil.copytree(ROOT / "pipelines" / "iris", copy)
    text = (copy / "mlops.yaml").read_text(encoding="utf-8")
    text += f"\nenvironments:\n  staging:\n    {kubernetes}\n"
    (copy / "mlops.yaml").write_text(text, encoding="utf-8")
    return copy
