"""``kfops probe``: the probes of ``monitoring.probes`` sent once to the served model,
their expectations checked, and the gates of ``monitoring.gates`` over the run.

Requests go through the data plane client of ``kfops predict`` (the same bodies, URLs
and answer parsing) on one kept-alive connection; expectations are the smoke test's.

``compare`` sends the same probes to a canary and to the stable model, one probe to each
in turn (so that a slow spell of a shared machine falls on both), and checks
``monitoring.gates.canary``: the latency ratio, the prediction agreement and, per probe
set, how much worse the canary's metrics are. The probes go ``ROUNDS`` times; the latency
ratio takes each probe's median over the rounds, so one stalled request does not make a
model look slow, while a model slower at every request still is. Agreement, metrics and
the ordinary gates are those of the first round, as ``kfops probe`` would see them.
``kfops deploy`` runs it after the smoke test; ``kfops probe --compare-with URL`` runs it
between any two served models.
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kfops.errors import KfopsError, display_path
from kfops.project.model import Bound, CanaryGates, Gates, Monitoring, ProbeRequest, ProbeSet
from kfops.serving import predict, smoke

BATCH = 100  # rows of a labelled set sent in one request
METRICS = ("accuracy", "f1", "precision", "recall", "mae", "rmse")
LOWER_IS_BETTER = ("mae", "rmse")
AGREEMENT_TOLERANCE = 1e-6  # relative, for numbers
# A p95 below this counts as this in the latency ratio: a loopback or in-cluster answer of
# a few milliseconds varies by more than 1.5x from one run to the next on a busy machine,
# which says nothing about the model.
LATENCY_FLOOR_MS = 10.0
ROUNDS = 5  # of the probes, in a comparison


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
    # A set's predictions, one per labelled input, and the labels (for comparisons).
    predictions: tuple[Any, ...] = ()
    labels: tuple[Any, ...] = ()


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
    return _runs(monitoring, (base_url,), model_name, protocol, timeout=timeout)[0]


def prepare(monitoring: Monitoring, protocol: str, model_name: str) -> None:
    """Read every probe file, as a run would: a broken one is an error before anything
    is sent (``kfops deploy`` calls this before it applies anything).

    Raises:
        KfopsError: there are no probes, or a probe's file cannot be read.
    """
    _prepared(monitoring, protocol, model_name)


def _prepared(
    monitoring: Monitoring, protocol: str, model_name: str
) -> tuple[dict[str, dict[str, Any]], dict[str, list[tuple[Any, Any]]]]:
    if not monitoring.requests and not monitoring.sets:
        raise KfopsError(
            "monitoring has no probes to send",
            "add `monitoring: {probes: {requests: [{name: ..., rows: [[...]]}]}}`",
        )
    # Read every file first: a broken probe file is the user's to fix, not a failed probe.
    bodies = {r.name: _body(r, protocol, model_name) for r in monitoring.requests}
    labelled = {s.name: _labelled(s) for s in monitoring.sets}
    return bodies, labelled


def _runs(
    monitoring: Monitoring,
    base_urls: Sequence[str],
    model_name: str,
    protocol: str,
    *,
    timeout: float,
    shift: int = 0,
) -> list[ProbeRun]:
    """Every probe sent to each of ``base_urls``, one probe to each in turn.

    Which model goes first turns with each probe (and with ``shift``): a server answers
    its first request after a pause more slowly than the next one, which would otherwise
    always favour the same model."""
    import httpx

    bodies, labelled = _prepared(monitoring, protocol, model_name)
    urls = [predict.endpoint(base, model_name, protocol) for base in base_urls]
    results: list[list[ProbeResult]] = [[] for _ in base_urls]
    with contextlib.ExitStack() as stack:
        # One client per model: one connection kept alive, one TLS context (tens of ms).
        clients = [stack.enter_context(httpx.Client(timeout=timeout)) for _ in base_urls]
        ready = [
            _ready(client, base, model_name, protocol)
            for client, base in zip(clients, base_urls, strict=True)
        ]
        for turn, request in enumerate(monitoring.requests):
            for index in _order(len(clients), turn + shift):
                exchange = _send(
                    clients[index], urls[index], bodies[request.name], protocol, request.status
                )
                results[index].append(_check_request(request, exchange))
        for turn, probe_set in enumerate(monitoring.sets, start=len(monitoring.requests)):
            for index in _order(len(clients), turn + shift):
                results[index].append(
                    _check_set(
                        clients[index], urls[index], protocol, model_name, probe_set, labelled
                    )
                )
    return [
        _summary(monitoring.gates, base, model_name, protocol, is_ready, found)
        for base, is_ready, found in zip(base_urls, ready, results, strict=True)
    ]


def _order(count: int, turn: int) -> list[int]:
    """0..count-1, rotated by ``turn``."""
    start = turn % count
    return [*range(start, count), *range(start)]


def _summary(
    gates: Gates | None,
    base_url: str,
    model_name: str,
    protocol: str,
    is_ready: bool,
    results: list[ProbeResult],
) -> ProbeRun:
    exchanges = [e for r in results for e in r.exchanges]
    errors = sum(1 for e in exchanges if e.error is not None)
    answered = sum(1 for e in exchanges if e.status is not None and e.status < 500)
    error_rate = errors / len(exchanges) if exchanges else 0.0
    latencies = [e.latency_ms for e in exchanges if e.status is not None]
    p95 = percentile(latencies, 95) if latencies else None
    availability = (int(is_ready) + answered) / (1 + len(exchanges))
    return ProbeRun(
        url=base_url,
        model=model_name,
        protocol=protocol,
        ready=is_ready,
        results=tuple(results),
        gates=_gates(gates, error_rate, errors, len(exchanges), p95, availability),
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
        probe_set.name,
        "set",
        not missed,
        detail,
        tuple(exchanges),
        tuple(values.items()),
        tuple(_unwrap(p) for p in predictions),
        tuple(labels),
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


# -- canary analysis -------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """One check of ``monitoring.gates.canary``: the canary's value beside the stable
    model's, what was compared (a ratio, a share, how much worse) and the threshold."""

    name: str  # "latency_ratio" | "agreement" | "metric_delta"
    canary: float | None
    stable: float | None
    value: float | None  # None: nothing to compare (the check fails)
    threshold: float
    passed: bool
    detail: str
    metric: str = ""  # metric_delta: which metric
    probe: str = ""  # metric_delta: of which probe set

    def to_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "name": self.name,
            "canary": _rounded(self.canary),
            "stable": _rounded(self.stable),
            "value": _rounded(self.value),
            "threshold": self.threshold,
            "passed": self.passed,
            "detail": self.detail,
        }
        if self.metric:
            found["metric"] = self.metric
            found["probe"] = self.probe
        return found


