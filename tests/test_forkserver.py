"""The fork server: steps started as forks behave as processes of their own, and the
cases where forking is not safe fall back to kfp.local's subprocess."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from kfops.cli import cli
from kfops.pipeline import _forkserver
from tests.conftest import DATA

PIPELINES = DATA / "pipelines"
SCRIPT = (
    'program_path=$(mktemp -d)\n\nprintf "%s" "$0" > "$program_path/ephemeral_component.py"\n'
    "_KFP_RUNTIME=true {python} -m kfp.dsl.executor_main --component_module_path"
    ' "$program_path/ephemeral_component.py" "$@"\n'
)


def _command(prologue: str = '\n"$0" "$@"\n', python: str = sys.executable) -> list[str]:
    return [
        "sh",
        "-c",
        prologue,
        "sh",
        "-ec",
        SCRIPT.format(python=python),
        "def f(): pass",
        "--executor_input",
        "{}",
        "--function_to_execute",
        "f",
    ]


def test_a_lightweight_component_is_recognised() -> None:
    assert _forkserver.lightweight_call(_command()) == [
        "def f(): pass",
        "--executor_input",
        "{}",
        "--function_to_execute",
        "f",
    ]


@pytest.mark.parametrize(
    "command",
    [
        ["echo", "hi"],  # a container component
        _command(prologue='\npython3 -m pip install --quiet \'missing==1\' && "$0" "$@"\n'),
        _command(python="/usr/bin/python3.9"),  # another interpreter
    ],
    ids=["container", "pip-install-left", "other-interpreter"],
)
def test_what_cannot_be_forked_is_not(command: list[str]) -> None:
    assert _forkserver.lightweight_call(command) is None


def test_preload_takes_installed_modules_from_components_and_cells(tmp_path: Path) -> None:
    (tmp_path / "helpers.py").write_text("")
    source = (
        "import json\nfrom kfp import dsl\n\n"
        "def step():\n    import numpy as np\n    import helpers\n\n"
        "    def lazy():\n        import sklearn\n\n"
        '    exec(compile("import pandas as pd\\nx = 1", "cell", "exec"), {})\n'
    )
    sys.path.insert(0, str(tmp_path))
    try:
        found = _forkserver.preload_modules([source])
    finally:
        sys.path.remove(str(tmp_path))
    assert found == ["json", "kfp", "numpy", "pandas"]  # not the project's `helpers`


def test_a_server_that_died_hands_the_step_back(tmp_path: Path) -> None:
    server = _forkserver.ForkServer.start([], tmp_path)
    assert server is not None
    server.process.kill()
    server.process.wait()
    lines: list[str] = []
    assert server.run(["def f(): pass"], str(tmp_path), dict(os.environ), lines.append) is None
    server.stop()


def _run(project: Path, runs: Path, *args: str) -> tuple[int, str, dict[str, Any]]:
    result = CliRunner().invoke(cli, ["run", str(project), "--runs-dir", str(runs), *args])
    found = sorted(runs.glob("*/result.json"))
    return result.exit_code, result.output, json.loads(found[-1].read_text()) if found else {}


def _project(tmp_path: Path, function: str) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(PIPELINES / "forks.py", project)
    (project / "mlops.yaml").write_text(
        f"version: 1\nname: forks\npipeline:\n  python: forks.py:{function}\n"
    )
    return project


@pytest.mark.slow
def test_forked_steps_are_isolated_and_keep_their_output(tmp_path: Path) -> None:
    project = _project(tmp_path, "probes")
    folder = tmp_path / "shared"
    folder.mkdir()
    code, out, result = _run(project, tmp_path / "runs", "--no-cache", "-p", f"folder={folder}")
    assert code == 0, out
    runners = {name: step["runner"] for name, step in result["steps"].items()}
    # a task with its own environment runs apart: a module may read it at import time
    assert runners == {"mutate": "fork", "check": "fork", "with-env": "subprocess"}
    assert result["steps"]["with-env"]["outputs"] == {"Output": "debug"}
    run_dir = next(p for p in (tmp_path / "runs").iterdir() if p.name != ".cache")
    assert (run_dir / "logs" / "mutate.log").read_text().startswith("mutated ")
    assert (run_dir / "logs" / "check.log").read_text() == "checked\n"


@pytest.mark.slow
@pytest.mark.parametrize(("code", "status"), [(0, "SUCCESS"), (3, "FAILURE"), (-9, "FAILURE")])
def test_forked_steps_exit_codes_and_signals(tmp_path: Path, code: int, status: str) -> None:
    project = _project(tmp_path, "stops")
    exit_code, out, result = _run(project, tmp_path / "runs", "--no-cache", "-p", f"code={code}")
    assert exit_code == (0 if status == "SUCCESS" else 1), out
    assert result["steps"]["exits"]["status"] == status
    assert result["steps"]["exits"]["runner"] == "fork"
    run_dir = next(p for p in (tmp_path / "runs").iterdir() if p.name != ".cache")
    assert (run_dir / "logs" / "exits.log").read_text().startswith("about to stop\n")


@pytest.mark.slow
def test_without_forks_every_step_is_a_subprocess(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("KFOPS_LOCAL_FORK", "0")
    project = _project(tmp_path, "stops")
    code, out, result = _run(project, tmp_path / "runs", "--no-cache", "-p", "code=0")
    assert code == 0, out
    assert result["steps"]["exits"]["runner"] == "subprocess"


@pytest.mark.slow
def test_ctrl_c_stops_a_forked_step(tmp_path: Path) -> None:
    project = _project(tmp_path, "interrupted")
    folder = tmp_path / "shared"
    folder.mkdir()
    kfops = Path(sys.executable).parent / "kfops"
    command = [str(kfops), "run", str(project), "--runs-dir", str(tmp_path / "runs")]
    process = subprocess.Popen(
        [*command, "--no-cache", "-p", f"folder={folder}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a process group of its own, as a terminal gives
    )
    pid_file = folder / "pid"
    deadline = time.monotonic() + 120
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline and process.poll() is None, "the step never started"
        time.sleep(0.05)
    step = int(pid_file.read_text())
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 130, out
    with pytest.raises(ProcessLookupError):
        for _ in range(200):  # the step is gone once its parent has reaped it
            os.kill(step, 0)
            time.sleep(0.05)


CORPUS = sorted((DATA / "notebooks" / "corpus").glob("*.ipynb"))


@pytest.mark.parametrize(
    "notebook",
    [DATA.parent.parent / "pipelines" / "wine-notebook" / "train.ipynb", *CORPUS],
    ids=lambda p: p.stem,
)
def test_the_early_fork_server_imports_what_the_workers_would(notebook: Path) -> None:
    """`kfops run --no-cache` launches the fork server before compiling, from the
    generated module; the worker adopts it only when it imports the same modules as the
    server it would start from the IR, so this must hold for it to be of use."""
    from kfops.pipeline import _worker, compiler, local
    from kfops.project import config

    project = config.load(notebook)
    early = local.early_modules(project)
    ir = compiler.compile_project(project).ir
    assert early == _forkserver.preload_modules(_worker._sources(ir))


@pytest.mark.slow
def test_a_cold_notebook_run_forks_from_the_early_server(tmp_path: Path) -> None:
    notebook = tmp_path / "nb" / "two.ipynb"
    notebook.parent.mkdir()
    cells = [
        {
            "cell_type": "code",
            "source": s,
            "metadata": {"tags": t},
            "outputs": [],
            "execution_count": None,
        }
        for s, t in (
            ("import json", ["imports"]),
            ("x = json.dumps([1])", ["step:make"]),
            ("y = json.loads(x)\nprint(y)", ["step:use", "prev:make"]),
        )
    ]
    notebook.write_text(
        json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    )
    code, out, result = _run(notebook, tmp_path / "runs", "--no-cache")
    assert code == 0, out
    assert {s["runner"] for s in result["steps"].values()} == {"fork"}
    run_dir = next(p for p in (tmp_path / "runs").iterdir() if p.name != ".cache")
    assert (run_dir / "logs" / "use.log").read_text() == "[1]\n"


def test_the_worker_adopts_an_early_server_only_with_the_same_modules(tmp_path: Path) -> None:
    from kfops.pipeline import _worker

    process = _forkserver.ForkServer.launch(["json"], tmp_path)
    assert process is not None and process.stdout is not None
    server = _forkserver.ForkServer(process, _forkserver.socket_path(tmp_path))
    early = {"socket": str(server.path), "fd": process.stdout.fileno(), "modules": ["json"]}
    try:
        assert _worker._Forks(["json", "pickle"], early).early is None
        forks = _worker._Forks(["json"], {**early, "fd": os.dup(early["fd"])})
        adopted = forks.get()
        assert adopted is not None and adopted.process is None  # not the worker's own
        assert forks.folder is None
        forks.stop()  # leaves the early server to the process that launched it
        assert process.poll() is None
    finally:
        server.stop()
    assert process.poll() is not None


@pytest.mark.slow
@pytest.mark.parametrize("fork", ["1", "0"])
def test_steps_read_end_of_file_whatever_kfops_stdin_holds(tmp_path: Path, fork: str) -> None:
    """A CI runner's stdin may be a pipe with data in it: neither a forked step nor a
    subprocess step may read it."""
    project = _project(tmp_path, "probes")
    folder = tmp_path / "shared"
    folder.mkdir()
    runs = str(tmp_path / "runs")
    done = subprocess.run(
        [
            *(sys.executable, "-m", "kfops", "run", str(project)),
            "--runs-dir",
            runs,
            "--no-cache",
            "-p",
            f"folder={folder}",
        ],
        input="data a step must not see\n",
        capture_output=True,
        text=True,
        env={**os.environ, "KFOPS_LOCAL_FORK": fork},
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
