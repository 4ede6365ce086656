"""The KServe data plane client: rows in, predictions out, over V1 or V2 (Open Inference
Protocol) REST.

Used by ``kfops predict``, the Python API (``kfops.predict``) and the release smoke test.
httpx is imported only when a request is made.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfops.errors import EXIT_USAGE, KfopsError, did_you_mean

PROTOCOLS = ("v1", "v2")
_ROWS_HINT = (
    'give a list of rows ([[5.1, 3.5], ...]), a list of objects ([{"a": 5.1}, ...]),'
    ' {"instances": [...]}, a V2 body {"inputs": [...]}, or a CSV file with a header'
)


@dataclass(frozen=True)
class Rows:
    """What a user sends: one list of values per row, and the column names when known.

    ``body`` is a V2 request given as is (``{"inputs": [...]}``); it is sent unchanged.
    """

    rows: list[list[Any]]
    columns: tuple[str, ...] | None = None
    body: dict[str, Any] | None = None


@dataclass(frozen=True)
class Prediction:
    """The server's answer: one prediction per row, and the raw answer."""

    predictions: list[Any]
    outputs: dict[str, Any]
    latency_ms: float
    url: str


def read_rows(source: str | Path, text: str | None = None) -> Rows:
    """Rows from a JSON or CSV file, or from ``text`` (``source`` ``"-"`` is stdin).

    JSON: a list of rows (lists), a list of objects (their keys are the columns),
    ``{"instances": [...]}`` or a V2 body ``{"inputs": [...]}`` (taken as is). CSV: a
    header, then one line per row; numbers are read as numbers.

    Raises:
        KfopsError: the file cannot be read or is not one of these shapes; the message
            names the file and the line and column (JSON) or the line (CSV).
    """
    shown = "<stdin>" if str(source) == "-" else str(source)
    if text is None:
        if str(source) == "-":
            text = sys.stdin.read()
        else:
            try:
                text = Path(source).read_text(encoding="utf-8")
            except FileNotFoundError:
                raise KfopsError(
                    f"--data {shown}: no such file", "give a JSON or CSV file, or - for stdin"
                ) from None
            except (OSError, UnicodeDecodeError) as exc:
                raise KfopsError(f"--data {shown}: cannot read it: {exc}") from None
    if not text.strip():
        raise KfopsError(f"{shown}: empty: there are no rows to send", _ROWS_HINT)
    suffix = Path(shown).suffix.lower()
    if suffix == ".csv" or (suffix != ".json" and text.lstrip()[:1] not in ("[", "{")):
        return _csv_rows(shown, text)
    return _json_rows(shown, text)


def _json_rows(shown: str, text: str) -> Rows:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KfopsError(
            f"{shown}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}", _ROWS_HINT
        ) from None
    where = ""
    if isinstance(document, dict):
        if "inputs" in document:
            return _v2_rows(shown, document)
        if "instances" not in document:
            keys = ", ".join(f"`{k}`" for k in sorted(document)) or "none"
            raise KfopsError(
                f"{shown}: a JSON object needs `instances` or `inputs` (it has {keys})",
                _ROWS_HINT,
            )
        document, where = document["instances"], "instances"
    if not isinstance(document, list) or not document:
        what = "an empty list" if document == [] else f"a JSON {_json_type(document)}"
        raise KfopsError(f"{shown}: {where or 'the document'} is {what}, not rows", _ROWS_HINT)
    prefix = f"{where}[" if where else "["
    if all(isinstance(item, dict) for item in document):
        columns = tuple(str(key) for key in document[0])
        rows = []
        for index, item in enumerate(document):
            if tuple(item) != columns:
                raise KfopsError(
                    f"{shown}: {prefix}{index}] has the keys {_listing(item)},"
                    f" but {prefix}0] has {_listing(columns)}",
                    "give every object the same keys in the same order",
                )
            rows.append([_scalar(shown, f"{prefix}{index}].{key}", item[key]) for key in columns])
        return Rows(rows, columns)
    rows = []
    for index, item in enumerate(document):
        if not isinstance(item, list):
            raise KfopsError(
                f"{shown}: {prefix}{index}] is a JSON {_json_type(item)}, not a row (a list)",
                "a single row is a list in a list: [[5.1, 3.5, 1.4, 0.2]]"
                if index == 0 and not isinstance(item, dict)
                else _ROWS_HINT,
            )
        if len(item) != len(document[0]):
            raise KfopsError(
                f"{shown}: {prefix}{index}] has {_values(len(item))},"
                f" {prefix}0] has {len(document[0])}",
                "every row needs one value per column",
            )
        rows.append([_scalar(shown, f"{prefix}{index}][{i}]", v) for i, v in enumerate(item)])
    return Rows(rows)


