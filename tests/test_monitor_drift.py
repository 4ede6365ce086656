"""Drift maths against synthetic shifts with known answers, and their properties."""

from __future__ import annotations

import math
import random
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kfops.monitor import drift, profile
from kfops.monitor.samples import from_rows


def _normal(n: int, mean: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(mean, 1.0) for _ in range(n)]


# ------------------------------------------------------------------ known answers


def test_psi_of_identical_histograms_is_zero() -> None:
    assert drift.psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0
    assert drift.psi([2, 3, 5], [20, 30, 50]) == pytest.approx(0.0)  # counts are normalised


def test_psi_by_hand() -> None:
    # (0.9-0.5) ln(0.9/0.5) + (0.1-0.5) ln(0.1/0.5)
    expected = 0.4 * math.log(1.8) + 0.4 * math.log(5)
    assert drift.psi([0.5, 0.5], [0.9, 0.1]) == pytest.approx(expected)


def test_psi_floors_empty_bins() -> None:
    value = drift.psi([1.0, 0.0], [0.5, 0.5])
    assert math.isfinite(value)
    # with the floor 1e-4: (0.5-0.9999) ln(0.5/0.9999) + (0.5-0.0001) ln(0.5/0.0001)
    assert value == pytest.approx(0.4999 * math.log(1.9998) + 0.4999 * math.log(5000), rel=1e-3)