@dataclass(frozen=True)
class CanaryAnalysis:
    """The probes sent to a canary and to the stable model, and how they compare."""

    canary: ProbeRun
    stable: ProbeRun
    comparisons: tuple[Comparison, ...]
    rounds: int = 1

    @property
    def passed(self) -> bool:
        # The canary must pass what `kfops probe` checks (its probes and the ordinary
        # gates) and every comparison; the stable model's own verdict does not count.
        return self.canary.passed and all(c.passed for c in self.comparisons)

    def failures(self) -> list[str]:
        """What failed, a sentence each: the canary's probes and gates, then comparisons."""
        found = [f"canary probe {r.name}: {r.detail}" for r in self.canary.results if not r.passed]
        found += [f"canary {g.name}: {g.detail}" for g in self.canary.gates if not g.passed]
        found += [f"{label(c)}: {c.detail}" for c in self.comparisons if not c.passed]
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "canary_url": self.canary.url,
            "stable_url": self.stable.url,
            "comparisons": [c.to_json() for c in self.comparisons],
            "rounds": self.rounds,
            "canary": self.canary.to_json(),
            "stable": self.stable.to_json(),
        }


def label(comparison: Comparison) -> str:
    if comparison.metric:
        return f"metric_delta {comparison.metric} ({comparison.probe})"
    return comparison.name


def _rounded(value: float | None) -> float | None:
    if value is None or math.isinf(value):
        return None
    return round(value, 6)