def _v2_rows(shown: str, body: dict[str, Any]) -> Rows:
    """A V2 body as rows for display: a single 2-D tensor, or one 1-D tensor per column."""
    inputs = body["inputs"]
    if not isinstance(inputs, list) or not inputs:
        raise KfopsError(f"{shown}: `inputs` must be a non-empty list of tensors", _ROWS_HINT)
    for index, tensor in enumerate(inputs):
        missing = [
            key
            for key in ("name", "shape", "datatype", "data")
            if not isinstance(tensor, dict) or key not in tensor
        ]
        if missing:
            raise KfopsError(
                f"{shown}: inputs[{index}] lacks {_listing(missing)}",
                "a V2 input is {name, shape, datatype, data} (Open Inference Protocol)",
            )
    try:
        if len(inputs) == 1:
            shape, data = inputs[0]["shape"], _flat(inputs[0]["data"])
            width = int(math.prod(shape[1:])) if len(shape) > 1 else 1
            rows = [data[i : i + width] for i in range(0, len(data), width)]
            return Rows(rows, None, body)
        columns = tuple(str(t["name"]) for t in inputs)
        return Rows(
            [list(r) for r in zip(*(_flat(t["data"]) for t in inputs), strict=False)], columns, body
        )
    except (TypeError, ValueError):
        return Rows([], None, body)


def _flat(data: Any) -> list[Any]:
    if isinstance(data, list):
        return [value for item in data for value in _flat(item)]
    return [data]


def _csv_rows(shown: str, text: str) -> Rows:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
        rows: list[list[Any]] = []
        for values in reader:
            if not values:
                continue  # a blank line
            if len(values) != len(header):
                raise KfopsError(
                    f"{shown}:{reader.line_num}: {_values(len(values))},"
                    f" the header has {len(header)}",
                    "every line needs one value per header column",
                )
            row = []
            for column, value in enumerate(values, start=1):
                if not value.strip():
                    raise KfopsError(
                        f"{shown}:{reader.line_num}: column {column}"
                        f" (`{header[column - 1]}`) is empty",
                        "fill in every value; the model server has no missing-value marker",
                    )
                row.append(_csv_value(value))
            rows.append(row)
    except csv.Error as exc:
        raise KfopsError(f"{shown}:{reader.line_num}: not valid CSV: {exc}", _ROWS_HINT) from None
    if not rows:
        raise KfopsError(f"{shown}: a header but no rows", "add one line per row below the header")
    if all(_csv_value(name) != name for name in header):
        raise KfopsError(
            f"{shown}:1: the first line holds values, not column names",
            "add a header line with the column names",
        )
    return Rows(rows, tuple(name.strip() for name in header))


def _csv_value(text: str) -> Any:
    stripped = text.strip()
    for kind in (int, float):
        try:
            return kind(stripped)
        except ValueError:
            continue
    return text


def _scalar(shown: str, where: str, value: Any) -> Any:
    if value is None:
        raise KfopsError(f"{shown}: {where} is null", "fill in every value; the server has no null")
    if isinstance(value, (dict, list)):
        raise KfopsError(
            f"{shown}: {where} is a JSON {_json_type(value)}; rows hold numbers, strings"
            " or booleans",
            'for tensors of other shapes, give a V2 body {"inputs": [...]}',
        )
    return value


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _listing(names: Any) -> str:
    return ", ".join(f"`{n}`" for n in names) or "none"


def _values(count: int) -> str:
    return f"{count} value" + ("" if count == 1 else "s")


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise KfopsError(f"unknown protocol `{protocol}`", "use v1 or v2", exit_code=EXIT_USAGE)


def _datatype(values: list[Any]) -> str:
    """The V2 datatype of a column (or a whole tensor) of values."""
    if all(isinstance(v, bool) for v in values):
        return "BOOL"
    if any(isinstance(v, (str, bool)) for v in values):
        return "BYTES"
    if any(isinstance(v, float) for v in values):
        return "FP64"
    return "INT64"


