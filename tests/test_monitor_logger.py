"""KServe's payload logger as the source of served inputs for drift.

A real KServe model server (``tests/model_servers.py``) behind an emulator of KServe's
logger (``tests/payload_logger.py``: request logged before proxying, response only on
200, one ``ce-id``), the logger's CloudEvents received by ``kfops monitor sink`` and kept
in a folder or on a local S3 stand-in (moto's server), then ``kfops monitor --once``
over the window. And, against the real kube-apiserver, that kfops renders a logger only
when asked and never fights one it did not write.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from kfops.cli import cli
from kfops.errors import KfopsError
from kfops.monitor import logger, sink
from tests.conftest import DATA, ROOT
from tests.kserve_controller import KServeController, Timeline
from tests.kube_env import KubeEnv
from tests.model_servers import free_port, servers
from tests.payload_logger import PayloadLogger

__all__ = ["servers"]  # the fixture, imported for pytest

MONITOR = DATA / "monitor"
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
NOW = datetime(2026, 12, 2, 12, 30, tzinfo=timezone.utc)


def _iris() -> list[list[float]]:
    with (MONITOR / "iris.csv").open() as f:
        return [[float(r[name]) for name in FEATURES] for r in csv.DictReader(f)]


def _shifted() -> list[list[float]]:
    return [[a + 2.0, b + 1.5, c + 3.0, d + 1.5] for a, b, c, d in _iris()]


def _project(tmp_path: Path, logs: str | None, *, source: str = "logger") -> Path:
    """The monitor test project, reading its served inputs from ``logs``."""
    for name in ("reference.json", "holdout.jsonl", "setosa-v2.json"):
        shutil.copy(MONITOR / name, tmp_path / name)
    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copy(MONITOR / "project" / "pipeline.py", folder / "pipeline.py")
    text = (MONITOR / "project" / "mlops.yaml").read_text()
    drift = f"    source: {source}\n" + (f"    logs: '{logs}'\n" if logs else "")
    text = text.replace("    source: probes\n", drift)
    (folder / "mlops.yaml").write_text(text)
    return folder


@contextlib.contextmanager
def _sink(store: sink.Store) -> Iterator[tuple[str, sink.Sink]]:
    """``kfops monitor sink``'s server in a thread, on a free loopback port."""
    receiver = sink.Sink(store)
    stop = threading.Event()
    ready = threading.Event()
    urls: list[str] = []

    def started(url: str) -> None:
        urls.append(url)
        ready.set()

    thread = threading.Thread(
        target=sink.serve,
        args=(receiver, "127.0.0.1", 0),
        kwargs={"flush_seconds": 60, "ready": started, "stop": stop},
    )
    thread.start()
    try:
        assert ready.wait(30), "the sink did not start"
        yield urls[0], receiver
    finally:
        stop.set()
        thread.join()


def _send(
    proxy: str, rows: list[list[float]], *, per_request: int = 5, protocol: str = "v1"
) -> list[int]:
    statuses = []
    with httpx.Client(timeout=30) as client:
        for start in range(0, len(rows), per_request):
            chunk = rows[start : start + per_request]
            if protocol == "v1":
                answer = client.post(f"{proxy}/v1/models/iris:predict", json={"instances": chunk})
            else:
                body = {
                    "inputs": [
                        {
                            "name": "input-0",
                            "shape": [len(chunk), 4],
                            "datatype": "FP64",
                            "data": chunk,
                        }
                    ]
                }
                answer = client.post(f"{proxy}/v2/models/iris/infer", json=body)
            statuses.append(answer.status_code)
    return statuses


def _monitor(folder: Path, *args: str) -> Any:
    return CliRunner().invoke(
        cli, ["monitor", str(folder), "--once", "--report", str(folder / "report.json"), *args]
    )


