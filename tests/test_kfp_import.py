"""Compiling imports kfp without its API client (and the Kubernetes client behind it),
and `kfp.Client` still works for code that wants it."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
from kfops.pipeline import compiler
assert "kfp.dsl" in sys.modules and "kfp.compiler" in sys.modules
assert "kfp.client" not in sys.modules and "kubernetes" not in sys.modules, "client imported"
import kfp
from kfp import Client, components, dsl
assert Client is kfp.Client and Client.__module__ == "kfp.client.client"
assert dsl.component and components.load_component_from_text
import os
assert "_KFP_RUNTIME" not in os.environ
print("ok")
"""


def test_compiler_imports_kfp_without_its_client() -> None:
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n"
