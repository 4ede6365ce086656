"""How fast are a local run and a compile of a notebook, against Jupyter and Kale?

Run from the repository root with the project's virtual environment:

    .venv/bin/python benchmarks/bench_local_runs.py [--run-repeat N] [--compile-repeat N]

It prints figures only (no asserts), every one a fresh subprocess timed from outside,
cold against cold (caches off on both sides: `--no-cache`, a fresh kernel):

1. a nine-step fan-out/fan-in notebook that imports pandas and scikit-learn:
   `kfops run --no-cache` (steps forked from the fork server, independent steps side
   by side, as many as there are cores), the same with `--jobs 1` (one at a time) and
   with `KFOPS_LOCAL_FORK=0` (a fresh Python process per step, as before the fork
   server), and `jupyter nbconvert --to notebook --execute`; and, warm against warm, a
   `kfops run` whose every step is served from the cache;
2. `kfops compile` against Kale 2.3's `kale --nb` on the same notebook;
3. `kfops compile` of generated notebooks of 50 to 500 steps: the cost per step.

The virtual environments of Kale and of nbconvert are those of bench_notebook.py
(made on first use, git-ignored).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import nbformat
from bench_notebook import (
    DEFAULT_KALE_VENV,
    DEFAULT_NB_VENV,
    KALE_OUT,
    KALE_PACKAGE,
    KFOPS,
    Measure,
    code_cell,
    generated_notebook,
    kale_env,
    nbconvert_measure,
    setup_kale,
    setup_nbconvert,
)
from bench_validate_run import log

MODELS = {
    "forest": "RandomForestClassifier(n_estimators=30, random_state=SEED)",
    "logreg": "LogisticRegression(max_iter=500)",
    "tree": "DecisionTreeClassifier(random_state=SEED)",
}


def nine_steps() -> nbformat.NotebookNode:
    """load -> split -> three models (fan-out) -> a score each -> compare (fan-in)."""
    cells = [
        code_cell(
            "import numpy as np\nimport pandas as pd\n"
            "from sklearn.datasets import make_classification\n"
            "from sklearn.ensemble import RandomForestClassifier\n"
            "from sklearn.linear_model import LogisticRegression\n"
            "from sklearn.metrics import accuracy_score\n"
            "from sklearn.model_selection import train_test_split\n"
            "from sklearn.tree import DecisionTreeClassifier",
            "imports",
        ),
        code_cell("SEED = 7\nROWS = 2000", "pipeline-parameters"),
        code_cell(
            "x, y = make_classification(n_samples=ROWS, n_features=12, random_state=SEED)\n"
            "frame = pd.DataFrame(x).assign(label=y)",
            "step:load",
        ),
        code_cell(
            "train, test = train_test_split(frame, test_size=0.3, random_state=SEED)",
            "step:split",
            "prev:load",
        ),
    ]
    for name, estimator in MODELS.items():
        cells.append(
            code_cell(
                f"{name} = {estimator}\n{name}.fit(train.drop(columns='label'), train['label'])",
                f"step:fit_{name}",
                "prev:split",
            )
        )
    for name in MODELS:
        cells.append(
            code_cell(
                f"acc_{name} = float(accuracy_score(test['label'],"
                f" {name}.predict(test.drop(columns='label'))))",
                f"step:score_{name}",
                f"prev:fit_{name}",
            )
        )
    cells.append(
        code_cell(
            "best = max(" + ", ".join(f"acc_{n}" for n in MODELS) + ")\nprint(best)",
            "step:compare",
            *[f"prev:score_{n}" for n in MODELS],
        )
    )
    cells.append(code_cell("print(best)", "pipeline-metrics"))
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {
        "display_name": "Python 3",
        "language": "python",
        "name": "python3",
    }
    notebook.metadata["kubeflow_notebook"] = {
        "pipeline_name": "nine-steps",
        "experiment_name": "bench",
        "base_image": "python:3.11-slim",
    }
    return notebook


def timed(measure: Measure, repeat: int) -> None:
    for _ in range(repeat):
        measure.once()


def show(label: str, measure: Measure | None) -> str:
    if measure is None or not measure.ok:
        reason = measure.error.splitlines()[0] if measure is not None else "skipped"
        return f"  {label:<44} n/a ({reason})"
    samples = measure.timing.samples
    return f"  {label:<44} median {statistics.median(samples):6.2f} s  min {min(samples):6.2f} s"


def ratio(a: Measure | None, b: Measure | None) -> str:
    if a is None or b is None or not a.ok or not b.ok:
        return "n/a"
    return f"{statistics.median(a.timing.samples) / statistics.median(b.timing.samples):.2f}x"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--run-repeat", type=int, default=3)
    parser.add_argument("--compile-repeat", type=int, default=3)
    parser.add_argument("--sizes", default="50,100,200,500", help="generated notebooks' steps")
    args = parser.parse_args()
    kale = setup_kale(DEFAULT_KALE_VENV.resolve(), KALE_PACKAGE)
    nb = setup_nbconvert(DEFAULT_NB_VENV.resolve())
    work = Path(tempfile.mkdtemp(prefix="kfops-bench-runs-"))
    try:
        notebook = work / "nine.ipynb"
        nbformat.write(nine_steps(), notebook)
        runs = work / "runs"
        forked = Measure(
            "kfops run --no-cache (fork server)",
            [KFOPS, "run", str(notebook), "--no-cache", "--runs-dir", str(runs)],
        )
        one_at_a_time = Measure(
            "kfops run --no-cache --jobs 1 (fork server)",
            [KFOPS, "run", str(notebook), "--no-cache", "--jobs", "1", "--runs-dir", str(runs)],
        )
        no_fork = dict(os.environ, KFOPS_LOCAL_FORK="0")
        plain = Measure(
            "kfops run --no-cache (KFOPS_LOCAL_FORK=0)",
            [KFOPS, "run", str(notebook), "--no-cache", "--runs-dir", str(runs)],
            env=no_fork,
        )
        # warm against warm: a re-run with nothing changed, served from kfp.local's cache
        cached = Measure(
            "kfops run (every step cached)",
            [KFOPS, "run", str(notebook), "--runs-dir", str(work / "cached-runs")],
        )
        jupyter = nbconvert_measure("nbconvert --execute", nb, notebook, work) if nb.ok else None
        log(f"[1/3] runs of the nine-step notebook, {args.run_repeat} rounds")
        rounds = (forked, one_at_a_time, plain, cached, jupyter)
        for measure in rounds:
            if measure is not None:
                measure.once(record=False)  # warm the page cache (and the cache), check it works
        for index in range(args.run_repeat):
            log(f"      round {index + 1}/{args.run_repeat}")
            for measure in rounds:
                if measure is not None:
                    measure.once()
        log(f"[2/3] kfops compile vs kale --nb, {args.compile_repeat} rounds")
        kfops_compile = Measure(
            "kfops compile", [KFOPS, "compile", str(notebook), "-o", str(work / "kfops.yaml")]
        )
        kale_compile = (
            Measure(
                "kale --nb",
                [kale.bin("kale"), "--nb", notebook.name, "--output_path", KALE_OUT],
                work,
                kale_env(),
            )
            if kale.ok
            else None
        )
        for measure in (kfops_compile, kale_compile):
            if measure is not None:
                measure.once(record=False)
                timed(measure, args.compile_repeat)
        log("[3/3] kfops compile as notebooks grow")
        growth = []
        for size in [int(n) for n in args.sizes.split(",")]:
            path = work / f"steps{size}.ipynb"
            nbformat.write(generated_notebook(size, f"bench-{size}"), path)
            measure = Measure(
                f"kfops compile, {size} steps",
                [KFOPS, "compile", str(path), "-o", str(work / f"steps{size}.yaml")],
            )
            timed(measure, 1)
            growth.append((size, measure))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\npython {sys.version.split()[0]}, {os.cpu_count()} CPUs; cold against cold")
    print("\n1. a nine-step fan-out/fan-in notebook (pandas, scikit-learn)")
    for label, measure in (
        ("kfops run, fork server", forked),
        ("kfops run --jobs 1, fork server", one_at_a_time),
        ("kfops run, a process per step", plain),
        ("jupyter nbconvert --execute", jupyter),
        ("kfops run, every step cached (warm)", cached),
    ):
        print(show(label, measure))
    print(f"  kfops run (fork server) / nbconvert:        {ratio(forked, jupyter)}  (goal <= 1.0x)")
    print(f"  kfops run --jobs 1 / nbconvert:             {ratio(one_at_a_time, jupyter)}")
    print(f"  kfops run (fork server) / --jobs 1:         {ratio(forked, one_at_a_time)}")
    print(f"  kfops run (fork server) / process per step: {ratio(forked, plain)}")
    print(f"  kfops run (process per step) / nbconvert:   {ratio(plain, jupyter)}")
    print("\n2. compile, the same notebook")
    print(show("kfops compile", kfops_compile))
    print(show("kale --nb (Kale 2.3)", kale_compile))
    print(
        f"  kale / kfops:                               {ratio(kale_compile, kfops_compile)}"
        "  (goal >= 5x)"
    )
    print("\n3. kfops compile as generated notebooks grow")
    for size, measure in growth:
        per_step = (
            f"{1000 * statistics.median(measure.timing.samples) / size:6.1f} ms a step"
            if measure.ok
            else ""
        )
        print(show(f"{size} steps", measure) + "  " + per_step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
