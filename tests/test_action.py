"""The composite action end to end: act runs a workflow that uses ./action, against the
GitHub API test server. actions/checkout is handled by act itself; actions/cache, which
cannot be downloaded here, is replaced by a local test double (act --local-repository)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, git
from tests.github_api import GitHubTestServer

pytestmark = pytest.mark.slow
ACT = Path(sys.executable).parent / "act"
CACHE = "actions/cache@5a3ec84eff668545956fd18022155c47e93e2684"
WORKFLOW = """\
name: kfops
on: [push, pull_request]
permissions: {}
jobs:
  kfops:
    runs-on: ubuntu-latest
    permissions:
      contents: read
      pull-requests: write
    steps:
      - uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2
      - id: kfops
        uses: ./action
        with:
          path: pipelines/iris
      - name: outputs
        env:
          STATUS: ${{ steps.kfops.outputs.status }}
          COMPILED: ${{ steps.kfops.outputs.compiled }}
        run: echo "kfops-output status=$STATUS compiled=$COMPILED"
"""
CACHE_DOUBLE = """\
name: cache (test double)
description: Stands in for actions/cache, which cannot be downloaded in these tests.
inputs:
  path: {description: what to cache, required: true}
  key: {description: the cache key, required: true}
runs:
  using: composite
  steps:
    - shell: bash
      run: echo "cache double"
"""


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, str]:
    """A repository with the action, the iris project on main, and a change on a branch."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "action", repo / "action")
    shutil.copy(ROOT / "pyproject.toml", repo)
    (repo / "pipelines" / "iris").mkdir(parents=True)
    for name in ("pipeline.py", "mlops.yaml", "smoke.json"):
        shutil.copy(ROOT / "pipelines" / "iris" / name, repo / "pipelines" / "iris")
    (repo / ".github" / "workflows").mkdir(parents=True)
    (repo / ".github" / "workflows" / "kfops.yml").write_text(WORKFLOW)
    (tmp_path / "cache-double").mkdir()
    (tmp_path / "cache-double" / "action.yml").write_text(CACHE_DOUBLE)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "base")
    base = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "change")
    mlops = repo / "pipelines" / "iris" / "mlops.yaml"
    mlops.write_text(mlops.read_text().replace("n_estimators: 50", "n_estimators: 80"))
    git(repo, "commit", "-q", "-am", "more trees")
    return repo, base