def comparable(monitoring: Monitoring) -> CanaryGates:
    """``monitoring.gates.canary``, checked against the probes it needs.

    Raises:
        KfopsError: there is no ``gates.canary``, no probe, or a ``metric_delta`` without
            a labelled probe set to score.
    """
    gates = monitoring.gates.canary if monitoring.gates is not None else None
    if gates is None:
        raise KfopsError(
            "monitoring.gates has no `canary:`, so there is nothing to compare",
            "add `monitoring: {gates: {canary: {latency_ratio: 1.5, agreement: 0.95}}}`",
        )
    if not monitoring.requests and not monitoring.sets:
        raise KfopsError(
            f"monitoring.gates.canary (line {gates.mark.line}) compares the answers to"
            " probes, and monitoring has none",
            "add `monitoring: {probes: {requests: [{name: ..., rows: [[...]]}]}}`",
        )
    if gates.metric_delta and not monitoring.sets:
        raise KfopsError(
            f"monitoring.gates.canary.metric_delta (line {gates.mark.line}) compares the"
            " metrics of labelled probe sets, and monitoring.probes has no `sets:`",
            "add `sets: [{name: holdout, file: probes/holdout.jsonl, metrics: {accuracy:"
            " {min: 0.9}}}]` under monitoring.probes, or remove `metric_delta`",
        )
    return gates


def compare(
    monitoring: Monitoring,
    canary_url: str,
    stable_url: str,
    model_name: str,
    protocol: str,
    *,
    timeout: float = 30.0,
    rounds: int = ROUNDS,
) -> CanaryAnalysis:
    """Send every probe to the canary and to the stable model, one probe to each in turn,
    ``rounds`` times, and check ``monitoring.gates.canary``.

    Raises:
        KfopsError: see ``comparable``; or a probe's file cannot be read.
    """
    gates = comparable(monitoring)
    runs = [
        _runs(
            monitoring,
            (canary_url, stable_url),
            model_name,
            protocol,
            timeout=timeout,
            shift=number,
        )
        for number in range(rounds)
    ]
    canary, stable = runs[0]
    latency = (steady_p95([r[0] for r in runs]), steady_p95([r[1] for r in runs]))
    found = comparisons(gates, canary, stable, latency=latency, rounds=rounds)
    return CanaryAnalysis(canary, stable, found, rounds)


def steady_p95(runs: Sequence[ProbeRun]) -> float | None:
    """The p95 over the requests of a run of each request's median latency across
    ``runs`` (rounds of the same probes); None when none answered."""
    columns: list[list[float]] = []
    for run in runs:
        for index, exchange in enumerate(e for r in run.results for e in r.exchanges):
            if index == len(columns):
                columns.append([])
            if exchange.status is not None:
                columns[index].append(exchange.latency_ms)
    medians = [statistics.median(column) for column in columns if column]
    return percentile(medians, 95) if medians else None


def comparisons(
    gates: CanaryGates,
    canary: ProbeRun,
    stable: ProbeRun,
    *,
    latency: tuple[float | None, float | None] | None = None,
    rounds: int = 1,
) -> tuple[Comparison, ...]:
    """The checks of ``gates`` between two probe runs of the same probes; ``latency``:
    the p95s to compare (default: the runs' own), over ``rounds``."""
    found = []
    if gates.latency_ratio is not None:
        c, s = latency or (canary.latency_p95_ms, stable.latency_p95_ms)
        found.append(_latency_ratio(gates.latency_ratio, c, s, rounds))
    if gates.agreement is not None:
        agreeing, total = agreement(canary, stable)
        share = agreeing / total if total else None
        if share is None:
            detail = "no prediction to compare: neither a probe answered on both"
            passed = False
        else:
            passed = share >= gates.agreement
            detail = (
                f"{agreeing} of {total} predictions agree ({share:.1%});"
                f" {'at least' if passed else 'below'} the gate {gates.agreement:.1%}"
            )
        found.append(Comparison("agreement", None, None, share, gates.agreement, passed, detail))
    for name, limit in gates.metric_delta:
        for canary_set, stable_set in _pairs(canary, stable, "set"):
            found.append(_metric_delta(name, limit, canary_set, stable_set))
    return tuple(found)


