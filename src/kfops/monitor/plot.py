"""The drift plot: one PNG of small multiples, worst features first.

Each panel puts a feature's reference distribution beside the served one, over the
reference's own bins: the bin shares for a numeric feature (cut where the profile cut
it), the category shares for a categorical one (with "other" for values the reference
never saw). The title holds the test, the score and the threshold; a drifted feature's
panel is drawn in red. The predictions get a panel of their own when the report scored
them.

The figure is drawn by matplotlib's Agg canvas on a ``Figure`` of its own (never
pyplot's global state), so it renders without a display and in threads. Its size is
fixed by the number of panels alone: ``PANEL_WIDTH`` x ``PANEL_HEIGHT`` pixels each,
``COLUMNS`` to a row, and at most ``MAX_PANELS`` (the worst); the title says how many
were left out. matplotlib (``pip install 'kfops[monitor]'``) is imported only here.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

from kfops.errors import KfopsError
from kfops.monitor import drift
from kfops.monitor.profile import FeatureProfile, Profile
from kfops.monitor.samples import Samples

COLUMNS = 3
MAX_PANELS = 24
DPI = 100
PANEL_WIDTH, PANEL_HEIGHT = 400, 300  # pixels
TITLE_HEIGHT = 60  # pixels above the panels, for the report's headline

_REFERENCE, _SERVED, _DRIFTED = "#9aa5b1", "#1f77b4", "#d62728"


def write_png(report: dict[str, Any], reference: Profile, samples: Samples, path: Path) -> Path:
    """Draw the drift plot of ``report`` (a ``kfops.monitor/v1`` report.json) to ``path``.

    Args:
        report: what ``Report.to_json`` returned; its features are drawn in its order
            (worst first).
        reference: the profile the report scored against.
        samples: the served inputs the report scored.
        path: the PNG to write (its folder is made when missing).

    Returns:
        ``path``.

    Raises:
        KfopsError: matplotlib is not installed.
    """
    figure = draw(report, reference, samples)
    path.parent.mkdir(parents=True, exist_ok=True)
    # No "Software" text chunk: the same report gives the same bytes on any matplotlib.
    figure.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
    return path


def draw(report: dict[str, Any], reference: Profile, samples: Samples) -> Any:
    """The plot as a matplotlib ``Figure`` (one axes per panel, in report order)."""
    figure_class, canvas_class = _matplotlib()
    panels = _panels(report, reference, samples)
    shown = panels[:MAX_PANELS]
    columns = min(COLUMNS, max(len(shown), 1))
    rows = max(math.ceil(len(shown) / columns), 1)
    width = columns * PANEL_WIDTH
    height = rows * PANEL_HEIGHT + TITLE_HEIGHT
    figure = figure_class(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    canvas_class(figure)
    figure.suptitle(_headline(report, len(panels) - len(shown)), fontsize=11)
    if not shown:
        axes = figure.add_subplot(1, 1, 1)
        axes.set_axis_off()
        axes.text(0.5, 0.5, "no features in the report", ha="center", va="center")
        return figure
    for index, panel in enumerate(shown):
        axes = figure.add_subplot(rows, columns, index + 1)
        _draw_panel(axes, panel)
    return figure


def _matplotlib() -> tuple[Any, Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise KfopsError(
            "the drift plot needs matplotlib, which is not installed",
            "install the extra: pip install 'kfops[monitor]'",
        ) from None
    return Figure, FigureCanvasAgg


class _Panel:
    """One feature's panel: the labels of its bins and the two sets of shares."""

    def __init__(
        self,
        item: dict[str, Any],
        labels: list[str],
        expected: list[float],
        served: list[float] | None,
    ) -> None:
        self.name = str(item["name"])
        self.method = str(item["method"])
        self.score = float(item["score"])
        self.threshold = float(item["threshold"])
        self.drifted = bool(item["drifted"])
        self.labels = labels
        self.expected = expected
        self.served = served  # None: the served data has no such column

    @property
    def title(self) -> str:
        mark = "  DRIFTED" if self.drifted else ""
        return f"{self.name}: {self.method} {self.score:.3f} (threshold {self.threshold:g}){mark}"


def _panels(report: dict[str, Any], reference: Profile, samples: Samples) -> list[_Panel]:
    profiles = {f.name: f for f in reference.features}
    served = _served_columns(reference, samples)
    panels = []
    for item in report.get("features") or []:
        found = profiles.get(str(item["name"]))
        if found is not None:
            panels.append(_panel(item, found, served.get(found.name)))
    prediction = report.get("prediction")
    if prediction and reference.prediction is not None:
        panels.append(_panel(prediction, reference.prediction, samples.predictions or None))
    return panels


def _panel(item: dict[str, Any], feature: FeatureProfile, values: list[Any] | None) -> _Panel:
    if feature.kind == "categorical":
        labels = [*feature.categories, "other"]
        current = None if values is None else drift.frequencies(values, feature.categories)
    else:
        labels = _bin_labels(feature.edges)
        numbers = None if values is None else [float(v) for v in values if _is_number(v)]
        current = None if numbers is None else drift.histogram(numbers, feature.edges)
    return _Panel(item, labels, list(feature.fractions), current)


def _served_columns(reference: Profile, samples: Samples) -> dict[str, list[Any]]:
    """The served values by feature: by name, or by position when the rows were lists
    (as the report matched them)."""
    if samples.named:
        return {name: samples.values[name] for name in samples.columns}
    return {
        feature.name: samples.values[column]
        for feature, column in zip(reference.features, samples.columns, strict=False)
    }


def _bin_labels(edges: tuple[float, ...]) -> list[str]:
    if not edges:
        return ["all"]
    cuts = [f"{e:.3g}" for e in edges]
    # The bins are closed on the right, as drift.histogram counts them.
    middle = [f"({low}, {high}]" for low, high in itertools.pairwise(cuts)]
    return [f"<={cuts[0]}", *middle, f">{cuts[-1]}"]


def _draw_panel(axes: Any, panel: _Panel) -> None:
    positions = list(range(len(panel.labels)))
    width = 0.4
    axes.bar(
        [p - width / 2 for p in positions],
        panel.expected,
        width,
        color=_REFERENCE,
        label="reference",
    )
    if panel.served is not None:
        axes.bar(
            [p + width / 2 for p in positions],
            panel.served,
            width,
            color=_DRIFTED if panel.drifted else _SERVED,
            label="served",
        )
    axes.set_title(panel.title, fontsize=9, color=_DRIFTED if panel.drifted else "black")
    axes.set_xticks(positions)
    axes.set_xticklabels(panel.labels, rotation=45, ha="right", fontsize=7)
    axes.set_ylabel("share", fontsize=8)
    axes.tick_params(axis="y", labelsize=7)
    axes.legend(fontsize=7, loc="best", frameon=False)
    if panel.drifted:
        for spine in axes.spines.values():
            spine.set_edgecolor(_DRIFTED)
            spine.set_linewidth(1.5)


def _headline(report: dict[str, Any], hidden: int) -> str:
    share = report.get("drift_share") or {}
    samples = report.get("samples") or {}
    verdict = str(report.get("verdict", "?")).replace("_", " ")
    line = (
        f"{report.get('project', '?')}: {verdict}; {samples.get('count', '?')} served inputs;"
        f" {share.get('drifted', 0)} of {share.get('total', 0)} features drifted"
    )
    if hidden:
        line += f" ({hidden} more not shown)"
    return line


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
