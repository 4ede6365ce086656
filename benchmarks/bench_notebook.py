"""How do `kfops compile` and `kfops run` on a notebook compare with Kale and Jupyter?

Run from the repository root with the project's virtual environment:

    .venv/bin/python benchmarks/bench_notebook.py [--compile-repeat N] [--run-repeat N]

It prints figures only (no asserts). Every measurement is a fresh subprocess timed
from outside, on two notebooks: the example project's (the first pipelines/*/*.ipynb,
or a generated 5-step one if there is none) and a generated one of 50 steps.

1. `kfops compile NB -o FILE` against Kale's own conversion, `kale --nb NB
   --output_path DIR` (notebook -> KFP DSL script -> compiled IR YAML), from Kale in a
   virtual environment of its own (created on first use; --kale-venv).
2. `kfops run NB --no-cache` against executing the notebook with `jupyter nbconvert
   --to notebook --execute`, from a second virtual environment (--nb-venv) whose
   kernel has the notebook's libraries, pinned to the versions kfops runs with.
3. Where `kfops run`'s time goes: per-step seconds from RUNS_DIR/RUN_ID/result.json and
   each step's phases from the timestamps in run.log.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import nbformat
import yaml
from bench_validate_run import PHASES, BenchError, Timing, log, secs, step_phases

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
KFOPS = str(Path(sys.executable).parent / "kfops")
DEFAULT_KALE_VENV = REPO / "benchmarks" / ".kale-venv"
DEFAULT_NB_VENV = REPO / "benchmarks" / ".nb-venv"
KALE_PACKAGE = "kubeflow-kale==2.3.0"
KERNEL = "kfops-bench"
# The kernel's libraries: those the notebooks import, at the versions kfops runs with
# (matplotlib: the example notebook's `%matplotlib inline` and its `skip` cell).
PINNED = ("numpy", "pandas", "scikit-learn")
KERNEL_EXTRAS = ("matplotlib",)
BASE_IMAGE = "python:3.11-slim"
KFOPS_PIPELINE_IR = "kfops.yaml"
KALE_OUT = "kale-out"
SETUP_TIMEOUT = 1200


@dataclass
class Subject:
    """One benchmark notebook: `run_nb` is run by both sides, `kale_nb` (the same in
    Kale 2.x form) is compiled by both sides."""

    key: str
    title: str
    run_nb: Path
    kale_nb: Path
    steps: int
    changes: list[str] = field(default_factory=list)

    @property
    def heading(self) -> str:
        return self.title if "steps" in self.title else f"{self.title} ({self.steps} steps)"


@dataclass
class Env:
    """An auxiliary virtual environment, or why it is missing."""

    path: Path
    ok: bool = False
    note: str = ""
    versions: dict[str, str] = field(default_factory=dict)

    def bin(self, name: str) -> str:
        return str(self.path / "bin" / name)


def run_command(
    argv: Sequence[str],
    cwd: Path = REPO,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run `argv`; return its wall time and the finished process, or raise BenchError
    with the tail of its output."""
    started = time.perf_counter()
    try:
        process = subprocess.run(
            argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{shlex.join(argv)} took over {timeout:.0f} s") from exc
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        output = (process.stdout + process.stderr).strip()[-3000:]
        raise BenchError(f"{shlex.join(argv)} exited {process.returncode}:\n{output}")
    return elapsed, process


# --- the auxiliary virtual environments -------------------------------------------------


def ensure_venv(env: Env, packages: list[str], probe: list[str], what: str) -> None:
    """Reuse `env` if its python passes `probe` (arguments to it); else create it and
    pip-install `packages`. Sets env.ok, or env.note with the reason."""
    python = env.bin("python")
    probe_argv = [python, *probe]

    def probe_ok() -> bool:
        if not Path(python).exists():
            return False
        try:
            run_command(probe_argv, timeout=120)
        except BenchError:
            return False
        return True

    if probe_ok():
        env.ok = True
        return
    log(f"      setting up {what} in {env.path} (one-off, a minute or two)")
    try:
        if not Path(python).exists():
            run_command([PYTHON, "-m", "venv", str(env.path)], timeout=SETUP_TIMEOUT)
        run_command(
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *packages],
            timeout=SETUP_TIMEOUT,
        )
        run_command(probe_argv, timeout=120)
    except BenchError as exc:
        lines = [ln for ln in str(exc).splitlines() if "is ignored: it is neither" not in ln]
        env.note = f"could not set up {what} in {env.path}: " + "\n".join(lines[-12:])
        return
    env.ok = True


