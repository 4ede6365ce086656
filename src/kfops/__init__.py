"""kfops: GitOps CI/CD for machine learning on Kubeflow.

The package imports nothing heavy: ``kfops.predict`` (a served model's predictions, for
notebooks) is loaded on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "predict": "kfops.serving.api",
    "Rows": "kfops.serving.predict",
    "Prediction": "kfops.serving.predict",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kfops' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
