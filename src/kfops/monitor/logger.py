"""The served inputs of a time window, read from KServe's payload logs.

The sink (``kfops.monitor.sink``) keeps the logger's events as JSON lines in hourly
partitions; ``window_samples`` reads the partitions a window overlaps, pairs each request
with its response by ``ce-id``, and decodes the bodies:

- V1: ``{"instances": [ROW, ...]}`` (a ROW is a list of values or an object of
  column: value) answered by ``{"predictions": [...]}``;
- V2 (Open Inference Protocol): ``{"inputs": [TENSOR, ...]}`` answered by
  ``{"outputs": [TENSOR, ...]}``. One tensor of shape ``[N, F]`` holds N positional rows;
  several tensors of shape ``[N]`` (or ``[N, 1]``) are columns named by the tensors.

One sample per row. Positional rows are named by ``monitoring.drift.signature``, else by
the reference profile's feature order. A request whose response never came (the model
answered an error, or the logger logs requests only) still counts as served inputs, with
no prediction. A line or body that cannot be read is skipped and counted, never fatal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from kfops.errors import KfopsError
from kfops.monitor.samples import Samples
from kfops.monitor.sink import REQUEST, RESPONSE, Store, hours, read_segments

_SHOWN_SKIPS = 3  # how many skipped lines a message quotes


@dataclass(frozen=True)
class Window:
    """What one window of logs held."""

    samples: Samples
    since: datetime
    until: datetime
    segments: int
    requests: int  # request events in the window
    answered: int  # of which a response came
    responses_only: int  # responses in the window whose request is not there
    skipped: int  # lines or bodies that could not be read
    skips: tuple[str, ...]  # the first few, as "SEGMENT:LINE: why"

    def summary(self, store: str) -> str:
        """One sentence for the user."""
        text = (
            f"{self.requests} logged request{'s' * (self.requests != 1)}"
            f" ({self.answered} answered, {self.requests - self.answered} without a"
            f" response) = {self.samples.count} rows, from {self.segments}"
            f" segment{'s' * (self.segments != 1)} of {store}"
            f" between {_iso(self.since)} and {_iso(self.until)}"
        )
        if self.skipped:
            text += f"; skipped {self.skipped} unreadable: " + "; ".join(self.skips)
        return text


def window_samples(
    store: Store,
    *,
    until: datetime,
    seconds: float,
    signature: tuple[str, ...] = (),
    reference_columns: tuple[str, ...] = (),
    service: str | None = None,
) -> Window:
    """The served inputs logged in ``[until - seconds, until]`` (by ``ce-time``).

    ``service`` keeps only the events of that InferenceService (``ce-inferenceservicename``).

    Raises:
        KfopsError: the store cannot be read; or the window holds responses but no
            requests (a logger in ``mode: response`` logs no inputs).
    """
    from datetime import timedelta

    until = until.astimezone(timezone.utc)
    since = until - timedelta(seconds=seconds)
    names = signature or reference_columns
    keys = [key for hour in hours(since, until) for key in store.segments(hour)]
    # (where, body) in the order logged. KServe takes the id from a client's Ce-Id header
    # when there is one, so an id may come back: the n-th response answers the n-th request.
    requests: list[tuple[str, str, Any]] = []  # (id, where, body)
    responses: dict[str, list[tuple[str, Any]]] = {}
    skips: list[str] = []
    skipped = 0

    def skip(where: str, why: str) -> None:
        nonlocal skipped
        skipped += 1
        if len(skips) < _SHOWN_SKIPS:
            skips.append(f"{where}: {why}")

    low, high = stamp(since), stamp(until)
    for key, blob in read_segments(store, keys):
        for number, event in _events(blob):
            where = f"{key}:{number}"
            try:
                kind, when, ident = event["type"], event["time"], event["id"]
            except (TypeError, KeyError):
                skip(where, "not an event line")
                continue
            if not isinstance(when, str) or not isinstance(ident, str):
                skip(where, "not an event line")
                continue
            # Stored times are all UTC in one form, so they compare as text.
            if not low <= when <= high:
                continue
            if service is not None and event.get("inferenceservicename") != service:
                continue
            if kind == REQUEST:
                requests.append((ident, where, event.get("data")))
            elif kind == RESPONSE:
                responses.setdefault(ident, []).append((where, event.get("data")))
    if responses and not requests:
        raise KfopsError(
            f"the payload logs of {store.shown} hold"
            f" {sum(len(r) for r in responses.values())} responses and no"
            f" request between {_iso(since)} and {_iso(until)}: the logger logs no inputs",
            "set serving.logger.mode to `all` (or `request`) in mlops.yaml and deploy",
        )
    rows: list[tuple[int, Any]] = []
    predictions: list[Any] = []
    answered = 0
    shape: Any = None  # the first row's columns (objects) or width (lists)
    asked = {ident for ident, _, _ in requests}
    answers = {ident: iter(found) for ident, found in responses.items()}
    for ident, where, body in requests:
        answer = next(answers[ident], None) if ident in answers else None
        try:
            found = _rows(body, names)
            for row in found:
                this = tuple(row) if isinstance(row, dict) else len(row)
                if shape is None:
                    shape = this
                elif this != shape:
                    raise _Unreadable(f"rows of {_shape(this)}; the first had {_shape(shape)}")
        except _Unreadable as exc:
            skip(where, str(exc))
            continue
        predicted: list[Any] | None = None
        if answer is not None:
            answered += 1
            try:
                predicted = _predictions(answer[1])
            except _Unreadable as exc:
                skip(answer[0], str(exc))
            if predicted is not None and len(predicted) != len(found):
                skip(answer[0], f"{len(predicted)} predictions for {len(found)} rows")
                predicted = None
        rows += [(len(rows) + 1, row) for row in found]
        if predicted is not None:
            predictions += predicted
    samples = _samples(rows, predictions, store.shown)
    return Window(
        samples=samples,
        since=since,
        until=until,
        segments=len(keys),
        requests=len(requests),
        answered=answered,
        responses_only=sum(len(r) for ident, r in responses.items() if ident not in asked),
        skipped=skipped,
        skips=tuple(skips),
    )


_BAD = object()  # a line that is not JSON


def _events(blob: bytes) -> list[tuple[int, Any]]:
    """The JSON values of a segment's lines, numbered from 1 (``_BAD`` for a line that is
    not JSON). One parse of the whole segment as an array is many times faster than one a
    line; a segment with a bad line is parsed again line by line."""
    numbered = [(n, raw) for n, raw in enumerate(blob.split(b"\n"), start=1) if raw.strip()]
    try:
        values = json.loads(b"[" + b",".join(raw for _, raw in numbered) + b"]")
    except ValueError:
        values = None
    if isinstance(values, list) and len(values) == len(numbered):
        return [(n, value) for (n, _), value in zip(numbered, values, strict=True)]
    found: list[tuple[int, Any]] = []
    for n, raw in numbered:
        try:
            found.append((n, json.loads(raw)))
        except ValueError:
            found.append((n, _BAD))
    return found


class _Unreadable(Exception):
    """A body kfops cannot read rows from: why."""


def _rows(body: Any, names: tuple[str, ...]) -> list[Any]:
    if not isinstance(body, dict):
        raise _Unreadable("the request body is not a JSON object")
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise _Unreadable("`instances` is not a list of rows")
        return [_row(item, names) for item in instances]
    if isinstance(body.get("inputs"), list):
        return _v2_rows(body["inputs"], names)
    raise _Unreadable("neither a V1 body (`instances`) nor a V2 body (`inputs`)")


def _row(item: Any, names: tuple[str, ...]) -> Any:
    if isinstance(item, dict) and item:
        return item
    if isinstance(item, list) and item:
        if not names:
            return item
        if len(item) != len(names):
            raise _Unreadable(
                f"a row of {len(item)} values; the features are {len(names)} ({', '.join(names)})"
            )
        return dict(zip(names, item, strict=True))
    raise _Unreadable("a row is a list of values or an object")


def _v2_rows(tensors: list[Any], names: tuple[str, ...]) -> list[Any]:
    columns: list[tuple[str, list[Any], list[int]]] = []
    for tensor in tensors:
        if not isinstance(tensor, dict) or not isinstance(tensor.get("shape"), list):
            raise _Unreadable("a V2 input is not a tensor (name, shape, datatype, data)")
        shape = tensor["shape"]
        if not shape or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise _Unreadable(f"tensor `{tensor.get('name')}` has shape {shape}")
        data = _flat(tensor.get("data"))
        size = 1
        for n in shape:
            size *= n
        if len(data) != size:
            raise _Unreadable(
                f"tensor `{tensor.get('name')}` of shape {shape} holds {len(data)} values"
            )
        columns.append((str(tensor.get("name") or f"input-{len(columns)}"), data, shape))
    if not columns:
        raise _Unreadable("a V2 body with no input tensor")
    if len(columns) == 1:
        _, data, shape = columns[0]
        width = 1
        for n in shape[1:]:
            width *= n
        return [_row(data[i * width : (i + 1) * width], names) for i in range(shape[0])]
    # Several tensors: one column each, named by the tensor.
    count = columns[0][2][0]
    for name, data, shape in columns:
        if shape[0] != count or len(data) != count:
            raise _Unreadable(
                f"tensor `{name}` has shape {shape}; as one of several inputs it must be"
                f" [{count}] or [{count}, 1]"
            )
    return [{name: data[i] for name, data, _ in columns} for i in range(count)]


def _predictions(body: Any) -> list[Any]:
    if not isinstance(body, dict):
        raise _Unreadable("the response body is not a JSON object")
    if isinstance(body.get("predictions"), list):
        return list(body["predictions"])
    outputs = body.get("outputs")
    if isinstance(outputs, list) and outputs and isinstance(outputs[0], dict):
        first = outputs[0]
        shape = first.get("shape")
        data = _flat(first.get("data"))
        if not isinstance(shape, list) or not shape or not isinstance(shape[0], int):
            raise _Unreadable("the first V2 output has no shape")
        count = shape[0]
        if count == 0 or len(data) % count:
            raise _Unreadable(f"the first V2 output of shape {shape} holds {len(data)} values")
        width = len(data) // count
        if width == 1:
            return data
        return [data[i * width : (i + 1) * width] for i in range(count)]
    raise _Unreadable("neither a V1 answer (`predictions`) nor a V2 answer (`outputs`)")


def _flat(data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise _Unreadable("tensor data is not a list")
    if not any(isinstance(x, list) for x in data):
        return data
    out: list[Any] = []
    for x in data:
        out += _flat(x) if isinstance(x, list) else [x]
    return out


def _samples(rows: list[tuple[int, Any]], predictions: list[Any], shown: str) -> Samples:
    """Samples of the rows; unlike ``from_rows``, the predictions may be fewer than the
    rows (a request that was never answered has none)."""
    from kfops.monitor.samples import from_rows

    built = from_rows(shown, rows)
    return Samples(built.columns, built.values, predictions, built.count, built.named)


def _shape(shape: Any) -> str:
    if isinstance(shape, int):
        return f"{shape} values"
    return "columns " + ", ".join(shape)


def stamp(when: datetime) -> str:
    """How the sink writes an event's time: UTC, to the microsecond, so that stored times
    compare as text."""
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _iso(when: datetime) -> str:
    when = when.astimezone(timezone.utc).replace(microsecond=0)
    return when.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
