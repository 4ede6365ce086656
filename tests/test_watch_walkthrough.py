"""The README's "Watch a model" walkthrough, as a user runs it: scripts/watch-demo.sh in a
fresh clone of this repository (its committed files only), with the local model server
and the GitHub API test server. A breach becomes one issue and one dispatch, and
`kfops retrain` opens the pull request that moves serving.model.run."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_the_walkthrough_from_a_clean_clone(tmp_path: Path) -> None:
    clone = tmp_path / "kfops"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    # the clone shares this checkout's venv and npm packages (the test command made them)
    (clone / "tests" / "npm" / "node_modules").symlink_to(ROOT / "tests" / "npm" / "node_modules")
    env = {
        **os.environ,
        "KFOPS_VENV": str(ROOT / ".venv"),
        "PORT": str(_free_port()),
        "PYTHONPATH": str(clone),
    }
    for name in ("GITHUB_TOKEN", "GITHUB_REPOSITORY", "GITHUB_API_URL", "KFOPS_MONITOR_STATE"):
        env.pop(name, None)
    done = subprocess.run(
        ["bash", "scripts/watch-demo.sh"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-5000:]
    assert "iris in local: ok: 120 served inputs" in out
    assert out.count("iris in local: breach: 120 served inputs") == 3
    assert "breaching run 1 of 3: 2 more in a row make a breach" in out
    assert re.search(r"opened issue #1: http://127\.0\.0\.1:\d+/acme/iris/issues/1", out)
    assert "issue #1 [open] kfops monitor: iris in local needs attention" in out
    assert "dispatched kfops-retrain.yml on main for breach" in out
    assert re.search(r"pull request #\d+ \[open\] kfops retrain", out), out[-3000:]
    assert "kfops/retrain/local-" in out
    # nothing was left behind in the clone but kfops' own, git-ignored folder
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True, check=True
    )
    assert status.stdout.splitlines() == ["?? tests/npm/node_modules"]  # our symlink
