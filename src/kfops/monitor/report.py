"""One monitor run: the served inputs scored against the reference profile, a verdict,
``report.json`` (schema ``kfops.monitor/v1``) and a table, worst features first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kfops.errors import KfopsError
from kfops.monitor.profile import Profile
from kfops.monitor.samples import Samples
from kfops.project.model import Drift

SCHEMA = "kfops.monitor/v1"
OK, BREACH, INSUFFICIENT = "ok", "breach", "insufficient_data"
# Exit codes of `kfops monitor` (documented in its --help and the README).
EXIT_CODES = {OK: 0, BREACH: 1, INSUFFICIENT: 4}


@dataclass(frozen=True)
class FeatureDrift:
    name: str
    kind: str
    method: str
    threshold: float
    score: float

    @property
    def drifted(self) -> bool:
        return self.score > self.threshold


@dataclass(frozen=True)
class Report:
    project: str
    verdict: str
    reasons: tuple[str, ...]
    samples: int
    min_samples: int
    window: str
    source: str
    reference: str  # the profile file, as shown to the user
    reference_rows: int
    model_sha256: str | None
    features: tuple[FeatureDrift, ...]  # worst first (score over threshold)
    prediction: FeatureDrift | None
    drift_share: float  # the share of features that drifted
    drift_share_threshold: float
    generated_at: datetime

    def to_json(self) -> dict[str, Any]:
        def item(f: FeatureDrift) -> dict[str, Any]:
            return {
                "name": f.name,
                "kind": f.kind,
                "method": f.method,
                "threshold": f.threshold,
                "score": round(f.score, 6),
                "drifted": f.drifted,
            }

        return {
            "schema": SCHEMA,
            "project": self.project,
            "generated_at": self.generated_at.isoformat().replace("+00:00", "Z"),
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "samples": {"count": self.samples, "min": self.min_samples},
            "window": self.window,
            "source": self.source,
            "reference": {
                "file": self.reference,
                "rows": self.reference_rows,
                "model_sha256": self.model_sha256,
            },
            "features": [item(f) for f in self.features],
            "prediction": item(self.prediction) if self.prediction else None,
            "drift_share": {
                "value": round(self.drift_share, 6),
                "threshold": self.drift_share_threshold,
                "drifted": sum(f.drifted for f in self.features),
                "total": len(self.features),
            },
        }

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]


def evaluate(
    project: str,
    config: Drift,
    profile: Profile,
    reference: str,
    samples: Samples,
    *,
    now: datetime,
) -> Report:
    """Score ``samples`` against ``profile`` by the tests of ``config``.

    Below ``min_samples`` the verdict is ``insufficient_data`` (never ``ok``), whatever
    the scores. A breach: the share of drifted features reaches ``drift_share``, or the
    predictions drifted.

    Raises:
        KfopsError: the served columns do not match the reference's features.
    """
    values = _by_feature(profile, samples, reference)
    scored = []
    for feature in profile.features:
        test = config.test_for(feature.name, feature.kind)
        score = feature.score(values[feature.name], test.method) if samples.count else 0.0
        scored.append(FeatureDrift(feature.name, feature.kind, test.method, test.threshold, score))
    scored.sort(key=lambda f: (-(f.score / f.threshold), f.name))
    prediction = None
    if config.prediction is not None and profile.prediction is not None and samples.predictions:
        test = config.prediction
        prediction = FeatureDrift(
            "prediction",
            profile.prediction.kind,
            test.method,
            test.threshold,
            profile.prediction.score(samples.predictions, test.method),
        )
    drifted = [f for f in scored if f.drifted]
    share = len(drifted) / len(scored) if scored else 0.0
    reasons: list[str] = []
    if samples.count < config.min_samples:
        verdict = INSUFFICIENT
        reasons.append(
            f"{samples.count} served input{'s' * (samples.count != 1)}, fewer than"
            f" min_samples {config.min_samples}: too few to tell"
        )
    else:
        if scored and share >= config.drift_share:
            names = ", ".join(f"`{f.name}`" for f in drifted)
            reasons.append(
                f"{len(drifted)} of {len(scored)} features drifted ({names}):"
                f" {share:.0%}, at least drift_share {config.drift_share:.0%}"
            )
        if prediction is not None and prediction.drifted:
            reasons.append(
                f"the predictions drifted: {prediction.method} {prediction.score:.3f} >"
                f" {prediction.threshold:g}"
            )
        verdict = BREACH if reasons else OK
    return Report(
        project=project,
        verdict=verdict,
        reasons=tuple(reasons),
        samples=samples.count,
        min_samples=config.min_samples,
        window=config.window,
        source=config.source,
        reference=reference,
        reference_rows=profile.rows,
        model_sha256=profile.model_sha256,
        features=tuple(scored),
        prediction=prediction,
        drift_share=share,
        drift_share_threshold=config.drift_share,
        generated_at=now,
    )


def _by_feature(profile: Profile, samples: Samples, reference: str) -> dict[str, list[Any]]:
    names = [f.name for f in profile.features]
    if not samples.count:
        return {name: [] for name in names}
    if not samples.named:
        # Rows given as lists are matched by position.
        if len(samples.columns) != len(names):
            raise KfopsError(
                f"the served rows have {len(samples.columns)} values, the reference"
                f" {reference} has {len(names)} features ({', '.join(names)})",
                "send rows of the model's features in the reference's order, or objects",
            )
        return {
            name: samples.values[column]
            for name, column in zip(names, samples.columns, strict=True)
        }
    missing = [n for n in names if n not in samples.values]
    if missing:
        raise KfopsError(
            f"the served inputs have no `{missing[0]}`, a feature of the reference {reference}",
            "served columns: " + ", ".join(f"`{c}`" for c in samples.columns),
        )
    return {name: samples.values[name] for name in names}


def markdown(report: Report) -> str:
    """The report as a Markdown table, worst features first (for a job summary)."""
    icon = {OK: "ok", BREACH: "BREACH", INSUFFICIENT: "insufficient data"}[report.verdict]
    lines = [
        f"### kfops monitor: {report.project}: {icon}",
        "",
        f"{report.samples} served inputs (min_samples {report.min_samples}) against"
        f" {report.reference} ({report.reference_rows} rows);"
        f" drift share {report.drift_share:.0%} (breach at {report.drift_share_threshold:.0%})",
        "",
        "| feature | kind | method | score | threshold | drifted |",
        "|---|---|---|---:|---:|---|",
    ]
    rows = list(report.features) + ([report.prediction] if report.prediction else [])
    for f in rows:
        lines.append(
            f"| {f.name} | {f.kind} | {f.method} | {f.score:.4f} | {f.threshold:g} |"
            f" {'yes' if f.drifted else 'no'} |"
        )
    if report.reasons:
        lines += ["", *(f"- {reason}" for reason in report.reasons)]
    return "\n".join(lines) + "\n"