def _latency_ratio(limit: float, c: float | None, s: float | None, rounds: int) -> Comparison:
    if c is None or s is None:
        which = "the canary" if c is None else "the stable model"
        detail = f"no request answered on {which}: no latency to compare"
        return Comparison("latency_ratio", c, s, None, limit, False, detail)
    ratio = max(c, LATENCY_FLOOR_MS) / max(s, LATENCY_FLOOR_MS)
    passed = ratio <= limit
    floor = (
        f" (a p95 under {LATENCY_FLOOR_MS:g} ms counts as {LATENCY_FLOOR_MS:g} ms)"
        if min(c, s) < LATENCY_FLOOR_MS
        else ""
    )
    how = f" (each request's median of {rounds} rounds)" if rounds > 1 else ""
    detail = (
        f"p95{how} {c:.1f} ms on the canary, {s:.1f} ms on the stable model:"
        f" {ratio:.2f}x{floor};"
        f" {'within' if passed else 'above'} the gate {limit:g}x"
    )
    return Comparison("latency_ratio", c, s, ratio, limit, passed, detail)


def _metric_delta(name: str, limit: float, canary: ProbeResult, stable: ProbeResult) -> Comparison:
    scored = [
        metric(name, list(r.predictions), list(r.labels))
        if r.predictions and len(r.predictions) == len(r.labels)
        else None
        for r in (canary, stable)
    ]
    c, s = scored
    if c is None or s is None:
        which = "the canary" if c is None else "the stable model"
        why = (canary if c is None else stable).detail
        detail = f"no {name} for {which}: its answers to the set are missing ({why})"
        return Comparison("metric_delta", c, s, None, limit, False, detail, name, canary.name)
    # How much worse the canary is: positive when worse, negative when better.
    worse = (c - s) if name in LOWER_IS_BETTER else (s - c)
    passed = worse <= limit + 1e-12  # 0.95 - 0.93 is 0.020000000000000018
    how = f"worse by {worse:.3f}" if worse > 0 else f"better by {-worse:.3f}" if worse else "equal"
    detail = (
        f"{name} {c:.3f} on the canary, {s:.3f} on the stable model: {how};"
        f" {'within' if passed else 'more than'} the {limit:g} allowed"
    )
    return Comparison("metric_delta", c, s, worse, limit, passed, detail, name, canary.name)


def _pairs(canary: ProbeRun, stable: ProbeRun, kind: str) -> list[tuple[ProbeResult, ProbeResult]]:
    theirs = {r.name: r for r in stable.results if r.kind == kind}
    return [(r, theirs[r.name]) for r in canary.results if r.kind == kind and r.name in theirs]


def agreement(canary: ProbeRun, stable: ProbeRun) -> tuple[int, int]:
    """(agreeing, compared): the predictions of every probe both models answered, side by
    side. A probe one of them failed is left out (the error rate counts it); a different
    number of predictions counts the extra ones as disagreeing."""
    agreeing = total = 0
    for kind in ("request", "set"):
        for mine, theirs in _pairs(canary, stable, kind):
            for a, b in zip(mine.exchanges, theirs.exchanges, strict=False):
                if (
                    a.error is not None
                    or b.error is not None
                    or not (a.predictions or b.predictions)
                ):
                    continue
                total += max(len(a.predictions), len(b.predictions))
                agreeing += sum(
                    same_prediction(x, y)
                    for x, y in zip(a.predictions, b.predictions, strict=False)
                )
    return agreeing, total


def same_prediction(a: Any, b: Any) -> bool:
    """Whether two predictions agree: classes (integers, strings) exactly, numbers within
    ``AGREEMENT_TOLERANCE`` relative, lists and objects element by element."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_prediction(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_prediction(a[k], b[k]) for k in a)
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b  # True is not the class 1
    if _numeric(a) and _numeric(b):
        if isinstance(a, int) and isinstance(b, int):
            return a == b
        return a == b or math.isclose(a, b, rel_tol=AGREEMENT_TOLERANCE, abs_tol=0.0)
    return bool(a == b)


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