def action_repo(tmp_path: Path, workflow: str, project: Path, name: str, on: str) -> Path:
    """A git repository with the action, ``workflow`` and a copy of ``project`` as
    folder ``name`` whose mlops.yaml gets the ``on:`` section ``on``; one commit."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "action", repo / "action")
    shutil.copy(ROOT / "pyproject.toml", repo)
    shutil.copytree(project, repo / name, ignore=shutil.ignore_patterns(".git", ".kfops"))
    with (repo / name / "mlops.yaml").open("a") as f:
        f.write(on)
    (repo / ".github" / "workflows").mkdir(parents=True)
    (repo / ".github" / "workflows" / "kfops.yml").write_text(workflow)
    (tmp_path / "cache-double").mkdir(exist_ok=True)
    (tmp_path / "cache-double" / "action.yml").write_text(CACHE_DOUBLE)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", name)
    return repo


def act(
    repo: Path,
    event_name: str,
    event: dict[str, object],
    server: GitHubTestServer,
    extra: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    event_file = repo.parent / "event.json"
    event_file.write_text(json.dumps(event))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(
        [
            str(ACT),
            event_name,
            "-e",
            str(event_file),
            "-W",
            ".github/workflows/kfops.yml",
            "-P",
            "ubuntu-latest=-self-hosted",
            "--local-repository",
            f"{CACHE}={repo.parent / 'cache-double'}",
            "--env",
            f"GITHUB_API_URL={server.url}",
            "--env",
            "GITHUB_REPOSITORY=acme/ml",
            "-s",
            f"GITHUB_TOKEN={server.token}",
            *extra,
        ],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _pull_request(base: str) -> dict[str, object]:
    return {
        "pull_request": {"number": 5, "base": {"ref": "main", "sha": base}},
        "repository": {"full_name": "acme/ml"},
    }


def test_pull_request_twice_leaves_one_comment_edited(
    repo: tuple[Path, str], github_api: GitHubTestServer
) -> None:
    path, base = repo
    github_api.add_pull_request("acme", "ml", 5)
    first = act(path, "pull_request", _pull_request(base), github_api)
    assert first.returncode == 0, first.stdout[-3000:]
    second = act(path, "pull_request", _pull_request(base), github_api)
    assert second.returncode == 0, second.stdout[-3000:]
    [comment] = github_api.comments("acme", "ml", 5)
    assert "| `n_estimators` | 50 | 80 |" in comment["body"]
    writes = [m for m, p, _ in github_api.requests if m in ("POST", "PATCH")]
    assert writes == ["POST", "PATCH"]
    assert "kfops-output status=ok compiled=pipelines/iris/.kfops/iris.yaml" in second.stdout
    assert github_api.token not in first.stdout + second.stdout


def test_push_writes_the_job_summary(repo: tuple[Path, str], github_api: GitHubTestServer) -> None:
    path, _ = repo
    done = act(path, "push", {"ref": "refs/heads/change"}, github_api)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "Summary - <!-- kfops-report" in done.stdout
    assert "✅ **Validated and compiled.**" in done.stdout
    assert not [r for r in github_api.requests if "/comments" in r[1]], "no comment on a push"


def test_fork_pull_request_degrades(repo: tuple[Path, str], github_api: GitHubTestServer) -> None:
    path, base = repo
    github_api.add_pull_request("acme", "ml", 5, fork_owner="someone")
    github_api.read_only = True
    done = act(path, "pull_request", _pull_request(base), github_api)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "::notice title=kfops::kfops could not comment" in done.stdout
    assert "workflow_run" in done.stdout
    assert github_api.comments("acme", "ml", 5) == []


def test_invalid_mlops_yaml_fails_with_annotations(
    repo: tuple[Path, str], github_api: GitHubTestServer
) -> None:
    path, _ = repo
    mlops = path / "pipelines" / "iris" / "mlops.yaml"
    mlops.write_text(mlops.read_text().replace("retries: 1", "retrys: 1"))
    git(path, "commit", "-q", "-am", "typo")
    done = act(path, "push", {"ref": "refs/heads/change"}, github_api)
    assert done.returncode != 0
    assert (
        "::error file=pipelines/iris/mlops.yaml,line=13,col=7,title=kfops::unknown key"
        " `retrys` in `train-model`"
    ) in done.stdout
    assert "kfops-output" not in done.stdout  # the job stopped at the failing step


MONITOR_WORKFLOW = """\
name: kfops monitor
on: [workflow_dispatch]
permissions: {}
jobs:
  monitor:
    runs-on: ubuntu-latest
    permissions:
      contents: read
      issues: write
      actions: write
    env:
      KFOPS_MONITOR_STATE: ${{ github.workspace }}/.kfops-monitor/state.json
    steps:
      - uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2
      - uses: ./action
        with:
          path: iris
          command: monitor
          args: --inputs iris/shifted.jsonl
"""


def test_the_action_runs_the_monitor_and_opens_the_issue(
    tmp_path: Path, github_api: GitHubTestServer
) -> None:
    from tests.test_monitor_cli import _shifted
    from tests.test_monitor_cycle import POLICY

    project = tmp_path / "project"
    shutil.copytree(ROOT / "tests" / "data" / "monitor" / "project", project)
    for name in ("reference.json", "holdout.jsonl", "setosa-v2.json"):
        shutil.copy(ROOT / "tests" / "data" / "monitor" / name, project / name)
    text = (project / "mlops.yaml").read_text().replace("../", "")
    (project / "mlops.yaml").write_text(
        text.replace("  on_breach: {consecutive: 3, cooldown: 12h, retrain: issue}\n", "").replace(
            "", ""
        )
        + POLICY.replace("consecutive: 3", "consecutive: 1")
    )
    with (project / "shifted.jsonl").open("w") as f:
        for row in _shifted():
            features = {k: v for k, v in row.items() if k != "species"}
            f.write(json.dumps({"inputs": features, "prediction": row["species"]}) + "\n")
    repo = action_repo(tmp_path, MONITOR_WORKFLOW, project, "iris", "")
    github_api.add_repo("acme", "ml")
    github_api.add_workflow(
        "acme",
        "ml",
        "kfops-retrain.yml",
        inputs={"key": True, "environment": True, "project": False, "issue": False},
    )
    done = act(repo, "workflow_dispatch", {"ref": "refs/heads/main"}, github_api)
    assert done.returncode != 0, "a breach fails the job"
    assert "opened issue #" in done.stdout, done.stdout[-3000:]
    assert "dispatched kfops-retrain.yml on main" in done.stdout
    (issue,) = github_api.issues("acme", "ml")
    assert issue["title"] == "kfops monitor: iris in local needs attention"
    assert [d["workflow"] for d in github_api.dispatches("acme", "ml")] == ["kfops-retrain.yml"]
    assert github_api.token not in done.stdout