def venv_versions(env: Env, dists: Sequence[str]) -> dict[str, str]:
    code = (
        "import json, sys\nfrom importlib.metadata import version\n"
        f"print(json.dumps({{d: version(d) for d in {list(dists)!r}}}))"
    )
    _, process = run_command([env.bin("python"), "-c", code])
    found: dict[str, str] = json.loads(process.stdout)
    return found


def setup_kale(path: Path, package: str) -> Env:
    env = Env(path)
    ensure_venv(env, [package], ["-m", "kale.cli", "--help"], f"Kale ({package})")
    if env.ok:
        env.versions = venv_versions(env, ["kubeflow-kale", "kfp"])
    return env


def pinned_versions() -> dict[str, str]:
    """The versions of PINNED that kfops's own environment (the steps') has."""
    found = {}
    for dist in PINNED:
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            found[dist] = ""
    return found


def setup_nbconvert(path: Path) -> Env:
    env = Env(path)
    pins = pinned_versions()
    packages = [
        "nbconvert",
        "ipykernel",
        *[f"{dist}=={v}" if v else dist for dist, v in pins.items()],
        *KERNEL_EXTRAS,
    ]
    # Also checks the pinned versions, so a changed .venv re-pins the kernel's.
    check = "; ".join(
        f"assert version({dist!r}) == {v!r}, {dist!r}" for dist, v in pins.items() if v
    )
    modules = "nbconvert, ipykernel, numpy, pandas, sklearn, matplotlib"
    probe = ["-c", f"import {modules}\nfrom importlib.metadata import version\n{check}"]
    ensure_venv(env, packages, probe, "nbconvert and a kernel")
    if not env.ok:
        return env
    try:  # the kernel the benchmark names, in the venv itself (idempotent)
        run_command(
            [env.bin("python"), "-m", "ipykernel", "install", "--sys-prefix", "--name", KERNEL],
            timeout=120,
        )
        env.versions = venv_versions(env, ["nbconvert", "ipykernel", *pins, *KERNEL_EXTRAS])
    except BenchError as exc:
        env.ok, env.note = False, f"could not install the {KERNEL} kernel: {exc}"
    return env


# --- the notebooks ----------------------------------------------------------------------


def code_cell(source: str, *tags: str) -> Any:
    cell = nbformat.v4.new_code_cell(source)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def dag(n_steps: int) -> list[list[int]]:
    """Each step's parents: blocks of five, a -> (b, c) -> d -> e, the blocks chained."""
    parents: list[list[int]] = []
    for i in range(n_steps):
        position = i % 5
        if i == 0:
            parents.append([])
        elif position == 2:
            parents.append([i - 2])  # fan-out: b and c both follow a
        elif position == 3:
            parents.append([i - 2, i - 1])  # fan-in: d follows b and c
        else:
            parents.append([i - 1])
    return parents


def generated_notebook(n_steps: int, name: str) -> Any:
    """A Kale 2.x notebook (`step:` tags, `base_image`, `print(...)` metrics) of
    `n_steps` steps, each passing a small numpy array (and, at the end of each block of
    five, a float) to the next."""
    width = len(str(n_steps - 1))

    def step(i: int) -> str:
        return f"step_{i:0{width}d}"

    def var(prefix: str, i: int) -> str:
        return f"{prefix}_{i:0{width}d}"

    cells = [
        nbformat.v4.new_markdown_cell(
            f"# {n_steps} steps\nGenerated by benchmarks/bench_notebook.py: blocks of"
            " five steps (one, a fan-out to two, a fan-in, one), chained."
        ),
        code_cell("import numpy as np", "imports"),
        code_cell(
            "def bump(values, scale, offset):\n"
            '    """Scale and shift, rounded so that runs compare equal."""\n'
            "    return np.round(values * scale + offset, 6)\n\n\n"
            "def combine(left, right):\n"
            "    return np.round((left + right) / 2, 6)",
            "functions",
        ),
        code_cell(
            'SEED = 7\nSIZE = 16\nSCALE = 0.99\nOFFSET = 0.5\nLABEL = "bench"',
            "pipeline-parameters",
        ),
    ]
    for i, parents in enumerate(dag(n_steps)):
        prev = [f"prev:{step(p)}" for p in parents]
        v = var("v", i)
        if not parents:
            source = f"{v} = np.random.default_rng(SEED).random(SIZE)"
        elif len(parents) == 2:
            source = f"{v} = combine({var('v', parents[0])}, {var('v', parents[1])})"
        elif parents[0] % 5 == 4:  # the parent closed a block: it passes a float too
            p = parents[0]
            source = f"{v} = bump({var('v', p)}, SCALE, {var('m', p)} / SIZE)"
        else:
            source = f"{v} = bump({var('v', parents[0])}, SCALE, OFFSET)"
        cells.append(code_cell(source, f"step:{step(i)}", *prev))
        if i % 5 == 4:  # an untagged cell continues the step above it
            m = var("m", i)
            cells.append(code_cell(f"{m} = float({v}.mean())\nprint(LABEL, {i}, round({m}, 4))"))
        if i == n_steps - 1:
            cells.append(code_cell(f"result = float({v}.sum())\nspread = float({v}.std())"))
    cells.append(code_cell("print(result)\nprint(spread)", "pipeline-metrics"))
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {
        "display_name": "Python 3",
        "language": "python",
        "name": "python3",
    }
    notebook.metadata["kubeflow_notebook"] = {
        "pipeline_name": name,
        "experiment_name": "bench",
        "base_image": BASE_IMAGE,
        "enable_caching": False,
    }
    return notebook


