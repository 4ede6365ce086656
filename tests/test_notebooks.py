"""Kale-tagged notebooks: both tag generations, every tag, data hand-over, real local runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest
import yaml
from click.testing import CliRunner
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from kfops.cli import cli
from kfops.notebook import dataflow, tags
from tests.conftest import GOLDEN, ROOT, check_golden

WINE = ROOT / "pipelines" / "wine-notebook"


def cell(source: str, *tags: str) -> Any:
    made = new_code_cell(source)
    if tags:
        made.metadata["tags"] = list(tags)
    return made


def write(path: Path, cells: list[Any], **kale: Any) -> Path:
    made = new_notebook(cells=cells)
    if kale:
        made.metadata["kubeflow_notebook"] = kale
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(made, str(path))
    return path


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


# A notebook in each tag generation, otherwise the same.
def _generation(tmp_path: Path, old: bool) -> Path:
    step = "block" if old else "step"
    image = {"docker_image": "python:3.10"} if old else {"base_image": "python:3.10"}
    return write(
        tmp_path / ("old.ipynb" if old else "new.ipynb"),
        [
            cell("import math", "imports"),
            cell("RATE = 0.5", "pipeline-parameters"),
            cell("x = [1, 2, 3]", f"{step}:make"),
            cell("y = [v * RATE for v in x]", f"{step}:scale", "prev:make"),
            cell("total = math.fsum(y)"),  # untagged: continues `scale`
            cell("total", "pipeline-metrics"),
        ],
        pipeline_name="gen",
        **image,
    )


def test_both_generations_generate_the_same_pipeline(tmp_path: Path) -> None:
    old = invoke("compile", str(_generation(tmp_path, old=True)), "--emit-python")
    new = invoke("compile", str(_generation(tmp_path, old=False)), "--emit-python")
    assert old[0] == new[0] == 0
    assert old[1].replace("old.ipynb", "X") == new[1].replace("new.ipynb", "X")
    assert 'base_image="python:3.10"' in new[1]


def test_data_flow_of_the_example() -> None:
    nb = tags.read(WINE / "train.ipynb", "train.ipynb")
    flow = dataflow.analyse(nb)
    assert flow is not None
    assert flow.order == ["load_data", "split", "train_forest", "train_logreg", "evaluate"]
    assert flow.inputs["split"] == {"wine": "load_data"}
    assert flow.inputs["evaluate"] == {
        "forest": "train_forest",
        "logreg": "train_logreg",
        "x_test": "split",
        "y_test": "split",
    }
    assert flow.outputs["split"] == ["x_test", "x_train", "y_test", "y_train"]
    assert flow.parameters["split"] == ["TEST_SIZE", "SEED"]
    assert flow.metrics["evaluate"] == ["forest_accuracy", "logreg_accuracy", "best_accuracy"]
    assert [p.name for p in nb.parameters.values()] == ["TEST_SIZE", "N_ESTIMATORS", "C", "SEED"]
    # the `skip` cell and the markdown cells are not in any step
    assert [c.number for c in nb.steps["load_data"].cells] == [6, 7]


def test_in_place_change_upstream_is_seen_downstream(tmp_path: Path) -> None:
    # `clean` changes `rows` without assigning it; `report` must get the cleaned rows.
    path = write(
        tmp_path / "nb.ipynb",
        [
            cell("rows = [3, None, 1]", "step:load"),
            cell("rows.remove(None)", "step:clean", "prev:load"),
            cell("print(sorted(rows))", "step:report", "prev:clean"),
        ],
    )
    nb = tags.read(path, "nb.ipynb")
    flow = dataflow.analyse(nb)
    assert flow is not None
    assert flow.inputs["report"] == {"rows": "clean"}
    assert flow.outputs == {"load": ["rows"], "clean": ["rows"], "report": []}


@pytest.mark.parametrize(
    ("code", "used", "defined"),
    [
        ("a = b + 1", ["b"], {"a"}),
        ("a = 1\nb = a", [], {"a", "b"}),
        ("x = x + 1", ["x"], {"x"}),
        ("import numpy as np\nfrom os import path", [], {"np", "path"}),
        ("def f(v):\n    return v + k", ["k"], {"f"}),
        ("squares = [i * i for i in items]", ["items"], {"squares"}),
        ("for i in range(n):\n    acc = i", ["range", "n"], {"i", "acc"}),
        ("with open(p) as f:\n    text = f.read()", ["open", "p"], {"f", "text"}),
        ("class A(Base):\n    size = n", ["Base", "n"], {"A"}),
        ("if (m := len(xs)) > 2:\n    pass", ["len", "xs"], {"m"}),
    ],
)
def test_names_in(code: str, used: list[str], defined: set[str]) -> None:
    assert dataflow.names_in(code) == (used, defined)


def test_every_cluster_tag_reaches_the_ir(tmp_path: Path) -> None:
    path = write(
        tmp_path / "tags.ipynb",
        [
            cell("import os", "imports"),
            cell(
                "value = 1",
                "step:first",
                "limit:cpu:500m",
                "limit:memory:1Gi",
                "limit:nvidia.com/gpu:2",
                "annotation:example.com/owner:data-team",
                "label:tier:gold",
                "image:python:3.12-slim",
                "cache:disabled",
                "secret:db-creds:password:DB_PASSWORD",
                "report:enabled",
            ),
            cell("print(value)", "step:second", "prev:first", "cache:enabled"),
        ],
        pipeline_name="tags",
        base_image="python:3.11",
        enable_caching=True,
        steps_defaults=["label:team:ml"],
        volumes=[{"name": "shared-data", "mount_point": "/data", "type": "pvc"}],
        experiment_name="tags",
    )
    code, out, err = invoke("compile", str(path), "-o", "-")
    assert code == 0, err
    ir, platform = yaml.safe_load_all(out)
    first = ir["deploymentSpec"]["executors"]["exec-first"]["container"]
    assert first["image"] == "python:3.12-slim"
    assert first["resources"]["resourceCpuLimit"] == "500m"
    assert first["resources"]["resourceMemoryLimit"] == "1Gi"
    assert first["resources"]["accelerator"]["resourceCount"] == "2"
    assert first["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    second = ir["deploymentSpec"]["executors"]["exec-second"]["container"]
    assert second["image"] == "python:3.11"
    tasks = ir["root"]["dag"]["tasks"]
    assert tasks["first"]["cachingOptions"] == {}
    assert tasks["second"]["cachingOptions"] == {"enableCache": True}
    assert tasks["second"]["dependentTasks"] == ["first"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert k8s["exec-first"]["podMetadata"] == {
        "annotations": {"example.com/owner": "data-team"},
        "labels": {"team": "ml", "tier": "gold"},
    }
    assert k8s["exec-second"]["podMetadata"] == {"labels": {"team": "ml"}}
    assert k8s["exec-first"]["secretAsEnv"][0]["keyToEnv"] == [
        {"envVar": "DB_PASSWORD", "secretKey": "password"}
    ]
    assert k8s["exec-first"]["pvcMount"][0]["mountPath"] == "/data"


def test_magics_are_removed_with_warnings(tmp_path: Path, in_dir: Any) -> None:
    path = write(
        tmp_path / "magic.ipynb",
        [
            cell("%%time\nx = 1\n!pip install scikit-learn pandas\nfiles = !ls", "step:one"),
            cell("%%bash\necho hi", "step:two", "prev:one"),
            cell("print(x)", "step:three", "prev:one"),
        ],
    )
    in_dir(tmp_path)
    code, out, _ = invoke("validate", path.name)
    assert code == 1  # step `two` has no code left
    lines = [line for line in out.splitlines() if not line.startswith("  hint")]
    assert lines == [
        'magic.ipynb:16:1: warning: cell 1 ("%%time"): line 3: `!pip install scikit-learn'
        " pandas` removed (a step cannot install packages)",
        'magic.ipynb:17:1: warning: cell 1 ("%%time"): line 4: IPython magic or shell command'
        " `files = !ls` removed",
        'magic.ipynb:21:1: warning: cell 2 ("%%bash"): `%%bash` cell is not Python; it is left'
        " out of the pipeline",
        'magic.ipynb:21:1: error: cell 2 ("%%bash"): step `two` has no code',
    ]
    assert "hint: add scikit-learn pandas to the requirements of the step image" in out


def test_unknown_metadata_is_a_warning(tmp_path: Path) -> None:
    path = write(
        tmp_path / "meta.ipynb",
        [cell("x = 1", "step:only")],
        pipeline_name="meta",
        snapshot_volumes=True,
        something_new={"a": 1},
    )
    code, out, _ = invoke("validate", str(path))
    assert code == 0
    assert "warning: unknown kubeflow_notebook metadata key `something_new` ignored" in out
    assert "warning: `snapshot_volumes` is not supported by kfops and is ignored" in out


def test_mlops_yaml_beside_a_notebook_wins_and_says_so() -> None:
    code, out, _ = invoke("validate", str(WINE / "train.ipynb"))
    assert code == 0
    assert "using " in out and "mlops.yaml, which names this notebook" in out


def test_mlops_yaml_parameters_override_the_notebook() -> None:
    code, out, _ = invoke("compile", str(WINE), "-o", "-", "-p", "C=0.5")
    assert code == 0
    params = yaml.safe_load_all(out).__next__()["root"]["inputDefinitions"]["parameters"]
    assert params["N_ESTIMATORS"]["defaultValue"] == 50  # from mlops.yaml
    assert params["C"]["defaultValue"] == 0.5  # from --param
    assert params["TEST_SIZE"]["defaultValue"] == 0.3  # from the notebook


def test_mlops_yaml_parameter_must_exist_in_the_notebook(tmp_path: Path, in_dir: Any) -> None:
    write(tmp_path / "nb.ipynb", [cell("N = 1", "pipeline-parameters"), cell("x = N", "step:a")])
    (tmp_path / "mlops.yaml").write_text(
        "version: 1\nname: nb\npipeline:\n  notebook: nb.ipynb\n  parameters:\n    M: 2\n"
    )
    in_dir(tmp_path)
    code, out, _ = invoke("validate")
    assert code == 1
    assert out == (
        "mlops.yaml:6:5: error: `M` is not a parameter of `nb.ipynb`"
        " (at pipeline.parameters.M)\n  hint: its parameters: `N`\n"
    )


def test_compile_goldens(regen: bool) -> None:
    code, out, err = invoke("compile", str(WINE), "--emit-python")
    assert code == 0, err
    check_golden(GOLDEN / "notebook" / "wine_pipeline.py", out, regen)
    code, out, err = invoke("compile", str(WINE), "-o", "-")
    assert code == 0, err
    stable = "\n".join(
        line for line in out.splitlines() if not line.startswith("sdkVersion:")
    ).replace("kfp==2.17.3", "kfp==2.17.X")
    check_golden(GOLDEN / "notebook" / "wine.yaml", stable + "\n", regen)


def test_generated_code_is_valid_python_and_names_its_cells() -> None:
    code, out, _ = invoke("compile", str(WINE), "--emit-python")
    assert code == 0
    compile(out, "generated.py", "exec")
    assert "    # step `evaluate` of 'train.ipynb': cell 12" in out
    assert 'exec(compile(r"""\nforest_accuracy = accuracy(forest, x_test, y_test)' in out


