"""kfops ci: event decisions, the plan, the Markdown report (goldens) and the outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from kfops.ci import report
from kfops.ci.event import CiResult, Decision, GitHubContext, decide
from kfops.cli import cli
from kfops.errors import KfopsError, Problem
from kfops.pipeline import diff
from kfops.project.model import Trigger, Triggers
from tests.conftest import GOLDEN, ROOT, check_golden, git

IRIS = ROOT / "pipelines" / "iris"


def context(event_name: str, ref: str, event: dict[str, Any] | None = None) -> GitHubContext:
    return GitHubContext(
        event_name=event_name,
        event=event or {},
        ref=ref,
        sha="0123456789abcdef",
        repository="acme/ml",
        api_url="http://127.0.0.1:1",
        server_url="https://github.example",
        run_id="77",
        summary=None,
        output=None,
        token=None,
    )


class _Project:
    def __init__(self, triggers: Triggers) -> None:
        self.triggers = triggers


PR = {"pull_request": {"number": 5, "base": {"ref": "main", "sha": "abc"}}}


@pytest.mark.parametrize(
    ("triggers", "event", "ref", "payload", "expected"),
    [
        (Triggers(), "pull_request", "refs/pull/5/merge", PR, ("pull_request", False)),
        (Triggers(), "push", "refs/heads/feature", {}, ("push", False)),
        (Triggers(), "push", "refs/tags/v1.0", {}, ("tag", False)),
        (Triggers(), "schedule", "refs/heads/main", {}, ("", False)),
        (
            Triggers(push=Trigger(branches=("main", "release/*"), run=True), declared=True),
            "push",
            "refs/heads/release/2",
            {},
            ("push", True),
        ),
        (
            Triggers(push=Trigger(branches=("main",)), declared=True),
            "push",
            "refs/heads/feature",
            {},
            ("", False),
        ),
        (
            Triggers(pull_request=None, push=Trigger(), declared=True),
            "pull_request",
            "refs/pull/5/merge",
            PR,
            ("", False),
        ),
        (
            Triggers(tag=Trigger(pattern="v*", run=True), declared=True),
            "push",
            "refs/tags/v2.1",
            {},
            ("tag", True),
        ),
        (
            Triggers(tag=Trigger(pattern="v*"), declared=True),
            "push",
            "refs/tags/nightly",
            {},
            ("", False),
        ),
        (
            Triggers(pull_request=Trigger(branches=("develop",)), declared=True),
            "pull_request",
            "refs/pull/5/merge",
            PR,
            ("", False),
        ),
    ],
)
def test_decide(
    triggers: Triggers, event: str, ref: str, payload: dict[str, Any], expected: tuple[str, bool]
) -> None:
    decision = decide(_Project(triggers), context(event, ref, payload))  # type: ignore[arg-type]
    assert (decision.kind, decision.run) == expected
    assert decision.reason


def test_outside_github_actions_explains_what_it_needs() -> None:
    with pytest.raises(KfopsError) as caught:
        GitHubContext.from_env({"GITHUB_SHA": "x"})
    assert caught.value.exit_code == 2
    assert "GITHUB_EVENT_NAME, GITHUB_EVENT_PATH, GITHUB_REF, GITHUB_REPOSITORY" in str(
        caught.value
    )
    result = CliRunner().invoke(cli, ["ci", str(IRIS)], env={"GITHUB_EVENT_NAME": ""})
    assert result.exit_code == 2
    assert result.stderr.startswith("error: kfops ci runs inside GitHub Actions;")


def _ir(path: Path, *params: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["compile", str(path), "-o", "-", *params])
    assert result.exit_code == 0, result.output
    loaded: dict[str, Any] = next(yaml.safe_load_all(result.stdout))
    return loaded


def test_plan_of_a_parameter_and_a_step_change(tmp_path: Path) -> None:
    base = _ir(IRIS)
    head_dir = tmp_path / "iris"
    head_dir.mkdir()
    source = (IRIS / "pipeline.py").read_text().replace("python:3.11-slim", "python:3.12-slim", 1)
    (head_dir / "pipeline.py").write_text(source)
    (head_dir / "smoke.json").write_text((IRIS / "smoke.json").read_text())
    (head_dir / "mlops.yaml").write_text(
        (IRIS / "mlops.yaml").read_text().replace("n_estimators: 50", "n_estimators: 80")
    )
    changes = diff.compare(base, _ir(head_dir))
    assert changes.to_json() == {
        "new_project": False,
        "steps_added": [],
        "steps_removed": [],
        "steps_changed": {"load-data": ["image"]},
        "parameters": [{"name": "n_estimators", "before": 50, "after": 80, "status": "changed"}],
        "images": [
            {"step": "load-data", "before": "python:3.11-slim", "after": "python:3.12-slim"}
        ],
    }
    assert diff.compare(base, base).empty
    new = diff.compare(None, base)
    assert new.new_project and new.steps_added == ["evaluate", "load-data", "train-model"]


def _result(**changes: Any) -> CiResult:
    values: dict[str, Any] = {
        "project": "pipelines/iris",
        "name": "iris",
        "event": "pull_request",
        "decision": Decision("pull_request", True, "pull_request on `main`"),
        "compiled": "pipelines/iris/.kfops/iris.yaml",
        "sha": "0123456789abcdef",
        "run_url": "https://github.example/acme/ml/actions/runs/77",
    }
    values.update(changes)
    return CiResult(**values)


def _plan() -> diff.Plan:
    return diff.Plan(
        steps_added=["report"],
        steps_removed=["old-step"],
        steps_changed=[diff.StepChange("train-model", ("code", "resources"))],
        parameters=[diff.ParameterChange("n_estimators", 50, 80, "changed")],
        images=[diff.ImageChange("train-model", "python:3.11", "python:3.12")],
    )


@pytest.mark.parametrize(
    ("name", "result"),
    [
        ("ok", _result()),
        (
            "plan-and-metrics",
            _result(
                plan=_plan(),
                plan_note="compared with the merge base 1a2b3c4",
                metrics={"evaluate": {"accuracy": 0.93, "f1_macro": 0.91}},
                base_metrics={"evaluate": {"accuracy": 0.9, "f1_macro": 0.91}},
                run_status="succeeded",
            ),
        ),
        (
            "problems",
            _result(
                compiled="",
                problems=[
                    Problem(
                        "mlops.yaml", 3, 1, "unknown key `pipline`", "did you mean `pipeline`?"
                    ),
                    Problem(
                        "train.ipynb", 40, 1, "cell 3: `%matplotlib` removed", severity="warning"
                    ),
                ],
            ),
        ),
        (
            "skipped",
            _result(
                compiled="", decision=Decision("", False, "branch `x` is not in `on.push.branches`")
            ),
        ),
        (
            "injection",
            _result(
                name="evil",
                problems=[
                    Problem(
                        "a|b<img src=x onerror=alert(1)>.yaml",
                        1,
                        1,
                        "<!-- kfops-report 718a1d541f7b1327 --> [click](https://evil.example)"
                        " **bold** | cell",
                        "`code` <script>",
                    )
                ],
            ),
        ),
    ],
)
def test_report_golden(name: str, result: CiResult, regen: bool) -> None:
    text = report.markdown(result, "<!-- kfops-report test -->")
    check_golden(GOLDEN / "report" / f"{name}.md", text, regen)
    # nothing user-controlled can open HTML or a second marker
    body = text.split("\n", 1)[1]
    assert "<!--" not in body and "<img" not in body and "<script" not in body


def test_long_report_is_summarised_not_failed(regen: bool) -> None:
    problems = [
        Problem("mlops.yaml", i, 1, f"problem number {i} " + "x" * 300, "fix it " + "y" * 200)
        for i in range(1, 400)
    ]
    text = report.markdown(_result(compiled="", problems=problems), "<!-- m -->")
    assert len(text) <= report.COMMENT_LIMIT
    assert "… and 349 more: run `kfops validate` or see the job summary." in text
    check_golden(GOLDEN / "report" / "long.md", text, regen)
    tiny = report.markdown(_result(compiled="", problems=problems), "<!-- m -->", limit=2000)
    assert len(tiny) <= 2000


def make_repo(tmp_path: Path) -> tuple[Path, str]:
    """A git repository with pipelines/iris on main, and a branch that changes it."""
    repo = tmp_path / "repo"
    (repo / "pipelines").mkdir(parents=True)
    project = repo / "pipelines" / "iris"
    project.mkdir()
    for name in ("pipeline.py", "mlops.yaml", "smoke.json"):
        (project / name).write_text((IRIS / name).read_text())
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "base")
    base = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "change")
    (project / "mlops.yaml").write_text(
        (IRIS / "mlops.yaml").read_text().replace("n_estimators: 50", "n_estimators: 80")
    )
    git(repo, "commit", "-q", "-am", "more trees")
    return repo, base


def ci_env(tmp_path: Path, event_name: str, event: dict[str, Any], **extra: str) -> dict[str, str]:
    event_file = tmp_path / "event.json"
    event_file.write_text(json.dumps(event))
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": event_name,
        "GITHUB_EVENT_PATH": str(event_file),
        "GITHUB_REF": "refs/pull/5/merge" if event_name == "pull_request" else "refs/heads/main",
        "GITHUB_SHA": "0123456789abcdef",
        "GITHUB_REPOSITORY": "acme/ml",
        "GITHUB_RUN_ID": "77",
        "GITHUB_SERVER_URL": "https://github.example",
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        "GITHUB_OUTPUT": str(tmp_path / "output.txt"),
        "GITHUB_TOKEN": "",
    }
    env.update(extra)
    return env


def outputs(path: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        name, delimiter = lines[i].split("<<", 1)
        end = lines.index(delimiter, i + 1)
        found[name] = "\n".join(lines[i + 1 : end])
        i = end + 1
    return found


def test_pull_request_plan_without_a_token(tmp_path: Path, in_dir: Any) -> None:
    repo, base = make_repo(tmp_path)
    in_dir(repo)
    event = {"pull_request": {"number": 5, "base": {"ref": "main", "sha": base}}}
    result = CliRunner().invoke(
        cli, ["ci", "pipelines/iris"], env=ci_env(tmp_path, "pull_request", event)
    )
    assert result.exit_code == 0, result.output
    assert "::notice title=kfops::no GitHub token" in result.stdout
    summary = (tmp_path / "summary.md").read_text()
    assert "| `n_estimators` | 50 | 80 |" in summary
    assert "compared with the merge base" in summary
    found = outputs(tmp_path / "output.txt")
    assert found["status"] == "ok"
    assert found["compiled"] == "pipelines/iris/.kfops/iris.yaml"
    assert json.loads(found["report"])["plan"]["parameters"][0]["after"] == 80
    # the work tree was not touched by looking at the base
    assert git(repo, "status", "--porcelain") == "?? pipelines/iris/.kfops/"


def test_invalid_project_gives_annotations_and_fails(tmp_path: Path, in_dir: Any) -> None:
    (tmp_path / "mlops.yaml").write_text("version: 1\nname: x\npipline: {}\n")
    in_dir(tmp_path)
    result = CliRunner().invoke(cli, ["ci"], env=ci_env(tmp_path, "push", {}))
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0] == (
        "::error file=mlops.yaml,line=3,col=1,title=kfops::unknown key `pipline` in the top"
        " level (at pipline)%0Ahint: did you mean `pipeline`?"
    )
    assert outputs(tmp_path / "output.txt")["status"] == "failed"
    assert "❌ **1 problem** in the project" in (tmp_path / "summary.md").read_text()


@pytest.mark.slow
def test_pull_request_runs_both_sides_and_compares_metrics(tmp_path: Path, in_dir: Any) -> None:
    repo, base = make_repo(tmp_path)
    mlops = repo / "pipelines" / "iris" / "mlops.yaml"
    mlops.write_text(mlops.read_text() + "\non:\n  pull_request: {run: true}\n")
    git(repo, "commit", "-q", "-am", "run on pull requests")
    in_dir(repo)
    event = {"pull_request": {"number": 5, "base": {"ref": "main", "sha": base}}}
    result = CliRunner().invoke(
        cli, ["ci", "pipelines/iris"], env=ci_env(tmp_path, "pull_request", event)
    )
    assert result.exit_code == 0, result.output
    report_json = json.loads(outputs(tmp_path / "output.txt")["report"])
    assert report_json["run"] == "succeeded"
    head = report_json["metrics"]["evaluate"]["accuracy"]
    before = report_json["base_metrics"]["evaluate"]["accuracy"]
    assert 0.8 <= head <= 1.0 and 0.8 <= before <= 1.0
    summary = (tmp_path / "summary.md").read_text()
    assert "#### Metrics" in summary and "| `evaluate` | `accuracy` |" in summary


def test_summary_keeps_every_problem_and_mentions_are_defused() -> None:
    problems = [Problem("mlops.yaml", i, 1, f"problem {i} for @octocat", "") for i in range(1, 120)]
    result = _result(compiled="", problems=problems)
    summary = report.markdown(result, "<!-- m -->", limit=report.SUMMARY_LIMIT)
    assert "problem 119 for &#64;octocat" in summary
    assert "@octocat" not in summary
    assert "more:" not in summary


@pytest.mark.parametrize(
    ("name", "pattern", "matches"),
    [
        ("main", "main", True),
        ("release/2", "release/*", True),
        ("release/2/hotfix", "release/*", False),
        ("release/2/hotfix", "release/**", True),
        ("v1.2.0", "v*", True),
        ("feature/v1", "v*", False),
    ],
)
def test_branch_and_tag_patterns_follow_github(name: str, pattern: str, matches: bool) -> None:
    from kfops.ci.event import glob_match

    assert glob_match(name, pattern) is matches


def test_pull_request_target_is_refused() -> None:
    decision = decide(_Project(Triggers()), context("pull_request_target", "refs/heads/main", PR))  # type: ignore[arg-type]
    assert decision.kind == ""
    assert "write token" in decision.reason


@pytest.mark.parametrize("filters", [True, False], ids=["filters", "python-without-filters"])
def test_merge_base_tree_extracts_only_plain_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, filters: bool
) -> None:
    import tarfile

    from kfops.ci.event import merge_base_tree

    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    (repo / "sub" / "a.txt").write_text("a")
    (repo / "escape").symlink_to("/etc/passwd")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "base")
    base = git(repo, "rev-parse", "HEAD")
    if not filters:  # as on Python before 3.10.12 and 3.11.4
        monkeypatch.delattr(tarfile, "data_filter")
    into = tmp_path / "out"
    into.mkdir()
    assert merge_base_tree(repo, base, into) == base
    assert (into / "sub" / "a.txt").read_text() == "a"
    assert not (into / "escape").exists()
