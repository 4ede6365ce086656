"""The smoke test of a release: requests with the answers expected, sent to the new model.

The file (``serving.canary.smoke``) is JSON::

    {"requests": [
      {"name": "setosa", "rows": [[5.1, 3.5, 1.4, 0.2]], "expect": {"predictions": [0]}},
      {"name": "batch", "rows": [[...], [...]], "expect": {"count": 2, "max_latency_ms": 500}},
      {"name": "scores", "rows": [[...]], "expect": {"min": 0.0, "max": 1.0}}
    ]}

``rows`` are sent as ``kfops predict`` sends them (V1 ``instances`` or a V2 tensor); a
``body`` is sent as it is. ``expect`` may give the exact ``predictions`` (numbers compared
within ``tolerance``), their ``count``, bounds ``min``/``max`` for every prediction, and
``max_latency_ms``.
"""

from __future__ import annotations

import json
import math
import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfops.errors import KfopsError, display_path

_EXPECT_KEYS = {"predictions", "tolerance", "count", "min", "max", "max_latency_ms"}


@dataclass(frozen=True)
class Case:
    name: str
    rows: list[list[Any]] | None
    body: dict[str, Any] | None
    expect: dict[str, Any]


@dataclass
class Outcome:
    name: str
    passed: bool
    detail: str
    latency_ms: float = 0.0
    predictions: list[Any] = field(default_factory=list)


def load(path: Path) -> list[Case]:
    """The smoke cases in ``path``.

    Raises:
        KfopsError: the file is missing, not JSON (with line and column), or a case is
            malformed (naming the case).
    """
    shown = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KfopsError(f"cannot read the smoke file {shown}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KfopsError(
            f"{shown}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}",
            'write {"requests": [{"rows": [[...]], "expect": {"predictions": [...]}}]}',
        ) from None
    requests = data.get("requests") if isinstance(data, dict) else data
    if not isinstance(requests, list) or not requests:
        raise KfopsError(
            f"{shown}: no requests",
            'write {"requests": [{"rows": [[...]], "expect": {"predictions": [...]}}]}',
        )
    cases = []
    for index, item in enumerate(requests):
        where = f"{shown}: request {index + 1}"
        if not isinstance(item, dict):
            raise KfopsError(f"{where} is not an object", "give `rows` (or `body`) and `expect`")
        name = str(item.get("name") or f"request {index + 1}")
        rows, body = item.get("rows"), item.get("body")
        if (rows is None) == (body is None):
            raise KfopsError(
                f"{where} (`{name}`): give either `rows` or `body`",
                "`rows`: a list of rows as kfops predict takes them; `body`: a request sent as is",
            )
        if rows is not None and not (
            isinstance(rows, list) and rows and all(isinstance(r, list | dict) for r in rows)
        ):
            raise KfopsError(f"{where} (`{name}`): `rows` must be a list of rows")
        expect = item.get("expect") or {}
        unknown = sorted(set(expect) - _EXPECT_KEYS) if isinstance(expect, dict) else []
        if not isinstance(expect, dict) or unknown:
            raise KfopsError(
                f"{where} (`{name}`): unknown `expect` key"
                + (f" `{unknown[0]}`" if unknown else "s"),
                "expect takes: " + ", ".join(sorted(_EXPECT_KEYS)),
            )
        cases.append(Case(name, rows, body if isinstance(body, dict) else None, expect))
    return cases


def check(case: Case, predictions: list[Any], latency_ms: float) -> Outcome:
    """Whether the answer meets ``case.expect``."""
    expect = case.expect
    failures = []
    if "predictions" in expect:
        tolerance = float(expect.get("tolerance", 0.0))
        wanted = expect["predictions"]
        if not _same(wanted, predictions, tolerance):
            failures.append(f"expected predictions {_short(wanted)}, got {_short(predictions)}")
    if "count" in expect and len(predictions) != expect["count"]:
        failures.append(f"expected {expect['count']} predictions, got {len(predictions)}")
    for bound, test in (("min", operator.ge), ("max", operator.le)):
        if bound in expect:
            outside = [
                p for p in _flat(predictions) if not _number(p) or not test(p, expect[bound])
            ]
            if outside:
                failures.append(
                    f"{len(outside)} prediction(s) outside {bound} {expect[bound]}:"
                    f" {_short(outside)}"
                )
    if "max_latency_ms" in expect and latency_ms > float(expect["max_latency_ms"]):
        failures.append(f"took {latency_ms:.0f} ms, more than {expect['max_latency_ms']} ms")
    return Outcome(
        case.name,
        not failures,
        "; ".join(failures) or f"ok ({latency_ms:.0f} ms)",
        latency_ms,
        predictions,
    )


def _same(wanted: Any, got: Any, tolerance: float) -> bool:
    if isinstance(wanted, list) and isinstance(got, list):
        return len(wanted) == len(got) and all(
            _same(w, g, tolerance) for w, g in zip(wanted, got, strict=True)
        )
    if _number(wanted) and _number(got):
        return math.isclose(float(wanted), float(got), abs_tol=tolerance, rel_tol=0.0)
    return bool(wanted == got)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _flat(values: Any) -> list[Any]:
    if isinstance(values, list):
        return [item for value in values for item in _flat(value)]
    return [values]


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."
