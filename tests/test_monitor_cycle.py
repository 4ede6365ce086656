"""A breach starts the next cycle through Git: `kfops monitor --once` against the GitHub
API test server (validated against GitHub's OpenAPI description, driven by PyGithub).
Three breaching runs make one issue and one dispatch; later ones update the same issue;
clean runs close it; the next breach reopens it within the cooldown without a second
dispatch; a lost state file is recovered from the issue; no token is ever shown."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from kfops.ci import monitor as github_side
from tests.conftest import DATA
from tests.github_api import GitHubTestServer
from tests.test_monitor_cli import _inputs, _iris, _shifted
from tests.test_monitor_logger import s3  # noqa: F401  (moto's S3 server)

OWNER, REPO = "acme", "iris"
POLICY = "  on_breach: {consecutive: 3, cooldown: 24h, retrain: auto, close_after: 2}\n"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The monitor test project, with references made local, on_breach auto."""
    folder = tmp_path / "iris"
    shutil.copytree(DATA / "monitor" / "project", folder)
    for name in ("reference.json", "holdout.jsonl", "setosa-v2.json"):
        shutil.copy(DATA / "monitor" / name, folder / name)
    text = (folder / "mlops.yaml").read_text().replace("../", "")
    text = text.replace("  on_breach: {consecutive: 3, cooldown: 12h, retrain: issue}\n", POLICY)
    assert POLICY in text
    (folder / "mlops.yaml").write_text(text)
    return folder


