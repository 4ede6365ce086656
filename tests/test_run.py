"""kfops run: real pipelines executed by kfp.local in a child process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import joblib
import pytest
from click.testing import CliRunner

from kfops.cli import cli
from tests.conftest import DATA, ROOT

pytestmark = pytest.mark.slow
PIPELINES = DATA / "pipelines"


def _run(project: Path, runs: Path, *args: str) -> tuple[int, str, dict[str, object] | None]:
    before = set(runs.glob("*/result.json"))
    result = CliRunner().invoke(cli, ["run", str(project), "--runs-dir", str(runs), *args])
    new = sorted(set(runs.glob("*/result.json")) - before)
    data = json.loads(new[0].read_text()) if new else None
    return result.exit_code, result.output, data


def test_iris_example_end_to_end(tmp_path: Path) -> None:
    code, out, result = _run(ROOT / "pipelines" / "iris", tmp_path, "--param", "n_estimators=20")
    assert code == 0, out
    assert result is not None
    assert result["succeeded"] is True
    assert result["parameters"] == {"n_estimators": 20}
    assert list(result["steps"]) == ["load-data", "train-model", "evaluate"]  # type: ignore[call-overload]
    metrics = result["metrics"]["evaluate"]  # type: ignore[index]
    assert 0.85 <= metrics["accuracy"] <= 1.0
    assert 0.85 <= metrics["f1_macro"] <= 1.0
    assert result["outputs"]["Output"] == pytest.approx(metrics["accuracy"], abs=1e-4)  # type: ignore[index]
    model_uri = result["steps"]["train-model"]["outputs"]["model"]["uri"]  # type: ignore[index]
    assert joblib.load(model_uri).n_estimators == 20
    # what the user sees: the notice, each step, the tables, where the run is kept
    assert "the local runner ignores them for: train-model" in out
    for step in ("load-data", "train-model", "evaluate"):
        assert f"ok  {step}" in out
    assert "accuracy" in out and "f1_macro" in out
    [run_dir] = [p for p in tmp_path.iterdir() if p.name != ".cache"]
    assert f"logs and artifacts: {run_dir}" in out.replace("\n", "")
    assert (run_dir / "logs" / "evaluate.log").read_text().startswith("accuracy: ")
    assert (run_dir / "pipeline.yaml").is_file()


def test_env_override_reaches_the_step(tmp_path: Path) -> None:
    code, out, result = _run(PIPELINES / "hello", tmp_path, "--no-cache", "-p", "name=kfops")
    assert code == 0, out
    assert result is not None
    assert result["outputs"] == {"Output": "bonjour, kfops"}


def test_typed_params_and_metrics(tmp_path: Path) -> None:
    code, out, result = _run(
        PIPELINES / "typed",
        tmp_path,
        "--no-cache",
        "-p",
        "flags=[1,2,3]",
        "-p",
        'weights={"b": 2}',
    )
    assert code == 0, out
    assert result is not None
    # factor 2 comes from mlops.yaml: 2 * 3 + 2
    assert result["outputs"] == {"Output": 8.0}
    assert result["metrics"] == {"score": {"score": 8.0}}


@pytest.mark.parametrize(
    ("param", "message"),
    [
        (
            "factor=abc",
            "error: --param factor=abc: `factor` is a number, and 'abc' is not one\n"
            "  hint: for example: --param factor=0.5\n",
        ),
        (
            "enabled=maybe",
            "error: --param enabled=maybe: `enabled` is a boolean, and 'maybe' is"
            " not one\n  hint: for example: --param enabled=true\n",
        ),
        (
            "flags={}",
            "error: --param flags={}: `flags` is a list (JSON), and '{}' is not one\n"
            "  hint: for example: --param flags='[1, 2]'\n",
        ),
    ],
)
def test_bad_param_value(tmp_path: Path, param: str, message: str) -> None:
    result = CliRunner().invoke(
        cli, ["run", str(PIPELINES / "typed"), "--runs-dir", str(tmp_path), "-p", param]
    )
    assert result.exit_code == 2
    assert result.stderr == message
    assert not list(tmp_path.iterdir()), "nothing runs when a parameter is bad"


def test_failing_step_exits_non_zero_with_its_log_tail(tmp_path: Path) -> None:
    code, out, result = _run(PIPELINES / "failing", tmp_path, "--no-cache")
    assert code == 1
    assert result is not None
    assert result["succeeded"] is False
    assert result["steps"]["greet"]["status"] == "SUCCESS"  # type: ignore[index]
    assert result["steps"]["explode"]["status"] == "FAILURE"  # type: ignore[index]
    assert "FAILED  explode" in out
    tail = out[out.index("--- last lines of") :]
    assert "about to fail" in tail
    assert "ValueError: the data is bad" in tail
    assert "executor_main.py" not in tail, "kfp's own frames are left out of the tail"


def test_required_parameter_without_value(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    shutil.copy(PIPELINES / "tiny.py", project)
    (project / "mlops.yaml").write_text(
        "version: 1\nname: r\npipeline:\n  python: tiny.py:retrying\n"
    )
    result = CliRunner().invoke(cli, ["run", str(project)])
    assert result.exit_code == 1
    assert result.stderr == (
        "error: the pipeline needs a value for `counter`\n"
        "  hint: pass --param NAME=VALUE, or set it under pipeline.parameters in mlops.yaml\n"
    )


def test_retries_from_mlops_yaml_apply_locally(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    shutil.copy(PIPELINES / "tiny.py", project)
    counter = tmp_path / "counter"
    (project / "mlops.yaml").write_text(
        "version: 1\nname: r\npipeline:\n  python: tiny.py:retrying\n"
        f"  parameters: {{counter: {json.dumps(str(counter))}}}\n"
        "  steps:\n    flaky: {retries: 1}\n"
    )
    code, out, result = _run(project, tmp_path / "runs", "--no-cache")
    assert code == 0, out
    assert result is not None
    assert result["outputs"] == {"Output": 2}
    assert counter.read_text() == "2"


def test_rerun_is_served_from_the_cache(tmp_path: Path) -> None:
    project = tmp_path / "hello"
    shutil.copytree(PIPELINES / "hello", project, ignore=shutil.ignore_patterns(".kfops"))
    shutil.copy(PIPELINES / "tiny.py", tmp_path)
    first = _run(project, tmp_path / "runs")
    second = _run(project, tmp_path / "runs")
    assert first[0] == second[0] == 0
    assert first[2] is not None and second[2] is not None
    assert first[2]["steps"]["greet"]["cached"] is False  # type: ignore[index]
    assert second[2]["steps"]["greet"]["cached"] is True  # type: ignore[index]
    assert second[2]["outputs"] == first[2]["outputs"] == {"Output": "bonjour, world"}
    assert "ok  greet  cached" in second[1]
    assert not (project / ".kfops").exists(), "with --runs-dir nothing is written in the project"


def test_satisfied_pip_installs_are_skipped_others_kept() -> None:
    from kfops.pipeline._worker import skip_satisfied_installs

    script = (
        "\nPIP_DISABLE_PIP_VERSION_CHECK=1 /py -m pip install --quiet --no-warn-script-location"
        " 'kfp>=2.17' '--no-deps'  &&  /py -m pip install --quiet --no-warn-script-location"
        " 'click' 'no-such-package-kfops-test==1.0' && \"$0\" \"$@\"\n"
    )
    kept = skip_satisfied_installs(["sh", "-c", script, "sh", "-ec", "pip install x"])
    assert kept[2] == (
        "\n/py -m pip install --quiet --no-warn-script-location 'click'"
        ' \'no-such-package-kfops-test==1.0\' && "$0" "$@"\n'
    )
    assert kept[5] == "pip install x"  # only the install-then-exec prologue is touched


def test_rerun_of_a_step_with_metrics_is_cached_too(tmp_path: Path) -> None:
    project = tmp_path / "typed"
    shutil.copytree(PIPELINES / "typed", project, ignore=shutil.ignore_patterns(".kfops"))
    shutil.copy(PIPELINES / "tiny.py", tmp_path)
    first = _run(project, tmp_path / "runs")
    second = _run(project, tmp_path / "runs")
    assert first[0] == second[0] == 0
    assert second[2] is not None and second[2]["steps"]["score"]["cached"] is True  # type: ignore[index]
    assert second[2]["metrics"] == {"score": {"score": 5.0}}  # 2 * 2 flags + 1.0


# --- local runs that tell the truth ------------------------------------------------------


def _project(tmp_path: Path, function: str, name: str = "p") -> Path:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(PIPELINES / "local_truth.py", project)
    (project / "mlops.yaml").write_text(
        f"version: 1\nname: {name}\npipeline:\n  python: local_truth.py:{function}\n"
    )
    return project


def test_a_project_named_like_a_component_runs_as_a_pipeline(tmp_path: Path) -> None:
    project = _project(tmp_path, "named_like_a_component", name="same")
    code, out, result = _run(project, tmp_path / "runs", "--no-cache", "-p", "x=41")
    assert code == 0, out
    assert result is not None and result["outputs"] == {"Output": 42}


def test_an_importer_pipeline_named_like_a_component_and_uris(tmp_path: Path) -> None:
    project = _project(tmp_path, "importer_named_like_a_component", name="show")
    code, out, result = _run(project, tmp_path / "runs", "--no-cache")
    assert code == 0, out
    assert result is not None and result["outputs"] == {"Output": "gs://bucket/x"}
    assert "│ artifact │ gs://bucket/x" in out  # the importer's artifact, shown as a URI


def test_a_failure_at_pipeline_level_fails_the_run(tmp_path: Path) -> None:
    project = _project(tmp_path, "nested_loop_over_a_field")
    code, out, result = _run(project, tmp_path / "runs", "--no-cache")
    assert code == 1, out
    assert result is not None and result["succeeded"] is False
    assert "the local run failed at pipeline level (for-loop-1[0]):" in out
    assert "Parent pipeline input argument 'pipelinechannel--items-subvar-a' not found" in out
    assert "succeeded" not in out


def test_each_loop_iteration_keeps_its_result_and_log(tmp_path: Path) -> None:
    project = _project(tmp_path, "loop_with_a_failing_iteration")
    code, out, result = _run(project, tmp_path / "runs", "--no-cache")
    assert code == 1, out
    assert result is not None
    steps = result["steps"]
    assert {name: step["status"] for name, step in steps.items()} == {  # type: ignore[attr-defined]
        "for-loop-2[0]/echo": "SUCCESS",
        "for-loop-2[1]/echo": "SUCCESS",
        "for-loop-2[2]/echo": "FAILURE",
    }
    assert steps["for-loop-2[1]/echo"]["outputs"] == {"Output": 2}  # type: ignore[index]
    [run_dir] = [p for p in (tmp_path / "runs").iterdir() if p.name != ".cache"]
    assert (run_dir / "logs" / "for-loop-2[0]" / "echo.log").read_text() == "value 1\n"
    tail = out[out.index("--- last lines of") :]
    assert "value 3" in tail and "ValueError: three is bad: 3" in tail
    assert "value 1" not in tail and "value 2" not in tail
    # the loop's tasks ran: only `after` did not
    assert "not run (after the failure): after\n" in out


@pytest.mark.parametrize(
    ("function", "before", "reason"),
    [
        (
            "container_step",
            "warning: `say` is a container component (image alpine:3); the local runner runs"
            " lightweight Python components only (`kfops run --docker` runs it in its image)",
            "kfp.local stopped the run: RuntimeError: The SubprocessRunner only supports"
            " running Lightweight Python Components.",
        ),
        (
            "artifact_into_a_nested_pipeline",
            "warning: `inner` passes an artifact into a nested pipeline, which kfp.local"
            " cannot do; run it on Kubeflow, or call the components directly",
            "kfp.local stopped the run: ValueError: Parent pipeline input argument 'data' not"
            " found.",
        ),
    ],
)
def test_what_kfp_local_refuses_is_said_on_the_console(
    tmp_path: Path, function: str, before: str, reason: str
) -> None:
    project = _project(tmp_path, function)
    code, out, result = _run(project, tmp_path / "runs", "--no-cache")
    assert code == 1, out
    assert result is not None and result["succeeded"] is False
    flat = out.replace("\n", " ")
    assert before in flat
    assert flat.index(before) < flat.index(reason)


def test_list_and_dict_parameters_from_typing(tmp_path: Path) -> None:
    project = _project(tmp_path, "typed_lists")
    with (project / "mlops.yaml").open("a") as f:
        f.write("  parameters:\n    xs: [5, 6]\n    d: {b: 2}\n")
    assert CliRunner().invoke(cli, ["validate", str(project)]).output == "valid\n"
    compiled = CliRunner().invoke(cli, ["compile", str(project), "-o", "-"])
    assert compiled.exit_code == 0, compiled.output
    assert "#    xs: list [Default: [5.0, 6.0]]\n" in compiled.output
    code, out, result = _run(project, tmp_path / "runs", "--no-cache", "-p", "xs=[10]")
    assert code == 0, out
    assert result is not None and result["outputs"] == {"Output": 12}
    bad = CliRunner().invoke(cli, ["run", str(project), "-p", "xs={}"])
    assert bad.exit_code == 2
    assert bad.stderr.startswith("error: --param xs={}: `xs` is a list (JSON), and '{}' is not")


def test_list_parameter_of_the_wrong_type_in_mlops_yaml(tmp_path: Path) -> None:
    project = _project(tmp_path, "typed_lists")
    with (project / "mlops.yaml").open("a") as f:
        f.write("  parameters:\n    xs: 3\n")
    validated = CliRunner().invoke(cli, ["validate", str(project / "mlops.yaml")])
    compiled = CliRunner().invoke(cli, ["compile", str(project / "mlops.yaml"), "-o", "-"])
    assert validated.exit_code == compiled.exit_code == 1
    message = (
        f"{project / 'mlops.yaml'}:6:9: error: parameter `xs` is a list, found integer 3"
        " (at pipeline.parameters.xs)\n  hint: write a list, e.g. [1, 2]; its default is [1, 2]\n"
    )
    assert validated.output == message + "1 problem found\n"
    assert compiled.output.startswith(message)


def test_steps_inside_sub_pipelines_are_set_by_path(tmp_path: Path) -> None:
    project = _project(tmp_path, "with_sub_pipelines")
    with (project / "mlops.yaml").open("a") as f:
        f.write(
            "  steps:\n    reads-env-2/env-value:\n      env: {LEVEL: debug}\n      retries: 2\n"
        )
    compiled = CliRunner().invoke(cli, ["compile", str(project), "-o", "-"])
    assert compiled.exit_code == 0, compiled.output
    import yaml

    ir = yaml.safe_load(compiled.output)
    outer = ir["root"]["dag"]["tasks"]
    first = ir["components"][outer["reads-env"]["componentRef"]["name"]]["dag"]["tasks"]
    second = ir["components"][outer["reads-env-2"]["componentRef"]["name"]]["dag"]["tasks"]
    assert second["env-value"]["retryPolicy"] == {"maxRetryCount": 2}
    assert "retryPolicy" not in first["env-value"]  # the other use is left as it was

    def env_of(task: dict[str, Any]) -> Any:
        label = ir["components"][task["componentRef"]["name"]]["executorLabel"]
        return ir["deploymentSpec"]["executors"][label]["container"].get("env")

    assert env_of(second["env-value"]) == [{"name": "LEVEL", "value": "debug"}]
    assert env_of(first["env-value"]) is None
    code, out, result = _run(project, tmp_path / "runs", "--no-cache")
    assert code == 0, out
    assert result is not None
    assert result["steps"]["reads-env-2/env-value"]["outputs"] == {"Output": "debug"}  # type: ignore[index]
    assert result["steps"]["reads-env/env-value"]["outputs"] == {"Output": "unset"}  # type: ignore[index]


def test_an_unknown_step_path_suggests_one_of_all_paths(tmp_path: Path) -> None:
    project = _project(tmp_path, "with_sub_pipelines")
    with (project / "mlops.yaml").open("a") as f:
        f.write("  steps:\n    reads-env-2/env-valeu: {retries: 1}\n    env-value: {retries: 1}\n")
    result = CliRunner().invoke(cli, ["compile", str(project), "-o", "-"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"{project / 'mlops.yaml'}:6:5: error: the pipeline has no step `reads-env-2/env-valeu`"
        " (at pipeline.steps.reads-env-2/env-valeu)",
        "  hint: did you mean `reads-env-2/env-value`?",
        f"{project / 'mlops.yaml'}:7:5: error: the pipeline has no step `env-value` (at"
        " pipeline.steps.env-value)",
        "  hint: did you mean `reads-env/env-value`?",
        "2 problems found",
    ]
