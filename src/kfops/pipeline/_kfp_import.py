"""Import the kfp package without its API client.

``kfp/__init__.py`` imports ``kfp.client`` and, through it, the Kubernetes client and
requests: about half a second, half of kfp's import time, which compiling and running
locally never use. kfp skips that import when ``_KFP_RUNTIME=true`` (the variable its
containers set; see kubeflow/pipelines#12090 on the same variable), so kfops sets it
for the package's own import only, then imports ``kfp.dsl`` and the rest as usual.
``kfp.Client`` still works: it is imported on first use.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType


def import_kfp() -> ModuleType:
    """The kfp package, imported (once) without ``kfp.client``."""
    if "kfp" in sys.modules:
        return sys.modules["kfp"]
    previous = os.environ.get("_KFP_RUNTIME")
    os.environ["_KFP_RUNTIME"] = "true"
    try:
        import kfp
    finally:
        if previous is None:
            os.environ.pop("_KFP_RUNTIME", None)
        else:
            os.environ["_KFP_RUNTIME"] = previous

    def __getattr__(name: str) -> object:
        # what kfp/__init__.py would have imported: `kfp.Client`, `kfp.components`, ...
        if name == "Client":
            return importlib.import_module("kfp.client").Client
        try:
            return importlib.import_module(f"kfp.{name}")
        except ModuleNotFoundError:
            raise AttributeError(f"module 'kfp' has no attribute {name!r}") from None

    kfp.__getattr__ = __getattr__
    importlib.import_module("kfp.dsl")  # and `from kfp import dsl` works as before
    return sys.modules["kfp"]