def request_body(rows: Rows, protocol: str, *, model_name: str) -> dict[str, Any]:
    """The JSON body that asks ``model_name`` for predictions of ``rows``.

    v1: ``{"instances": rows}``. v2: one tensor ``input-0`` of shape ``[rows, columns]``
    whose datatype follows the values (INT64, FP64, BOOL or BYTES); when columns differ
    in type, one 1-D tensor per column, named by the column, with ``content_type: pd``.
    A V2 body given as is goes unchanged.

    Raises:
        KfopsError: a V2 body for v1, or no rows.
    """
    _check_protocol(protocol)
    if rows.body is not None:
        if protocol == "v1":
            raise KfopsError(
                f'the data is a V2 body ({{"inputs": ...}}) but {model_name} is asked over v1',
                "pass --protocol v2, or give rows instead",
                exit_code=EXIT_USAGE,
            )
        return rows.body
    if not rows.rows:
        raise KfopsError("there are no rows to send", _ROWS_HINT)
    if protocol == "v1":
        return {"instances": rows.rows}
    width = len(rows.rows[0])
    columns = [[row[i] for row in rows.rows] for i in range(width)]
    types = [_datatype(column) for column in columns]
    if len(set(types)) <= 1:
        datatype = _datatype([v for row in rows.rows for v in row])
        data = [_tensor_value(v, datatype) for row in rows.rows for v in row]
        tensor = {"name": "input-0", "shape": [len(rows.rows), width], "datatype": datatype}
        return {"inputs": [{**tensor, "data": data}]}
    names = rows.columns or tuple(f"input-{i}" for i in range(width))
    inputs = [
        {
            "name": name,
            "shape": [len(column)],
            "datatype": datatype,
            "data": [_tensor_value(v, datatype) for v in column],
        }
        for name, column, datatype in zip(names, columns, types, strict=True)
    ]
    return {"inputs": inputs, "parameters": {"content_type": "pd"}}


def _tensor_value(value: Any, datatype: str) -> Any:
    if datatype == "BYTES" and not isinstance(value, str):
        return json.dumps(value)  # True -> "true", 1.5 -> "1.5"
    if datatype == "FP64":
        return float(value)
    return value


def endpoint(base_url: str, model_name: str, protocol: str) -> str:
    """The predict URL: ``BASE/v1/models/NAME:predict`` or ``BASE/v2/models/NAME/infer``."""
    _check_protocol(protocol)
    base = base_url.rstrip("/")
    if protocol == "v1":
        return f"{base}/v1/models/{model_name}:predict"
    return f"{base}/v2/models/{model_name}/infer"


def predict(
    base_url: str,
    model_name: str,
    rows: Rows,
    protocol: str,
    *,
    timeout: float = 30.0,
    headers: dict[str, str] | None = None,
) -> Prediction:
    """POST ``rows`` to the model ``model_name`` served at ``base_url``.

    Raises:
        KfopsError: naming the URL: the connection was refused, timed out, the server
            answered an HTTP error (with its own error text), or its answer is not a V1
            or V2 answer. Headers (which may carry a token) are never shown.
    """
    import httpx

    url = endpoint(base_url, model_name, protocol)
    body = request_body(rows, protocol, model_name=model_name)
    started = time.perf_counter()
    try:
        response = httpx.post(url, json=body, timeout=timeout, headers=headers)
    except httpx.ConnectError as exc:
        raise KfopsError(
            f"cannot connect to {url}: {_reason(exc)}", _not_running_hint(base_url)
        ) from None
    except httpx.TimeoutException:
        raise KfopsError(
            f"{url} did not answer within {timeout:g}s",
            "the server may be busy or the model slow; pass a longer timeout, or check the"
            " server's log",
        ) from None
    except httpx.HTTPError as exc:
        raise KfopsError(f"cannot reach {url}: {_reason(exc)}", "check the URL") from None
    latency_ms = (time.perf_counter() - started) * 1000
    if response.status_code >= 400:
        raise KfopsError(
            f"{url} answered HTTP {response.status_code}: {_error_text(response)}",
            _http_hint(response.status_code, base_url, model_name, timeout),
        )
    try:
        answer = response.json()
    except ValueError:
        raise KfopsError(
            f"{url} answered with something that is not JSON: {_snippet(response.text)}",
            "is this a KServe endpoint? the base URL is the server's, without /v1 or /v2",
        ) from None
    predictions = _predictions(answer, protocol, url)
    return Prediction(predictions, answer, round(latency_ms, 3), url)


def _predictions(answer: Any, protocol: str, url: str) -> list[Any]:
    if protocol == "v1":
        if not isinstance(answer, dict) or not isinstance(answer.get("predictions"), list):
            raise KfopsError(
                f"{url} answered {_snippet(json.dumps(answer))}, not a V1 answer"
                ' ({"predictions": [...]})',
                "does the server speak V2? pass --protocol v2",
            )
        predictions: list[Any] = answer["predictions"]
        return predictions
    outputs = answer.get("outputs") if isinstance(answer, dict) else None
    if not isinstance(outputs, list) or not outputs or not isinstance(outputs[0], dict):
        raise KfopsError(
            f"{url} answered {_snippet(json.dumps(answer))}, not a V2 answer"
            ' ({"outputs": [{"name", "shape", "datatype", "data"}]})',
            "does the server speak V1? pass --protocol v1",
        )
    first = outputs[0]
    data, shape = first.get("data"), first.get("shape")
    if not isinstance(data, list) or not isinstance(shape, list):
        raise KfopsError(f"{url}: outputs[0] has no `data` and `shape`; not a V2 answer")
    return _reshape(_flat(data), shape)


