"""kfops compile: goldens of the IR, determinism, overrides and errors in user code."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from kfops.cli import cli
from tests.conftest import DATA, GOLDEN, ROOT, check_golden

PIPELINES = DATA / "pipelines"


def _stable(ir_text: str) -> str:
    """The IR without what changes with the kfp patch release."""
    text = re.sub(r"(?m)^sdkVersion: .*\n", "", ir_text)
    return re.sub(r"kfp==2\.17\.\d+", "kfp==2.17.X", text)


def _compile(project: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["compile", str(project), "-o", "-", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    "project",
    [ROOT / "pipelines" / "iris", DATA / "mlops" / "valid" / "full.yaml", PIPELINES / "hello"],
    ids=["iris", "full-overrides", "hello-env"],
)
def test_compile_golden(project: Path, regen: bool) -> None:
    code, out, err = _compile(project)
    assert code == 0, err
    name = project.stem if project.suffix else project.name
    check_golden(GOLDEN / "compile" / f"{name}.yaml", _stable(out), regen)


def test_overrides_land_in_the_ir() -> None:
    code, out, err = _compile(DATA / "mlops" / "valid" / "full.yaml")
    assert code == 0, err
    ir = yaml.safe_load(out)
    assert ir["pipelineInfo"] == {
        "description": "Every section this version of kfops knows.",
        "name": "iris-full",
    }
    params = ir["root"]["inputDefinitions"]["parameters"]
    assert params["n_estimators"]["defaultValue"] == 10
    assert params["test_size"]["defaultValue"] == 0.25
    tasks = ir["root"]["dag"]["tasks"]
    assert tasks["train-model"]["retryPolicy"]["maxRetryCount"] == 3
    assert tasks["train-model"]["cachingOptions"] == {}
    assert tasks["evaluate"]["cachingOptions"] == {"enableCache": True}
    executor = ir["deploymentSpec"]["executors"]["exec-train-model"]["container"]
    assert executor["resources"]["resourceCpuLimit"] == "500m"
    assert executor["resources"]["resourceMemoryRequest"] == "512Mi"
    assert executor["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert executor["resources"]["accelerator"]["resourceCount"] == "1"
    assert {"name": "LOG_LEVEL", "value": "debug"} in executor["env"]


def test_output_is_byte_for_byte_deterministic_across_processes(tmp_path: Path) -> None:
    outputs = []
    for i in range(2):
        target = tmp_path / f"{i}.yaml"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "kfops",
                "compile",
                str(ROOT / "pipelines" / "iris"),
                "-o",
                str(target),
            ],
            check=True,
            capture_output=True,
        )
        outputs.append(target.read_bytes())
    assert outputs[0] == outputs[1]


def test_default_output_path(tmp_path: Path, in_dir: object) -> None:
    project = tmp_path / "hello"
    project.mkdir()
    (project / "tiny.py").write_text((PIPELINES / "tiny.py").read_text())
    (project / "mlops.yaml").write_text(
        "version: 1\nname: hello\npipeline:\n  python: tiny.py:hello\n"
    )
    in_dir(project)  # type: ignore[operator]
    result = CliRunner().invoke(cli, ["compile"])
    assert result.exit_code == 0, result.output
    assert result.stderr == "compiled hello -> .kfops/hello.yaml\n"
    assert (
        yaml.safe_load((project / ".kfops" / "hello.yaml").read_text())["pipelineInfo"]["name"]
        == "hello"
    )


def test_param_overrides_default() -> None:
    code, out, _ = _compile(PIPELINES / "hello", "--param", "name=kfops")
    assert code == 0
    params = yaml.safe_load(out)["root"]["inputDefinitions"]["parameters"]
    assert params["name"]["defaultValue"] == "kfops"


def _project(tmp_path: Path, body: str, pipeline_file: str = "tiny.py") -> Path:
    (tmp_path / pipeline_file).write_text((PIPELINES / pipeline_file).read_text())
    (tmp_path / "mlops.yaml").write_text(body)
    return tmp_path


def test_unknown_step_is_reported_at_its_position(tmp_path: Path, in_dir: object) -> None:
    project = _project(
        tmp_path,
        "version: 1\nname: hello\npipeline:\n  python: tiny.py:hello\n  steps:\n"
        "    greet: {retries: 1}\n    gret:\n      retries: 2\n",
    )
    in_dir(project)  # type: ignore[operator]
    result = CliRunner().invoke(cli, ["compile", "-o", "-"])
    assert result.exit_code == 1
    assert result.stdout == ""  # stdout is for the pipeline; problems go to stderr
    assert result.stderr == (
        "mlops.yaml:7:5: error: the pipeline has no step `gret` (at pipeline.steps.gret)\n"
        "  hint: did you mean `greet`?\n"
        "1 problem found\n"
    )


def test_step_named_like_the_component_suggests_the_task_name(
    tmp_path: Path, in_dir: object
) -> None:
    (tmp_path / "pipeline.py").write_text((ROOT / "pipelines/iris/pipeline.py").read_text())
    (tmp_path / "mlops.yaml").write_text(
        "version: 1\nname: iris\npipeline:\n  python: pipeline.py:iris_pipeline\n  steps:\n"
        "    trainmodel: {retries: 1}\n"
    )
    in_dir(tmp_path)  # type: ignore[operator]
    result = CliRunner().invoke(cli, ["compile", "-o", "-"])
    assert result.exit_code == 1
    assert "hint: did you mean `train-model`?" in result.stderr


@pytest.mark.parametrize(
    ("pipeline_file", "function", "expected"),
    [
        (
            "raises_on_import.py",
            "broken",
            "error: raises_on_import.py:3: KeyError: 'b'\n"
            "  hint: raised while importing raises_on_import.py; this is an error in your"
            " pipeline code\n",
        ),
        (
            "raises_in_pipeline.py",
            "broken",
            "error: raises_in_pipeline.py:10: ZeroDivisionError: integer division or modulo"
            " by zero\n"
            "  hint: raised while importing raises_in_pipeline.py; this is an error in your"
            " pipeline code\n",
        ),
    ],
)
def test_exception_in_user_code_points_at_user_file(
    tmp_path: Path, in_dir: object, pipeline_file: str, function: str, expected: str
) -> None:
    _project(
        tmp_path,
        f"version: 1\nname: broken\npipeline:\n  python: {pipeline_file}:{function}\n",
        pipeline_file,
    )
    in_dir(tmp_path)  # type: ignore[operator]
    result = CliRunner().invoke(cli, ["compile", "-o", "-"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.stderr == expected


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("name", "error: --param 'name': expected NAME=VALUE\n"),
        (
            "nme=x",
            "error: --param nme: the pipeline has no parameter `nme`\n  hint: its"
            " parameters: name\n",
        ),
    ],
)
def test_bad_param_is_a_usage_error(param: str, message: str) -> None:
    code, _, err = _compile(PIPELINES / "hello", "--param", param)
    assert code == 2
    assert err == message


def test_mlops_parameter_of_wrong_real_type(tmp_path: Path, in_dir: object) -> None:
    # validate cannot see the type (no annotation it understands); compile can.
    (tmp_path / "p.py").write_text(
        "from kfp import dsl\nfrom tiny import greet\nN = int\n\n"
        "@dsl.pipeline\ndef p(n: N = 1) -> str:\n    return greet(name=str(n)).output\n"
    )
    (tmp_path / "tiny.py").write_text((PIPELINES / "tiny.py").read_text())
    (tmp_path / "mlops.yaml").write_text(
        "version: 1\nname: p\npipeline:\n  python: p.py:p\n  parameters:\n    n: ten\n"
    )
    in_dir(tmp_path)  # type: ignore[operator]
    result = CliRunner().invoke(cli, ["compile", "-o", "-"])
    assert result.exit_code == 1
    assert result.stderr == (
        'mlops.yaml:6:5: error: parameter `n` is an int, found string "ten"'
        " (at pipeline.parameters.n)\n"
        "  hint: write a whole number without quotes\n"
        "1 problem found\n"
    )


def test_compiling_leaves_no_pycache_in_the_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    import sys

    from click.testing import CliRunner

    from kfops.cli import cli

    copy = tmp_path / "iris"
    shutil.copytree(ROOT / "pipelines" / "iris", copy, ignore=shutil.ignore_patterns(".kfops"))
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # as on a CI runner
    result = CliRunner().invoke(cli, ["compile", str(copy), "-o", str(tmp_path / "ir.yaml")])
    assert result.exit_code == 0, result.output
    assert not (copy / "__pycache__").exists()
    assert sys.dont_write_bytecode is False


# Cells whose code could fool a line-based cut: a trailing comment at the body's
# indentation (inspect keeps it), a string with lines at column 0, triple quotes.
_AWKWARD_CELLS = [
    ("import math", "imports"),
    ("x = [1, 2]\n# a comment that ends the cell", "step:make"),
    ('text = """\n@dsl.component()\ndef not_a_step():\n"""\n\n\n', "step:text", "prev:make"),
    ("y = x + [len(text)]  # trailing\n'''\"\"\"'''", "step:join", "prev:text"),
    ('total = (1 +\n2)\nend = "\\\\"', "step:continued", "prev:join"),
]


@pytest.mark.parametrize(
    "notebook",
    [*sorted((DATA / "notebooks" / "corpus").glob("*.ipynb")), None],
    ids=lambda p: "awkward" if p is None else p.stem,
)
def test_generated_sources_are_what_kfp_reads_with_inspect(
    notebook: Path | None, tmp_path: Path
) -> None:
    """The component sources kfops hands KFP instead of inspect.getsource (a quarter of
    a big notebook's compile) are what inspect gives, for every component."""
    from nbformat.v4 import new_code_cell, new_notebook

    from kfops.notebook import codegen
    from kfops.pipeline import compiler

    if notebook is None:
        cells = []
        for source, *tags in _AWKWARD_CELLS:
            made = new_code_cell(source)
            made.metadata["tags"] = tags
            cells.append(made)
        notebook = tmp_path / "awkward.ipynb"
        notebook.write_text(json.dumps(new_notebook(cells=cells)), encoding="utf-8")
    module, nb = codegen.module_from_notebook(notebook, notebook.name, "p")
    assert module is not None, nb.problems
    file = tmp_path / "generated.py"
    file.write_text(module.text, encoding="utf-8")
    imported = compiler._import_user_module(file, tmp_path)
    funcs = [c.python_func for c in vars(imported).values() if hasattr(c, "python_func")]
    assert funcs
    lines = {f.__code__.co_firstlineno: f for f in funcs}
    assert sorted(lines) == sorted(module.sources)
    for line, func in lines.items():
        assert module.sources[line] == compiler._kfp_function_source(func), func.__name__


def test_yaml_dumper_writes_what_pyyaml_writes(tmp_path: Path) -> None:
    """kfops's Dumper (KFP's IR writer, faster) writes PyYAML's bytes: on a compiled
    notebook's IR and on strings made of what changes quoting and folding."""
    import random

    from kfops.pipeline import _yaml_emitter

    code, out, err = _compile(ROOT / "pipelines" / "wine-notebook")
    assert code == 0, err
    ir = list(yaml.safe_load_all(out))
    assert yaml.dump_all(ir, sort_keys=True, Dumper=_yaml_emitter.Dumper) == yaml.dump_all(
        ir, sort_keys=True
    )
    alphabet = [*" \n\t\r:#-?,[]{}'\"\\x\x85\u2028\u2029\x00\xe9\ufeff.", "---", "\U0001f600"]
    rng = random.Random(10)
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 90)))
        for document in (text, {"key": [text, {text or "k": text}]}):
            for width in (12, 80):
                expected = yaml.dump(document, width=width)
                assert yaml.dump(document, width=width, Dumper=_yaml_emitter.Dumper) == expected