def kale_form(notebook: Any) -> tuple[Any, list[str]]:
    """A copy that Kale 2.3 accepts, and what changed: `block:` -> `step:` tags,
    `docker_image` -> `base_image`, bare names in the pipeline-metrics cell ->
    `print(name)`, IPython magics and shell escapes commented out (Kale 2.3 fails on
    them with a SyntaxError)."""
    copy = nbformat.from_dict(json.loads(json.dumps(notebook)))
    changes: set[str] = set()
    kale = copy.metadata.get("kubeflow_notebook") or {}
    if "docker_image" in kale:
        kale.setdefault("base_image", kale.pop("docker_image"))
        changes.add("docker_image -> base_image")
    for cell in copy.cells:
        if cell.cell_type != "code":
            continue
        tags = cell.metadata.get("tags") or []
        if any(t.startswith("block:") for t in tags):
            cell.metadata["tags"] = ["step:" + t[6:] if t.startswith("block:") else t for t in tags]
            changes.add("block: -> step: tags")
        lines = cell.source.splitlines()
        if "pipeline-metrics" in tags:
            names = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
            if any(not n.startswith("print(") for n in names):
                cell.source = "\n".join(
                    n if n.startswith("print(") else f"print({n})" for n in names
                )
                changes.add("bare metric names -> print(name)")
            continue
        commented = [
            f"# {ln}" if ln.lstrip().startswith(("%", "!")) else ln
            for ln in cell.source.splitlines()
        ]
        if commented != lines:
            cell.source = "\n".join(commented)
            changes.add("magics and shell escapes commented out")
    return copy, sorted(changes)


def count_steps(notebook: Any) -> int:
    names = {
        tag.split(":", 1)[1]
        for cell in notebook.cells
        for tag in cell.metadata.get("tags") or []
        if tag.startswith(("step:", "block:"))
    }
    return len(names)


def example_notebook() -> Path | None:
    found = [
        p for p in sorted(REPO.glob("pipelines/*/*.ipynb")) if ".ipynb_checkpoints" not in p.parts
    ]
    return found[0] if found else None


def prepare(work: Path, n_steps: int) -> list[Subject]:
    """Both notebooks under `work`, each in a folder of its own with its kale-form copy."""
    subjects = []
    example = example_notebook()
    if example is not None:
        folder = work / "example"
        # The notebook's folder (its data files), without the project's mlops.yaml,
        # whose settings would override the notebook's for kfops but not for Jupyter.
        shutil.copytree(
            example.parent,
            folder,
            ignore=shutil.ignore_patterns(".kfops", "mlops.yaml", ".ipynb_checkpoints", "*.pyc"),
        )
        run_nb = folder / example.name
        notebook = nbformat.read(run_nb, as_version=4)
        title = str(example.relative_to(REPO))
    else:
        folder = work / "small"
        folder.mkdir()
        run_nb = folder / "small.ipynb"
        notebook = generated_notebook(5, "bench-5-steps")
        nbformat.write(notebook, run_nb)
        title = "generated, 5 steps (no pipelines/*/*.ipynb)"
    converted, changes = kale_form(notebook)
    kale_nb = run_nb
    if changes:
        kale_nb = folder / (run_nb.stem + ".kale.ipynb")
        nbformat.write(converted, kale_nb)
    subjects.append(Subject("example", title, run_nb, kale_nb, count_steps(notebook), changes))

    folder = work / "large"
    folder.mkdir()
    large = folder / f"steps{n_steps}.ipynb"
    nbformat.write(generated_notebook(n_steps, f"bench-{n_steps}-steps"), large)
    subjects.append(Subject("large", f"generated, {n_steps} steps", large, large, n_steps))
    return subjects


