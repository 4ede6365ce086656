"""The drift plot (kfops.monitor.plot): a known shift drawn as one PNG of small
multiples, worst features first, of a size fixed by the number of panels."""

from __future__ import annotations

import random
import struct
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from kfops.errors import KfopsError
from kfops.monitor import plot, profile, report
from kfops.monitor.samples import Samples, from_rows
from kfops.project.model import Drift, Mark

NOW = datetime(2026, 12, 2, 3, 0, tzinfo=timezone.utc)


def _rows(n: int, shift: float, seed: int, colours: list[str]) -> list[tuple[int, Any]]:
    rng = random.Random(seed)
    return [
        (
            i + 1,
            {
                "petal": rng.gauss(shift, 1.0),
                "sepal": rng.gauss(5.0, 1.0),
                "colour": rng.choice(colours),
            },
        )
        for i in range(n)
    ]


def _known_shift() -> tuple[dict[str, Any], profile.Profile, Samples]:
    """petal moved by 2 standard deviations, colour gained a category; sepal is as it was."""
    reference_rows = _rows(2000, 0.0, 1, ["red", "green", "blue"])
    served_rows = _rows(500, 2.0, 2, ["red", "green", "blue", "violet"])
    built = profile.build(from_rows("reference", reference_rows), data_sha256="0" * 64)
    served = from_rows("served", served_rows)
    config = Drift(mark=Mark(1, 1), reference=Path("reference.json"), min_samples=100)
    scored = report.evaluate("iris", config, built, "reference.json", served, now=NOW)
    return scored.to_json(), built, served


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_a_known_shift_is_drawn_worst_first_with_one_panel_per_feature(tmp_path: Path) -> None:
    document, reference, served = _known_shift()
    assert [f["name"] for f in document["features"]] == ["petal", "colour", "sepal"]
    assert [f["drifted"] for f in document["features"]] == [True, True, False]

    figure = plot.draw(document, reference, served)
    axes = figure.axes
    assert len(axes) == 3  # one panel per feature
    titles = [a.get_title() for a in axes]
    petal, colour, sepal = document["features"]
    assert titles == [
        f"petal: psi {petal['score']:.3f} (threshold 0.2)  DRIFTED",
        f"colour: jensen_shannon {colour['score']:.3f} (threshold 0.1)  DRIFTED",
        f"sepal: psi {sepal['score']:.3f} (threshold 0.2)",
    ]
    assert [a.title.get_color() for a in axes] == ["#d62728", "#d62728", "black"]
    # Numeric: the reference's bins (len(edges) + 1), two bars each; their heights are
    # the reference's shares and the served shares over the same bins.
    petal_profile = next(f for f in reference.features if f.name == "petal")
    reference_bars, served_bars = axes[0].containers
    assert len(reference_bars) == len(petal_profile.edges) + 1
    assert [b.get_height() for b in reference_bars] == list(petal_profile.fractions)
    shifted = [b.get_height() for b in served_bars]
    assert sum(shifted) == pytest.approx(1.0)
    assert shifted[-1] > 0.5  # two standard deviations up: most of it in the top bin
    # Categorical: a bar per category, and "other" holding the new one (a quarter).
    labels = [t.get_text() for t in axes[1].get_xticklabels()]
    assert labels == ["blue", "green", "red", "other"]
    other = [b.get_height() for b in axes[1].containers[1]][-1]
    assert other == pytest.approx(0.25, abs=0.06)

    path = plot.write_png(document, reference, served, tmp_path / "plots" / "drift.png")
    assert path == tmp_path / "plots" / "drift.png"
    # 3 panels: one row of three, 400 x 300 pixels each, under a 60-pixel headline.
    assert _png_size(path) == (1200, 360)


def test_the_size_depends_only_on_the_number_of_panels(tmp_path: Path) -> None:
    document, reference, served = _known_shift()
    two = {**document, "features": document["features"][:2]}
    assert len(plot.draw(two, reference, served).axes) == 2
    assert _png_size(plot.write_png(two, reference, served, tmp_path / "two.png")) == (800, 360)

    # Four panels: two rows of three.
    reference_rows = [
        (i + 1, [float(i % 7), float(i % 5), float(i % 3), float(i % 11)]) for i in range(400)
    ]
    built = profile.build(from_rows("r", reference_rows), data_sha256="0" * 64)
    served_four = from_rows("s", [(i + 1, [float(i % 3)] * 4) for i in range(200)])
    config = Drift(mark=Mark(1, 1), reference=Path("r.json"), min_samples=10)
    four = report.evaluate("p", config, built, "r.json", served_four, now=NOW).to_json()
    assert len(plot.draw(four, built, served_four).axes) == 4
    assert _png_size(plot.write_png(four, built, served_four, tmp_path / "four.png")) == (
        1200,
        660,
    )
    # The same report draws the same bytes.
    again = plot.write_png(four, built, served_four, tmp_path / "again.png")
    assert again.read_bytes() == (tmp_path / "four.png").read_bytes()


def test_many_features_keep_the_worst_and_say_how_many_were_left_out() -> None:
    names = [f"f{i:02d}" for i in range(30)]
    rows = [
        (i + 1, {n: float((i * (k + 1)) % 13) for k, n in enumerate(names)}) for i in range(300)
    ]
    built = profile.build(from_rows("r", rows), data_sha256="0" * 64)
    served = from_rows("s", rows[:150])
    config = Drift(mark=Mark(1, 1), reference=Path("r.json"), min_samples=10)
    document = report.evaluate("p", config, built, "r.json", served, now=NOW).to_json()
    figure = plot.draw(document, built, served)
    assert len(figure.axes) == plot.MAX_PANELS == 24
    kept = [a.get_title().split(":")[0] for a in figure.axes]
    assert kept == [f["name"] for f in document["features"][:24]]
    assert figure.get_suptitle().endswith("(6 more not shown)")


def test_the_predictions_get_a_panel_when_the_report_scored_them() -> None:
    rng = random.Random(3)
    reference_rows = [(i + 1, [rng.random()]) for i in range(300)]
    built = profile.build(
        from_rows("r", reference_rows, [i % 2 for i in range(300)]), data_sha256="0" * 64
    )
    served = from_rows("s", reference_rows[:200], [1] * 200)
    config = Drift(
        mark=Mark(1, 1),
        reference=Path("r.json"),
        min_samples=10,
        prediction=Drift.__dataclass_fields__["numeric"].default,  # psi 0.2
    )
    document = report.evaluate("p", config, built, "r.json", served, now=NOW).to_json()
    assert document["prediction"]["drifted"] is True
    axes = plot.draw(document, built, served).axes
    assert [a.get_title().split(":")[0] for a in axes] == ["input-0", "prediction"]
    assert axes[1].get_title().endswith("DRIFTED")


def test_without_matplotlib_the_message_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    document, reference, served = _known_shift()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "matplotlib.figure", raising=False)
    monkeypatch.delitem(sys.modules, "matplotlib.backends.backend_agg", raising=False)
    with pytest.raises(KfopsError) as caught:
        plot.write_png(document, reference, served, tmp_path / "drift.png")
    assert caught.value.message == "the drift plot needs matplotlib, which is not installed"
    assert caught.value.hint == "install the extra: pip install 'kfops[monitor]'"
    assert not (tmp_path / "drift.png").exists()


def test_validate_does_not_import_matplotlib() -> None:
    import subprocess

    code = (
        "import sys; import kfops.monitor.plot, kfops.cli;"
        " assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
