"""kfops run --jobs: a DAG's independent steps side by side, with their own logs,
outputs, cache, and the first failure stopping what has not started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from kfops.cli import cli

pytestmark = pytest.mark.slow

# Two branches after `first`. Each step says when it ran; `slow_*` sleep so that side by
# side they overlap and one after the other they cannot.
PIPELINE = """
from kfp import dsl


@dsl.component
def first() -> float:
    import time

    print("first says hello")
    return time.time()


@dsl.component
def slow(name: str, after: float, fail: bool) -> str:
    import json
    import time

    start = time.time()
    print(f"{name} says hello")
    if fail:
        raise RuntimeError(f"{name} failed on purpose")
    time.sleep(1.5)
    return json.dumps([start, time.time()])


@dsl.component
def join(a: str, b: str) -> str:
    print("join says hello")
    return a + b


@dsl.pipeline(name="branches")
def branches(fail_left: bool = False):
    start = first()
    left = slow(name="left", after=start.output, fail=fail_left)
    right = slow(name="right", after=start.output, fail=False)
    after_left = join(a=left.output, b=left.output)
    join(a=after_left.output, b=right.output)
"""


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    (project / "branches.py").write_text(PIPELINE, encoding="utf-8")
    (project / "mlops.yaml").write_text(
        "version: 1\nname: branches\npipeline:\n  python: branches.py:branches\n"
    )
    return project


def _run(project: Path, runs: Path, *args: str) -> tuple[int, str, dict[str, Any]]:
    before = set(runs.glob("*/result.json"))
    result = CliRunner().invoke(cli, ["run", str(project), "--runs-dir", str(runs), *args])
    [new] = sorted(set(runs.glob("*/result.json")) - before)
    return result.exit_code, result.output, json.loads(new.read_text())


def _interval(result: dict[str, Any], step: str) -> tuple[float, float]:
    start, end = json.loads(result["steps"][step]["outputs"]["Output"])
    return start, end


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_independent_steps_overlap_only_with_jobs(tmp_path: Path, jobs: str) -> None:
    project = _project(tmp_path)
    code, out, result = _run(project, tmp_path / "runs", "--no-cache", "--jobs", jobs)
    assert code == 0, out
    assert result["succeeded"] is True
    steps = result["steps"]
    assert set(steps) == {"first", "slow", "slow-2", "join", "join-2"}
    (left_start, left_end), (right_start, right_end) = (
        _interval(result, "slow"),
        _interval(result, "slow-2"),
    )
    overlap = min(left_end, right_end) - max(left_start, right_start)
    if jobs == "2":
        assert overlap > 0.5, (left_start, left_end, right_start, right_end)
    else:
        assert overlap < 0
    # each step's log has its own output only, whatever ran beside it
    [run] = [p for p in (tmp_path / "runs").iterdir() if p.name != ".cache"]
    for step, said in (("slow", "left"), ("slow-2", "right"), ("first", "first")):
        log = (run / "logs" / f"{step}.log").read_text()
        assert f"{said} says hello" in log
        others = {"left", "right", "first", "join"} - {said}
        assert not any(f"{other} says hello" in log for other in others), log
    assert result["outputs"] == {}
    join_output = result["steps"]["join-2"]["outputs"]["Output"]
    assert join_output.endswith(steps["slow-2"]["outputs"]["Output"])


def test_the_first_failure_stops_new_steps_and_running_ones_finish(tmp_path: Path) -> None:
    project = _project(tmp_path)
    code, out, result = _run(
        project, tmp_path / "runs", "--no-cache", "-j", "2", "-p", "fail_left=true"
    )
    assert code == 1, out
    assert result["succeeded"] is False
    steps = result["steps"]
    assert steps["slow"]["status"] == "FAILURE"
    # `right` was running beside it: it finished, and its result is kept
    assert steps["slow-2"]["status"] == "SUCCESS"
    assert "join" not in steps and "join-2" not in steps
    assert "FAILED  slow" in out
    assert "left failed on purpose" in out
    assert "not run (after the failure): join, join-2" in out


def test_a_parallel_rerun_is_served_from_the_cache(tmp_path: Path) -> None:
    project = _project(tmp_path)
    code, out, first = _run(project, tmp_path / "runs", "-j", "2")
    assert code == 0, out
    code, out, again = _run(project, tmp_path / "runs", "-j", "2")
    assert code == 0, out
    assert all(step["cached"] for step in again["steps"].values()), again["steps"]
    assert again["steps"]["join-2"]["outputs"] == first["steps"]["join-2"]["outputs"]


def test_jobs_is_for_local_runs(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["run", str(tmp_path), "--env", "prod", "--jobs", "2"])
    assert result.exit_code == 2
    assert "--jobs is for local runs" in result.output


WAITS = """
from kfp import dsl


@dsl.component
def waits(folder: str, name: str):
    import os
    import time

    with open(os.path.join(folder, name), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(120)


@dsl.pipeline(name="waiting")
def waiting(folder: str):
    waits(folder=folder, name="a")
    waits(folder=folder, name="b")
"""


def test_ctrl_c_stops_steps_running_side_by_side(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "waiting.py").write_text(WAITS, encoding="utf-8")
    (project / "mlops.yaml").write_text(
        "version: 1\nname: waiting\npipeline:\n  python: waiting.py:waiting\n"
    )
    folder = tmp_path / "shared"
    folder.mkdir()
    kfops = Path(sys.executable).parent / "kfops"
    command = [str(kfops), "run", str(project), "--runs-dir", str(tmp_path / "runs")]
    process = subprocess.Popen(
        [*command, "--no-cache", "-j", "2", "-p", f"folder={folder}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a process group of its own, as a terminal gives
    )
    deadline = time.monotonic() + 120
    pids = [folder / "a", folder / "b"]
    while not all(p.exists() and p.read_text() for p in pids):
        assert time.monotonic() < deadline and process.poll() is None, "the steps never started"
        time.sleep(0.05)
    steps = [int(p.read_text()) for p in pids]
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 130, out
    assert b"interrupted" in out
    for step in steps:
        with pytest.raises(ProcessLookupError):
            for _ in range(200):  # the step is gone once its parent has reaped it
                os.kill(step, 0)
                time.sleep(0.05)