# --- real runs --------------------------------------------------------------------------


def _run(path: Path, runs: Path, *args: str) -> tuple[int, str, dict[str, Any]]:
    result = CliRunner().invoke(cli, ["run", str(path), "--runs-dir", str(runs), *args])
    found = sorted(runs.glob("*/result.json"))
    return result.exit_code, result.output, json.loads(found[-1].read_text()) if found else {}


@pytest.mark.slow
def test_example_notebook_runs(tmp_path: Path) -> None:
    code, out, result = _run(WINE, tmp_path, "--no-cache")
    assert code == 0, out
    order = list(result["steps"])
    # the two training steps are independent (fan-out): either may run first
    assert order[:2] == ["load-data", "split"] and order[4] == "evaluate"
    assert set(order[2:4]) == {"train-forest", "train-logreg"}
    metrics = result["metrics"]["evaluate"]
    assert set(metrics) == {"forest_accuracy", "logreg_accuracy", "best_accuracy"}
    assert metrics["best_accuracy"] == max(metrics["forest_accuracy"], metrics["logreg_accuracy"])
    assert metrics["best_accuracy"] >= 0.9
    forest = result["steps"]["train-forest"]["outputs"]["out_forest"]
    assert forest["metadata"]["kfops_format"] == "joblib"
    x_train = result["steps"]["split"]["outputs"]["out_x_train"]
    assert x_train["metadata"] == {"kfops_format": "npy", "python_type": "numpy.ndarray"}
    wine = result["steps"]["load-data"]["outputs"]["out_wine"]
    assert wine["metadata"]["kfops_format"] == "pandas"
    run_dir = next(p for p in tmp_path.iterdir() if p.name != ".cache")
    # the step's own output is kept; the data file was found by its relative path
    assert (run_dir / "logs" / "load-data.log").read_text() == "(178, 14)\n"
    assert "best is" in (run_dir / "logs" / "evaluate.log").read_text()


