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
   no-op `pip install`s each lightweight step runs first, per-step durations from
   result.json, and each step's phases from the timestamps in its run.log.
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
# A step's process runs with _KFP_RUNTIME=true and imports these before the function.
RUNTIME_ENV = {"_KFP_RUNTIME": "true"}
EXECUTOR_IMPORTS = ["import kfp.dsl.executor_main", "import kfp", "from kfp.dsl import *"]

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


@dataclass
class Command:
    """A command line to time, with extra environment variables."""

    label: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_command(
    argv: Sequence[str], env: dict[str, str] | None = None
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run `argv` from the repo root; return its wall time and the finished process."""
    full_env = {**os.environ, **env} if env else None
    started = time.perf_counter()
    process = subprocess.run(argv, cwd=REPO, env=full_env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        output = (process.stdout + process.stderr).strip()[-2000:]
        raise BenchError(f"{shlex.join(argv)} exited {process.returncode}:\n{output}")
    return elapsed, process


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


def import_profile(argv: Sequence[str]) -> list[tuple[str, int, int]]:
    """(module, nesting depth, cumulative microseconds) from `python -X importtime`."""
    _, process = run_command([PYTHON, "-X", "importtime", *argv])
    rows = []
    for line in process.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if match:
            rows.append((match.group(3), len(match.group(2)) // 2, int(match.group(1))))
    return rows


def bench_validate(repeat: int) -> dict[str, Any]:
    log(f"[1/2] kfops validate vs import yaml, jsonschema ({repeat} runs each)")
    commands = {
        "validate": [KFOPS, "validate", PROJECT],
        "baseline": [PYTHON, "-c", "import yaml, jsonschema"],
    }
    timings = {label: Timing(label) for label in commands}
    for argv in commands.values():  # warm-up: file cache, .pyc files
        run_command(argv)
    for _ in range(repeat):  # alternate, so that load changes hit both alike
        for label, argv in commands.items():
            timings[label].samples.append(run_command(argv)[0])

    profile = import_profile(["-m", "kfops", "validate", PROJECT])
    imported = {name for name, _, _ in profile}
    heavy = sorted(
        name
        for name in imported
        if any(name == top or name.startswith(top + ".") for top in MUST_NOT_IMPORT)
    )
    return {
        **timings,
        "modules": len(imported),
        "total_import": sum(row[2] for row in profile if row[1] == 0),
        "heavy": heavy,
        "top": sorted(profile, key=lambda row: row[2], reverse=True)[:5],
    }


# --- 2. run, and 3. its pieces ----------------------------------------------------------


_PIP = re.compile(r"((?:[A-Z_]+=\S+\s+)*)python3 -m pip install ([^&\n]*)")


def pip_commands(ir_file: Path, kfp_version: str) -> tuple[list[Command], int]:
    """The distinct `pip install`s in the compiled steps' command lines, as the shell runs
    them (our environment, which the runner passes down, plus any VAR=value prefix), and
    how many run before each step."""
    ir = yaml.safe_load(ir_file.read_text(encoding="utf-8"))
    commands: dict[str, Command] = {}
    per_step = 0
    for executor in ir["deploymentSpec"]["executors"].values():
        script = "\n".join(executor["container"].get("command", []))
        matches = list(_PIP.finditer(script))
        per_step = max(per_step, len(matches))
        for match in matches:
            args = shlex.split(match.group(2))
            # Requirements with a marker (typing-extensions; python_version<"3.9") are
            # skipped by pip here, so leave them out of the label.
            shown = [a for a in args if (";" not in a and a[:2] != "--") or a == "--no-deps"]
            label = "pip no-op: " + " ".join(shown)
            env = dict(pair.split("=", 1) for pair in match.group(1).split())
            commands.setdefault(label, Command(label, [PYTHON, "-m", "pip", "install", *args], env))
    if not commands:  # kfp changed its command line: time kfp's own install
        args = ["--quiet", "--no-warn-script-location", f"kfp=={kfp_version}", "--no-deps"]
        label = f"pip no-op: kfp=={kfp_version} --no-deps"
        return [Command(label, [PYTHON, "-m", "pip", "install", *args])], 1
    return list(commands.values()), per_step


def piece_commands(ir_file: Path, kfp_version: str) -> dict[str, Any]:
    """(a) compile, (b) start-up and imports, (c) pip no-ops, and each step's start-up."""
    pips, pips_per_step = pip_commands(ir_file, kfp_version)
    step_imports = component_imports(PIPELINE_FILE)
    return {
        "compile": Command("kfops compile", [KFOPS, "compile", PROJECT, "-o", str(ir_file)]),
        "python_start": Command("python -c pass", [PYTHON, "-c", "pass"]),
        "import_kfp": Command("python -c 'import kfp'", [PYTHON, "-c", "import kfp"]),
        # A step's executor runs with _KFP_RUNTIME=true, which makes `import kfp` skip
        # kfp.client (and with it the kubernetes client).
        "executor_start": Command(
            "python -c 'import kfp.dsl.executor_main' (step)",
            [PYTHON, "-c", "import kfp.dsl.executor_main"],
            RUNTIME_ENV,
        ),
        "pip": pips,
        "pips_per_step": pips_per_step,
        # What a step's process imports before its function returns: the executor, the
        # component module's header and the libraries the function imports.
        "step_imports": [
            Command(
                f"step process start + {step}'s imports",
                [PYTHON, "-c", "\n".join([*EXECUTOR_IMPORTS, *imports])],
                RUNTIME_ENV,
            )
            for step, imports in step_imports.items()
        ],
    }


def kfp_import_profile() -> dict[str, int]:
    """Cumulative microseconds of kfp, kfp.client and kubernetes in `import kfp`."""
    profile = import_profile(["-c", "import kfp"])
    wanted = ("kfp", "kfp.client", "kubernetes")
    return {name: micros for name, _, micros in profile if name in wanted}


_CLOCK = r"(\d\d):(\d\d):(\d\d)[.,](\d{3})"
_RUNNER_LINE = re.compile(rf"^{_CLOCK} - \w+ - (.*)$")
_EXECUTOR_LINE = re.compile(rf"^\s*\[KFP Executor \d{{4}}-\d\d-\d\d {_CLOCK} \w+\]: (.*)$")
PHASES = {
    "setup": "task start -> executor's first log line (pip no-ops, executor start)",
    "function": "executor got its input -> wrote its output (the function, with its imports)",
    "finish": "executor wrote its output -> task finished (process exit, reading outputs)",
}


def step_phases(run_log: Path) -> dict[str, dict[str, float]]:
    """Each step's phases (see PHASES) from the kfp.local and KFP executor timestamps
    in run.log: measured inside the run itself, so under the run's own load."""
    marks: dict[str, dict[str, float]] = {}
    task = ""
    for line in run_log.read_text(encoding="utf-8").splitlines():
        match = _RUNNER_LINE.match(line) or _EXECUTOR_LINE.match(line)
        if not match:
            continue
        h, m, s, ms, message = match.groups()
        clock = int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000
        if started := re.match(r"Executing task '(.+)'", message):
            task = started.group(1)
            marks[task] = {"start": clock}
        elif task and message.startswith("Looking for component"):
            marks[task].setdefault("ready", clock)
        elif task and message.startswith("Got executor_input"):
            marks[task]["input"] = clock
        elif task and message.startswith("Wrote executor output file"):
            marks[task]["written"] = clock
        elif task and re.match(rf"Task '{re.escape(task)}' finished", message):
            marks[task]["end"] = clock

    def between(a: float, b: float) -> float:
        return (b - a) % 86400  # the log shows time of day only

    phases = {}
    for name, m in marks.items():
        if not {"start", "ready", "input", "written", "end"} <= m.keys():
            raise BenchError(f"{run_log}: no timestamps for each phase of {name}: {m}")
        phases[name] = {
            "setup": between(m["start"], m["ready"]),
            "function": between(m["input"], m["written"]),
            "finish": between(m["written"], m["end"]),
        }
    return phases


def kfops_run_once() -> dict[str, Any]:
    """One `kfops run`: its wall time, its result.json and its steps' phases."""
    with tempfile.TemporaryDirectory(prefix="kfops-bench-runs-") as runs_dir:
        wall, _ = run_command([KFOPS, "run", PROJECT, "--no-cache", "--runs-dir", runs_dir])
        (result_file,) = Path(runs_dir).glob("*/result.json")
        result = json.loads(result_file.read_text(encoding="utf-8"))
        phases = step_phases(result_file.with_name("run.log"))
    if not result["succeeded"]:
        raise BenchError(f"kfops run did not succeed: {json.dumps(result)[:2000]}")
    return {"wall": wall, "phases": phases, **result}


def baseline_once(overrides: dict[str, Any], imports: list[str]) -> dict[str, Any]:
    """One baseline process: its wall time and the timings it printed."""
    with tempfile.TemporaryDirectory(prefix="kfops-bench-baseline-") as workdir:
        argv = [PYTHON, "-c", BASELINE_CODE, str(PIPELINE_FILE), workdir]
        wall, process = run_command([*argv, json.dumps(overrides), json.dumps(imports)])
    for line in process.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            return {"wall": wall, **json.loads(line[len(RESULT_MARKER) :])}
    raise BenchError(f"the baseline printed no result:\n{process.stdout[-2000:]}")


def project_overrides() -> dict[str, Any]:
    """pipeline.parameters from mlops.yaml: what `kfops run` passes on top of defaults."""
    with (REPO / PROJECT / "mlops.yaml").open(encoding="utf-8") as f:
        config = yaml.safe_load(f)
    return dict(config["pipeline"].get("parameters") or {})


def bench_run(run_repeat: int, piece_repeat: int, kfp_version: str) -> dict[str, Any]:
    """kfops run against the baseline, with every piece timed in the same rounds so
    that the machine's load changes touch all of them alike."""
    rounds = max(run_repeat, piece_repeat)
    log(
        f"[2/2] kfops run vs plain Python ({run_repeat} runs each), and compile, start-up,"
        f" imports and pip no-ops ({piece_repeat} runs each): {rounds} rounds of ~20-30 s"
    )
    overrides = project_overrides()
    imports = list(dict.fromkeys(s for ss in component_imports(PIPELINE_FILE).values() for s in ss))
    with tempfile.TemporaryDirectory(prefix="kfops-bench-compile-") as tmp:
        ir_file = Path(tmp) / "iris.yaml"
        run_command([KFOPS, "compile", PROJECT, "-o", str(ir_file)])  # also a warm-up
        pieces = piece_commands(ir_file, kfp_version)
        single = [pieces[k] for k in ("compile", "python_start", "import_kfp", "executor_start")]
        timed = [*single, *pieces["pip"], *pieces["step_imports"]]
        baseline_once(overrides, imports)  # warm-up
        for command in pieces["pip"]:
            run_command(command.argv, command.env)  # warm-up
        runs, baselines = [], []
        piece_timings = {command.label: Timing(command.label) for command in timed}
        for index in range(rounds):
            log(f"      round {index + 1}/{rounds}")
            if index < run_repeat:
                runs.append(kfops_run_once())
                baselines.append(baseline_once(overrides, imports))
            if index < piece_repeat:
                for command in timed:
                    seconds = run_command(command.argv, command.env)[0]
                    piece_timings[command.label].samples.append(seconds)

    def median_of(values: list[float]) -> float:
        return statistics.median(values)

    steps = list(runs[0]["steps"])
    return {
        "kfops": Timing("kfops run", [r["wall"] for r in runs]),
        "baseline": Timing("baseline", [b["wall"] for b in baselines]),
        "runner": median_of([r["seconds"] for r in runs]),
        "steps": {n: Timing(n, [r["steps"][n]["seconds"] for r in runs]) for n in steps},
        "phases": {
            n: {p: median_of([r["phases"][n][p] for r in runs]) for p in PHASES} for n in steps
        },
        "baseline_parts": {
            name: median_of([b["timings"][name] for b in baselines])
            for name in baselines[0]["timings"]
        },
        "accuracy": baselines[0]["accuracy"],
        "params": baselines[0]["params"],
        "compile": piece_timings[pieces["compile"].label],
        "python_start": piece_timings[pieces["python_start"].label],
        "import_kfp": piece_timings[pieces["import_kfp"].label],
        "executor_start": piece_timings[pieces["executor_start"].label],
        "kfp_profile": kfp_import_profile(),
        "pip": [piece_timings[c.label] for c in pieces["pip"]],
        "pips_per_step": pieces["pips_per_step"],
        "step_imports": [piece_timings[c.label] for c in pieces["step_imports"]],
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


def print_split(title: str, rows: list[tuple[str, float, str]]) -> None:
    print(f"  {title}:")
    for label, value, note in rows:
        print(f"    {label:<40}{secs(value)}  {note}".rstrip())


def print_run(r: dict[str, Any]) -> None:
    kfops, baseline, parts = r["kfops"], r["baseline"], r["baseline_parts"]
    steps: dict[str, Timing] = r["steps"]
    phases: dict[str, dict[str, float]] = r["phases"]
    n_steps = len(steps)

    print("\n== 2. kfops run --no-cache vs the same functions in one python process ==")
    print(f"  parameters {json.dumps(r['params'], sort_keys=True)}, accuracy {r['accuracy']:.4f}")
    print(f"  kfops run        median {secs(kfops.median)}, min {secs(kfops.min)}")
    print(f"  plain python     median {secs(baseline.median)}, min {secs(baseline.min)}")
    print(f"  ratio            {kfops.median / baseline.median:.1f}x of the median")

    pip_per_step = sum(t.median for t in r["pip"])
    print("\n== 3. where kfops run's time goes (medians) ==")
    print(f"  (a) kfops compile alone                      {secs(r['compile'].median)}")
    print(f"  (b) python start (-c pass)                   {secs(r['python_start'].median)}")
    print(f"      python start + import kfp                {secs(r['import_kfp'].median)}")
    prof = r["kfp_profile"]
    if {"kfp", "kfp.client", "kubernetes"} <= prof.keys():
        print(
            f"        (-X importtime: kfp {prof['kfp'] / 1e6:.2f} s, of which kfp.client"
            f" {prof['kfp.client'] / 1e6:.2f} s, kubernetes {prof['kubernetes'] / 1e6:.2f} s)"
        )
    label = "a step's executor start, _KFP_RUNTIME=true"
    print(f"      {label:<41}{secs(r['executor_start'].median)}")
    for timing in r["pip"]:
        print(f"  (c) {timing.label:<41}{secs(timing.median)}")
    print(f"      = {r['pips_per_step']} pip no-ops before every step, {secs(pip_per_step)}")
    print("  (d) each step: result.json's seconds, and its phases from run.log's timestamps")
    for phase, meaning in PHASES.items():
        print(f"      {phase:<9}{meaning}")
    header = ("step", "seconds", *PHASES, "baseline")
    print("      " + f"{header[0]:<12}" + "".join(f"{h:>10}" for h in header[1:]))
    for name, timing in steps.items():
        cells = (timing.median, *phases[name].values(), parts.get(name, 0.0))
        print("      " + f"{name:<12}" + "".join(f"{c:>9.2f}s" for c in cells))
    print("      (baseline: the same call in the plain-python process, libraries imported)")
    for timing in r["step_imports"]:
        print(f"      fresh {timing.label:<42}{secs(timing.median)}")

    step_sum = sum(t.median for t in steps.values())
    setup = sum(p["setup"] for p in phases.values())
    function = sum(p["function"] for p in phases.values())
    finish = sum(p["finish"] for p in phases.values())
    in_step_other = step_sum - setup - function - finish
    cli = kfops.median - r["runner"]
    runner = r["runner"] - step_sum
    # run.log cannot split setup into pip and python + kfp; split it as the separately
    # timed pieces do.
    pip_share = pip_per_step / (pip_per_step + r["executor_start"].median)
    pips = setup * pip_share
    compute = sum(parts.get(name, 0.0) for name in steps)
    libraries = parts["step libraries"]
    print()
    print_split(
        f"kfops run, {secs(kfops.median)}",
        [
            ("CLI start, read mlops.yaml, compile", cli, "wall - result.seconds"),
            ("runner process: start, kfp.local", runner, "result.seconds - sum of steps"),
            ("steps' setup: pip no-ops (est.)", pips, f"{pip_share:.0%} of setup, as in (c)"),
            ("steps' setup: executor start (est.)", setup - pips, "python, light kfp import"),
            ("steps' functions, with their imports", function, ""),
            ("steps' exit, reading their outputs", finish, ""),
            ("steps' other", in_step_other, "result.json - run.log phases"),
        ],
    )
    print_split(
        f"plain python, {secs(baseline.median)}",
        [
            ("import kfp.dsl + pipeline.py", parts["kfp.dsl + pipeline.py"], ""),
            ("import the steps' libraries, once", libraries, ""),
            ("the functions' own work", compute, ""),
            ("interpreter start-up and exit", baseline.median - sum(parts.values()), ""),
        ],
    )
    gap = kfops.median - baseline.median
    startups = cli + runner + (setup - pips) - (baseline.median - libraries - compute)
    reimports = function - libraries - compute
    finishing = finish + in_step_other
    print(f"  so the {gap:.1f} s gap is:")
    for value, what in (
        (pips, "pip no-ops before each step (est.)"),
        (startups, f"more Python start-ups and kfp imports: CLI, runner, {n_steps} executors"),
        (reimports, f"importing the steps' libraries {n_steps} times, not once"),
        (finishing, "step processes exiting, kfp.local reading their outputs"),
    ):
        print(f"    {value:5.1f} s ({value / gap:4.0%})  {what}")
    print(f"  while the pipeline's own compute is {compute:.2f} s.")


def print_table(v: dict[str, Any], r: dict[str, Any]) -> None:
    rows: list[tuple[str, Timing | str]] = [
        ("kfops validate pipelines/iris", v["validate"]),
        ("python -c 'import yaml, jsonschema'", v["baseline"]),
        ("  ratio (medians)", f"{v['validate'].median / v['baseline'].median:.2f}x"),
        ("kfops run pipelines/iris --no-cache", r["kfops"]),
        ("plain python, same three functions", r["baseline"]),
        ("  ratio (medians)", f"{r['kfops'].median / r['baseline'].median:.1f}x"),
        ("(a) kfops compile", r["compile"]),
        ("(b) python -c pass", r["python_start"]),
        ("(b) python -c 'import kfp'", r["import_kfp"]),
        (f"(b) {r['executor_start'].label}", r["executor_start"]),
        *[(f"(c) {timing.label}", timing) for timing in r["pip"]],
        *[(f"(d) step {name} (result.json)", timing) for name, timing in r["steps"].items()],
        *[(f"    {timing.label}", timing) for timing in r["step_imports"]],
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
        r = bench_run(args.run_repeat, args.piece_repeat, kfp_version)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    print_validate(v)
    print_run(r)
    print_table(v, r)
    print(f"\n(benchmark took {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
