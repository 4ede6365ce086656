"""Placeholder of the data-plane client (replaced by the serve-local branch)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfops.errors import KfopsError


@dataclass(frozen=True)
class Rows:
    rows: list[list[Any]]
    columns: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Prediction:
    predictions: list[Any]
    outputs: dict[str, Any]
    latency_ms: float
    url: str


def read_rows(source: str | Path, text: str | None = None) -> Rows:
    data = json.loads(text if text is not None else Path(source).read_text())
    if isinstance(data, dict):
        data = data.get("instances", data)
    return Rows([list(r.values()) if isinstance(r, dict) else list(r) for r in data])


def endpoint(base_url: str, model_name: str, protocol: str) -> str:
    if protocol == "v2":
        return f"{base_url.rstrip('/')}/v2/models/{model_name}/infer"
    return f"{base_url.rstrip('/')}/v1/models/{model_name}:predict"


def request_body(rows: Rows, protocol: str, *, model_name: str) -> dict[str, Any]:
    if protocol == "v1":
        return {"instances": rows.rows}
    flat = [v for row in rows.rows for v in row]
    kind = "INT64" if all(isinstance(v, int) for v in flat) else "FP64"
    shape = [len(rows.rows), len(rows.rows[0]) if rows.rows else 0]
    return {"inputs": [{"name": "input-0", "shape": shape, "datatype": kind, "data": flat}]}


def predict(
    base_url: str,
    model_name: str,
    rows: Rows,
    protocol: str,
    *,
    timeout: float = 30.0,
    headers: dict[str, str] | None = None,
) -> Prediction:
    import httpx

    url = endpoint(base_url, model_name, protocol)
    started = time.monotonic()
    try:
        answer = httpx.post(
            url, json=request_body(rows, protocol, model_name=model_name), timeout=timeout
        )
    except httpx.HTTPError as exc:
        raise KfopsError(f"{url}: {type(exc).__name__}") from None
    latency = (time.monotonic() - started) * 1000
    if answer.status_code != 200:
        raise KfopsError(f"{url} answered HTTP {answer.status_code}: {answer.text[:200]}")
    body = answer.json()
    predictions = body["outputs"][0]["data"] if protocol == "v2" else body["predictions"]
    return Prediction(list(predictions), body, latency, url)


def ready(base_url: str, model_name: str, protocol: str, *, timeout: float = 5.0) -> bool:
    import httpx

    path = f"/v2/models/{model_name}/ready" if protocol == "v2" else f"/v1/models/{model_name}"
    try:
        return httpx.get(base_url.rstrip("/") + path, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False
