"""The Python API behind ``kfops.predict``, for notebooks and scripts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kfops.errors import EXIT_USAGE, KfopsError
from kfops.serving.predict import Prediction, Rows, _env_url, read_rows
from kfops.serving.predict import predict as _predict


def as_rows(data: Any) -> Rows:
    """``data`` as Rows: Rows, a list of rows or of dicts, a pandas DataFrame, or a
    JSON or CSV file's path."""
    if isinstance(data, Rows):
        return data
    if isinstance(data, (str, Path)):
        return read_rows(data)
    columns = getattr(data, "columns", None)
    values = getattr(data, "values", None)
    if columns is not None and values is not None and hasattr(values, "tolist"):
        return Rows(values.tolist(), tuple(str(c) for c in columns))  # a DataFrame
    if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
        names = tuple(str(k) for k in data[0])
        return Rows([[row[k] for k in names] for row in data], names)
    if isinstance(data, list) and data and all(isinstance(r, (list, tuple)) for r in data):
        return Rows([list(r) for r in data])
    raise KfopsError(
        f"cannot send a {type(data).__name__}: give a list of rows ([[5.1, 3.5, ...]]),"
        " a list of dicts, a DataFrame or a file's path",
        exit_code=EXIT_USAGE,
    )


def predict(
    data: Any,
    *,
    url: str | None = None,
    model: str | None = None,
    protocol: str | None = None,
    project: str | Path | None = None,
    local: bool = False,
    port: int = 8080,
    env: str | None = None,
    timeout: float = 30.0,
    headers: dict[str, str] | None = None,
    full: bool = False,
) -> Any:
    """Predictions for ``data`` from a served model: a list, one per row (``full=True``:
    the whole :class:`Prediction`, with the raw answer, latency and URL).

    Where: ``url`` (a KServe base URL), ``local=True`` (``kfops serve`` on ``port``) or
    ``env`` (an environment of ``project``). ``model`` and ``protocol`` default to the
    project's ``serving.name`` and ``serving.protocol``.

    Raises:
        KfopsError: as ``kfops predict`` (bad data, unreachable server, HTTP errors).
    """
    if sum((url is not None, local, env is not None)) != 1:
        raise KfopsError("give one of url=..., local=True or env=...", exit_code=EXIT_USAGE)
    loaded = None
    if project is not None or env is not None or model is None:
        from kfops.project import config

        loaded = config.load(Path(project or "."))
    serving = loaded.serving if loaded is not None else None
    name = model or (serving.name if serving else loaded.name if loaded else "")
    chosen = protocol or (serving.protocol if serving else "v1")
    if local:
        base = f"http://127.0.0.1:{port}"
    elif url is not None:
        base = url
    else:
        base = _env_url(loaded, env or "")
    answer = _predict(base, name, as_rows(data), chosen, timeout=timeout, headers=headers)
    return answer if full else answer.predictions


__all__ = ["Prediction", "Rows", "as_rows", "predict"]
