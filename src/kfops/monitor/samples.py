"""Served inputs as kfops monitor reads them: JSON lines, one request row a line.

Each line is ``{"inputs": ROW, "prediction": VALUE}`` (the prediction is optional), or a
bare ROW; a ROW is a list of values or an object of column: value. This is what probe
traffic is collected as; KServe's payload logs are read into the same ``Samples`` by
``kfops.monitor.logger``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfops.errors import EXIT_USAGE, KfopsError, display_path

_LINE_HINT = 'write one JSON value a line: {"inputs": [5.1, 3.5], "prediction": 0} or [5.1, 3.5]'


@dataclass(frozen=True)
class Samples:
    """Values by column (``input-0``... when the rows are lists), and the predictions.

    ``predictions`` are those of every row (JSON lines), or, from the payload logs, of the
    rows whose request was answered: a request the model never answered has none.
    """

    columns: tuple[str, ...]
    values: dict[str, list[Any]]
    predictions: list[Any]
    count: int
    named: bool  # the rows were objects, so the column names are the data's own


def read_jsonl(path: Path) -> Samples:
    """The served inputs in ``path`` (JSON lines).

    Raises:
        KfopsError: the file cannot be read, a line is not JSON, or rows differ in shape;
            the message names the file and the line.
    """
    shown = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KfopsError(
            f"{shown}: no such file", "give a JSON lines file of served inputs", EXIT_USAGE
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KfopsError(f"{shown}: cannot read it: {exc}") from None
    rows: list[Any] = []
    predictions: list[Any] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise KfopsError(
                f"{shown}:{number}:{exc.colno}: not JSON: {exc.msg}", _LINE_HINT
            ) from None
        if isinstance(item, dict) and "inputs" in item:
            if "prediction" in item:
                predictions.append(item["prediction"])
            item = item["inputs"]
        if not isinstance(item, list | dict) or not item:
            raise KfopsError(f"{shown}:{number}: a row is a list or an object", _LINE_HINT)
        rows.append((number, item))
    return from_rows(shown, rows, predictions)


def from_rows(
    shown: str, rows: list[tuple[int, Any]], predictions: list[Any] | None = None
) -> Samples:
    """Samples from numbered rows (lists or objects, all of one kind)."""
    predictions = predictions or []
    if predictions and len(predictions) != len(rows):
        raise KfopsError(
            f"{shown}: {len(predictions)} of {len(rows)} rows have a prediction",
            "give a prediction on every line, or on none",
        )
    if not rows:
        return Samples((), {}, [], 0, False)
    named = isinstance(rows[0][1], dict)
    first = rows[0][1]
    columns = tuple(first) if named else tuple(f"input-{i}" for i in range(len(first)))
    values: dict[str, list[Any]] = {c: [] for c in columns}
    for number, row in rows:
        if named != isinstance(row, dict):
            raise KfopsError(
                f"{shown}:{number}: rows mix lists and objects", "give every row the same shape"
            )
        if named:
            missing = [c for c in columns if c not in row]
            if missing or len(row) != len(columns):
                raise KfopsError(
                    f"{shown}:{number}: the columns differ from the first row's"
                    + (f" (no `{missing[0]}`)" if missing else ""),
                    "give every row the same columns",
                )
            for column in columns:
                values[column].append(row[column])
        else:
            if len(row) != len(columns):
                raise KfopsError(
                    f"{shown}:{number}: {len(row)} values, the first row has {len(columns)}",
                    "give every row the same number of values",
                )
            for column, value in zip(columns, row, strict=True):
                values[column].append(value)
    return Samples(columns, values, list(predictions), len(rows), named)
