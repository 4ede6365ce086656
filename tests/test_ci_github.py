"""kfops ci against the GitHub API test server: one sticky comment, forks, retries, tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from click.testing import CliRunner

from kfops.ci.github import FORK_NOTICE, marker
from kfops.cli import cli
from tests.github_api import GitHubTestServer
from tests.test_ci import ci_env, make_repo, outputs


def _ci(tmp_path: Path, server: GitHubTestServer, base: str, **env: str) -> Any:
    event = {"pull_request": {"number": 5, "base": {"ref": "main", "sha": base}}}
    variables = ci_env(
        tmp_path, "pull_request", event, GITHUB_API_URL=server.url, GITHUB_TOKEN=server.token
    )
    variables.update(env)
    return CliRunner().invoke(cli, ["ci", "pipelines/iris"], env=variables)


def _setup(tmp_path: Path, in_dir: Any, server: GitHubTestServer) -> str:
    repo, base = make_repo(tmp_path)
    in_dir(repo)
    server.add_pull_request("acme", "ml", 5)
    return base


def test_two_pushes_leave_one_comment_edited_in_place(
    tmp_path: Path, in_dir: Any, github_api: GitHubTestServer
) -> None:
    base = _setup(tmp_path, in_dir, github_api)
    # a person quoting the marker must not be mistaken for the report
    github_api.add_comment("acme", "ml", 5, marker("pipelines/iris") + " I copied this")
    first = _ci(tmp_path, github_api, base)
    assert first.exit_code == 0, first.output
    second = _ci(tmp_path, github_api, base)
    assert second.exit_code == 0, second.output
    comments = github_api.comments("acme", "ml", 5)
    assert len(comments) == 2
    human, report = comments
    assert human["body"].endswith(" I copied this")
    assert report["user"]["login"] == "github-actions[bot]"
    assert report["body"].startswith(marker("pipelines/iris") + "\n### kfops · iris")
    assert "| `n_estimators` | 50 | 80 |" in report["body"]
    writes = [(m, p) for m, p, _ in github_api.requests if m in ("POST", "PATCH")]
    assert [m for m, _ in writes] == ["POST", "PATCH"]
    assert outputs(tmp_path / "output.txt")["comment-url"] == report["html_url"]
    assert github_api.token not in first.output + second.output


def test_fork_pull_request_degrades_to_the_summary(
    tmp_path: Path, in_dir: Any, github_api: GitHubTestServer
) -> None:
    base = _setup(tmp_path, in_dir, github_api)
    github_api.read_only = True
    result = _ci(tmp_path, github_api, base)
    assert result.exit_code == 0, result.output
    assert f"::notice title=kfops::{FORK_NOTICE}" in result.stdout
    summary = (tmp_path / "summary.md").read_text()
    assert "### kfops · iris" in summary and "workflow\\_run" in summary
    assert github_api.comments("acme", "ml", 5) == []


def test_server_errors_are_retried_and_never_duplicate_a_comment(
    tmp_path: Path, in_dir: Any, github_api: GitHubTestServer
) -> None:
    base = _setup(tmp_path, in_dir, github_api)
    github_api.fail_next("GET", r"/repos/acme/ml/issues/5/comments", 502)
    # the comment is stored, then the gateway fails: posting again would duplicate it
    github_api.fail_next("POST", r"/repos/acme/ml/issues/5/comments", 502, commit=True)
    result = _ci(tmp_path, github_api, base)
    assert result.exit_code == 0, result.output
    assert len(github_api.comments("acme", "ml", 5)) == 1
    statuses = [(m, s) for m, p, s in github_api.requests if "/comments" in p]
    assert ("GET", 502) in statuses and ("POST", 502) in statuses
    assert statuses[-1] == ("PATCH", 200)


def test_rate_limit_is_waited_out(
    tmp_path: Path, in_dir: Any, github_api: GitHubTestServer
) -> None:
    base = _setup(tmp_path, in_dir, github_api)
    github_api.fail_next(
        "GET", r"/repos/acme/ml/issues/5/comments", 403, headers={"Retry-After": "0"}
    )
    result = _ci(tmp_path, github_api, base)
    assert result.exit_code == 0, result.output
    assert len(github_api.comments("acme", "ml", 5)) == 1


def test_a_bad_token_is_one_clear_message(
    tmp_path: Path, in_dir: Any, github_api: GitHubTestServer
) -> None:
    base = _setup(tmp_path, in_dir, github_api)
    result = _ci(tmp_path, github_api, base, GITHUB_TOKEN="ghs_wrongToken123")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: GitHub rejected the token (401 Bad credentials)\n")
    assert "ghs_wrongToken123" not in result.output
    assert "Traceback" not in result.output
    # the report is not lost: summary and outputs are written before failing
    assert "### kfops · iris" in (tmp_path / "summary.md").read_text()
    assert outputs(tmp_path / "output.txt")["status"] == "ok"


def test_pipeline_code_never_sees_the_token(
    tmp_path: Path, in_dir: Any, github_api: GitHubTestServer
) -> None:
    base = _setup(tmp_path, in_dir, github_api)
    spy = tmp_path / "repo" / "pipelines" / "iris" / "pipeline.py"
    spy.write_text(
        "import os\nassert 'GITHUB_TOKEN' not in os.environ, 'token leaked'\n"
        "assert 'KFOPS_GITHUB_TOKEN' not in os.environ, 'token leaked'\n" + spy.read_text()
    )
    result = _ci(tmp_path, github_api, base, KFOPS_GITHUB_TOKEN=github_api.token)
    assert result.exit_code == 0, result.output
    assert len(github_api.comments("acme", "ml", 5)) == 1
