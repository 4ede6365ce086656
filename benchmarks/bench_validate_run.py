"""How fast are `kfops validate` and `kfops run`, and where does `run`'s time go?

Run from the repository root with the project's virtual environment:

    .venv/bin/python benchmarks/bench_validate_run.py [--repeat N] [--run-repeat N]

It prints figures only (no asserts). Every measurement is a fresh subprocess timed
from outside, so interpreter start-up counts on both sides of each comparison:

1. `kfops validate pipelines/iris` against `python -c "import yaml, jsonschema"`,
   plus which modules validate imports (kfp, kserve and kubernetes must not be).
2. `kfops run pipelines/iris --no-cache` against a plain Python script that calls the
   three components' functions once, in one process.
3. The pieces of `run`'s overhead: compiling, starting Python and importing kfp, the
   no-op `pip install`s each lightweight step runs first, and per-step durations.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
PROJECT = "pipelines/iris"
PIPELINE_FILE = REPO / PROJECT / "pipeline.py"
PYTHON = sys.executable
KFOPS = str(Path(sys.executable).parent / "kfops")
MUST_NOT_IMPORT = ("kfp", "kserve", "kubernetes")
VALIDATE_TARGET = 2.0
RESULT_MARKER = "@@baseline "

# The plain-Python baseline for `kfops run`: import the pipeline file, then call each
# component's underlying function with kfp.dsl artifacts under a temp folder.
# argv: PIPELINE_FILE WORKDIR OVERRIDES_JSON IMPORTS_JSON. The components' own import
# statements run up front only so that their one-off cost is reported apart from the
# compute; the process's wall time is the same either way.
BASELINE_CODE = """
import importlib.util, json, os, sys, time

started = time.perf_counter()
pipeline_file, workdir = sys.argv[1], sys.argv[2]
overrides, imports = json.loads(sys.argv[3]), json.loads(sys.argv[4])
timings = {}
from kfp import dsl
spec = importlib.util.spec_from_file_location("bench_pipeline", pipeline_file)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
timings["kfp.dsl + pipeline.py"] = time.perf_counter() - started

mark = time.perf_counter()
for statement in imports:
    exec(statement)
timings["step libraries"] = time.perf_counter() - mark

inputs = module.iris_pipeline.component_spec.inputs
params = {name: inp.default for name, inp in inputs.items()} | overrides

def artifact(cls, name):
    return cls(uri=os.path.join(workdir, name))

train, test = artifact(dsl.Dataset, "train"), artifact(dsl.Dataset, "test")
model, metrics = artifact(dsl.Model, "model"), artifact(dsl.Metrics, "metrics")

mark = time.perf_counter()
module.load_data.python_func(
    test_size=params["test_size"], seed=params["seed"], train=train, test=test)
timings["load-data"] = time.perf_counter() - mark

mark = time.perf_counter()
module.train_model.python_func(
    train=train, n_estimators=params["n_estimators"], seed=params["seed"], model=model)
timings["train-model"] = time.perf_counter() - mark

mark = time.perf_counter()
accuracy = module.evaluate.python_func(test=test, model=model, metrics=metrics)
timings["evaluate"] = time.perf_counter() - mark

print(MARKER + json.dumps({"timings": timings, "accuracy": accuracy, "params": params}))
""".replace("MARKER", repr(RESULT_MARKER))


class BenchError(RuntimeError):
    """A measured command failed; the message carries its output."""


@dataclass
class Timing:
    label: str
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_command(
    command: Sequence[str], env: dict[str, str] | None = None
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run `command` from the repo root; return its wall time and the finished process."""
    started = time.perf_counter()
    process = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        output = (process.stdout + process.stderr).strip()[-2000:]
        raise BenchError(f"{shlex.join(command)} exited {process.returncode}:\n{output}")
    return elapsed, process


def time_interleaved(commands: dict[str, Sequence[str]], repeat: int) -> dict[str, Timing]:
    """Time each command `repeat` times (after one warm-up), alternating between them."""
    timings = {label: Timing(label) for label in commands}
    for command in commands.values():
        run_command(command)
    for _ in range(repeat):
        for label, command in commands.items():
            timings[label].samples.append(run_command(command)[0])
    return timings


