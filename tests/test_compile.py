"""kfops compile: goldens of the IR, determinism, overrides and errors in user code."""

from __future__ import annotations

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
