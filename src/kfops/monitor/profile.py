"""The reference profile: what the served inputs are compared with.

``kfops monitor baseline --data FILE`` writes it from the data the model was trained or
validated on: per feature, the bins (cut at the deciles) with their shares and 101
quantiles for numeric features; the categories with their shares for the others; the
same for the predictions when the data has them. It is a small JSON file, committed
beside the model, and names the model it describes by a SHA-256.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfops.errors import EXIT_USAGE, KfopsError, display_path
from kfops.monitor import drift
from kfops.monitor.samples import Samples

SCHEMA = "kfops.profile/v1"
QUANTILES = 101  # 0%, 1%, ..., 100%
BINS = 10  # cut at the deciles
MAX_CATEGORIES = 100  # the rest share one "other" bin


@dataclass(frozen=True)
class FeatureProfile:
    """One feature's reference distribution.

    Numeric: ``fractions`` over ``len(edges) + 1`` bins cut at ``edges``. Categorical:
    ``fractions`` over ``categories`` and a last bin for any other value.
    """

    name: str
    kind: str  # "numeric" | "categorical"
    count: int
    fractions: tuple[float, ...]
    edges: tuple[float, ...] = ()
    quantiles: tuple[float, ...] = ()
    mean: float | None = None
    std: float | None = None
    categories: tuple[str, ...] = ()

    def score(self, values: list[Any], method: str) -> float:
        """The drift score of ``values`` against this feature by ``method``.

        Raises:
            KfopsError: a method for numbers on a categorical feature, or values that are
                not numbers for a numeric one.
        """
        if self.kind == "categorical":
            if method in drift.NUMERIC_ONLY:
                raise KfopsError(
                    f"feature `{self.name}` is categorical; `{method}` compares numbers",
                    "use psi or jensen_shannon for it (monitoring.drift.features)",
                )
            current = drift.frequencies(values, self.categories)
        else:
            numbers = _numbers(self.name, values)
            if method == "ks":
                return drift.ks(self.quantiles, numbers)
            if method == "wasserstein":
                return drift.wasserstein(self.quantiles, numbers, scale=self.std)
            current = drift.histogram(numbers, self.edges)
        if method == "psi":
            return drift.psi(self.fractions, current)
        return drift.jensen_shannon(self.fractions, current)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "count": self.count}
        if self.kind == "numeric":
            out |= {
                "edges": list(self.edges),
                "fractions": list(self.fractions),
                "quantiles": list(self.quantiles),
                "mean": self.mean,
                "std": self.std,
            }
        else:
            out |= {"categories": list(self.categories), "fractions": list(self.fractions)}
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureProfile:
        return cls(
            name=str(data["name"]),
            kind=str(data["kind"]),
            count=int(data["count"]),
            fractions=tuple(float(x) for x in data["fractions"]),
            edges=tuple(float(x) for x in data.get("edges", ())),
            quantiles=tuple(float(x) for x in data.get("quantiles", ())),
            mean=data.get("mean"),
            std=data.get("std"),
            categories=tuple(str(x) for x in data.get("categories", ())),
        )


@dataclass(frozen=True)
class Profile:
    """The reference profile of a model's inputs (and predictions)."""

    features: tuple[FeatureProfile, ...]
    rows: int
    data_sha256: str
    model: str | None = None  # what the user named the model by (a file, a URI, a commit)
    model_sha256: str | None = None
    prediction: FeatureProfile | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "rows": self.rows,
            "data_sha256": self.data_sha256,
            "model": {"ref": self.model, "sha256": self.model_sha256},
            "features": [f.to_json() for f in self.features],
            "prediction": self.prediction.to_json() if self.prediction else None,
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n"


