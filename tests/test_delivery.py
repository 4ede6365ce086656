"""Pipeline delivery (`kfops plan`, `kfops apply`) against the KFP API test server
(tests/kfp_api.py), through kfp_server_api: versions named by commit and spec, nothing
uploaded twice, races answered by lookup, and each fault with its message."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from kfops.cli import cli
from tests.conftest import ROOT, git
from tests.kfp_api import KfpTestServer

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path: Path, kfp_api: KfpTestServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "iris"
    shutil.copytree(ROOT / "pipelines" / "iris", root, ignore=shutil.ignore_patterns(".kfops"))
    with (root / "mlops.yaml").open("a") as f:
        f.write(
            f"environments:\n  staging:\n    kfp: {{host: '{kfp_api.url}', token_env: KFP_TOKEN}}\n"
        )
    git(root, "init", "-q", "-b", "main")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "iris")
    monkeypatch.setenv("KFP_TOKEN", kfp_api.token)
    monkeypatch.setenv("KFOPS_POLL_SECONDS", "0")  # the test server's states advance per GET
    monkeypatch.setenv("KFOPS_RETRY_SECONDS", "0")
    for name in ("GITHUB_SHA", "GITHUB_REF", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    return root


def _kfops(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_apply_uploads_once_then_does_nothing(project: Path, kfp_api: KfpTestServer) -> None:
    commit = git(project, "rev-parse", "HEAD")
    code, out, err = _kfops("plan", str(project), "--env", "staging")
    assert code == 0, err
    assert "+ create pipeline iris" in out and f"+ upload version {commit[:12]}-" in out
    assert kfp_api.mutating_requests() == []  # plan only reads

    code, out, err = _kfops("apply", str(project), "--env", "staging")
    assert code == 0, err
    [pipeline] = kfp_api.pipelines.values()
    [version] = kfp_api.versions.values()
    # Created empty, then the version uploaded: no version named after the pipeline.
    assert pipeline["name"] == "iris"
    assert version["name"].startswith(f"{commit[:12]}-")
    assert f"commit {commit}" in version["description"]
    assert "ref refs/heads/main" in version["description"]
    assert kfp_api.specs[version["pipeline_version_id"]]["pipelineInfo"]["name"] == "iris"
    assert f"/#/pipelines/details/{pipeline['pipeline_id']}/version/" in out

    before = len(kfp_api.mutating_requests())
    assert before == 2
    code, out, err = _kfops("apply", str(project), "--env", "staging")
    assert code == 0, err
    assert "is there already: nothing to do" in out
    assert len(kfp_api.mutating_requests()) == before  # zero mutating calls


def test_a_changed_parameter_is_a_new_version(project: Path, kfp_api: KfpTestServer) -> None:
    assert _kfops("apply", str(project), "--env", "staging")[0] == 0
    [first] = kfp_api.versions.values()
    mlops = project / "mlops.yaml"
    mlops.write_text(mlops.read_text().replace("n_estimators: 50", "n_estimators: 60"))
    assert _kfops("apply", str(project), "--env", "staging")[0] == 0
    [second] = [v for v in kfp_api.versions.values() if v is not first]
    assert second["name"][:12] == first["name"][:12]  # the same commit
    assert second["name"] != first["name"]  # another spec
    assert "(with uncommitted changes)" in second["description"]


def test_dry_run_changes_nothing(project: Path, kfp_api: KfpTestServer) -> None:
    code, out, _ = _kfops("apply", str(project), "--env", "staging", "--dry-run")
    assert code == 0
    assert "(dry run: nothing was changed)" in out
    assert kfp_api.mutating_requests() == []


def test_a_concurrent_apply_makes_no_duplicate(
    project: Path,
    kfp_api: KfpTestServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kfops.delivery import pipeline as delivery
    from kfops.kubeflow.client import connect
    from kfops.pipeline import compiler
    from kfops.project import config

    loaded = config.load(project)
    ir_text = compiler.compile_project(loaded).ir_text
    origin = delivery.Origin.detect(project)
    kfp = connect(loaded.environment("staging"))
    planned = delivery.plan(loaded, ir_text, kfp, origin)
    assert [a.kind for a in planned.actions] == ["create-pipeline", "upload-version"]
    # Another apply wins the race between this plan and this apply.
    other = delivery.apply(loaded, ir_text, connect(loaded.environment("staging")), origin)

    monkeypatch.setattr(delivery, "plan", lambda *args, **kwargs: planned)
    done = delivery.apply(loaded, ir_text, kfp, origin)
    assert done.version_id == other.version_id
    assert len(kfp_api.pipelines) == 1 and len(kfp_api.versions) == 1
    assert [status for _, _, status in kfp_api.mutating_requests()] == [200, 200, 409]


def test_a_rejected_token_names_the_environment_and_its_source(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KFP_TOKEN", "not-the-token")
    code, out, err = _kfops("apply", str(project), "--env", "staging")
    assert code == 1
    assert "refused the token (HTTP 401) for environment `staging`" in err
    assert "credential: $KFP_TOKEN" in err
    assert "not-the-token" not in out + err


def test_a_missing_token_variable(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KFP_TOKEN")
    code, _, err = _kfops("plan", str(project), "--env", "staging")
    assert code == 1
    assert "error: environment `staging`: $KFP_TOKEN is not set or empty" in err


def test_an_unreachable_host(project: Path) -> None:
    mlops = project / "mlops.yaml"
    text = mlops.read_text()
    start = text.index("host: '") + len("host: '")
    end = text.index("'", start)
    mlops.write_text(text[:start] + "http://127.0.0.1:9" + text[end:])
    code, _, err = _kfops("plan", str(project), "--env", "staging")
    assert code == 1
    assert (
        "error: cannot reach Kubeflow Pipelines at http://127.0.0.1:9 (environment `staging`)"
        in err
    )
    assert "Traceback" not in err


def test_run_waits_and_reports_each_state(project: Path, kfp_api: KfpTestServer) -> None:
    kfp_api.script_run("PENDING", "RUNNING", "SUCCEEDED")
    code, out, err = _kfops(
        "run", str(project), "--env", "staging", "--wait", "-p", "n_estimators=7"
    )
    assert code == 0, err
    [run] = kfp_api.runs.values()
    assert run["runtime_config"]["parameters"] == {"n_estimators": 7}
    [experiment] = kfp_api.experiments.values()
    assert (
        experiment["display_name"] == "iris" and run["experiment_id"] == experiment["experiment_id"]
    )
    assert "  pending\n  running\n  succeeded\n" in out
    assert f"/pipeline/#/runs/details/{run['run_id']}" in out
    assert f"run {run['run_id']} succeeded" in out
    # A second run of the same commit uploads nothing and reuses the experiment.
    mutating = len(kfp_api.mutating_requests())
    assert _kfops("run", str(project), "--env", "staging")[0] == 0
    assert [r[1] for r in kfp_api.mutating_requests()[mutating:]] == ["/apis/v2beta1/runs"]


@pytest.mark.parametrize("state", ["FAILED", "CANCELED"])
def test_a_run_that_does_not_succeed_exits_1_with_its_failed_tasks(
    project: Path, kfp_api: KfpTestServer, state: str
) -> None:
    # CANCELED is terminal too: KFP's own waiter spins on it (kubeflow/pipelines#14473).
    kfp_api.script_run(
        "RUNNING", state, failed_tasks={"train-model": "ValueError: n_estimators must be > 0"}
    )
    code, out, err = _kfops("run", str(project), "--env", "staging", "--wait")
    assert code == 1
    assert f"  {state.lower()}: train-model failed" in out
    assert f"{state.lower()} in " in out
    assert "failed: train-model: ValueError: n_estimators must be > 0" in err


def test_wait_times_out_and_leaves_the_run(project: Path, kfp_api: KfpTestServer) -> None:
    from kfops.errors import KfopsError
    from kfops.kubeflow import runs
    from kfops.kubeflow.client import connect
    from kfops.project import config

    assert _kfops("apply", str(project), "--env", "staging")[0] == 0
    kfp = connect(config.load(project).environment("staging"))
    [version] = kfp_api.versions.values()
    kfp_api.script_run("RUNNING")
    run_id = runs.start(
        kfp,
        pipeline_id=version["pipeline_id"],
        version_id=version["pipeline_version_id"],
        experiment="iris",
        parameters={},
        display_name="iris",
        description="",
    )
    ticks = iter(range(0, 10_000, 10))
    with pytest.raises(KfopsError) as raised:
        runs.wait(kfp, run_id, timeout=25, clock=lambda: next(ticks), sleep=lambda s: None)
    assert f"run {run_id} is still RUNNING after 25s; it was left running" in raised.value.message
    assert kfp_api.runs[run_id]["state"] == "RUNNING"


NIGHTLY = (
    '  - {{name: nightly, cron: "{cron}", environment: staging,'
    " parameters: {{n_estimators: 300}}}}\n"
)


def _schedules(project: Path, text: str) -> None:
    mlops = project / "mlops.yaml"
    body = mlops.read_text().split("schedules:", 1)[0].rstrip() + "\n"
    mlops.write_text(body + ("schedules:\n" + text if text else ""))


def test_schedules_are_reconciled_from_git(project: Path, kfp_api: KfpTestServer) -> None:
    import kfp_server_api

    # A recurring run someone made by hand: never touched.
    kfp_api.pipelines["pipeline-hand"] = {"pipeline_id": "pipeline-hand", "name": "other"}
    kfp_api.recurring_runs["hand"] = {
        "recurring_run_id": "hand",
        "display_name": "nightly",
        "status": "ENABLED",
        "namespace": "",
    }
    _schedules(
        project,
        NIGHTLY.format(cron="0 3 * * *")
        + '  - {name: weekly, cron: "0 4 * * 1", environment: staging, enabled: false}\n',
    )
    code, out, err = _kfops("apply", str(project), "--env", "staging")
    assert code == 0, err
    assert "create: schedule nightly (cron 0 3 * * *)" in out
    mine = {
        r["display_name"]: r
        for r in kfp_api.recurring_runs.values()
        if r["recurring_run_id"] != "hand"
    }
    assert set(mine) == {"kfops:iris:nightly", "kfops:iris:weekly"}
    nightly = mine["kfops:iris:nightly"]
    assert nightly["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"  # seconds first
    assert nightly["runtime_config"]["parameters"] == {"n_estimators": 300}
    assert nightly["max_concurrency"] == "1" and nightly["status"] == "ENABLED"
    assert "pipeline_version_id" not in nightly["pipeline_version_reference"]  # the latest
    assert mine["kfops:iris:weekly"]["status"] == "DISABLED"

    # Nothing changed: reads only.
    before = len(kfp_api.mutating_requests())
    code, out, _ = _kfops("apply", str(project), "--env", "staging")
    assert "nothing to do" in out and len(kfp_api.mutating_requests()) == before

    # Only `enabled` changed: an enable call, no replacement.
    _schedules(
        project,
        NIGHTLY.format(cron="0 3 * * *")
        + '  - {name: weekly, cron: "0 4 * * 1", environment: staging}\n',
    )
    assert _kfops("plan", str(project), "--env", "staging")[1].count("schedule") == 1
    assert _kfops("apply", str(project), "--env", "staging")[0] == 0
    assert [r[1].rsplit(":", 1)[-1] for r in kfp_api.mutating_requests()[before:]][-1] == "enable"
    assert kfp_api.deleted_recurring_runs == []

    # The cron changed: the new one first, then the old one deleted with ORPHAN.
    old_id = nightly["recurring_run_id"]
    _schedules(
        project,
        NIGHTLY.format(cron="30 2 * * *")
        + '  - {name: weekly, cron: "0 4 * * 1", environment: staging}\n',
    )
    marker = len(kfp_api.mutating_requests())
    code, out, err = _kfops("apply", str(project), "--env", "staging")
    assert code == 0, err
    assert "replace: schedule nightly" in out
    calls = [(m, p) for m, p, _ in kfp_api.mutating_requests()[marker:]]
    assert calls == [
        ("POST", "/apis/v2beta1/recurringruns"),
        ("DELETE", f"/apis/v2beta1/recurringruns/{old_id}"),
    ]
    assert kfp_api.deleted_recurring_runs == [("kfops:iris:nightly", "ORPHAN")]

    # Removed from Git: deleted; the hand-made one stays.
    _schedules(project, "")
    assert _kfops("apply", str(project), "--env", "staging")[0] == 0
    assert set(kfp_api.recurring_runs) == {"hand"}
    assert len(kfp_api.deleted_recurring_runs) == 3
    assert kfp_server_api  # the real client made every call above


# Faults: every one ends with no duplicate pipeline, version or recurring run.


def test_server_errors_and_rate_limits_are_retried(project: Path, kfp_api: KfpTestServer) -> None:
    kfp_api.fail_next = [503, 429, 502]
    code, _, err = _kfops("apply", str(project), "--env", "staging")
    assert code == 0, err
    assert len(kfp_api.pipelines) == 1 and len(kfp_api.versions) == 1
    assert [s for _, _, s in kfp_api.requests[:3]] == [503, 429, 502]


@pytest.mark.parametrize("operation", ["CreatePipeline", "UploadPipelineVersion"])
def test_a_lost_answer_to_a_create_is_looked_up_not_repeated(
    project: Path, kfp_api: KfpTestServer, operation: str
) -> None:
    kfp_api.lose_answer = [operation]
    code, _, err = _kfops("apply", str(project), "--env", "staging")
    assert code == 0, err
    assert kfp_api.lose_answer == []  # the fault happened
    assert len(kfp_api.pipelines) == 1 and len(kfp_api.versions) == 1
    assert _kfops("apply", str(project), "--env", "staging")[1].endswith("nothing to do\n")


def test_a_lost_answer_to_a_schedule_create(project: Path, kfp_api: KfpTestServer) -> None:
    _schedules(project, NIGHTLY.format(cron="0 3 * * *"))
    kfp_api.lose_answer = ["CreateRecurringRun"]
    code, _, err = _kfops("apply", str(project), "--env", "staging")
    assert code == 0, err
    assert kfp_api.lose_answer == []
    assert [r["display_name"] for r in kfp_api.recurring_runs.values()] == ["kfops:iris:nightly"]


def test_a_server_that_keeps_failing_says_so(project: Path, kfp_api: KfpTestServer) -> None:
    kfp_api.fail_next = [500] * 10
    code, _, err = _kfops("plan", str(project), "--env", "staging")
    assert code == 1
    assert f"error: Kubeflow Pipelines at {kfp_api.url} answered HTTP 500 to get pipeline" in err
    assert "Traceback" not in err


def test_the_token_is_never_printed_even_with_debug(
    project: Path, kfp_api: KfpTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KFOPS_DEBUG", "1")
    monkeypatch.setenv("KFP_TOKEN", "s3cret-kfp-token")
    code, out, err = _kfops("apply", str(project), "--env", "staging")
    assert code == 1
    assert "s3cret-kfp-token" not in out + err


def _ci(project: Path, event_name: str, ref: str, event: dict[str, object] | None = None) -> object:
    from rich.console import Console

    from kfops.ci import event as ci_event
    from tests.test_ci import context

    return ci_event.execute(project, context(event_name, ref, event), Console(stderr=True))


def test_ci_push_applies_runs_and_reports(project: Path, kfp_api: KfpTestServer) -> None:
    from kfops.ci import report

    with (project / "mlops.yaml").open("a") as f:
        f.write("on:\n  push: {branches: [main], environment: staging, apply: true, run: true}\n")
    _schedules(project, NIGHTLY.format(cron="0 3 * * *"))
    kfp_api.script_run("RUNNING", "SUCCEEDED")
    result = _ci(project, "push", "refs/heads/main")
    assert not result.failed, (result.delivery_error, result.problems)  # type: ignore[attr-defined]
    [version] = kfp_api.versions.values()
    assert "commit 0123456789abcdef" in version["description"]
    assert "repository acme/ml" in version["description"]
    assert "run https://github.example/acme/ml/actions/runs/77" in version["description"]
    [run] = kfp_api.runs.values()
    body = report.markdown(result, "<!-- kfops -->")  # type: ignore[arg-type]
    assert "#### Kubeflow Pipelines · staging" in body
    assert f"uploaded version [`{version['name']}`](" in body
    assert "- schedule `nightly`: created (`cron 0 3 * * *`)" in body
    assert f"- run [`{run['run_id']}`](" in body and "**succeeded**" in body
    assert "✅ **Validated and compiled, delivered, ran on Kubeflow Pipelines.**" in body


def test_ci_pull_request_plans_against_the_environment_main_deploys_to(
    project: Path, kfp_api: KfpTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kfops.ci import report

    with (project / "mlops.yaml").open("a") as f:
        f.write("on:\n  push: {branches: [main], environment: staging, apply: true}\n")
        f.write("  pull_request: {}\n")
    pull = {"pull_request": {"number": 3, "base": {"ref": "main"}}}
    result = _ci(project, "pull_request", "refs/pull/3/merge", pull)
    assert not result.failed  # type: ignore[attr-defined]
    assert kfp_api.mutating_requests() == []  # a plan only reads
    body = report.markdown(result, "<!-- kfops -->")  # type: ignore[arg-type]
    assert "- pipeline `iris`: will upload version `0123456789ab-" in body

    # A fork's pull request has no secret: no plan against the cluster, and no failure.
    monkeypatch.delenv("KFP_TOKEN")
    result = _ci(project, "pull_request", "refs/pull/3/merge", pull)
    assert not result.failed  # type: ignore[attr-defined]
    assert any("no plan against `staging`" in n for n in result.notices)  # type: ignore[attr-defined]


def test_ci_push_with_a_failing_run_fails(project: Path, kfp_api: KfpTestServer) -> None:
    with (project / "mlops.yaml").open("a") as f:
        f.write("on:\n  push: {environment: staging, apply: true, run: true}\n")
    kfp_api.script_run("FAILED", failed_tasks={"evaluate": "AssertionError: accuracy 0.3"})
    result = _ci(project, "push", "refs/heads/main")
    assert result.failed  # type: ignore[attr-defined]
    assert result.kfp_run["failed_tasks"] == [("evaluate", "AssertionError: accuracy 0.3")]  # type: ignore[attr-defined]


ACTION_WORKFLOW = """\
name: kfops
on: [push]
permissions: {}
jobs:
  kfops:
    runs-on: ubuntu-latest
    permissions:
      contents: read
    steps:
      - uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2
      - id: kfops
        uses: ./action
        env:
          KFP_TOKEN: ${{ secrets.KFP_TOKEN }}
        with:
          path: iris
      - name: outputs
        env:
          REPORT: ${{ steps.kfops.outputs.report }}
        run: echo "kfops-report $REPORT"
