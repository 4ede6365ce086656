"""``kfops probe``: the probes of ``monitoring.probes`` sent once to the served model,
their expectations checked, and the gates of ``monitoring.gates`` over the run.

Requests go through the data plane client of ``kfops predict`` (the same bodies, URLs
and answer parsing) on one kept-alive connection; expectations are the smoke test's.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from kfops.errors import KfopsError, display_path
from kfops.project.model import Bound, Gates, Monitoring, ProbeRequest, ProbeSet
from kfops.serving import predict, smoke

BATCH = 100  # rows of a labelled set sent in one request
METRICS = ("accuracy", "f1", "precision", "recall", "mae", "rmse")


@dataclass(frozen=True)
class Exchange:
    """One request and what came of it."""

    status: int | None  # None: no answer (connection refused, timeout)
    latency_ms: float
    error: str | None  # why it counts as an error; None when it answered as expected
    predictions: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class ProbeResult:
    name: str
    kind: str  # "request" | "set"
    passed: bool
    detail: str
    exchanges: tuple[Exchange, ...] = ()
    metrics: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class GateResult:
    name: str  # "error_rate" | "latency_p95" | "availability"
    value: float
    limit: float
    passed: bool
    detail: str


@dataclass(frozen=True)
class ProbeRun:
    url: str
    model: str
    protocol: str
    ready: bool
    results: tuple[ProbeResult, ...]
    gates: tuple[GateResult, ...]
    error_rate: float
    latency_p95_ms: float | None
    availability: float

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results) and all(g.passed for g in self.gates)

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "model": self.model,
            "protocol": self.protocol,
            "passed": self.passed,
            "ready": self.ready,
            "probes": [
                {
                    "name": r.name,
                    "kind": r.kind,
                    "passed": r.passed,
                    "detail": r.detail,
                    "requests": len(r.exchanges),
                    "latency_ms": round(max((e.latency_ms for e in r.exchanges), default=0.0), 3),
                    "metrics": dict(r.metrics),
                }
                for r in self.results
            ],
            "gates": [
                {
                    "name": g.name,
                    "value": round(g.value, 6),
                    "limit": g.limit,
                    "passed": g.passed,
                    "detail": g.detail,
                }
                for g in self.gates
            ],
            "error_rate": round(self.error_rate, 6),
            "latency_p95_ms": None
            if self.latency_p95_ms is None
            else round(self.latency_p95_ms, 3),
            "availability": round(self.availability, 6),
        }


def run(
    monitoring: Monitoring,
    base_url: str,
    model_name: str,
    protocol: str,
    *,
    timeout: float = 30.0,
) -> ProbeRun:
    """Send every probe once and check the gates.

    Raises:
        KfopsError: there are no probes, or a probe's file cannot be read.
    """
    import httpx

    if not monitoring.requests and not monitoring.sets:
        raise KfopsError(
            "monitoring has no probes to send",
            "add `monitoring: {probes: {requests: [{name: ..., rows: [[...]]}]}}`",
        )
    # Read every file first: a broken probe file is the user's to fix, not a failed probe.
    bodies = {r.name: _body(r, protocol, model_name) for r in monitoring.requests}
    labelled = {s.name: _labelled(s) for s in monitoring.sets}
    url = predict.endpoint(base_url, model_name, protocol)
    results: list[ProbeResult] = []
    # One client for the run: one connection kept alive, one TLS context (tens of ms).
    with httpx.Client(timeout=timeout) as client:
        is_ready = _ready(client, base_url, model_name, protocol)
        for request in monitoring.requests:
            exchange = _send(client, url, bodies[request.name], protocol, request.status)
            results.append(_check_request(request, exchange))
        for probe_set in monitoring.sets:
            results.append(_check_set(client, url, protocol, model_name, probe_set, labelled))
    exchanges = [e for r in results for e in r.exchanges]
    errors = sum(1 for e in exchanges if e.error is not None)
    answered = sum(1 for e in exchanges if e.status is not None and e.status < 500)
    error_rate = errors / len(exchanges) if exchanges else 0.0
    latencies = [e.latency_ms for e in exchanges if e.status is not None]
    p95 = percentile(latencies, 95) if latencies else None
    availability = (int(is_ready) + answered) / (1 + len(exchanges))
    gates = _gates(monitoring.gates, error_rate, errors, len(exchanges), p95, availability)
    return ProbeRun(
        url=base_url,
        model=model_name,
        protocol=protocol,
        ready=is_ready,
        results=tuple(results),
        gates=gates,
        error_rate=error_rate,
        latency_p95_ms=p95,
        availability=availability,
    )


def _ready(client: Any, base_url: str, model_name: str, protocol: str) -> bool:
    """``predict.ready``, over the run's client."""
    import httpx

    base = base_url.rstrip("/")
    path = f"/v1/models/{model_name}" if protocol == "v1" else f"/v2/models/{model_name}/ready"
    try:
        response = client.get(base + path)
        answer = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return False
    return isinstance(answer, dict) and answer.get("ready", True) is True


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile of ``values`` (not empty)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _body(request: ProbeRequest, protocol: str, model_name: str) -> dict[str, Any]:
    if request.body is not None:
        shown = display_path(request.body)
        try:
            body = json.loads(request.body.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise KfopsError(
                f"probe `{request.name}`: cannot read the body file {shown}: {exc}",
                'give a JSON file holding a V1 ({"instances": ...}) or V2 ({"inputs": ...})'
                " request",
            ) from None
        if not isinstance(body, dict):
            raise KfopsError(f"probe `{request.name}`: {shown} is not a JSON object")
        return body
    rows = predict.read_rows(f"probe {request.name}", json.dumps(list(request.rows or ())))
    return predict.request_body(rows, protocol, model_name=model_name)


def _send(
    client: Any, url: str, body: dict[str, Any], protocol: str, status: int = 200
) -> Exchange:
    import httpx

    started = time.perf_counter()
    try:
        try:
            response = client.post(url, json=body)
        except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
            # The server closed the kept-alive connection (KServe does after an error):
            # once more, on a new connection. A refused or timed-out request is not retried.
            started = time.perf_counter()
            response = client.post(url, json=body)
    except httpx.TimeoutException:
        return Exchange(None, (time.perf_counter() - started) * 1000, "no answer in time")
    except httpx.HTTPError as exc:
        return Exchange(None, (time.perf_counter() - started) * 1000, predict._reason(exc))
    latency_ms = (time.perf_counter() - started) * 1000
    if response.status_code != status:
        return Exchange(
            response.status_code,
            latency_ms,
            f"HTTP {response.status_code} (expected {status}): {predict._error_text(response)}",
        )
    if status >= 400:
        return Exchange(response.status_code, latency_ms, None)
    try:
        predictions = predict._predictions(response.json(), protocol, url)
    except (ValueError, KfopsError) as exc:
        return Exchange(response.status_code, latency_ms, f"not a {protocol} answer: {exc}")
    return Exchange(response.status_code, latency_ms, None, predictions)


def _check_request(request: ProbeRequest, exchange: Exchange) -> ProbeResult:
    if exchange.error is not None:
        return ProbeResult(request.name, "request", False, exchange.error, (exchange,))
    if exchange.status is not None and exchange.status >= 400:
        detail = f"ok: HTTP {exchange.status} as expected ({exchange.latency_ms:.0f} ms)"
        return ProbeResult(request.name, "request", True, detail, (exchange,))
    outcome = smoke.check(
        smoke.Case(request.name, None, None, dict(request.expect)),
        exchange.predictions,
        exchange.latency_ms,
    )
    # A wrong answer is the model's fault, not the server's: it fails the probe, but is
    # not an error for the error rate.
    return ProbeResult(request.name, "request", outcome.passed, outcome.detail, (exchange,))


def _labelled(probe_set: ProbeSet) -> list[tuple[Any, Any]]:
    shown = display_path(probe_set.file)
    try:
        text = probe_set.file.read_text(encoding="utf-8")
    except OSError as exc:
        raise KfopsError(f"probe set `{probe_set.name}`: cannot read {shown}: {exc}") from None
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise KfopsError(
                f"{shown}:{number}: not JSON: {exc}", 'write {"inputs": [...], "label": ...}'
            ) from None
        if not isinstance(item, dict) or "inputs" not in item or "label" not in item:
            raise KfopsError(
                f"{shown}:{number}: a labelled probe is an object with `inputs` and `label`",
                'write {"inputs": [5.1, 3.5, 1.4, 0.2], "label": 0}',
            )
        items.append((item["inputs"], item["label"]))
    if not items:
        raise KfopsError(f"probe set `{probe_set.name}`: {shown} has no lines")
    return items


def _batches(items: list[tuple[Any, Any]]) -> Iterator[list[tuple[Any, Any]]]:
    for start in range(0, len(items), BATCH):
        yield items[start : start + BATCH]


def _check_set(
    client: Any,
    url: str,
    protocol: str,
    model_name: str,
    probe_set: ProbeSet,
    labelled: dict[str, list[tuple[Any, Any]]],
) -> ProbeResult:
    items = labelled[probe_set.name]
    exchanges = []
    predictions: list[Any] = []
    for batch in _batches(items):
        rows = predict.read_rows(f"probe set {probe_set.name}", json.dumps([i for i, _ in batch]))
        exchange = _send(
            client, url, predict.request_body(rows, protocol, model_name=model_name), protocol
        )
        exchanges.append(exchange)
        if exchange.error is not None:
            return ProbeResult(probe_set.name, "set", False, exchange.error, tuple(exchanges))
        predictions.extend(exchange.predictions)
    labels = [label for _, label in items]
    if len(predictions) != len(labels):
        detail = f"{len(predictions)} predictions for {len(labels)} labelled inputs"
        return ProbeResult(probe_set.name, "set", False, detail, tuple(exchanges))
    values = {
        b.metric: metric(b.metric, [_unwrap(p) for p in predictions], labels)
        for b in probe_set.metrics
    }
    failures = [_bound_failure(b, values[b.metric]) for b in probe_set.metrics]
    shown = ", ".join(f"{name} {value:.3f}" for name, value in values.items())
    missed = [f for f in failures if f]
    detail = "; ".join(missed) if missed else f"ok: {shown} over {len(labels)} inputs"
    return ProbeResult(
        probe_set.name, "set", not missed, detail, tuple(exchanges), tuple(values.items())
    )


def _unwrap(prediction: Any) -> Any:
    if isinstance(prediction, list) and len(prediction) == 1:
        return prediction[0]
    return prediction


def _bound_failure(bound: Bound, value: float) -> str:
    if bound.min is not None and value < bound.min:
        return f"{bound.metric} {value:.3f} is below its min {bound.min:g}"
    if bound.max is not None and value > bound.max:
        return f"{bound.metric} {value:.3f} is above its max {bound.max:g}"
    return ""


def metric(name: str, predictions: list[Any], labels: list[Any]) -> float:
    """``accuracy``, macro ``f1``/``precision``/``recall``, ``mae`` or ``rmse`` of the
    predictions against the labels (same length, not empty)."""
    if name in ("mae", "rmse"):
        errors = [float(p) - float(t) for p, t in zip(predictions, labels, strict=True)]
        if name == "mae":
            return sum(abs(e) for e in errors) / len(errors)
        return math.sqrt(sum(e * e for e in errors) / len(errors))
    keys = [(_key(p), _key(t)) for p, t in zip(predictions, labels, strict=True)]
    if name == "accuracy":
        return sum(p == t for p, t in keys) / len(keys)
    scores = []
    for cls in sorted({k for pair in keys for k in pair}):
        hits = sum(1 for p, t in keys if p == t == cls)
        predicted = sum(1 for p, _ in keys if p == cls)
        actual = sum(1 for _, t in keys if t == cls)
        precision = hits / predicted if predicted else 0.0
        recall = hits / actual if actual else 0.0
        if name == "precision":
            scores.append(precision)
        elif name == "recall":
            scores.append(recall)
        else:
            both = precision + recall
            scores.append(2 * precision * recall / both if both else 0.0)
    return sum(scores) / len(scores)


def _key(value: Any) -> str:
    """A class as a comparable key: 1, 1.0 and the same label are one class."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return json.dumps(float(value))
    return json.dumps(value, sort_keys=True)


def _gates(
    gates: Gates | None,
    error_rate: float,
    errors: int,
    requests: int,
    p95: float | None,
    availability: float,
) -> tuple[GateResult, ...]:
    if gates is None:
        return ()
    out = []
    if gates.error_rate is not None:
        passed = error_rate <= gates.error_rate
        out.append(
            GateResult(
                "error_rate",
                error_rate,
                gates.error_rate,
                passed,
                f"{errors} of {requests} requests failed ({error_rate:.1%});"
                f" {'within' if passed else 'above'} the gate {gates.error_rate:.1%}",
            )
        )
    if gates.latency_p95_ms is not None:
        value = p95 if p95 is not None else math.inf
        passed = value <= gates.latency_p95_ms
        out.append(
            GateResult(
                "latency_p95",
                value,
                gates.latency_p95_ms,
                passed,
                (f"p95 {value:.1f} ms" if p95 is not None else "no request answered")
                + f"; {'within' if passed else 'above'} the gate {gates.latency_p95_ms:g} ms",
            )
        )
    if gates.availability is not None:
        passed = availability >= gates.availability
        out.append(
            GateResult(
                "availability",
                availability,
                gates.availability,
                passed,
                f"available in {availability:.1%} of checks;"
                f" {'at least' if passed else 'below'} the gate {gates.availability:.1%}",
            )
        )
    return tuple(out)