def _stored(root: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted(root.rglob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]


# ------------------------------------------------- the logger, the sink, the monitor


def test_unshifted_traffic_through_the_logger_is_ok(
    servers: dict[str, str], tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    folder = _project(tmp_path, str(logs))
    with (
        _sink(sink.open_store(str(logs), create=True)) as (url, receiver),
        PayloadLogger(servers["good"], url) as proxy,
    ):
        assert set(_send(proxy.url, _iris())) == {200}
    # the documented contract: logged before proxying, the answer after, one id for both
    assert proxy.order == ["log request", "proxy", "log response"] * 30
    assert {status for _, _, status in proxy.sent} == {202}
    assert receiver.received == 60 and receiver.rejected == 0
    events = _stored(logs)
    assert [e["type"] for e in events[:2]] == [sink.REQUEST, sink.RESPONSE]
    assert events[0]["id"] == events[1]["id"]
    assert set(events[0]) == set(sink.FIELDS)
    assert events[0]["inferenceservicename"] == "iris"
    assert events[0]["component"] == "predictor" and events[0]["endpoint"] == "default"
    hour = datetime.fromisoformat(events[0]["time"].replace("Z", "+00:00"))
    assert {p.parent for p in logs.glob("*/*/*/*/*.jsonl")} == {logs / sink.partition(hour)}

    result = _monitor(folder)
    assert result.exit_code == 0, result.output
    assert "30 logged requests (30 answered, 0 without a response) = 150 rows" in result.stderr
    report = json.loads((folder / "report.json").read_text())
    assert report["verdict"] == "ok" and report["source"] == "logger"
    assert report["samples"]["count"] == 150
    # the model's answers were compared with the reference's predictions
    assert report["prediction"]["score"] < 0.05


def test_shifted_traffic_in_v2_bodies_breaches(servers: dict[str, str], tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    folder = _project(tmp_path, str(logs))
    with (
        _sink(sink.open_store(str(logs), create=True)) as (url, _),
        PayloadLogger(servers["good"], url) as proxy,
    ):
        assert set(_send(proxy.url, _shifted(), per_request=10, protocol="v2")) == {200}
    result = _monitor(folder)
    assert result.exit_code == 1, result.output
    report = json.loads((folder / "report.json").read_text())
    assert report["verdict"] == "breach"
    assert report["samples"]["count"] == 150
    assert {f["name"] for f in report["features"] if f["drifted"]} == set(FEATURES)


def test_below_min_samples_is_insufficient_data(servers: dict[str, str], tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    folder = _project(tmp_path, str(logs))
    with (
        _sink(sink.open_store(str(logs), create=True)) as (url, _),
        PayloadLogger(servers["good"], url) as proxy,
    ):
        _send(proxy.url, _shifted()[:10])
    result = _monitor(folder)
    assert result.exit_code == 4, result.output
    assert "10 served inputs, fewer than min_samples 50" in result.output


def test_an_error_answer_logs_the_request_and_no_response(
    servers: dict[str, str], tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    with (
        _sink(sink.open_store(str(logs), create=True)) as (url, _),
        PayloadLogger(servers["good"], url) as proxy,
    ):
        answer = httpx.post(
            f"{proxy.url}/v1/models/no-such-model:predict", json={"instances": _iris()[:3]}
        )
        assert answer.status_code == 404
        assert _send(proxy.url, _iris()[:2]) == [200]
    assert proxy.order == ["log request", "proxy", "log request", "proxy", "log response"]
    assert [e["type"] for e in _stored(logs)] == [sink.REQUEST, sink.REQUEST, sink.RESPONSE]
    found = logger.window_samples(
        sink.open_store(str(logs)),
        until=datetime.now(timezone.utc),
        seconds=3600,
        reference_columns=FEATURES,
    )
    # the unanswered request still counts as served inputs, without predictions
    assert (found.requests, found.answered, found.samples.count) == (2, 1, 5)
    assert len(found.samples.predictions) == 2
    assert found.samples.columns == FEATURES


@pytest.mark.parametrize(
    ("mode", "types"),
    [("request", [sink.REQUEST] * 2), ("response", [sink.RESPONSE] * 2)],
)
def test_the_logger_modes_log_what_they_say(
    servers: dict[str, str], tmp_path: Path, mode: str, types: list[str]
) -> None:
    logs = tmp_path / "logs"
    folder = _project(tmp_path, str(logs))
    with (
        _sink(sink.open_store(str(logs), create=True)) as (url, _),
        PayloadLogger(servers["good"], url, mode=mode) as proxy,
    ):
        _send(proxy.url, _iris()[:10])
    assert [e["type"] for e in _stored(logs)] == types
    result = _monitor(folder)
    if mode == "request":
        assert result.exit_code == 4, result.output
        assert "2 logged requests (0 answered, 2 without a response) = 10 rows" in result.stderr
    else:
        assert result.exit_code == 1, result.output
        assert "hold 2 responses and no request" in result.stderr
        assert "the logger logs no inputs" in result.stderr
        assert "set serving.logger.mode to `all` (or `request`)" in result.stderr


def test_structured_mode_events_parse(servers: dict[str, str], tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    with (
        _sink(sink.open_store(str(logs), create=True)) as (url, receiver),
        PayloadLogger(servers["good"], url, structured=True) as proxy,
    ):
        _send(proxy.url, _iris()[:6], per_request=3, protocol="v2")
    assert receiver.received == 4 and receiver.rejected == 0
    found = logger.window_samples(
        sink.open_store(str(logs)),
        until=datetime.now(timezone.utc),
        seconds=600,
        reference_columns=FEATURES,
    )
    assert (found.requests, found.answered, found.samples.count) == (2, 2, 6)
    assert found.samples.values["petal_length"] == [r[2] for r in _iris()[:6]]
    assert found.samples.predictions == [0] * 6


_GOOD = {
    "ce-id": "1",
    "ce-type": sink.REQUEST,
    "ce-source": "http://localhost:9081/iris",
    "ce-specversion": "1.0",
    "ce-time": "2026-12-02T12:00:00Z",
    "content-type": "application/json",
}


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        ({"content-type": "application/json"}, b'{"instances": [[1]]}', "not a CloudEvent"),
        (
            {"content-type": "application/cloudevents+json"},
            b'{"specversion": "1.0", "id": "1", "source": "s"',
            "not a CloudEvent",
        ),
        (
            {**_GOOD, "ce-type": "dev.knative.example"},
            b"{}",
            "type 'dev.knative.example' is not a KServe inference event",
        ),
        (
            {**_GOOD, "content-type": "image/png"},
            b"\x89PNG",
            "the data is not JSON (kfops reads V1 and V2 JSON bodies)",
        ),
        ({**_GOOD, "ce-time": "yesterday"}, b"{}", "ce-time 'yesterday' is not an RFC 3339 time"),
    ],
)
def test_malformed_events_are_answered_400_with_the_reason_and_not_stored(
    tmp_path: Path, headers: dict[str, str], body: bytes, reason: str
) -> None:
    logs = tmp_path / "logs"
    with _sink(sink.open_store(str(logs), create=True)) as (url, receiver):
        answer = httpx.post(url, headers=headers, content=body)
        good = httpx.post(url, headers=_GOOD, content=b'{"instances": [[1, 2, 3, 4]]}')
    assert answer.status_code == 400
    assert reason in answer.text
    assert good.status_code == 202
    assert receiver.rejected == 1 and receiver.received == 1
    assert [e["id"] for e in _stored(logs)] == ["1"]


def test_a_request_without_a_valid_content_length_is_answered_400(tmp_path: Path) -> None:
    import http.client

    with _sink(sink.open_store(str(tmp_path), create=True)) as (url, receiver):
        connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
        connection.putrequest("POST", "/")
        for name, value in _GOOD.items():
            connection.putheader(name, value)
        connection.putheader("Content-Length", "lots")
        connection.endheaders()
        answer = connection.getresponse()
        text = answer.read().decode()
        connection.close()
    assert answer.status == 400
    assert "the request has no valid Content-Length" in text
    assert receiver.received == 0


def test_an_event_the_store_cannot_keep_is_answered_503(tmp_path: Path) -> None:
    store = sink.open_store(str(tmp_path / "logs"), create=True)
    (tmp_path / "logs").rmdir()
    (tmp_path / "logs").write_text("a file where the store was")
    with _sink(store) as (url, receiver):
        answer = httpx.post(url, headers=_GOOD, content=b'{"instances": [[1, 2, 3, 4]]}')
    assert answer.status_code == 503
    assert f"cannot keep the event in {tmp_path / 'logs'}: " in answer.text
    assert receiver.received == 0


def test_the_window_excludes_old_segments(servers: dict[str, str], tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    folder = _project(tmp_path, str(logs))
    two_days_ago = datetime.now(timezone.utc) - timedelta(days=2)
    with _sink(sink.open_store(str(logs), create=True)) as (url, _):
        with PayloadLogger(servers["good"], url, clock=lambda: two_days_ago) as old:
            _send(old.url, _shifted())
        with PayloadLogger(servers["good"], url) as proxy:
            _send(proxy.url, _iris())
    assert len({p.parent for p in logs.rglob("*.jsonl")}) == 2  # two hourly partitions
    result = _monitor(folder)
    assert result.exit_code == 0, result.output
    assert "= 150 rows, from 1 segment" in result.stderr
    result = _monitor(folder, "--window", "3d")
    assert result.exit_code == 1, result.output
    assert "= 300 rows, from 2 segments" in result.stderr
    assert json.loads((folder / "report.json").read_text())["window"] == "3d"


def test_the_window_reads_only_its_hours_with_an_injected_clock(tmp_path: Path) -> None:
    store = sink.open_store(str(tmp_path), create=True)
    for hours_back in range(30):
        when = NOW - timedelta(hours=hours_back, minutes=10)
        line = {
            **_event(f"r{hours_back}", sink.REQUEST, [[5.0, 3.0, 1.5, 0.2]]),
            "time": logger.stamp(when),
        }
        store.append(when, (json.dumps(line) + "\n").encode())
    found = logger.window_samples(store, until=NOW, seconds=6 * 3600, reference_columns=FEATURES)
    # 6 h back from 12:30 is 06:30: the partitions 06..12, and the requests 06:20 excluded
    assert found.segments == 7
    assert found.requests == 6
    assert found.since == NOW - timedelta(hours=6)


def _event(ident: str, kind: str, data: Any, service: str = "iris") -> dict[str, Any]:
    return {
        "id": ident,
        "type": kind,
        "source": "http://localhost:9081/iris",
        "time": logger.stamp(NOW - timedelta(minutes=5)),
        "inferenceservicename": service,
        "namespace": "monitoring",
        "component": "predictor",
        "endpoint": "default",
        "data": data,
    }


def _store_of(tmp_path: Path, lines: list[Any]) -> sink.Store:
    store = sink.open_store(str(tmp_path / "logs"), create=True)
    for line in lines:
        raw = line if isinstance(line, bytes) else (json.dumps(line) + "\n").encode()
        store.append(NOW - timedelta(minutes=5), raw)
    return store


def test_v1_and_v2_bodies_are_decoded_one_sample_a_row(tmp_path: Path) -> None:
    store = _store_of(
        tmp_path,
        [
            # V1 rows as lists (named by the signature) and as objects
            _event("a", sink.REQUEST, {"instances": [[1, 2, 3, 4], [5, 6, 7, 8]]}),
            _event("a", sink.RESPONSE, {"predictions": [0, 1]}),
            _event(
                "b", sink.REQUEST, {"instances": [dict(zip("wxyz", [9, 10, 11, 12], strict=True))]}
            ),
            # V2: several tensors, one column each, named by the tensors
            _event(
                "c",
                sink.REQUEST,
                {
                    "inputs": [
                        {"name": n, "shape": [2, 1], "datatype": "FP64", "data": [[v], [v + 1]]}
                        for n, v in zip("wxyz", [20, 30, 40, 50], strict=True)
                    ]
                },
            ),
            _event(
                "c",
                sink.RESPONSE,
                {"outputs": [{"name": "p", "shape": [2], "datatype": "INT64", "data": [2, 2]}]},
            ),
            # another service's events are not this model's inputs
            _event("d", sink.REQUEST, {"instances": [[0, 0, 0, 0]]}, service="other"),
        ],
    )
    found = logger.window_samples(
        store,
        until=NOW,
        seconds=3600,
        signature=tuple("wxyz"),
        reference_columns=FEATURES,
        service="iris",
    )
    assert found.samples.columns == tuple("wxyz")
    assert found.samples.values["w"] == [1, 5, 9, 20, 21]
    assert found.samples.values["z"] == [4, 8, 12, 50, 51]
    assert found.samples.predictions == [0, 1, 2, 2]
    assert (found.requests, found.answered, found.skipped) == (3, 2, 0)
    # without a signature, positional rows take the reference profile's order
    positional = _store_of(
        tmp_path / "p",
        [
            _event(
                "a",
                sink.REQUEST,
                {
                    "inputs": [
                        {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}
                    ]
                },
            ),
            _event(
                "a",
                sink.RESPONSE,
                {
                    "outputs": [
                        {"name": "p", "shape": [1, 3], "datatype": "FP32", "data": [0.1, 0.2, 0.7]}
                    ]
                },
            ),
        ],
    )
    found = logger.window_samples(positional, until=NOW, seconds=3600, reference_columns=FEATURES)
    assert found.samples.columns == FEATURES and found.samples.named
    assert found.samples.values["petal_width"] == [4]
    assert found.samples.predictions == [[0.1, 0.2, 0.7]]


@pytest.mark.parametrize(
    ("request_body", "response_body", "why"),
    [
        ({"instances": [[1, 2, 3]]}, None, "a row of 3 values; the features are 4"),
        ({"rows": [[1, 2, 3, 4]]}, None, "neither a V1 body (`instances`) nor a V2 body"),
        ("text", None, "the request body is not a JSON object"),
        ({"instances": "1,2,3,4"}, None, "`instances` is not a list of rows"),
        ({"instances": [7]}, None, "a row is a list of values or an object"),
        (
            {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1, 2]}]},
            None,
            "tensor `x` of shape [2, 4] holds 2 values",
        ),
        ({"inputs": [{"name": "x", "data": [1]}]}, None, "a V2 input is not a tensor"),
        (
            {"inputs": [{"name": "x", "shape": [-1, 4], "datatype": "FP32", "data": []}]},
            None,
            "tensor `x` has shape [-1, 4]",
        ),
        ({"inputs": []}, None, "a V2 body with no input tensor"),
        (
            {
                "inputs": [
                    {"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]},
                    {"name": "y", "shape": [1], "datatype": "FP32", "data": [1]},
                ]
            },
            None,
            "tensor `y` has shape [1]; as one of several inputs it must be [2] or [2, 1]",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": "abcd"}]},
            None,
            "tensor data is not a list",
        ),
        ({"instances": [[1, 2, 3, 4]]}, {"predictions": [0, 1]}, "2 predictions for 1 rows"),
        ({"instances": [[1, 2, 3, 4]]}, {"answer": 0}, "neither a V1 answer (`predictions`)"),
        ({"instances": [[1, 2, 3, 4]]}, [0], "the response body is not a JSON object"),
        (
            {"instances": [[1, 2, 3, 4]]},
            {"outputs": [{"data": [0]}]},
            "the first V2 output has no shape",
        ),
        (
            {"instances": [[1, 2, 3, 4]]},
            {"outputs": [{"shape": [2], "data": [0, 1, 2]}]},
            "the first V2 output of shape [2] holds 3 values",
        ),
    ],
)
def test_a_body_that_cannot_be_read_is_skipped_and_counted(
    tmp_path: Path, request_body: Any, response_body: Any, why: str
) -> None:
    lines = [
        _event("good", sink.REQUEST, {"instances": [[5.1, 3.5, 1.4, 0.2]]}),
        _event("bad", sink.REQUEST, request_body),
    ]
    if response_body is not None:
        lines.append(_event("bad", sink.RESPONSE, response_body))
    found = logger.window_samples(
        _store_of(tmp_path, lines), until=NOW, seconds=3600, reference_columns=FEATURES
    )
    assert found.skipped == 1
    assert why in found.skips[0], found.skips
    assert found.skips[0].startswith(f"{sink.partition(NOW)}/")
    served = 1 if response_body is None else 2
    assert found.samples.count == served
    assert found.samples.predictions == []


def test_a_client_ce_id_used_twice_pairs_answers_in_order(tmp_path: Path) -> None:
    # KServe takes the id from the client's Ce-Id header when there is one.
    store = _store_of(
        tmp_path,
        [
            _event("same", sink.REQUEST, {"instances": [[1, 2, 3, 4]]}),
            _event("same", sink.RESPONSE, {"predictions": [0]}),
            _event("same", sink.REQUEST, {"instances": "unreadable"}),
            _event("same", sink.RESPONSE, {"predictions": [9]}),
            _event("same", sink.REQUEST, {"instances": [[5, 6, 7, 8]]}),
            _event("same", sink.RESPONSE, {"predictions": [2]}),
        ],
    )
    found = logger.window_samples(store, until=NOW, seconds=3600, reference_columns=FEATURES)
    assert (found.requests, found.answered, found.skipped) == (3, 2, 1)
    assert found.samples.values["sepal_length"] == [1, 5]
    assert found.samples.predictions == [0, 2]


def test_rows_of_another_shape_than_the_first_are_skipped(tmp_path: Path) -> None:
    found = logger.window_samples(
        _store_of(
            tmp_path,
            [
                _event("a", sink.REQUEST, {"instances": [{"w": 1, "x": 2}]}),
                _event("b", sink.REQUEST, {"instances": [{"w": 1}]}),
                _event("c", sink.REQUEST, {"instances": [[1, 2]]}),
            ],
        ),
        until=NOW,
        seconds=3600,
    )
    assert found.samples.count == 1 and found.skipped == 2
    assert "rows of columns w; the first had columns w, x" in found.skips[0]
    assert "rows of 2 values; the first had columns w, x" in found.skips[1]


def test_malformed_lines_are_skipped_counted_and_reported(
    servers: dict[str, str], tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    folder = _project(tmp_path, str(logs))
    with (
        _sink(sink.open_store(str(logs), create=True)) as (url, _),
        PayloadLogger(servers["good"], url) as proxy,
    ):
        _send(proxy.url, _iris())
    [segment] = logs.rglob("*.jsonl")
    with segment.open("ab") as f:
        f.write(b'not json\n{"type": "x"}\n{"id": 1, "type": "t", "time": 2}\n{"id": "half", "ty')
    result = _monitor(folder)
    assert result.exit_code == 0, result.output
    key = segment.relative_to(logs).as_posix()
    assert f"skipped 4 unreadable: {key}:61: not an event line; {key}:62: not an event" in (
        result.stderr
    )
    assert "Traceback" not in result.output


# ------------------------------------------------------------------ stores


def test_a_missing_store_folder_is_explained(tmp_path: Path) -> None:
    folder = _project(tmp_path, str(tmp_path / "nowhere"))
    result = _monitor(folder)
    assert result.exit_code == 2
    assert f"log store {tmp_path / 'nowhere'}: no such folder" in result.stderr
    assert "start `kfops monitor sink`" in result.stderr


def test_a_store_folder_that_cannot_be_created_is_explained(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(KfopsError, match=r"cannot create it: .*\n?") as caught:
        sink.open_store(str(tmp_path / "file" / "logs"), create=True)
    assert caught.value.message.startswith(f"log store {tmp_path / 'file' / 'logs'}: ")
    assert "give a folder you can write to" in caught.value.hint


def test_an_s3_url_without_a_bucket_is_refused() -> None:
    with pytest.raises(KfopsError, match=r"log store s3://: no bucket") as caught:
        sink.open_store("s3://")
    assert caught.value.hint == "write it as s3://bucket/prefix"


def test_an_s3_store_without_boto3_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # as if it were not installed
    with pytest.raises(KfopsError, match="needs boto3, which is not installed") as caught:
        sink.open_store("s3://logs/iris")
    assert "pip install 'kfops[monitor]'" in caught.value.hint


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's S3 server on loopback, and boto3 pointed at it; yields its URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    for name, value in {
        "AWS_ENDPOINT_URL_S3": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }.items():
        monkeypatch.setenv(name, value)
    import boto3

    boto3.client("s3").create_bucket(Bucket="logs")
    try:
        yield url
    finally:
        server.stop()


def test_the_s3_store_works_on_a_local_s3_stand_in(
    servers: dict[str, str], tmp_path: Path, s3: str
) -> None:
    import boto3

    folder = _project(tmp_path, "s3://logs/iris/payloads")
    with (
        _sink(sink.open_store("s3://logs/iris/payloads")) as (url, receiver),
        PayloadLogger(servers["good"], url) as proxy,
    ):
        _send(proxy.url, _shifted())
    assert receiver.received == 60
    keys = [
        o["Key"]
        for o in boto3.client("s3").list_objects_v2(Bucket="logs", Prefix="iris/")["Contents"]
    ]
    # buffered, then written as one new object per hour when the sink stopped
    assert len(keys) == 1 and keys[0].startswith("iris/payloads/20") and keys[0].endswith(".jsonl")
    result = _monitor(folder)
    assert result.exit_code == 1, result.output
    assert "30 logged requests (30 answered" in result.stderr
    assert "of s3://logs/iris/payloads" in result.stderr
    assert json.loads((folder / "report.json").read_text())["verdict"] == "breach"


def test_a_failed_s3_flush_warns_keeps_the_events_and_fails_the_last_flush(
    tmp_path: Path, s3: str
) -> None:
    import boto3

    store = sink.open_store("s3://late-bucket/logs")
    receiver = sink.Sink(store)
    stop, ready, warned = threading.Event(), threading.Event(), threading.Event()
    urls: list[str] = []
    warnings: list[str] = []
    errors: list[KfopsError] = []

    def started(url: str) -> None:
        urls.append(url)
        ready.set()

    def warn(message: str) -> None:
        warnings.append(message)
        warned.set()

    def run() -> None:
        try:
            sink.serve(
                receiver,
                "127.0.0.1",
                0,
                flush_seconds=0.1,
                ready=started,
                stop=stop,
                warn=warn,
            )
        except KfopsError as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert ready.wait(30)
        assert httpx.post(urls[0], headers=_GOOD, content=b"{}").status_code == 202
        assert warned.wait(30), "no flush failed"
        assert warnings[0].startswith("log store s3://late-bucket/logs: S3 answered NoSuchBucket")
        assert warnings[0].endswith("the events are kept and written at the next flush")
        # once the bucket exists, the kept events are written
        boto3.client("s3").create_bucket(Bucket="late-bucket")
    finally:
        stop.set()
        thread.join()
    assert errors == []
    [item] = boto3.client("s3").list_objects_v2(Bucket="late-bucket")["Contents"]
    body = boto3.client("s3").get_object(Bucket="late-bucket", Key=item["Key"])["Body"].read()
    assert [json.loads(line)["id"] for line in body.splitlines()] == ["1"]
    # and a flush that fails on the way out is an error
    store = sink.open_store("s3://gone/logs")
    store.append(NOW, b"{}\n")
    with pytest.raises(KfopsError, match="log store s3://gone/logs: S3 answered NoSuchBucket"):
        store.flush()
    with pytest.raises(KfopsError, match="NoSuchBucket"):
        store.flush()  # the line was kept for another try


def test_an_s3_bucket_that_does_not_exist_is_explained(tmp_path: Path, s3: str) -> None:
    folder = _project(tmp_path, "s3://no-such-bucket/logs")
    result = _monitor(folder)
    assert result.exit_code == 1
    assert "log store s3://no-such-bucket/logs: S3 answered NoSuchBucket" in result.stderr
    assert "check the bucket, and the credentials and endpoint" in result.stderr


def test_an_unreachable_s3_endpoint_is_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    folder = _project(tmp_path, "s3://logs/iris")
    result = _monitor(folder)
    assert result.exit_code == 1
    assert "log store s3://logs/iris: Could not connect to the endpoint URL" in result.stderr
    assert "AWS_ENDPOINT_URL_S3" in result.stderr


# ------------------------------------------------------------------ the commands


def test_kfops_monitor_sink_runs_until_ctrl_c(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    folder = _project(tmp_path, str(logs))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    process = subprocess.Popen(
        [sys.executable, "-m", "kfops", "monitor", "sink", str(folder), "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stderr is not None
        ready = process.stderr.readline()
        assert ready.startswith(f"kfops monitor sink: listening on http://127.0.0.1:{port};")
        assert f"keeping events in {logs}" in ready
        hint = process.stderr.readline()
        assert f"set serving.logger.url to http://127.0.0.1:{port}" in hint
        url = f"http://127.0.0.1:{port}"
        assert (
            httpx.post(url, headers=_GOOD, content=b'{"instances": [[1, 2, 3, 4]]}').status_code
            == 202
        )
        assert httpx.post(url, headers={}, content=b"{}").status_code == 400
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, rest
    assert "stopped; 1 events kept, 1 rejected" in rest
    assert "Traceback" not in rest
    assert [e["id"] for e in _stored(logs)] == ["1"]


def test_kfops_monitor_sink_on_a_busy_port_is_explained(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(
            cli, ["monitor", "sink", "--store", str(tmp_path), "--port", str(port)]
        )
    assert result.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "choose another port with --port" in result.stderr


def test_kfops_monitor_sink_needs_a_store(tmp_path: Path) -> None:
    folder = _project(tmp_path, None, source="probes")
    result = CliRunner().invoke(cli, ["monitor", "sink", str(folder)])
    assert result.exit_code == 2
    assert "monitoring.drift has no `logs`: the sink does not know where" in result.stderr
    assert "give --store DIR|s3://BUCKET/PREFIX" in result.stderr


def test_a_window_that_is_not_a_duration_is_a_usage_error(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    folder = _project(tmp_path, str(logs))
    result = _monitor(folder, "--window", "six hours")
    assert result.exit_code == 2
    assert "'six hours' is not a duration: give e.g. 30m, 6h or 7d" in result.stderr


def test_a_window_with_source_probes_is_a_usage_error(tmp_path: Path) -> None:
    folder = _project(tmp_path, None, source="probes")
    result = _monitor(folder, "--window", "6h")
    assert result.exit_code == 2
    assert "--window reads KServe's payload logs: monitoring.drift.source is probes" in (
        result.stderr
    )


def test_source_probes_still_reads_inputs(tmp_path: Path) -> None:
    folder = _project(tmp_path, None, source="probes")
    result = _monitor(folder)
    assert result.exit_code == 2
    assert "give --inputs FILE.jsonl" in result.stderr
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text("".join(json.dumps(r) + "\n" for r in _iris()))
    result = _monitor(folder, "--inputs", str(inputs))
    assert result.exit_code == 0, result.output


# ------------------------------------------- never fight a logger kfops did not write

IRIS = ROOT / "pipelines" / "iris"
GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
LOGGER_LINE = "  logger: {url: 'http://sink.monitoring:8099', mode: all}\n"


def _kube_project(tmp_path: Path, namespace: str, *, with_logger: bool) -> Path:
    folder = tmp_path / "iris"
    folder.mkdir(exist_ok=True)
    for name in ("pipeline.py", "smoke.json"):
        (folder / name).write_text((IRIS / name).read_text())
    text = (IRIS / "mlops.yaml").read_text()
    extra = "  timeout: 8\n" + (LOGGER_LINE if with_logger else "")
    text = text.replace("  format: sklearn\n", "  format: sklearn\n" + extra)
    text += f"\nenvironments:\n  prod:\n    kubernetes: {{namespace: {namespace}}}\n"
    (folder / "mlops.yaml").write_text(text)
    (folder / "metrics.json").write_text(json.dumps({"accuracy": 0.96, "f1_macro": 0.9}))
    return folder


def _deploy(kube_env: KubeEnv, folder: Path, version: str) -> tuple[int, str]:
    env = {
        "KUBECONFIG": str(kube_env.kubeconfig),
        "KFOPS_POLL_SECONDS": "0.05",
        "GITHUB_SHA": "",
        "GITHUB_REF": "",
    }
    args = ["deploy", str(folder), "--env", "prod", "--model-uri", f"s3://models/iris/{version}"]
    result = CliRunner().invoke(cli, [*args, "--metrics", str(folder / "metrics.json")], env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stderr


def _live(kube_env: KubeEnv, namespace: str) -> dict[str, Any]:
    from kubernetes import client

    with kube_env.api_client() as api:
        found: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "iris"
        )
        return found


def _patch_logger(kube_env: KubeEnv, namespace: str, url: str) -> None:
    """What `kubectl patch --type=merge` does: field manager `kubectl-patch`."""
    from kubernetes import client

    with kube_env.api_client() as api:
        client.CustomObjectsApi(api).api_client.call_api(
            f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/iris",
            "PATCH",
            query_params=[("fieldManager", "kubectl-patch")],
            header_params={"Content-Type": "application/merge-patch+json"},
            body={"spec": {"predictor": {"logger": {"url": url, "mode": "request"}}}},
            response_type="object",
            auth_settings=["BearerToken"],
        )


@pytest.mark.kube
def test_a_logger_someone_else_added_survives_kfops_deploy(
    kube_env: KubeEnv, servers: dict[str, str], tmp_path: Path
) -> None:
    namespace = kube_env.namespace("logger-kept")
    folder = _kube_project(tmp_path, namespace, with_logger=False)
    timeline = Timeline.canary(url=servers["good"], canary_url=servers["good"])
    with KServeController(kube_env.api_client(), namespace, timeline):
        code, err = _deploy(kube_env, folder, "v1")
        assert code == 0, err
        assert "logger" not in _live(kube_env, namespace)["spec"]["predictor"]
        _patch_logger(kube_env, namespace, "http://their-sink.default")
        code, err = _deploy(kube_env, folder, "v2")
        assert code == 0, err
    predictor = _live(kube_env, namespace)["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == "s3://models/iris/v2"
    assert predictor["logger"] == {"url": "http://their-sink.default", "mode": "request"}


@pytest.mark.kube
def test_kfops_refuses_to_take_over_a_logger_it_did_not_write(
    kube_env: KubeEnv, servers: dict[str, str], tmp_path: Path
) -> None:
    namespace = kube_env.namespace("logger-theirs")
    folder = _kube_project(tmp_path, namespace, with_logger=False)
    timeline = Timeline.canary(url=servers["good"], canary_url=servers["good"])
    with KServeController(kube_env.api_client(), namespace, timeline):
        code, err = _deploy(kube_env, folder, "v1")
        assert code == 0, err
        _patch_logger(kube_env, namespace, "http://their-sink.default")
        folder = _kube_project(tmp_path, namespace, with_logger=True)
        code, err = _deploy(kube_env, folder, "v2")
    assert code == 1
    line = (folder / "mlops.yaml").read_text().splitlines().index(LOGGER_LINE.rstrip("\n")) + 1
    flat = " ".join(err.split())
    assert (
        f"mlops.yaml:{line}:3: serving.logger: InferenceService `iris` in namespace `{namespace}`"
    ) in flat
    assert (
        "has a spec.predictor.logger written by `kubectl-patch` (mode, url), not by kfops" in flat
    )
    assert "remove `serving.logger` from mlops.yaml to leave that logger as it is" in flat
    assert '"path": "/spec/predictor/logger"' in flat
    live = _live(kube_env, namespace)
    assert live["spec"]["predictor"]["logger"]["url"] == "http://their-sink.default"
    assert live["spec"]["predictor"]["model"]["storageUri"] == "s3://models/iris/v1"


@pytest.mark.kube
def test_kfops_keeps_its_own_logger_up_to_date(
    kube_env: KubeEnv, servers: dict[str, str], tmp_path: Path
) -> None:
    namespace = kube_env.namespace("logger-ours")
    folder = _kube_project(tmp_path, namespace, with_logger=True)
    timeline = Timeline.canary(url=servers["good"], canary_url=servers["good"])
    with KServeController(kube_env.api_client(), namespace, timeline):
        code, err = _deploy(kube_env, folder, "v1")
        assert code == 0, err
        code, err = _deploy(kube_env, folder, "v2")
        assert code == 0, err
    live = _live(kube_env, namespace)
    assert live["spec"]["predictor"]["logger"] == {
        "url": "http://sink.monitoring:8099",
        "mode": "all",
    }
    owners = {
        m["manager"]
        for m in live["metadata"]["managedFields"]
        if "f:logger" in m.get("fieldsV1", {}).get("f:spec", {}).get("f:predictor", {})
    }
    assert owners == {"kfops"}