@pytest.fixture
def github(
    github_api: GitHubTestServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> GitHubTestServer:
    github_api.add_repo(OWNER, REPO)
    github_api.add_workflow(
        OWNER,
        REPO,
        "kfops-retrain.yml",
        inputs={"key": True, "environment": True, "project": False, "issue": False},
    )
    monkeypatch.setenv("GITHUB_API_URL", github_api.url)
    monkeypatch.setenv("GITHUB_REPOSITORY", f"{OWNER}/{REPO}")
    monkeypatch.setenv("GITHUB_TOKEN", github_api.token)
    monkeypatch.setenv("GITHUB_REF_NAME", "main")
    monkeypatch.setenv("KFOPS_MONITOR_STATE", str(tmp_path / "state" / "monitor.json"))
    monkeypatch.delenv("KFOPS_GITHUB_TOKEN", raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    return github_api


def _monitor(project: Path, inputs: Path, tmp_path: Path) -> Any:
    from kfops.cli import cli

    return CliRunner().invoke(
        cli,
        [
            "monitor",
            str(project),
            "--once",
            "--inputs",
            str(inputs),
            "--report",
            str(tmp_path / "r.json"),
        ],
    )


def _ours(server: GitHubTestServer) -> list[dict[str, Any]]:
    return [i for i in server.issues(OWNER, REPO) if "kfops-monitor" in str(i.get("labels"))]


def test_three_breaches_one_issue_one_dispatch_then_closed_and_reopened(
    project: Path, github: GitHubTestServer, tmp_path: Path
) -> None:
    shifted = _inputs(tmp_path, _shifted())
    first = [_monitor(project, shifted, tmp_path) for _ in range(3)]
    assert [r.exit_code for r in first] == [1, 1, 1], first[-1].output
    assert "opened issue #" in first[2].output
    issues = _ours(github)
    assert len(issues) == 1 and issues[0]["state"] == "open"
    body = issues[0]["body"]
    mark = github_side.marker(github_side.project_key(project), "local")
    assert body.startswith(mark)
    assert "kfops monitor: iris in local: BREACH" in body
    assert "dispatched the retraining workflow `kfops-retrain.yml`" in body
    (dispatch,) = github.dispatches(OWNER, REPO)
    assert dispatch["workflow"] == "kfops-retrain.yml" and dispatch["ref"] == "main"
    key = dispatch["inputs"]["key"]
    assert dispatch["inputs"]["environment"] == "local"
    assert dispatch["inputs"]["issue"] == str(issues[0]["number"])
    assert github_side.read_state(body).episode == key  # type: ignore[union-attr]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["cycle"]["actions"] == ["open_issue", "dispatch"]
    assert report["cycle"]["issue"] == issues[0]["html_url"]

    # two more breaching runs: the same issue, updated; no second dispatch
    more = [_monitor(project, shifted, tmp_path) for _ in range(2)]
    assert all("updated issue #" in r.output for r in more)
    assert len(_ours(github)) == 1 and len(github.dispatches(OWNER, REPO)) == 1

    # two clean runs close it
    clean = _inputs(tmp_path, _iris())
    assert _monitor(project, clean, tmp_path).exit_code == 0
    closing = _monitor(project, clean, tmp_path)
    assert closing.exit_code == 0 and "closed issue #" in closing.output
    assert _ours(github)[0]["state"] == "closed"

    # a new breach reopens the same issue; within the cooldown it dispatches nothing
    shifted = _inputs(tmp_path, _shifted())
    again = [_monitor(project, shifted, tmp_path) for _ in range(3)]
    assert "reopened issue #" in again[2].output
    assert "in cooldown until" in again[2].output
    issues = _ours(github)
    assert len(issues) == 1 and issues[0]["state"] == "open"
    assert len(github.dispatches(OWNER, REPO)) == 1
    # the token is never shown: not in outputs, the report, the issue or the dispatch
    for text in [r.output for r in first + more + again] + [
        (tmp_path / "r.json").read_text(),
        json.dumps(github.issues(OWNER, REPO)),
        json.dumps(github.dispatches(OWNER, REPO)),
    ]:
        assert github.token not in text


def test_a_lost_state_file_is_recovered_from_the_issue(
    project: Path, github: GitHubTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shifted = _inputs(tmp_path, _shifted())
    for _ in range(3):
        _monitor(project, shifted, tmp_path)
    assert len(github.dispatches(OWNER, REPO)) == 1
    # a fresh runner whose cache was evicted
    monkeypatch.setenv("KFOPS_MONITOR_STATE", str(tmp_path / "fresh" / "state.json"))
    result = _monitor(project, shifted, tmp_path)
    assert result.exit_code == 1
    assert "updated issue #" in result.output
    assert "already dispatched" in result.output
    assert len(_ours(github)) == 1 and len(github.dispatches(OWNER, REPO)) == 1


def test_a_refused_dispatch_is_said_on_the_issue_and_tried_again(
    project: Path, github: GitHubTestServer, tmp_path: Path
) -> None:
    github.token_permissions = {"issues": "write", "contents": "read"}
    shifted = _inputs(tmp_path, _shifted())
    runs = [_monitor(project, shifted, tmp_path) for _ in range(3)]
    failed = runs[2]
    assert failed.exit_code == 1
    assert "actions: write" in failed.output
    assert "the breach is recorded; issue #" in failed.output
    assert github.token not in failed.output
    (issue,) = _ours(github)
    assert "could not dispatch `kfops-retrain.yml`" in issue["body"]
    assert github.dispatches(OWNER, REPO) == []
    github.token_permissions = None
    retried = _monitor(project, shifted, tmp_path)
    assert "dispatched kfops-retrain.yml on main" in retried.output
    assert len(github.dispatches(OWNER, REPO)) == 1


def test_retrain_issue_opens_the_issue_and_dispatches_nothing(
    project: Path, github: GitHubTestServer, tmp_path: Path
) -> None:
    config = project / "mlops.yaml"
    config.write_text(config.read_text().replace("retrain: auto", "retrain: issue"))
    shifted = _inputs(tmp_path, _shifted())
    for _ in range(3):
        _monitor(project, shifted, tmp_path)
    assert len(_ours(github)) == 1
    assert github.dispatches(OWNER, REPO) == []


def test_a_person_quoting_the_marker_is_not_our_issue(
    project: Path, github: GitHubTestServer, tmp_path: Path
) -> None:
    mark = github_side.marker(github_side.project_key(project), "local")
    github.add_issue(
        OWNER,
        REPO,
        title="copy",
        body=mark + "\nI pasted this",
        author="someone",
        labels=("kfops-monitor",),
    )
    shifted = _inputs(tmp_path, _shifted())
    for _ in range(3):
        _monitor(project, shifted, tmp_path)
    bodies = [i["body"] for i in github.issues(OWNER, REPO)]
    assert sum(b.startswith(mark) for b in bodies) == 2
    assert any(b == mark + "\nI pasted this" for b in bodies)  # left as it was


def test_status_reads_the_verdict_from_the_issue(
    project: Path, github: GitHubTestServer, tmp_path: Path
) -> None:
    import os

    from kfops.delivery import status as live
    from kfops.project import config
    from kfops.project.model import Environment

    shifted = _inputs(tmp_path, _shifted())
    for _ in range(3):
        _monitor(project, shifted, tmp_path)
    loaded = config.load(project)
    environment = Environment(name="local", mark=loaded.monitoring.mark)  # type: ignore[union-attr]
    env = {**os.environ, "KFOPS_MONITOR_STATE": str(tmp_path / "elsewhere.json")}
    found = live.collect(loaded, environment, env)
    (issue,) = _ours(github)
    assert found.monitor is not None
    assert found.monitor["source"] == f"issue #{issue['number']}"
    assert found.monitor["issue"] == {
        "number": issue["number"],
        "url": issue["html_url"],
        "state": "open",
    }
    assert found.monitor["verdict"] == "breach" and found.monitor["last_dispatch"]
    assert f"[issue #{issue['number']}]({issue['html_url']}) open" in found.markdown()


def test_the_state_can_live_in_a_bucket(
    project: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    s3: str,  # noqa: F811
) -> None:
    """What a KFP pod does (runner kfp): every run is a fresh machine."""
    import boto3

    for name in ("GITHUB_TOKEN", "GITHUB_REPOSITORY"):
        monkeypatch.delenv(name, raising=False)
    where = "s3://logs/iris/.kfops-monitor/prod.json"
    monkeypatch.setenv("KFOPS_MONITOR_STATE", where)
    shifted = _inputs(tmp_path, _shifted())
    runs = [_monitor(project, shifted, tmp_path) for _ in range(3)]
    assert "breaching run 2 of 3" in runs[1].output
    assert "kfops would have: opened an issue; dispatched" in runs[2].output.replace("\n", " ")
    kept = json.loads(
        boto3.client("s3")
        .get_object(Bucket="logs", Key="iris/.kfops-monitor/prod.json")["Body"]
        .read()
    )
    assert kept["breaches"] == 3 and kept["episode"]
    monkeypatch.setenv("KFOPS_MONITOR_STATE", "s3://no-such-bucket/state.json")
    failed = _monitor(project, shifted, tmp_path)
    assert failed.exit_code == 1
    assert "log store s3://no-such-bucket: S3 answered NoSuchBucket" in failed.output