def time_one(
    label: str, command: Sequence[str], repeat: int, env: dict[str, str] | None = None
) -> Timing:
    """Time `command` `repeat` times.

    No warm-up run: the run benchmark before has read every file these commands need,
    except pip's, and the median absorbs one slow first run.
    """
    return Timing(label, [run_command(command, env)[0] for _ in range(repeat)])


def component_imports(pipeline_file: Path) -> dict[str, list[str]]:
    """Each @dsl.component's own import statements, by KFP task name (load_data -> load-data)."""
    tree = ast.parse(pipeline_file.read_text(encoding="utf-8"))
    found = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and any(
            "component" in ast.unparse(d) for d in node.decorator_list
        ):
            found[node.name.replace("_", "-")] = [
                ast.unparse(n) for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom)
            ]
    return found


# --- 1. validate ----------------------------------------------------------------------


def import_profile(command: Sequence[str]) -> list[tuple[str, int, int]]:
    """(module, nesting depth, cumulative microseconds) from `python -X importtime`."""
    _, process = run_command([PYTHON, "-X", "importtime", *command])
    rows = []
    for line in process.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if match:
            rows.append((match.group(3), len(match.group(2)) // 2, int(match.group(1))))
    return rows


def bench_validate(repeat: int) -> dict[str, Any]:
    log(f"[1/3] kfops validate vs import yaml, jsonschema ({repeat} runs each)")
    timings = time_interleaved(
        {
            "validate": [KFOPS, "validate", PROJECT],
            "baseline": [PYTHON, "-c", "import yaml, jsonschema"],
        },
        repeat,
    )
    profile = import_profile(["-m", "kfops", "validate", PROJECT])
    imported = {name for name, _, _ in profile}
    heavy = sorted(
        name
        for name in imported
        if any(name == top or name.startswith(top + ".") for top in MUST_NOT_IMPORT)
    )
    return {
        "validate": timings["validate"],
        "baseline": timings["baseline"],
        "modules": len(imported),
        "total_import": sum(row[2] for row in profile if row[1] == 0),
        "heavy": heavy,
        "top": sorted(profile, key=lambda row: row[2], reverse=True)[:5],
    }


# --- 2. run -----------------------------------------------------------------------------


def project_overrides() -> dict[str, Any]:
    """pipeline.parameters from mlops.yaml: what `kfops run` passes on top of defaults."""
    with (REPO / PROJECT / "mlops.yaml").open(encoding="utf-8") as f:
        config = yaml.safe_load(f)
    return dict(config["pipeline"].get("parameters") or {})


def kfops_run_once() -> dict[str, Any]:
    """One `kfops run`: its wall time, and what its result.json says."""
    with tempfile.TemporaryDirectory(prefix="kfops-bench-runs-") as runs_dir:
        wall, _ = run_command([KFOPS, "run", PROJECT, "--no-cache", "--runs-dir", runs_dir])
        (result_file,) = Path(runs_dir).glob("*/result.json")
        result = json.loads(result_file.read_text(encoding="utf-8"))
    if not result["succeeded"]:
        raise BenchError(f"kfops run did not succeed: {json.dumps(result)[:2000]}")
    return {"wall": wall, **result}


def baseline_once(overrides: dict[str, Any], imports: list[str]) -> dict[str, Any]:
    """One baseline process: its wall time and the timings it printed."""
    with tempfile.TemporaryDirectory(prefix="kfops-bench-baseline-") as workdir:
        command = [PYTHON, "-c", BASELINE_CODE, str(PIPELINE_FILE), workdir]
        wall, process = run_command([*command, json.dumps(overrides), json.dumps(imports)])
    for line in process.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            return {"wall": wall, **json.loads(line[len(RESULT_MARKER) :])}
    raise BenchError(f"the baseline printed no result:\n{process.stdout[-2000:]}")


def bench_run(repeat: int) -> dict[str, Any]:
    log(f"[2/3] kfops run vs plain Python ({repeat} runs each, ~15-20 s per kfops run)")
    overrides = project_overrides()
    imports = list(dict.fromkeys(s for ss in component_imports(PIPELINE_FILE).values() for s in ss))
    baseline_once(overrides, imports)  # warm-up
    runs, baselines = [], []
    for index in range(repeat):
        log(f"      run {index + 1}/{repeat}")
        runs.append(kfops_run_once())
        baselines.append(baseline_once(overrides, imports))
    return {
        "kfops": Timing("kfops run", [r["wall"] for r in runs]),
        "baseline": Timing("baseline", [b["wall"] for b in baselines]),
        "runner": Timing("runner", [r["seconds"] for r in runs]),
        "steps": {
            name: Timing(name, [r["steps"][name]["seconds"] for r in runs])
            for name in runs[0]["steps"]
        },
        "baseline_parts": {
            name: statistics.median(b["timings"][name] for b in baselines)
            for name in baselines[0]["timings"]
        },
        "accuracy": baselines[0]["accuracy"],
        "params": baselines[0]["params"],
    }


# --- 3. where run's overhead goes ----------------------------------------------------------


@dataclass
class PipCall:
    """One `python3 -m pip install ...` from a step's command line, as the shell runs it."""

    env: dict[str, str]
    args: list[str]

    @property
    def label(self) -> str:
        # Requirements with an environment marker (typing-extensions; python<3.9) are
        # skipped by pip here, so leave them out of the name.
        shown = [
            a
            for a in self.args
            if ";" not in a and a not in ("--quiet", "--no-warn-script-location")
        ]
        return "pip no-op: " + " ".join(shown)


_PIP = re.compile(r"((?:[A-Z_]+=\S+\s+)*)python3 -m pip install ([^&\n]*)")


def pip_calls_per_step(ir_file: Path) -> dict[str, list[PipCall]]:
    """The pip installs in each executor's command line of the compiled pipeline."""
    ir = yaml.safe_load(ir_file.read_text(encoding="utf-8"))
    found = {}
    for name, executor in ir["deploymentSpec"]["executors"].items():
        script = "\n".join(executor["container"].get("command", []))
        found[name] = [
            PipCall(
                env=dict(pair.split("=", 1) for pair in match.group(1).split()),
                args=shlex.split(match.group(2)),
            )
            for match in _PIP.finditer(script)
        ]
    return found


def time_pip(call: PipCall, repeat: int) -> Timing:
    """Time a pip install with the environment the step's shell gives it."""
    env = {**os.environ, **call.env}
    if "PIP_DISABLE_PIP_VERSION_CHECK" not in call.env:
        env.pop("PIP_DISABLE_PIP_VERSION_CHECK", None)
    return time_one(call.label, [PYTHON, "-m", "pip", "install", *call.args], repeat, env)


def bench_pieces(repeat: int, kfp_version: str) -> dict[str, Any]:
    log(f"[3/3] compile, python start-up, imports, pip no-ops ({repeat} runs each)")
    with tempfile.TemporaryDirectory(prefix="kfops-bench-compile-") as tmp:
        ir_file = Path(tmp) / "iris.yaml"
        compile_cmd = [KFOPS, "compile", PROJECT, "-o", str(ir_file)]
        compile_timing = time_one("kfops compile", compile_cmd, repeat)
        per_executor = pip_calls_per_step(ir_file)
    if not any(per_executor.values()):  # kfp changed its command line: use the known one
        call = PipCall({}, ["--quiet", "--no-warn-script-location", f"kfp=={kfp_version}"])
        call.args.append("--no-deps")
        per_executor = {"every step": [call]}
    unique = {call.label: call for calls in per_executor.values() for call in calls}
    pip = {label: time_pip(call, repeat) for label, call in unique.items()}

    # What each step's process loads before the function runs: kfp (the executor) and
    # the libraries the function imports.
    step_start = {
        step: time_one(
            f"python + import kfp + {step}'s imports",
            [PYTHON, "-c", "\n".join(["import kfp", "from kfp import dsl", *imports])],
            repeat,
        )
        for step, imports in component_imports(PIPELINE_FILE).items()
    }
    return {
        "compile": compile_timing,
        "python_start": time_one("python -c pass", [PYTHON, "-c", "pass"], repeat),
        "import_kfp": time_one("python -c 'import kfp'", [PYTHON, "-c", "import kfp"], repeat),
        "pip": pip,
        "pip_calls_per_step": max(len(calls) for calls in per_executor.values()),
        "pip_per_step": max(
            sum(pip[call.label].median for call in calls) for calls in per_executor.values()
        ),
        "step_start": step_start,
    }


# --- report ---------------------------------------------------------------------------------


def secs(value: float) -> str:
    return f"{value:6.2f} s"


def print_validate(v: dict[str, Any]) -> None:
    ratio = v["validate"].median / v["baseline"].median
    verdict = "within" if ratio <= VALIDATE_TARGET else "OVER"
    print("\n== 1. kfops validate vs python -c 'import yaml, jsonschema' ==")
    for label, timing in (("kfops validate", v["validate"]), ("yaml+jsonschema", v["baseline"])):
        print(
            f"  {label:<16} median {timing.median * 1000:5.0f} ms, min {timing.min * 1000:5.0f} ms"
        )
    print(
        f"  ratio            {ratio:.2f}x of the median ({verdict} the {VALIDATE_TARGET:g}x target)"
    )
    heavy = ", ".join(v["heavy"][:8]) if v["heavy"] else "none of them"
    print(
        f"  imported {v['modules']} modules ({v['total_import'] / 1000:.0f} ms of imports);"
        f" of {', '.join(MUST_NOT_IMPORT)}: {heavy}"
    )
    print("  top 5 cumulative import costs (python -X importtime -m kfops validate):")
    for name, depth, micros in v["top"]:
        print(f"    {micros / 1000:6.1f} ms  {'  ' * depth}{name}")


def print_run(r: dict[str, Any], p: dict[str, Any]) -> None:
    kfops, baseline, parts = r["kfops"], r["baseline"], r["baseline_parts"]
    steps: dict[str, Timing] = r["steps"]
    n_steps = len(steps)
    pip_per_step = p["pip_per_step"]

    print("\n== 2. kfops run --no-cache vs the same functions in one python process ==")
    print(f"  parameters {json.dumps(r['params'], sort_keys=True)}, accuracy {r['accuracy']:.4f}")
    print(f"  kfops run        median {secs(kfops.median)}, min {secs(kfops.min)}")
    print(f"  plain python     median {secs(baseline.median)}, min {secs(baseline.min)}")
    print(f"  ratio            {kfops.median / baseline.median:.1f}x of the median")

    print("\n== 3. where kfops run's time goes (medians) ==")
    print(f"  (a) kfops compile alone                      {secs(p['compile'].median)}")
    print(f"  (b) python start (-c pass)                   {secs(p['python_start'].median)}")
    print(f"      python start + import kfp                {secs(p['import_kfp'].median)}")
    for label, timing in p["pip"].items():
        print(f"  (c) {label:<41}{secs(timing.median)}")
    print(f"      = {p['pip_calls_per_step']} pip no-ops before every step, {secs(pip_per_step)}")
    print("  (d) each step (result.json) = pip no-ops + process start-up + the function + rest")
    print("      start-up = python + import kfp + the function's own imports, fresh process")
    print("      function = the same call in the baseline, libraries already imported")
    header = ("step", "step", "pip", "start-up", "function", "rest")
    print("      " + f"{header[0]:<12}" + "".join(f"{h:>10}" for h in header[1:]))
    step_rest = {}
    for name, timing in steps.items():
        start = p["step_start"][name].median if name in p["step_start"] else 0.0
        own = parts.get(name, 0.0)
        step_rest[name] = timing.median - pip_per_step - start - own
        cells = (timing.median, pip_per_step, start, own, step_rest[name])
        print("      " + f"{name:<12}" + "".join(f"{c:>9.2f}s" for c in cells))

    step_sum = sum(t.median for t in steps.values())
    functions = sum(parts.get(name, 0.0) for name in steps)
    starts = sum(p["step_start"][n].median for n in steps if n in p["step_start"])
    cli = kfops.median - r["runner"].median
    runner = r["runner"].median - step_sum
    pips = n_steps * pip_per_step
    rest = sum(step_rest.values())
    unaccounted = baseline.median - sum(parts.values())
    gap = kfops.median - baseline.median
    startups = cli + runner + starts - (baseline.median - functions)
    executor = gap - pips - startups
    print()
    print_split(
        f"kfops run, {secs(kfops.median)}",
        [
            ("CLI start, read mlops.yaml, compile", cli, "wall - result.seconds"),
            ("runner process: start, kfp.local", runner, "result.seconds - sum of steps"),
            (f"pip no-ops, {pip_per_step:.2f} s x {n_steps} steps", pips, ""),
            ("steps' start-up: python, kfp, libraries", starts, ""),
            ("the functions' own work", functions, "as timed in the baseline"),
            ("rest of the steps: KFP executor", rest, ""),
        ],
    )
    print_split(
        f"plain python, {secs(baseline.median)}",
        [
            ("import kfp.dsl + pipeline.py", parts["kfp.dsl + pipeline.py"], ""),
            ("import the steps' libraries, once", parts["step libraries"], ""),
            ("the functions' own work", functions, ""),
            ("interpreter start-up and exit", unaccounted, ""),
        ],
    )
    print(f"  so the {gap:.1f} s gap is:")
    print(f"    {pips:5.1f} s ({pips / gap:4.0%}) pip no-ops before each step")
    print(
        f"    {startups:5.1f} s ({startups / gap:4.0%}) starting Python and importing kfp"
        f" {n_steps + 2} times (CLI, runner, each step)"
    )
    print(f"{'':19}and the steps' libraries {n_steps} times, where the baseline does each once")
    print(f"    {executor:5.1f} s ({executor / gap:4.0%}) KFP executor work inside the steps")
    print(f"  while the pipeline's own compute is {functions:.2f} s.")
    if rest < 0:
        print("  (a negative 'rest' is noise: the pieces are timed apart from the run)")


def print_split(title: str, rows: list[tuple[str, float, str]]) -> None:
    print(f"  {title}:")
    for label, value, note in rows:
        print(f"    {label:<42}{secs(value)}  {note}".rstrip())


def print_table(v: dict[str, Any], r: dict[str, Any], p: dict[str, Any]) -> None:
    rows: list[tuple[str, Timing | str]] = [
        ("kfops validate pipelines/iris", v["validate"]),
        ("python -c 'import yaml, jsonschema'", v["baseline"]),
        ("  ratio (medians)", f"{v['validate'].median / v['baseline'].median:.2f}x"),
        ("kfops run pipelines/iris --no-cache", r["kfops"]),
        ("plain python, same three functions", r["baseline"]),
        ("  ratio (medians)", f"{r['kfops'].median / r['baseline'].median:.1f}x"),
        ("(a) kfops compile", p["compile"]),
        ("(b) python -c pass", p["python_start"]),
        ("(b) python -c 'import kfp'", p["import_kfp"]),
        *[(f"(c) {label}", timing) for label, timing in p["pip"].items()],
        *[(f"(d) step {name} (result.json)", timing) for name, timing in r["steps"].items()],
        *[(f"    {timing.label}", timing) for timing in p["step_start"].values()],
    ]
    width = max(len(label) for label, _ in rows) + 2
    print(f"\n{'measurement':<{width}}{'median':>10}{'min':>10}{'n':>4}")
    print("-" * (width + 24))
    for label, cell in rows:
        if isinstance(cell, str):
            print(f"{label:<{width}}{cell:>10}")
        else:
            n = len(cell.samples)
            print(f"{label:<{width}}{cell.median:>9.3f}s{cell.min:>9.3f}s{n:>4}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--repeat", type=int, default=10, help="runs of validate and its baseline (default 10)"
    )
    parser.add_argument(
        "--run-repeat", type=int, default=3, help="runs of kfops run and its baseline (default 3)"
    )
    parser.add_argument(
        "--piece-repeat",
        type=int,
        default=5,
        help="runs of compile, the imports and each pip no-op (default 5)",
    )
    args = parser.parse_args(argv)
    if min(args.repeat, args.run_repeat, args.piece_repeat) < 1:
        parser.error("repetition counts must be at least 1")

    kfp_version = version("kfp")
    print(f"python {sys.version.split()[0]} ({PYTHON}), kfp {kfp_version}, {os.cpu_count()} CPUs")
    started = time.perf_counter()
    try:
        v = bench_validate(args.repeat)
        r = bench_run(args.run_repeat)
        p = bench_pieces(args.piece_repeat, kfp_version)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    print_validate(v)
    print_run(r, p)
    print_table(v, r, p)
    print(f"\n(benchmark took {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