def _reshape(data: list[Any], shape: list[int]) -> list[Any]:
    """Row-major ``data`` as nested lists, one item per row (the first dimension)."""
    if len(shape) <= 1:
        return data
    width = int(math.prod(shape[1:]))
    if width <= 0:
        return data
    return [_reshape(data[i : i + width], shape[1:]) for i in range(0, len(data), width)]


def ready(base_url: str, model_name: str, protocol: str, *, timeout: float = 5.0) -> bool:
    """Whether the server answers that ``model_name`` is ready (``/v1/models/NAME`` or
    ``/v2/models/NAME/ready``); False when it cannot be reached."""
    import httpx

    _check_protocol(protocol)
    base = base_url.rstrip("/")
    path = f"/v1/models/{model_name}" if protocol == "v1" else f"/v2/models/{model_name}/ready"
    try:
        response = httpx.get(base + path, timeout=timeout)
    except httpx.HTTPError:
        return False
    if response.status_code != 200:
        return False
    try:
        answer = response.json()
    except ValueError:
        return False
    return isinstance(answer, dict) and answer.get("ready", True) is True


def served_models(base_url: str, *, timeout: float = 5.0) -> list[str]:
    """The models a KServe server serves (``GET /v1/models``); empty when unknown."""
    import httpx

    try:
        response = httpx.get(base_url.rstrip("/") + "/v1/models", timeout=timeout)
        models = response.json().get("models", []) if response.status_code == 200 else []
    except (httpx.HTTPError, ValueError, AttributeError):
        return []
    return [str(m) for m in models] if isinstance(models, list) else []


def _reason(exc: Exception) -> str:
    text = str(exc)
    if "refused" in text.lower() or "Errno 111" in text:
        return "connection refused"
    return text or type(exc).__name__


def _not_running_hint(base_url: str) -> str:
    if "127.0.0.1" in base_url or "localhost" in base_url:
        return "is the server running? start it with `kfops serve PATH` (and match --port)"
    return "is the server running, and is the URL right?"


def _http_hint(status: int, base_url: str, model_name: str, timeout: float) -> str:
    if status == 404:
        models = served_models(base_url, timeout=min(timeout, 5.0))
        if models and model_name not in models:
            return "the model name: " + did_you_mean(
                model_name, models, "the server serves ", "check --model-name"
            )
        return "check the model name (--model-name) and the protocol (--protocol v1|v2)"
    if status in (401, 403):
        return "the server wants credentials: check the token or headers you pass"
    if status in (400, 422):
        return "the server rejected the request: check the data's columns and types"
    return "see the server's log"


def _error_text(response: Any) -> str:
    try:
        answer = response.json()
    except ValueError:
        return _snippet(response.text) or response.reason_phrase
    if isinstance(answer, dict):
        for key in ("error", "detail", "message"):
            if key in answer:
                value = answer[key]
                return value if isinstance(value, str) else _snippet(json.dumps(value))
    return _snippet(json.dumps(answer))


def _snippet(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _env_url(project: Any, env_name: str) -> str:
    """The base URL of the model served in environment ``env_name``:
    ``environments.NAME.kubernetes.url`` when set, else the InferenceService's
    ``status.url``, read from the cluster.

    Raises:
        KfopsError: no such environment (did-you-mean), no ``kubernetes:``, or no
            InferenceService with a URL there.
    """
    environment = project.environment(env_name, "kubernetes: {namespace: NAME}")
    target = environment.kubernetes
    if target is not None and target.url:
        url: str = target.url
        return url
    if target is None:
        raise KfopsError(
            f"--env {env_name}: the model's URL is not known: environments.{env_name} has no"
            " `kubernetes:`",
            f"set `kubernetes: {{namespace: NAME}}` (or `url: https://...`) under"
            f" environments.{env_name} ({project.shown}:{environment.mark.line}),"
            " or pass --url URL",
            exit_code=EXIT_USAGE,
        )
    from kfops.serving.kube import Kube

    name = project.serving.name if project.serving else project.name
    kube = Kube(environment)
    live = kube.get(name)
    status = (live or {}).get("status") or {}
    found = status.get("url") or (status.get("address") or {}).get("url")
    if not found:
        state = "has no URL in its status yet" if live else "does not exist"
        raise KfopsError(
            f"--env {env_name}: InferenceService `{name}` in namespace `{target.namespace}`"
            f" ({kube.where.server}) {state}",
            f"deploy it with `kfops deploy --env {env_name}`, or set `kubernetes.url`",
        )
    return str(found)