# --- measuring ---------------------------------------------------------------------------


@dataclass
class Measure:
    """A command timed in rounds; a failure stops it and keeps the error."""

    label: str
    argv: list[str]
    cwd: Path = REPO
    env: dict[str, str] | None = None
    timing: Timing = field(init=False)
    error: str = ""

    def __post_init__(self) -> None:
        self.timing = Timing(self.label)

    @property
    def ok(self) -> bool:
        return not self.error and bool(self.timing.samples)

    def once(self, record: bool = True) -> subprocess.CompletedProcess[str] | None:
        if self.error:
            return None
        try:
            seconds, process = run_command(self.argv, self.cwd, self.env)
        except BenchError as exc:
            self.error = str(exc)
            return None
        if record:
            self.timing.samples.append(seconds)
        return process


def kale_env() -> dict[str, str]:
    """Kale asks the Kubernetes API for the notebook server's pod when HOSTNAME is set
    (to find PodDefaults); leave it unset so that the conversion stays offline."""
    env = dict(os.environ)
    env.pop("HOSTNAME", None)
    return env


def ir_summary(path: Path) -> str:
    """'N tasks, S kB' of a compiled pipeline (its first YAML document)."""
    try:
        document = next(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        tasks = len(document["root"]["dag"]["tasks"])
    except (OSError, StopIteration, KeyError, TypeError, yaml.YAMLError) as exc:
        return f"unreadable ({exc.__class__.__name__})"
    return f"{tasks} tasks, {path.stat().st_size / 1000:.0f} kB"


def bench_compile(subjects: list[Subject], kale: Env, repeat: int) -> dict[str, Any]:
    log(f"[1/2] kfops compile vs kale --nb ({repeat} runs each)")
    measures: dict[tuple[str, str], Measure] = {}
    for s in subjects:
        out = s.kale_nb.parent / KFOPS_PIPELINE_IR
        measures[s.key, "kfops"] = Measure(
            f"kfops compile, {s.title}", [KFOPS, "compile", str(s.kale_nb), "-o", str(out)]
        )
        if kale.ok:
            measures[s.key, "kale"] = Measure(
                f"kale --nb, {s.title}",
                [kale.bin("kale"), "--nb", s.kale_nb.name, "--output_path", KALE_OUT],
                s.kale_nb.parent,
                kale_env(),
            )
    measures["startup", "kfops"] = Measure("kfops --help (start-up)", [KFOPS, "--help"])
    if kale.ok:
        measures["startup", "kale"] = Measure(
            "kale --help (start-up)", [kale.bin("kale"), "--help"], env=kale_env()
        )
    for measure in measures.values():  # warm-up, and a first check that each works
        measure.once(record=False)
    for index in range(repeat):  # alternate, so that load changes hit both alike
        log(f"      round {index + 1}/{repeat}")
        for measure in measures.values():
            measure.once()
    outputs = {}
    for s in subjects:
        outputs[s.key, "kfops"] = ir_summary(s.kale_nb.parent / KFOPS_PIPELINE_IR)
        kale_irs = sorted((s.kale_nb.parent / KALE_OUT).glob("*.pipeline.yaml"))
        if kale_irs:
            outputs[s.key, "kale"] = ir_summary(kale_irs[0])
    return {"measures": measures, "outputs": outputs}


def latest_result(runs_dir: Path, before: set[Path]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The result.json of the run that just finished in `runs_dir`, and its steps'
    phases from run.log (empty if run.log lacks the timestamps)."""
    new = [p for p in runs_dir.glob("*/result.json") if p.parent not in before]
    if len(new) != 1:
        raise BenchError(f"expected one new run in {runs_dir}, found {len(new)}")
    result: dict[str, Any] = json.loads(new[0].read_text(encoding="utf-8"))
    try:
        phases = step_phases(new[0].with_name("run.log"))
    except (BenchError, OSError):
        phases = {}
    return result, phases


def imports_code(notebook_path: Path) -> str:
    """The notebook's `imports` cells, magics left out: what every step runs first."""
    notebook = nbformat.read(notebook_path, as_version=4)
    code = "\n".join(
        line
        for cell in notebook.cells
        if cell.cell_type == "code" and "imports" in (cell.metadata.get("tags") or [])
        for line in cell.source.splitlines()
        if not line.lstrip().startswith(("%", "!"))
    )
    try:
        ast.parse(code)
    except SyntaxError:
        return "pass"
    return code or "pass"


def one_cell_notebook(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "one-cell.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[code_cell("pass")]), path)
    return path


def nbconvert_measure(label: str, nb: Env, notebook: Path, out_dir: Path) -> Measure:
    return Measure(
        label,
        [
            nb.bin("jupyter"),
            "nbconvert",
            "--to",
            "notebook",
            "--execute",
            f"--ExecutePreprocessor.kernel_name={KERNEL}",
            "--ExecutePreprocessor.timeout=1200",
            "--output-dir",
            str(out_dir),
            "--output",
            notebook.stem + ".executed",
            str(notebook),
        ],
        notebook.parent,
    )


def kfp_version() -> str:
    try:
        return version("kfp")
    except PackageNotFoundError:
        return "?"


def bench_run(
    subjects: list[Subject], nb: Env, run_repeat: int, big_repeat: int, work: Path
) -> dict[str, Any]:
    repeats = {s.key: big_repeat if s.key == "large" else run_repeat for s in subjects}
    rounds = max(repeats.values())
    log(
        f"[2/2] kfops run vs jupyter nbconvert --execute ({run_repeat} runs each; kfops run"
        f" of the {subjects[-1].steps}-step notebook {big_repeat}), with start-up probes:"
        f" {rounds} rounds"
    )
    out_dir = work / "nbconvert-out"
    kfops: dict[str, Measure] = {}
    jupyter: dict[str, Measure] = {}
    runs_dirs: dict[str, Path] = {}
    results: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for s in subjects:
        runs_dirs[s.key] = work / "runs" / s.key
        runs_dirs[s.key].mkdir(parents=True)
        kfops[s.key] = Measure(
            f"kfops run --no-cache, {s.title}",
            [KFOPS, "run", str(s.run_nb), "--no-cache", "--runs-dir", str(runs_dirs[s.key])],
        )
        results[s.key] = []
        if nb.ok:
            jupyter[s.key] = nbconvert_measure(
                f"nbconvert --execute, {s.title}", nb, s.run_nb, out_dir
            )
    if nb.ok:
        jupyter["one-cell"] = nbconvert_measure(
            "nbconvert --execute, a one-cell notebook", nb, one_cell_notebook(work / "one"), out_dir
        )
    runtime = {**os.environ, "_KFP_RUNTIME": "true"}
    pip_env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    pip_args = ["--quiet", "--no-warn-script-location", f"kfp=={kfp_version()}", "--no-deps"]
    probes = {
        "python": Measure("python -c pass", [PYTHON, "-c", "pass"]),
        "executor": Measure(
            "step executor start (import kfp.dsl.executor_main)",
            [PYTHON, "-c", "import kfp.dsl.executor_main"],
            env=runtime,
        ),
        "pip": Measure(
            "the no-op pip install before each step",
            [PYTHON, "-m", "pip", "install", *pip_args],
            env=pip_env,
        ),
    }
    for s in subjects:
        # What a step's imports cell adds to the executor's start, in the same context.
        probes[f"imports:{s.key}"] = Measure(
            f"executor start + imports cell, {s.title}",
            [PYTHON, "-c", "import kfp.dsl.executor_main\n" + imports_code(s.run_nb)],
            env=runtime,
        )
    for measure in [*jupyter.values(), *probes.values()]:  # warm-up, and a first check
        measure.once(record=False)

    for index in range(rounds):
        log(f"      round {index + 1}/{rounds}")
        for s in subjects:
            if index < repeats[s.key]:
                before = {p.parent for p in runs_dirs[s.key].glob("*/result.json")}
                if kfops[s.key].once() is not None:
                    results[s.key].append(latest_result(runs_dirs[s.key], before))
            if index < run_repeat and s.key in jupyter:
                jupyter[s.key].once()
        if index < run_repeat:
            if "one-cell" in jupyter:
                jupyter["one-cell"].once()
            for measure in probes.values():
                measure.once()
    return {
        "kfops": kfops,
        "jupyter": jupyter,
        "results": results,
        "probes": probes,
        "shown": {
            s.key: jupyter_metrics(out_dir / (s.run_nb.stem + ".executed.ipynb")) for s in subjects
        },
    }


# --- report -------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def ratio(a: Measure | None, b: Measure | None) -> str:
    if a is None or b is None or not a.ok or not b.ok:
        return "n/a"
    return f"{a.timing.median / b.timing.median:.2f}x"


def timing_line(label: str, measure: Measure | None, note: str = "") -> str:
    if measure is None:
        return f"    {label:<18} skipped {note}".rstrip()
    if not measure.ok:
        return f"    {label:<18} FAILED (see below)"
    t = measure.timing
    n = len(t.samples)
    return f"    {label:<18} median {secs(t.median)}, min {secs(t.min)}, n={n} {note}".rstrip()


def print_errors(measures: Sequence[Measure | None]) -> None:
    for measure in measures:
        if measure is not None and measure.error:
            print(f"\n  !! {measure.label} failed:")
            print("     " + measure.error.replace("\n", "\n     "))


def print_compile(subjects: list[Subject], c: dict[str, Any], kale: Env) -> None:
    m, outputs = c["measures"], c["outputs"]
    print("\n== 1. kfops compile vs Kale's conversion (kale --nb NB --output_path DIR) ==")
    if not kale.ok:
        print(f"  Kale side skipped: {kale.note}")
    print("  Both compile the same Kale 2.x form of each notebook to KFP IR YAML (Kale also")
    print("  writes its DSL script, then imports it and runs the KFP compiler on it).")
    for s in subjects:
        print(f"  {s.heading}: {s.kale_nb.name}")
        if s.changes:
            print(f"    Kale 2.x form of the notebook: {'; '.join(s.changes)}")
        print(timing_line("kfops compile", m[s.key, "kfops"], outputs.get((s.key, "kfops"), "")))
        kale_m = m.get((s.key, "kale"))
        print(timing_line("kale --nb", kale_m, outputs.get((s.key, "kale"), "")))
        print(f"    {'ratio kfops/Kale':<18} {ratio(m[s.key, 'kfops'], kale_m)} of the medians")
    print("  start-up alone (python, imports, --help):")
    print(timing_line("kfops --help", m["startup", "kfops"]))
    print(timing_line("kale --help", m.get(("startup", "kale"))))
    for tool in ("kfops", "kale"):
        start = m.get(("startup", tool))
        beyond = [
            f"{s.steps} steps {m[s.key, tool].timing.median - start.timing.median:.2f} s"
            for s in subjects
            if start is not None and start.ok and (s.key, tool) in m and m[s.key, tool].ok
        ]
        if beyond:
            print(f"    {tool} beyond its start-up: {', '.join(beyond)}")
    print_errors(list(m.values()))


def jupyter_metrics(executed: Path) -> str:
    """The text the executed notebook's pipeline-metrics cell showed."""
    try:
        notebook = nbformat.read(executed, as_version=4)
    except (OSError, ValueError):
        return "(no executed notebook)"
    shown = []
    for cell in notebook.cells:
        if "pipeline-metrics" in (cell.metadata.get("tags") or []):
            for output in cell.get("outputs", []):
                shown.append(output.get("text") or output.get("data", {}).get("text/plain", ""))
    return " ".join("".join(shown).split()) or "(nothing)"


@dataclass
class Split:
    """kfops run's time, medians over the runs (seconds)."""

    n: int
    wall: float
    cli: float
    runner: float
    steps: float
    step_median: float
    slowest: tuple[str, float]
    phases: dict[str, float]  # summed over the steps; empty if run.log had no timestamps
    other: float


def split(measure: Measure, runs: list[tuple[dict[str, Any], dict[str, Any]]]) -> Split:
    names = list(runs[0][0]["steps"])
    per_step = {n: median([r["steps"][n]["seconds"] for r, _ in runs]) for n in names}
    seconds = median([r["seconds"] for r, _ in runs])
    total = sum(per_step.values())
    phases: dict[str, float] = {}
    if all(set(p) >= set(names) for _, p in runs):
        phases = {ph: median([sum(p[n][ph] for n in names) for _, p in runs]) for ph in PHASES}
    slowest = max(per_step.items(), key=lambda item: item[1])
    return Split(
        n=len(names),
        wall=measure.timing.median,
        cli=measure.timing.median - seconds,
        runner=seconds - total,
        steps=total,
        step_median=median(list(per_step.values())),
        slowest=slowest,
        phases=phases,
        other=total - sum(phases.values()) if phases else 0.0,
    )


def print_run(subjects: list[Subject], r: dict[str, Any], nb: Env) -> dict[str, Split]:
    kfops, jupyter, probes = r["kfops"], r["jupyter"], r["probes"]
    print("\n== 2. kfops run --no-cache vs jupyter nbconvert --to notebook --execute ==")
    if not nb.ok:
        print(f"  Jupyter side skipped: {nb.note}")
    splits = {}
    for s in subjects:
        print(f"  {s.heading}: {s.run_nb.name}")
        print(timing_line("kfops run", kfops[s.key]))
        print(timing_line("nbconvert", jupyter.get(s.key)))
        print(f"    {'ratio kfops/Jupyter':<18} {ratio(kfops[s.key], jupyter.get(s.key))}")
        runs = r["results"][s.key]
        if runs:
            metrics = {k: v for step in runs[0][0]["metrics"].values() for k, v in step.items()}
            print(f"    metrics: kfops {json.dumps(metrics, sort_keys=True)}")
            if s.key in jupyter and jupyter[s.key].ok:
                print(f"             Jupyter's metrics cell: {r['shown'][s.key]}")
            if kfops[s.key].ok:
                splits[s.key] = split(kfops[s.key], runs)
    print(timing_line("nbconvert, 1 cell", jupyter.get("one-cell"), "(nbconvert + kernel start)"))
    print_errors([*kfops.values(), *jupyter.values(), *probes.values()])

    print("\n== 3. where kfops run's time goes (medians; steps run one after another) ==")
    probe = {k: m.timing.median if m.ok else 0.0 for k, m in probes.items()}
    print("  fresh processes in kfops's environment:")
    for m in probes.values():
        print(f"    {m.label:<58}{secs(m.timing.median) if m.ok else '  failed'}")
    one_cell = jupyter.get("one-cell")
    fixed = one_cell.timing.median if one_cell is not None and one_cell.ok else 0.0
    for s in subjects:
        if s.key not in splits:
            continue
        sp = splits[s.key]
        imports = max(probe[f"imports:{s.key}"] - probe["executor"], 0.0)
        # run.log cannot split a step's setup into pip and the executor's start: split
        # it as the probes do (as bench_validate_run.py does).
        started = probe["pip"] + probe["executor"]
        pip = sp.phases.get("setup", 0.0) * (probe["pip"] / started if started else 0.0)
        print(f"\n  {s.title}: kfops run {secs(sp.wall)}, {sp.n} steps")
        rows = [
            ("CLI: start, read the notebook, compile", sp.cli, "wall - result.json seconds"),
            ("kfp.local runner outside the steps", sp.runner, "result.json seconds - steps"),
            ("the steps (result.json steps.*.seconds)", sp.steps, f"{sp.n} steps"),
        ]
        for label, value, note in rows:
            print(f"    {label:<44}{secs(value)}  {note}")
        print(
            f"      a step: median {sp.step_median:.2f} s, slowest {sp.slowest[0]}"
            f" {sp.slowest[1]:.2f} s"
        )
        if sp.phases:
            meanings = {
                "setup": "no-op pip install, python, kfp executor start",
                "function": "imports cell, load inputs, the cells, save outputs",
                "finish": "process exit, kfp.local reads the outputs",
            }
            for phase, value in sp.phases.items():
                print(
                    f"      {phase:<9}{secs(value)} = {value / sp.n:.2f} s a step"
                    f"  ({meanings[phase]})"
                )
            print(f"      other    {secs(sp.other)}  (result.json - run.log phases)")
        jupyter_m = jupyter.get(s.key)
        if not (jupyter_m is not None and jupyter_m.ok and sp.phases and one_cell):
            continue
        jw = jupyter_m.timing.median
        cells = jw - fixed
        print(
            f"    Jupyter {secs(jw)} = nbconvert + kernel start {fixed:.2f} s"
            f" + all the cells, imports once, {cells:.2f} s"
        )
        gap = sp.wall - jw
        per_process = sp.phases["setup"] - pip + sp.phases["finish"] + sp.other
        functions = sp.phases["function"] - cells
        print(f"    so the {gap:.1f} s gap is (estimates, from the probes above):")
        for value, what in (
            (sp.cli + sp.runner - fixed, "kfops CLI + runner, less nbconvert + kernel start"),
            (pip, f"the no-op pip install before each step: {pip / sp.n:.2f} s x {sp.n}"),
            (per_process, f"the rest of a process per step: {per_process / sp.n:.2f} s x {sp.n}"),
            (functions, "the steps' functions less Jupyter's cells: mostly the imports"),
        ):
            share = f"{value / gap:4.0%}" if gap > 0 else "   -"
            print(f"      {value:6.1f} s ({share})  {what}")
        print(
            f"{'':22}cell run in {sp.n} processes, not once (the probe: {imports:.2f} s"
            f" each), and\n{'':22}values passed through files"
        )
    return splits


def print_table(
    subjects: list[Subject], c: dict[str, Any], r: dict[str, Any], splits: dict[str, Split]
) -> None:
    m = c["measures"]
    rows: list[tuple[str, Measure | str | None]] = []
    for s in subjects:
        rows += [
            (f"kfops compile, {s.title}", m[s.key, "kfops"]),
            (f"kale --nb, {s.title}", m.get((s.key, "kale"))),
            ("  ratio kfops/Kale (medians)", ratio(m[s.key, "kfops"], m.get((s.key, "kale")))),
        ]
    rows += [("kfops --help", m["startup", "kfops"]), ("kale --help", m.get(("startup", "kale")))]
    for s in subjects:
        kfops, jupyter = r["kfops"][s.key], r["jupyter"].get(s.key)
        rows += [
            (f"kfops run --no-cache, {s.title}", kfops),
            (f"nbconvert --execute, {s.title}", jupyter),
            ("  ratio kfops/Jupyter (medians)", ratio(kfops, jupyter)),
        ]
        if s.key in splits:
            sp = splits[s.key]
            rows.append((f"  a step (result.json median, {sp.n} steps)", f"{sp.step_median:.3f}s"))
    rows.append(("nbconvert --execute, a one-cell notebook", r["jupyter"].get("one-cell")))
    rows += [(m.label, m) for m in r["probes"].values()]
    width = max(len(label) for label, _ in rows) + 2
    print(f"\n{'measurement':<{width}}{'median':>10}{'min':>10}{'n':>4}")
    print("-" * (width + 24))
    for label, cell in rows:
        if cell is None:
            print(f"{label:<{width}}{'skipped':>10}")
        elif isinstance(cell, str):
            print(f"{label:<{width}}{cell:>10}")
        elif not cell.ok:
            print(f"{label:<{width}}{'FAILED':>10}")
        else:
            t = cell.timing
            print(f"{label:<{width}}{t.median:>9.3f}s{t.min:>9.3f}s{len(t.samples):>4}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--compile-repeat", type=int, default=5, help="runs of each compile (default 5)"
    )
    parser.add_argument(
        "--run-repeat",
        type=int,
        default=3,
        help="runs of each nbconvert, and of kfops run on the example notebook (default 3)",
    )
    parser.add_argument(
        "--big-run-repeat",
        type=int,
        default=1,
        help="runs of kfops run on the generated notebook (default 1)",
    )
    parser.add_argument("--steps", type=int, default=50, help="the generated notebook's steps")
    parser.add_argument("--kale-venv", type=Path, default=DEFAULT_KALE_VENV, help="Kale's venv")
    parser.add_argument(
        "--kale-package", default=KALE_PACKAGE, help=f"what to pip-install (default {KALE_PACKAGE})"
    )
    parser.add_argument(
        "--nb-venv", type=Path, default=DEFAULT_NB_VENV, help="nbconvert's and the kernel's venv"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder, print it")
    args = parser.parse_args(argv)
    if min(args.compile_repeat, args.run_repeat, args.big_run_repeat) < 1 or args.steps < 5:
        parser.error("repetition counts must be at least 1, --steps at least 5")

    started = time.perf_counter()
    log("[0/2] the auxiliary virtual environments")
    kale = setup_kale(args.kale_venv.resolve(), args.kale_package)
    nb = setup_nbconvert(args.nb_venv.resolve())
    setup_seconds = time.perf_counter() - started
    print(f"python {sys.version.split()[0]} ({PYTHON}), kfp {kfp_version()}, {os.cpu_count()} CPUs")
    for name, env in (("Kale", kale), ("nbconvert", nb)):
        found = ", ".join(f"{k} {v}" for k, v in env.versions.items())
        print(f"{name} venv {env.path}: {found if env.ok else 'SKIPPED: ' + env.note}")

    work = Path(tempfile.mkdtemp(prefix="kfops-bench-nb-"))
    try:
        subjects = prepare(work, args.steps)
        c = bench_compile(subjects, kale, args.compile_repeat)
        r = bench_run(subjects, nb, args.run_repeat, args.big_run_repeat, work)
    finally:
        if args.keep:
            log(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print_compile(subjects, c, kale)
    splits = print_run(subjects, r, nb)
    print_table(subjects, c, r, splits)
    print(
        f"\n(benchmark took {time.perf_counter() - started:.0f} s,"
        f" of which {setup_seconds:.0f} s checking or setting up the venvs)"
    )
    failed = [m for m in [*c["measures"].values(), *r["kfops"].values()] if m.error]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