def build(
    samples: Samples,
    *,
    data_sha256: str,
    model: str | None = None,
    model_sha256: str | None = None,
) -> Profile:
    """The profile of ``samples`` (at least one row).

    Raises:
        KfopsError: no rows.
    """
    if not samples.count:
        raise KfopsError("no rows to profile", "give the data the model was trained on")
    features = tuple(feature(name, samples.values[name]) for name in samples.columns)
    prediction = feature("prediction", samples.predictions) if samples.predictions else None
    return Profile(features, samples.count, data_sha256, model, model_sha256, prediction)


def feature(name: str, values: list[Any]) -> FeatureProfile:
    """One feature's profile: numeric when every value is a number, else categorical."""
    np = drift._numpy()
    if values and all(_is_number(v) for v in values):
        array = np.asarray(values, dtype=float)
        # Cut at observed values ("lower"), so that discrete numbers keep bins of their own.
        cuts = np.quantile(array, [i / BINS for i in range(1, BINS)], method="lower")
        edges = tuple(_round(x) for x in sorted({float(c) for c in cuts}))
        quantiles = np.quantile(array, [i / (QUANTILES - 1) for i in range(QUANTILES)])
        return FeatureProfile(
            name=name,
            kind="numeric",
            count=len(values),
            fractions=tuple(_round(x) for x in drift.histogram(list(array), edges)),
            edges=edges,
            quantiles=tuple(_round(float(q)) for q in quantiles),
            mean=_round(float(array.mean())),
            std=_round(float(array.std())),
        )
    counts: dict[str, int] = {}
    for value in values:
        key = drift.category(value)
        counts[key] = counts.get(key, 0) + 1
    kept = sorted(sorted(counts), key=lambda c: -counts[c])[:MAX_CATEGORIES]
    categories = tuple(sorted(kept))
    return FeatureProfile(
        name=name,
        kind="categorical",
        count=len(values),
        fractions=tuple(_round(x) for x in drift.frequencies(values, categories)),
        categories=categories,
    )


def load(path: Path) -> Profile:
    """The profile in ``path``.

    Raises:
        KfopsError: missing, not JSON, or not a kfops profile.
    """
    shown = display_path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KfopsError(
            f"reference profile {shown} not found",
            "write it with `kfops monitor baseline --data FILE -o " + shown + "`",
            EXIT_USAGE,
        ) from None
    except (OSError, ValueError) as exc:
        raise KfopsError(f"reference profile {shown}: cannot read it: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise KfopsError(
            f'{shown} is not a kfops reference profile (no `"schema": "{SCHEMA}"`)',
            "write it with `kfops monitor baseline`",
        )
    try:
        model = data.get("model") or {}
        return Profile(
            features=tuple(FeatureProfile.from_json(f) for f in data["features"]),
            rows=int(data["rows"]),
            data_sha256=str(data["data_sha256"]),
            model=model.get("ref"),
            model_sha256=model.get("sha256"),
            prediction=FeatureProfile.from_json(data["prediction"])
            if data.get("prediction")
            else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise KfopsError(
            f"{shown}: a malformed profile ({type(exc).__name__}: {exc})",
            "write it again with `kfops monitor baseline`",
        ) from None


def model_sha256(ref: str) -> str:
    """The SHA-256 of a model: of the file's bytes, of a folder's files (by relative path
    and content), or of the reference itself (a URI or a commit)."""
    digest = hashlib.sha256()
    path = Path(ref)
    if path.is_file():
        digest.update(path.read_bytes())
    elif path.is_dir():
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(item.relative_to(path)).encode() + b"\0")
            digest.update(hashlib.sha256(item.read_bytes()).digest())
    else:
        digest.update(ref.encode())
    return digest.hexdigest()


def _numbers(name: str, values: list[Any]) -> list[float]:
    for value in values:
        if not _is_number(value):
            raise KfopsError(
                f"feature `{name}` is numeric in the reference, but a served value is"
                f" {json.dumps(value)}",
                "is the column order the same as the reference's? name the columns"
                " (objects) to be sure",
            )
    return [float(v) for v in values]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _round(value: float) -> float:
    """Six significant digits: enough for any threshold, and a small, stable file."""
    return float(f"{value:.6g}")