def test_histograms_over_different_bins_are_refused() -> None:
    with pytest.raises(ValueError, match="different bins"):
        drift.psi([0.5, 0.5], [0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="no mass"):
        drift.jensen_shannon([0, 0], [1, 1])


def test_jensen_shannon_known_values() -> None:
    assert drift.jensen_shannon([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert drift.jensen_shannon([1, 0], [0, 1]) == pytest.approx(1.0)  # disjoint: the maximum


def test_ks_and_wasserstein_known_values() -> None:
    assert drift.ks([1, 2, 3, 4], [1, 2, 3, 4]) == 0.0
    assert drift.ks([1, 2, 3], [10, 11, 12]) == 1.0
    assert drift.wasserstein([0, 1, 2, 3], [1, 2, 3, 4], scale=1.0) == pytest.approx(1.0)
    # by default the distance is in units of the reference's standard deviation
    assert drift.wasserstein([0, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(1 / math.sqrt(1.25))
    assert drift.wasserstein([5, 5], [6, 6]) == pytest.approx(1.0)  # std 0: not divided


def test_a_mean_shift_of_one_sd_is_a_significant_psi() -> None:
    reference = profile.feature("x", _normal(5000, 0.0, seed=1))
    same = reference.score(_normal(5000, 0.0, seed=2), "psi")
    shifted = reference.score(_normal(5000, 1.0, seed=3), "psi")
    assert same < 0.02  # a fresh sample of the same distribution
    assert shifted > 0.2  # the usual "significant shift"
    assert shifted > 0.5
    for method in ("jensen_shannon", "ks", "wasserstein"):
        assert reference.score(_normal(5000, 1.0, 3), method) > 3 * reference.score(
            _normal(5000, 0.0, 2), method
        ), method
    # KS of N(0,1) against N(1,1): 2 * Phi(0.5) - 1 = 0.383
    assert reference.score(_normal(5000, 1.0, 3), "ks") == pytest.approx(0.383, abs=0.03)
    assert reference.score(_normal(5000, 1.0, 3), "wasserstein") == pytest.approx(1.0, abs=0.06)


def test_the_reference_data_itself_does_not_drift() -> None:
    values = _normal(1000, 0.0, seed=4)
    reference = profile.feature("x", values)
    assert reference.score(values, "psi") == pytest.approx(0.0, abs=1e-6)
    assert reference.score(values, "jensen_shannon") == pytest.approx(0.0, abs=1e-3)
    assert reference.score(values, "ks") < 0.02


def test_a_categorical_swap() -> None:
    reference = profile.feature("colour", ["red"] * 80 + ["blue"] * 20)
    assert reference.kind == "categorical"
    assert reference.categories == ("blue", "red")
    swapped = ["red"] * 20 + ["blue"] * 80
    # the "other" bin is empty on both sides and adds nothing
    assert reference.score(swapped, "psi") == pytest.approx(1.2 * math.log(4), rel=1e-3)
    assert reference.score(["red"] * 80 + ["blue"] * 20, "psi") == pytest.approx(0.0, abs=1e-9)
    assert reference.score(swapped, "jensen_shannon") > 0.4
    # a category never seen lands in the "other" bin, and drifts
    assert reference.score(["green"] * 100, "jensen_shannon") == pytest.approx(1.0)


def test_numbers_only_methods_refuse_categories() -> None:
    from kfops.errors import KfopsError

    reference = profile.feature("colour", ["red", "blue"])
    with pytest.raises(KfopsError, match="categorical; `ks` compares numbers"):
        reference.score(["red"], "ks")
    numeric = profile.feature("x", [1.0, 2.0])
    with pytest.raises(KfopsError, match='a served value is "a"'):
        numeric.score(["a"], "psi")


def test_discrete_numbers_keep_their_bins() -> None:
    reference = profile.feature("n", [0] * 50 + [1] * 30 + [2] * 20)
    assert reference.edges == (0.0, 1.0, 2.0)
    assert reference.fractions == (0.5, 0.3, 0.2, 0.0)
    assert reference.score([0] * 50 + [1] * 30 + [2] * 20, "psi") == pytest.approx(0.0, abs=1e-9)
    assert reference.score([2] * 100, "psi") > 1


# ------------------------------------------------------------------ properties

_histogram = st.lists(st.floats(0, 100, allow_nan=False), min_size=2, max_size=12).filter(
    lambda h: sum(h) > 1e-3
)


@st.composite
def _pairs(draw: st.DrawFn) -> tuple[list[float], list[float]]:
    first = draw(_histogram)
    second = draw(
        st.lists(
            st.floats(0, 100, allow_nan=False), min_size=len(first), max_size=len(first)
        ).filter(lambda h: sum(h) > 1e-3)
    )
    return first, second


@settings(max_examples=150, deadline=None)
@given(_pairs())
def test_jensen_shannon_is_a_bounded_symmetric_distance(
    pair: tuple[list[float], list[float]],
) -> None:
    p, q = pair
    forward, backward = drift.jensen_shannon(p, q), drift.jensen_shannon(q, p)
    assert forward == pytest.approx(backward, abs=1e-9)
    assert 0.0 <= forward <= 1.0
    assert drift.jensen_shannon(p, p) == pytest.approx(0.0, abs=1e-6)


@settings(max_examples=150, deadline=None)
@given(_pairs())
def test_psi_is_non_negative_symmetric_and_zero_on_identity(
    pair: tuple[list[float], list[float]],
) -> None:
    p, q = pair
    assert drift.psi(p, q) >= -1e-12
    assert drift.psi(p, q) == pytest.approx(drift.psi(q, p), rel=1e-9, abs=1e-12)
    assert drift.psi(p, p) == pytest.approx(0.0, abs=1e-12)


_sample = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=50)


@settings(max_examples=150, deadline=None)
@given(_sample, _sample)
def test_ks_and_wasserstein_properties(a: list[float], b: list[float]) -> None:
    assert drift.ks(a, a) == 0.0
    assert drift.ks(a, b) == pytest.approx(drift.ks(b, a))
    assert 0.0 <= drift.ks(a, b) <= 1.0
    assert drift.wasserstein(a, a) == pytest.approx(0.0, abs=1e-9)
    assert drift.wasserstein(a, b, scale=1.0) == pytest.approx(
        drift.wasserstein(b, a, scale=1.0), rel=1e-9, abs=1e-6
    )
    assert drift.wasserstein(a, b) >= 0.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=200))
def test_a_profile_never_drifts_from_its_own_data(values: list[float]) -> None:
    feature = profile.feature("x", values)
    assert sum(feature.fractions) == pytest.approx(1.0, abs=1e-4)
    assert feature.score(values, "psi") == pytest.approx(0.0, abs=1e-3)


def test_samples_from_rows_of_objects_and_lists() -> None:
    named = from_rows("x", [(1, {"a": 1, "b": "u"}), (2, {"a": 2, "b": "v"})])
    assert named.columns == ("a", "b") and named.named
    assert named.values == {"a": [1, 2], "b": ["u", "v"]}
    positional = from_rows("x", [(1, [1, 2]), (2, [3, 4])], [0, 1])
    assert positional.columns == ("input-0", "input-1") and not positional.named
    assert positional.predictions == [0, 1]


def test_ks_is_scipys_statistic() -> None:
    from scipy.stats import ks_2samp

    a, b = _normal(300, 0.0, 5), _normal(200, 0.3, 6)
    assert drift.ks(a, b) == pytest.approx(ks_2samp(a, b).statistic)


def test_without_numpy_the_message_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from kfops.errors import KfopsError
    from kfops.monitor import drift

    monkeypatch.setitem(sys.modules, "numpy", None)  # as if not installed
    with pytest.raises(KfopsError) as caught:
        drift._numpy()
    assert caught.value.message == "drift statistics need numpy, which is not installed"
    assert caught.value.hint == "install the extra: pip install 'kfops[monitor]'"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=40),
    st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=40),
)
def test_wasserstein_is_scipys_distance(a: list[float], b: list[float]) -> None:
    from scipy.stats import wasserstein_distance

    assert drift.wasserstein(a, b, scale=1.0) == pytest.approx(
        wasserstein_distance(a, b), rel=1e-9, abs=1e-9
    )


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 10), st.floats(0, 10)), min_size=1, max_size=12).filter(
        lambda pairs: sum(p for p, _ in pairs) > 0 and sum(q for _, q in pairs) > 0
    )
)
def test_jensen_shannon_is_scipys_distance(pairs: list[tuple[float, float]]) -> None:
    import math

    from scipy.spatial.distance import jensenshannon

    p, q = [a for a, _ in pairs], [b for _, b in pairs]
    with warnings.catch_warnings():  # scipy's own sqrt of a rounded -1e-17 on equal inputs
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = float(jensenshannon(p, q, base=2))
    expected = 0.0 if math.isnan(expected) else expected
    assert drift.jensen_shannon(p, q) == pytest.approx(expected, abs=1e-7)
