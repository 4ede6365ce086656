"""How notebook steps hand values on: the save and load helpers that kfops writes into
every generated component, run here directly on each kind of value."""

from __future__ import annotations

import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from kfops.notebook import codegen


def _helpers() -> dict[str, Any]:
    scope: dict[str, Any] = {}
    exec(textwrap.dedent(codegen._RUNTIME), scope)
    return scope


def _round_trip(tmp_path: Path, value: Any) -> tuple[str, Any]:
    helpers = _helpers()
    artifact = SimpleNamespace(path=str(tmp_path / "value"), metadata={})
    helpers["_kfops_save"]("value", value, artifact)
    return artifact.metadata["kfops_format"], helpers["_kfops_load"](artifact)


@pytest.mark.parametrize(
    ("value", "fmt"),
    [(None, "json"), (3, "json"), ("ok", "json"), ({"k": (1, 2)}, "pickle")],
)
def test_plain_values(tmp_path: Path, value: Any, fmt: str) -> None:
    assert _round_trip(tmp_path, value) == (fmt, value)


def test_arrays_without_pickle_and_object_arrays_with_it(tmp_path: Path) -> None:
    fmt, loaded = _round_trip(tmp_path, np.arange(4.0))
    assert fmt == "npy" and loaded.tolist() == [0.0, 1.0, 2.0, 3.0]
    fmt, loaded = _round_trip(tmp_path, np.array([{"a": 1}, None], dtype=object))
    assert fmt == "pickle" and loaded.tolist() == [{"a": 1}, None]


def test_dataframe_with_object_columns_keeps_dtypes_and_index(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"mixed": [{"k": 1}, None, "text"], "n": [1, 2, 3]}, index=["x", "y", "z"]
    ).astype({"n": "int32"})
    fmt, loaded = _round_trip(tmp_path, frame)
    assert fmt == "pandas"
    pd.testing.assert_frame_equal(loaded, frame)
    assert loaded["mixed"].dtype == object


def test_scikit_learn_model_with_joblib(tmp_path: Path) -> None:
    from sklearn.linear_model import LinearRegression

    model = LinearRegression().fit([[0.0], [1.0]], [0.0, 2.0])
    fmt, loaded = _round_trip(tmp_path, model)
    assert fmt == "joblib" and loaded.predict([[2.0]]).tolist() == pytest.approx([4.0])


def test_xgboost_dmatrix_with_save_binary(tmp_path: Path) -> None:
    xgboost = pytest.importorskip("xgboost")
    matrix = xgboost.DMatrix(np.arange(6.0).reshape(3, 2), label=[0.0, 1.0, 0.0])
    fmt, loaded = _round_trip(tmp_path, matrix)
    assert fmt == "xgboost-dmatrix"
    assert (loaded.num_row(), loaded.num_col()) == (3, 2)
    assert loaded.get_label().tolist() == [0.0, 1.0, 0.0]


def test_xgboost_booster_with_joblib(tmp_path: Path) -> None:
    xgboost = pytest.importorskip("xgboost")
    data = xgboost.DMatrix(np.arange(6.0).reshape(3, 2), label=[0.0, 1.0, 0.0])
    booster = xgboost.train({"max_depth": 1}, data, num_boost_round=2)
    fmt, loaded = _round_trip(tmp_path, booster)
    assert fmt == "joblib"
    assert loaded.predict(data).tolist() == booster.predict(data).tolist()


def test_torch_module_with_torch_save(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    module = torch.nn.Linear(2, 1)
    fmt, loaded = _round_trip(tmp_path, module)
    assert fmt == "torch" and isinstance(loaded, torch.nn.Linear)
    assert torch.equal(loaded.weight, module.weight)


def test_keras_model_as_a_keras_file(tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    fmt, loaded = _round_trip(tmp_path, model)
    assert fmt == "keras"
    assert [w.tolist() for w in loaded.get_weights()] == [w.tolist() for w in model.get_weights()]