@pytest.mark.slow
def test_old_generation_notebook_runs_with_params(tmp_path: Path) -> None:
    path = _generation(tmp_path, old=True)
    code, out, result = _run(path, tmp_path / "runs", "--no-cache", "-p", "RATE=2")
    assert code == 0, out
    assert result["metrics"] == {"scale": {"total": 12.0}}
    assert result["parameters"] == {"RATE": 2.0}


@pytest.mark.slow
def test_hand_over_of_every_kind_and_a_failing_cell(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows.csv").write_text("a,b\n1,2\n3,4\n")
    path = write(
        tmp_path / "kinds.ipynb",
        [
            new_markdown_cell("kinds of values"),
            cell("import numpy as np\nimport pandas as pd", "imports"),
            cell("class Box:\n    def __init__(self, v):\n        self.v = v", "functions"),
            cell(
                "frame = pd.read_csv('data/rows.csv')\narray = np.arange(4)\nbox = Box(7)\n"
                "count = 3\nlabel = 'ok'\nnested = {'k': (1, 2)}",
                "step:make",
            ),
            cell(
                "assert frame['b'].sum() == 6\nassert array.tolist() == [0, 1, 2, 3]\n"
                "assert box.v == 7 and count == 3 and label == 'ok'\nassert nested['k'] == (1, 2)\n"
                "print('all good')",
                "step:check",
                "prev:make",
            ),
            cell("raise RuntimeError(f'broken on purpose {count}')", "step:fail", "prev:check"),
        ],
    )
    code, out, result = _run(path, tmp_path / "runs", "--no-cache")
    assert code == 1
    assert result["steps"]["check"]["status"] == "SUCCESS"
    assert result["steps"]["fail"]["status"] == "FAILURE"
    formats = {
        name: value["metadata"]["kfops_format"]
        for name, value in result["steps"]["make"]["outputs"].items()
    }
    assert formats == {
        "out_array": "npy",
        "out_box": "pickle",
        "out_count": "json",
        "out_frame": "pandas",
        "out_label": "json",
        "out_nested": "pickle",
    }
    # the traceback points at the notebook cell and line
    assert 'File "kinds.ipynb, cell 6", line 1, in <module>' in out
    assert "RuntimeError: broken on purpose 3" in out


@pytest.mark.slow
def test_nested_notebook_runs_in_its_own_folder(tmp_path: Path) -> None:
    # mlops.yaml at the top, the notebook and its data one folder down: relative paths
    # resolve against the notebook's folder, as in Jupyter.
    (tmp_path / "notebooks" / "data").mkdir(parents=True)
    (tmp_path / "notebooks" / "data" / "n.txt").write_text("41")
    write(
        tmp_path / "notebooks" / "nb.ipynb",
        [
            cell("n = int(open('data/n.txt').read())", "step:read"),
            cell("answer = n + 1", "step:add", "prev:read"),
            cell("answer", "pipeline-metrics"),
        ],
    )
    (tmp_path / "mlops.yaml").write_text(
        "version: 1\nname: nested\npipeline:\n  notebook: notebooks/nb.ipynb\n"
    )
    code, out, result = _run(tmp_path, tmp_path / "runs", "--no-cache")
    assert code == 0, out
    assert result["metrics"] == {"add": {"answer": 42.0}}


def test_notebook_ir_is_byte_for_byte_stable_across_processes(tmp_path: Path) -> None:
    import subprocess
    import sys

    outputs = []
    for i in range(2):
        target = tmp_path / f"{i}.yaml"
        subprocess.run(
            [sys.executable, "-m", "kfops", "compile", str(WINE), "-o", str(target)],
            check=True,
            capture_output=True,
        )
        outputs.append(target.read_bytes())
    assert outputs[0] == outputs[1]


def test_init_for_a_notebook(tmp_path: Path, in_dir: Any) -> None:
    write(
        tmp_path / "My Notebook.ipynb",
        [cell("K = 3", "pipeline-parameters"), cell("x = K * 2", "step:double_it")],
    )
    in_dir(tmp_path)
    code, _, err = invoke("init", "My Notebook.ipynb")
    assert code == 0, err
    text = (tmp_path / "mlops.yaml").read_text()
    assert "name: my-notebook" in text
    assert "  notebook: My Notebook.ipynb\n" in text
    assert "  #   K: 3\n" in text
    assert "  #   double-it:\n" in text
    assert invoke("validate") == (0, "", "valid\n")


@pytest.mark.slow
def test_sub_pipeline_notebook_is_inlined_and_runs(tmp_path: Path) -> None:
    (tmp_path / "prep" / "data").mkdir(parents=True)
    (tmp_path / "prep" / "data" / "base.txt").write_text("5\n")
    write(
        tmp_path / "prep" / "prep.ipynb",
        [
            cell("import math", "imports"),
            cell("base = int(open('data/base.txt').read())", "step:read"),
            cell("root = math.sqrt(base * seed)", "step:calc", "prev:read"),
        ],
    )
    sub = cell("", "notebook:prep", "prev:start")
    sub.metadata["notebook_path"] = "prep/prep.ipynb"
    main = write(
        tmp_path / "main.ipynb",
        [
            cell("import json", "imports"),
            cell("seed = 20", "step:start"),
            sub,
            cell("print(json.dumps({'root': root}))", "step:finish", "prev:prep"),
            cell("root", "pipeline-metrics"),
        ],
    )
    nb = tags.read(main, "main.ipynb")
    flow = dataflow.analyse(nb)
    assert flow is not None, [p.render() for p in nb.problems]
    assert flow.upstream == {
        "start": [],
        "prep_read": ["start"],
        "prep_calc": ["prep_read"],
        "finish": ["prep_calc"],
    }
    assert flow.inputs["prep_calc"] == {"base": "prep_read", "seed": "start"}
    code, out, result = _run(main, tmp_path / "runs", "--no-cache")
    assert code == 0, out
    assert result["metrics"] == {"prep-calc": {"root": 10.0}}
    run_dir = next(p for p in (tmp_path / "runs").iterdir() if p.name != ".cache")
    assert (run_dir / "logs" / "finish.log").read_text() == '{"root": 10.0}\n'


@pytest.mark.slow
def test_every_tag_and_magics_run_locally(tmp_path: Path) -> None:
    path = write(
        tmp_path / "all.ipynb",
        [
            cell("%load_ext autoreload\nimport os", "imports"),
            cell("def twice(v):\n    return 2 * v", "functions"),
            cell("START = 4", "pipeline-parameters"),
            cell(
                "%%time\n!pip install scikit-learn\nvalue = twice(START)",
                "step:first",
                "limit:cpu:500m",
                "limit:memory:1Gi",
                "annotation:example.com/owner:data",
                "label:tier:gold",
                "image:python:3.12-slim",
                "cache:disabled",
                "secret:db-creds:password:DB_PASSWORD",
            ),
            cell("print(value)"),  # untagged: still `first`
            cell("raise SystemExit('skipped cells never run')", "skip"),
            cell("final = value + 1", "step:second", "prev:first", "cache:enabled"),
            cell("final", "pipeline-metrics"),
        ],
        steps_defaults=["label:team:ml"],
        volumes=[{"name": "shared-data", "mount_point": "/data", "type": "pvc"}],
    )
    code, out, result = _run(path, tmp_path / "runs", "--no-cache")
    assert code == 0, out
    assert result["metrics"] == {"second": {"final": 9.0}}
    assert "the local runner ignores them for: first" in out
    assert "Kubernetes settings (pod labels and annotations, secrets, volumes)" in out
    run_dir = next(p for p in (tmp_path / "runs").iterdir() if p.name != ".cache")
    assert (run_dir / "logs" / "first.log").read_text().splitlines()[-1] == "8"


@pytest.mark.parametrize(
    ("code", "used", "defined"),
    [
        ("counter += 1", ["counter"], {"counter"}),
        ("if flag:\n    model = 0\nelse:\n    model = model + 1", ["flag", "model"], {"model"}),
        ("y = [x for x in range(3)] + [x]", ["range", "x"], {"y"}),
        ("seen = [last := v for v in data]\nprint(last)", ["data", "print"], {"seen", "last"}),
        (
            "try:\n    value = risky()\nexcept ValueError:\n    value = value_default\n",
            ["risky", "ValueError", "value_default"],
            {"value"},
        ),
        ("f = lambda a: a + offset", ["offset"], {"f"}),
    ],
)
def test_names_in_tricky_scopes(code: str, used: list[str], defined: set[str]) -> None:
    assert dataflow.names_in(code) == (used, defined)


def test_shared_names_rebound_upstream_and_read_by_functions(tmp_path: Path) -> None:
    path = write(
        tmp_path / "nb.ipynb",
        [
            cell("def scaled(v):\n    return v * FACTOR\nLIMIT = FACTOR * 2", "functions"),
            cell("FACTOR = 3\nLR = 0.1", "pipeline-parameters"),
            cell("LR = 0.5\nbase = 1", "step:a"),
            cell("print(scaled(base), LR, LIMIT)", "step:b", "prev:a"),
        ],
    )
    nb = tags.read(path, "nb.ipynb")
    flow = dataflow.analyse(nb)
    assert flow is not None, [p.render() for p in nb.problems]
    assert flow.parameters["b"] == ["FACTOR", "LR"]
    assert flow.inputs["b"] == {"LR": "a", "base": "a"}


def test_code_from_a_step_is_run_again_and_unknown_names_are_flagged(
    tmp_path: Path, in_dir: Any
) -> None:
    # Kale hands functions on with dill; kfops runs their definitions again downstream.
    write(
        tmp_path / "nb.ipynb",
        [
            cell("import json\ndef helper(v):\n    return v + 1\nvalue = 1", "step:a"),
            cell("print(helper(value), json.dumps(mystery))", "step:b", "prev:a"),
        ],
    )
    in_dir(tmp_path)
    code, out, _ = invoke("validate", "nb.ipynb")
    assert code == 0
    assert out.splitlines() == [
        'nb.ipynb:21:1: warning: cell 2 ("print(helper(value), json.dumps(myste..."): step `b`'
        " uses `mystery`, which nothing in the notebook defines",
        "  hint: define it in a step upstream, or in the imports or functions cell",
    ]


def _definitions_notebook(tmp_path: Path) -> Path:
    return write(
        tmp_path / "defs.ipynb",
        [
            cell("import json", "imports"),
            cell(
                "import math\nimport json\nSCALE = 3\n\n"
                "def helper(v):\n    return math.floor(v * SCALE) + offset(v)\n\n"
                "def offset(v):\n    return 1\n\n"
                "class Box:\n    def __init__(self, v):\n        self.v = helper(v)\n\n"
                "value = 1.5\nunused = lambda: 0",
                "step:a",
            ),
            cell(
                "print(helper(value), Box(2).v, math.pi > 3, json.dumps(value))", "step:b", "prev:a"
            ),
            cell("result = helper(4.0)\nprint(result)", "step:c", "prev:b"),
            cell("result", "pipeline-metrics"),
        ],
    )


def test_functions_classes_and_imports_are_carried_downstream(tmp_path: Path) -> None:
    path = _definitions_notebook(tmp_path)
    nb = tags.read(path, "defs.ipynb")
    flow = dataflow.analyse(nb)
    assert flow is not None, [p.render() for p in nb.problems]
    # `json`, in the imports cell and imported again by step `a`, is no problem
    assert nb.problems == []
    # the functions' free names are handed over as values; the definitions are not
    assert flow.inputs["b"] == {"SCALE": "a", "value": "a"}
    assert flow.outputs["a"] == ["SCALE", "value"]
    carried = {step: [c.names for c in found] for step, found in flow.carried.items()}
    assert carried == {
        "a": [],
        "b": [("math",), ("json",), ("helper",), ("offset",), ("Box",)],
        "c": [("math",), ("helper",), ("offset",)],
    }
    assert flow.inputs["c"] == {"SCALE": "b"}  # the last upstream step that has it
    # tracebacks keep the cell's own line numbers
    assert flow.carried["b"][2].code.startswith("\n" * 4 + "def helper(v):")


@pytest.mark.slow
def test_functions_classes_and_imports_carried_downstream_run(tmp_path: Path) -> None:
    path = _definitions_notebook(tmp_path)
    code, out, result = _run(path, tmp_path / "runs", "--no-cache")
    assert code == 0, out
    assert result["metrics"] == {"c": {"result": 13.0}}
    run_dir = next(p for p in (tmp_path / "runs").iterdir() if p.name != ".cache")
    assert (run_dir / "logs" / "b.log").read_text() == "5 7 True 1.5\n"


# --- where Kale 2.3 is lenient, kfops is too (with a warning) ---------------------------


def _validate(tmp_path: Path, in_dir: Any, name: str = "nb.ipynb") -> tuple[int, list[str]]:
    in_dir(tmp_path)
    code, out, _ = invoke("validate", name)
    return code, out.splitlines()


def test_an_empty_step_tag_continues_the_step_above(tmp_path: Path, in_dir: Any) -> None:
    path = write(
        tmp_path / "nb.ipynb",
        [
            cell("x = 1", "step:load"),
            cell("y = x + 1", "step:", "prev:other", "limit:cpu:2"),
            cell("print(y)", "step:report", "prev:load"),
        ],
    )
    nb = tags.read(path, "nb.ipynb")
    assert [c.number for c in nb.steps["load"].cells] == [1, 2]
    assert nb.steps["load"].prev == [] and nb.steps["load"].limits == {}
    flow = dataflow.analyse(nb)
    assert flow is not None and flow.inputs["report"] == {"y": "load"}
    assert _validate(tmp_path, in_dir) == (
        0,
        [
            'nb.ipynb:18:1: warning: cell 2 ("y = x + 1"): `step:` has no name, so the cell'
            " continues the step above; tags `prev:other`, `limit:cpu:2` are ignored, as Kale"
            " does",
            "  hint: name the step (step:NAME) to make it a step of its own",
        ],
    )


def test_tags_beside_a_special_tag_are_ignored(tmp_path: Path, in_dir: Any) -> None:
    path = write(
        tmp_path / "nb.ipynb",
        [
            cell("import math", "imports", "prev:train", "limit:memory:4Gi"),
            cell("LR = 0.1", "pipeline-parameters", "prev:train"),
            cell("raise SystemExit", "skip", "step:never"),
            cell("x = math.pi * LR", "step:train"),
        ],
    )
    nb = tags.read(path, "nb.ipynb")
    assert list(nb.steps) == ["train"] and list(nb.parameters) == ["LR"]
    assert [c.number for c, _ in nb.imports] == [1]
    assert _validate(tmp_path, in_dir) == (
        0,
        [
            'nb.ipynb:4:1: warning: cell 1 ("import math"): tags `prev:train`,'
            " `limit:memory:4Gi` are ignored on an `imports` cell, as Kale does",
            "  hint: remove them, or move them to a cell tagged step:NAME",
            'nb.ipynb:20:1: warning: cell 2 ("LR = 0.1"): tag `prev:train` is ignored on a'
            " `pipeline-parameters` cell, as Kale does",
            "  hint: remove it, or move it to a cell tagged step:NAME",
            'nb.ipynb:35:1: warning: cell 3 ("raise SystemExit"): tag `step:never` is ignored on'
            " a `skip` cell, as Kale does",
            "  hint: remove it, or move it to a cell tagged step:NAME",
        ],
    )


def test_untagged_cells_before_the_first_tag_are_left_out(tmp_path: Path, in_dir: Any) -> None:
    path = write(
        tmp_path / "nb.ipynb",
        [
            new_markdown_cell("# Training"),
            cell("!pip install scikit-learn"),
            cell("import os"),
            cell("import math", "imports"),
            cell("y = math.pi * 2", "step:train"),
        ],
    )
    nb = tags.read(path, "nb.ipynb")
    assert [c.number for c, _ in nb.imports] == [4]
    code, lines = _validate(tmp_path, in_dir)
    assert code == 0
    assert lines == [
        'nb.ipynb:12:1: warning: cell 2 ("!pip install scikit-learn"): has no tag and no tagged'
        " cell above it, so it is left out of the pipeline, as Kale does",
        "  hint: tag it `imports`, `step:NAME` or `skip`",
        'nb.ipynb:22:1: warning: cell 3 ("import os"): has no tag and no tagged cell above it,'
        " so it is left out of the pipeline, as Kale does",
        "  hint: tag it `imports`, `step:NAME` or `skip`",
    ]


def test_positions_survive_cell_type_keys_outside_the_cells(tmp_path: Path, in_dir: Any) -> None:
    # PyCharm writes "cell_type" into the notebook's (and cells') metadata.
    made = new_notebook(
        cells=[cell("import math", "imports"), cell("x = (1,", "step:train")],
        metadata={"pycharm": {"stem_cell": {"cell_type": "raw", "source": []}}},
    )
    made.cells[0].metadata["pycharm"] = {"cell_type": "code", "name": "#%%"}
    path = tmp_path / "nb.ipynb"
    nbformat.write(made, str(path))
    text = path.read_text()
    line = text.splitlines().index('    "x = (1,"') + 1
    code, lines = _validate(tmp_path, in_dir)
    assert code == 1
    assert lines[0].startswith(f'nb.ipynb:{line}:1: error: cell 2 ("x = (1,"): line 1:')


def test_kale_2_3_config_fields_are_known_metadata(tmp_path: Path, in_dir: Any) -> None:
    write(
        tmp_path / "nb.ipynb",
        [cell("x = 1", "step:only")],
        pipeline_name="meta",
        experiment_name="e",
        volume_access_mode="rwm",
        storage_class_name="standard",
        marshal_path="/tmp/marshal",
        abs_working_dir="/home/jovyan",
        kfp_host="http://kfp",
        output_path="out",
        notebook_path="nb.ipynb",
        timeout=600,
    )
    assert _validate(tmp_path, in_dir) == (
        0,
        ["nb.ipynb: warning: `timeout` is not supported by kfops and is ignored"],
    )


def test_metrics_that_no_step_assigns_are_logged_by_the_last_reader(tmp_path: Path) -> None:
    path = write(
        tmp_path / "nb.ipynb",
        [
            cell("LR = 0.5\nEPOCHS = 3", "pipeline-parameters"),
            cell("score = 0.25", "step:train"),
            cell("print(score * LR)", "step:report", "prev:train"),
            cell("z = 1", "step:other"),
            cell("print(LR)\nprint(score)\nEPOCHS", "pipeline-metrics"),
        ],
    )
    nb = tags.read(path, "nb.ipynb")
    flow = dataflow.analyse(nb)
    assert flow is not None, [p.render() for p in nb.problems]
    # `score` is assigned by `train`; `LR` is only read, by `report`; no step mentions
    # `EPOCHS`, so the last step in topological order logs it
    assert flow.metrics == {"train": ["score"], "report": ["LR"], "other": ["EPOCHS"]}
    assert flow.parameters["other"] == ["EPOCHS"]


@pytest.mark.slow
def test_metrics_of_parameters_and_read_names_run(tmp_path: Path) -> None:
    path = write(
        tmp_path / "nb.ipynb",
        [
            cell("LR = 0.5", "pipeline-parameters"),
            cell("score = 0.25", "step:train"),
            cell("total = score * LR", "step:report", "prev:train"),
            cell("LR\nscore\ntotal", "pipeline-metrics"),
        ],
    )
    code, out, result = _run(path, tmp_path / "runs", "--no-cache", "-p", "LR=2")
    assert code == 0, out
    assert result["metrics"] == {"train": {"score": 0.25}, "report": {"LR": 2.0, "total": 0.5}}