"""


def test_action_applies_on_push(
    project: Path, kfp_api: KfpTestServer, tmp_path: Path, github_api: object
) -> None:
    """The composite action under act: a push to main applies to the KFP API test server,
    the token reaching kfops only through the step's `env:` from a secret."""
    import json

    from tests.test_action import act, action_repo

    on = "on:\n  push: {branches: [main], environment: staging, apply: true}\n"
    repo = action_repo(tmp_path, ACTION_WORKFLOW, project, "iris", on)
    commit = git(repo, "rev-parse", "HEAD")
    done = act(
        repo,
        "push",
        {"ref": "refs/heads/main"},
        github_api,  # type: ignore[arg-type]
        ("-s", f"KFP_TOKEN={kfp_api.token}", "--env", f"GITHUB_SHA={commit}"),
    )
    assert done.returncode == 0, done.stdout[-4000:]
    assert kfp_api.token not in done.stdout
    [version] = kfp_api.versions.values()
    assert version["name"].startswith(commit[:12])
    report = json.loads(done.stdout.rsplit("kfops-report ", 1)[1].splitlines()[0])
    assert report["delivery"]["applied"] is True
    assert report["delivery"]["version"] == version["name"]


def test_ci_tag_applies_to_the_tags_environment(project: Path, kfp_api: KfpTestServer) -> None:
    with (project / "mlops.yaml").open("a") as f:
        f.write('on:\n  tag: {pattern: "v*", environment: staging, apply: true}\n')
    result = _ci(project, "push", "refs/tags/v1.2.0")
    assert not result.failed, result.delivery_error  # type: ignore[attr-defined]
    [version] = kfp_api.versions.values()
    assert "ref refs/tags/v1.2.0" in version["description"]
    assert result.delivery["applied"] is True  # type: ignore[attr-defined]
    untagged = _ci(project, "push", "refs/tags/nightly-3")
    assert untagged.delivery == {} and len(kfp_api.versions) == 1  # type: ignore[attr-defined]
