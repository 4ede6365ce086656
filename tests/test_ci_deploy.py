"""``kfops ci`` on a release tag: the model is released to KServe, the release is recorded
as a GitHub deployment, and its result goes to the job summary, the outputs and the exit code.

Everything here is real but the KServe controller: ``kfops ci`` runs in-process against the
real kube-apiserver (``tests/kube_env.py``, KServe's CRDs installed), the fake controller
(``tests/kserve_controller.py``) points InferenceService statuses at real KServe model
servers (``tests/model_servers.py``), and GitHub is the stateful test server checked
against GitHub's OpenAPI description (``tests/github_api.py``), driven by PyGithub.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from github import Auth, Github, GithubException

from kfops.ci import report
from kfops.ci.event import GitHubContext, decide
from kfops.cli import cli
from kfops.project.model import Trigger, Triggers
from tests.conftest import git
from tests.github_api import GitHubTestServer
from tests.kserve_controller import KServeController, Timeline
from tests.kube_env import KubeEnv
from tests.model_servers import servers
from tests.test_ci import IRIS, ci_env, outputs

__all__ = ["servers"]  # the fixture, imported for pytest

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
RUN_URL = "https://github.example/acme/ml/actions/runs/77"
TAG_ON = '  tag: {pattern: "v*", environment: production, deploy: true}\n'


def _repo(tmp_path: Path, namespace: str, *, tag_on: str = TAG_ON) -> tuple[Path, str]:
    """A git repository holding pipelines/iris, released by tags to ``namespace``."""
    repo = tmp_path / "repo"
    project = repo / "pipelines" / "iris"
    project.mkdir(parents=True)
    for name in ("pipeline.py", "smoke.json"):
        (project / name).write_text((IRIS / name).read_text())
    text = (IRIS / "mlops.yaml").read_text()
    text = text.replace("  format: sklearn\n", "  format: sklearn\n  timeout: 8\n")
    text += (
        "\nenvironments:\n"
        f"  production:\n    kubernetes: {{namespace: {namespace}}}\n"
        "\non:\n  pull_request: {}\n" + tag_on
    )
    (project / "mlops.yaml").write_text(text)
    (repo / "metrics-v1.json").write_text(json.dumps({"accuracy": 0.95}))
    (repo / "metrics-v2.json").write_text(json.dumps({"accuracy": 0.96}))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "iris")
    return repo, git(repo, "rev-parse", "HEAD")


def _tag(
    tmp_path: Path,
    server: GitHubTestServer,
    sha: str,
    tag: str,
    *,
    kubeconfig: Path,
    version: str = "v1",
) -> Any:
    """``kfops ci`` as the action runs it for a pushed tag."""
    env = ci_env(
        tmp_path,
        "push",
        {"ref": f"refs/tags/{tag}", "after": sha},
        GITHUB_REF=f"refs/tags/{tag}",
        GITHUB_SHA=sha,
        GITHUB_API_URL=server.url,
        GITHUB_TOKEN=server.token,
        KUBECONFIG=str(kubeconfig),
        KFOPS_MODEL_URI=f"s3://models/iris/{version}",
        KFOPS_METRICS=f"metrics-{version}.json",
        KFOPS_POLL_SECONDS="0.05",
    )
    (tmp_path / "summary.md").unlink(missing_ok=True)
    (tmp_path / "output.txt").unlink(missing_ok=True)
    result = CliRunner().invoke(cli, ["ci", "pipelines/iris"], env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def _live(kube_env: KubeEnv, namespace: str) -> dict[str, Any] | None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    with kube_env.api_client() as api:
        try:
            found: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, "iris"
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found


def _report(tmp_path: Path) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(outputs(tmp_path / "output.txt")["report"])
    return found


# -- releases on the real API server ------------------------------------------------------


@pytest.mark.kube
def test_a_release_tag_deploys_and_records_a_successful_deployment(
    kube_env: KubeEnv,
    servers: dict[str, str],
    github_api: GitHubTestServer,
    tmp_path: Path,
    in_dir: Any,
) -> None:
    namespace = kube_env.namespace("citag")
    repo, sha = _repo(tmp_path, namespace)
    in_dir(repo)
    github_api.add_repo("acme", "ml")
    with KServeController(
        kube_env.api_client(), namespace, Timeline.ready_at_once(url=servers["good"])
    ):
        result = _tag(tmp_path, github_api, sha, "v1.0.0", kubeconfig=kube_env.kubeconfig)
    assert result.exit_code == 0, result.output
    live = _live(kube_env, namespace)
    assert live is not None
    assert live["spec"]["predictor"]["model"]["storageUri"] == "s3://models/iris/v1"
    assert live["metadata"]["annotations"]["kfops.dev/tag"] == "v1.0.0"

    (deployment,) = github_api.deployments("acme", "ml")
    assert (deployment["sha"], deployment["ref"]) == (sha, sha)
    assert deployment["environment"] == "production"
    assert deployment["payload"] == {
        "project": "iris",
        "model_uri": "s3://models/iris/v1",
        "release": "v1.0.0",
        "tag": "v1.0.0",
        "commit": sha,
    }
    assert deployment["production_environment"] is True
    started, finished = deployment["statuses"]
    assert (started["state"], started["description"]) == (
        "in_progress",
        "releasing iris v1.0.0 to production",
    )
    assert finished["state"] == "success"
    assert finished["description"] == "promoted: v1.0.0 serving"
    assert finished["environment_url"] == servers["good"]
    assert finished["log_url"] == RUN_URL
    assert github_api.token not in result.output

    summary = (tmp_path / "summary.md").read_text()
    assert "✅ **Validated and compiled, released.**" in summary
    assert "#### Release · production" in summary
    assert f"- InferenceService: `iris` in namespace `{namespace}`" in summary
    assert "- stage: **✅ promoted**" in summary
    assert f"- URL: `{servers['good']}`" in summary
    assert f"- release: **v1\\.0\\.0**, commit `{sha[:12]}`, model `s3://models/iris/v1`" in summary
    assert "- previous release: none" in summary
    assert f"- GitHub deployment {deployment['id']}: `in_progress`, `success`" in summary
    assert "| step | ok | detail | seconds |" in summary
    assert "| smoke test | passed | detail |" in summary
    assert "| `setosa` | ✅ |" in summary

    found = _report(tmp_path)
    assert found["status"] == "ok"
    assert found["release"]["stage"] == "promoted"
    assert found["release"]["url"] == servers["good"]
    assert found["release"]["release"]["tag"] == "v1.0.0"
    assert [s["what"] for s in found["release"]["steps"]] == [
        "gate",
        "canary",
        "check",
        "apply",
        "ready",
        "probe",
        "smoke",
    ]
    assert found["deployment"]["statuses"] == ["in_progress", "success"]


@pytest.mark.kube
def test_a_release_rolled_back_fails_the_job_and_its_deployment(
    kube_env: KubeEnv,
    servers: dict[str, str],
    github_api: GitHubTestServer,
    tmp_path: Path,
    in_dir: Any,
) -> None:
    namespace = kube_env.namespace("ciback")
    repo, sha = _repo(tmp_path, namespace)
    in_dir(repo)
    github_api.add_repo("acme", "ml")
    with KServeController(
        kube_env.api_client(), namespace, Timeline.ready_at_once(url=servers["good"])
    ):
        first = _tag(tmp_path, github_api, sha, "v1.0.0", kubeconfig=kube_env.kubeconfig)
    assert first.exit_code == 0, first.output
    # the next release's canary loads, but answers wrongly: its smoke test fails
    timeline = Timeline.canary(url=servers["good"], canary_url=servers["wrong"])
    with KServeController(kube_env.api_client(), namespace, timeline):
        result = _tag(
            tmp_path, github_api, sha, "v1.1.0", kubeconfig=kube_env.kubeconfig, version="v2"
        )
    assert result.exit_code == 1, result.output
    live = _live(kube_env, namespace)
    assert live is not None
    assert live["spec"]["predictor"]["model"]["storageUri"] == "s3://models/iris/v1"

    _, second = github_api.deployments("acme", "ml")
    assert second["payload"]["release"] == "v1.1.0"
    assert [s["state"] for s in second["statuses"]] == ["in_progress", "failure"]
    failure = second["statuses"][-1]
    assert failure["description"] == "rolled back: smoke test failed; v1.0.0 serving"
    assert failure["environment_url"] == ""
    assert failure["log_url"] == RUN_URL

    summary = (tmp_path / "summary.md").read_text()
    assert "↩️ **The release was rolled back.**" in summary
    assert "- stage: **↩️ rolled back**" in summary
    assert "- previous release: **v1\\.0\\.0**" in summary
    assert "release v1.1.0 was rolled back on" in summary
    assert "| smoke | ❌ | 1/3 passed: setosa: expected predictions \\[0\\], got \\[1\\]" in summary
    assert "| `setosa` | ❌ | expected predictions \\[0\\], got \\[1\\] |" in summary
    found = _report(tmp_path)
    assert found["status"] == "failed"
    assert (found["release"]["stage"], found["release"]["ok"]) == ("rolled-back", False)
    assert found["deployment"]["statuses"] == ["in_progress", "failure"]
    assert "kfops ci: pipelines/iris: failed" in result.stderr


@pytest.mark.kube
def test_without_deployments_permission_the_release_is_still_reported(
    kube_env: KubeEnv,
    servers: dict[str, str],
    github_api: GitHubTestServer,
    tmp_path: Path,
    in_dir: Any,
) -> None:
    namespace = kube_env.namespace("cinoperm")
    repo, sha = _repo(tmp_path, namespace)
    in_dir(repo)
    github_api.add_repo("acme", "ml")
    github_api.deployments_denied = True
    with KServeController(
        kube_env.api_client(), namespace, Timeline.ready_at_once(url=servers["good"])
    ):
        result = _tag(tmp_path, github_api, sha, "v1.0.0", kubeconfig=kube_env.kubeconfig)
    assert result.exit_code == 0, result.output
    assert github_api.deployments("acme", "ml") == []
    assert ("POST", "/repos/acme/ml/deployments", 403) in github_api.requests
    assert (
        "::warning file=pipelines/iris/mlops.yaml,title=kfops::could not create a GitHub"
        " deployment: GitHub answered 403 (Resource not accessible by integration)%0Ahint:"
        " add `deployments: write` to the `permissions:` of the job that runs kfops on tags"
    ) in result.stdout
    summary = (tmp_path / "summary.md").read_text()
    assert "- stage: **✅ promoted**" in summary
    assert "could not create a GitHub deployment" in summary
    found = _report(tmp_path)
    assert (found["status"], found["release"]["stage"]) == ("ok", "promoted")
    assert found["deployment"]["hint"].startswith("add `deployments: write`")


@pytest.mark.kube
def test_a_model_that_fails_to_load_on_a_first_release_is_a_failure(
    kube_env: KubeEnv, github_api: GitHubTestServer, tmp_path: Path, in_dir: Any
) -> None:
    namespace = kube_env.namespace("ciload")
    repo, sha = _repo(tmp_path, namespace)
    in_dir(repo)
    github_api.add_repo("acme", "ml")
    timeline = Timeline.failed_load(message="model.joblib not found in s3://models/iris/v1")
    with KServeController(kube_env.api_client(), namespace, timeline):
        result = _tag(tmp_path, github_api, sha, "v1.0.0", kubeconfig=kube_env.kubeconfig)
    assert result.exit_code == 1, result.output
    (deployment,) = github_api.deployments("acme", "ml")
    failure = deployment["statuses"][-1]
    assert failure["state"] == "failure"
    assert failure["description"] == "failed: not ready; nothing to return to (first release)"
    assert "❌ **The release did not go through.**" in (tmp_path / "summary.md").read_text()


@pytest.mark.kube
def test_a_pull_request_from_a_fork_never_deploys(
    kube_env: KubeEnv, github_api: GitHubTestServer, tmp_path: Path, in_dir: Any
) -> None:
    """Even with a kubeconfig for the cluster and a model URI in its environment, and with
    the event's ref claiming a tag, a pull request goes nowhere near the cluster."""
    namespace = kube_env.namespace("cifork")
    repo, sha = _repo(tmp_path, namespace)
    in_dir(repo)
    github_api.add_pull_request("acme", "ml", 5, fork_owner="mallory")
    github_api.read_only = True  # a fork's token
    event = {
        "pull_request": {
            "number": 5,
            "head": {"ref": "feature", "repo": {"full_name": "mallory/ml", "fork": True}},
            "base": {"ref": "main", "sha": sha},
        }
    }
    env = ci_env(
        tmp_path,
        "pull_request",
        event,
        GITHUB_REF="refs/tags/v9.9.9",
        GITHUB_SHA=sha,
        GITHUB_API_URL=github_api.url,
        GITHUB_TOKEN=github_api.token,
        KUBECONFIG=str(kube_env.kubeconfig),
        KFOPS_MODEL_URI="s3://models/iris/evil",
        KFOPS_METRICS="metrics-v1.json",
    )
    result = CliRunner().invoke(cli, ["ci", "pipelines/iris"], env=env)
    assert result.exit_code == 0, result.output
    assert _live(kube_env, namespace) is None
    assert not [p for _, p, _ in github_api.requests if "/deployments" in p]
    found = _report(tmp_path)
    assert (found["action"], found["release"], found["deployment"]) == ("pull_request", {}, {})
    assert "#### Release" not in (tmp_path / "summary.md").read_text()


# -- no release: nothing touches a cluster (KUBECONFIG names no file) -----------------------


def test_a_tag_that_does_not_match_the_pattern_is_not_released(
    tmp_path: Path, github_api: GitHubTestServer, in_dir: Any
) -> None:
    repo, sha = _repo(tmp_path, "nowhere")
    in_dir(repo)
    github_api.add_repo("acme", "ml")
    result = _tag(tmp_path, github_api, sha, "nightly-3", kubeconfig=tmp_path / "none")
    assert result.exit_code == 0, result.output
    assert github_api.deployments("acme", "ml") == []
    summary = (tmp_path / "summary.md").read_text()
    assert "Nothing to do: tag \\`nightly\\-3\\` does not match \\`v\\*\\`." in summary
    assert "#### Release" not in summary
    assert _report(tmp_path)["release"] == {}


def test_deploy_false_builds_but_does_not_release(
    tmp_path: Path, github_api: GitHubTestServer, in_dir: Any
) -> None:
    tag_on = '  tag: {pattern: "v*", environment: production, deploy: false}\n'
    repo, sha = _repo(tmp_path, "nowhere", tag_on=tag_on)
    in_dir(repo)
    github_api.add_repo("acme", "ml")
    result = _tag(tmp_path, github_api, sha, "v1.0.0", kubeconfig=tmp_path / "none")
    assert result.exit_code == 0, result.output
    assert github_api.deployments("acme", "ml") == []
    assert not [p for _, p, _ in github_api.requests if "/deployments" in p]
    found = _report(tmp_path)
    assert (found["action"], found["status"], found["release"]) == ("tag", "ok", {})
    assert found["compiled"] == "pipelines/iris/.kfops/iris.yaml"


def test_a_release_that_cannot_reach_a_cluster_is_an_error_status(
    tmp_path: Path, github_api: GitHubTestServer, in_dir: Any
) -> None:
    repo, sha = _repo(tmp_path, "nowhere")
    in_dir(repo)
    github_api.add_repo("acme", "ml")
    result = _tag(tmp_path, github_api, sha, "v1.0.0", kubeconfig=tmp_path / "none")
    assert result.exit_code == 1, result.output
    (deployment,) = github_api.deployments("acme", "ml")
    error = deployment["statuses"][-1]
    assert error["state"] == "error"
    assert error["description"].startswith(
        f"not released: environment `production`: no kubeconfig at {tmp_path / 'none'}"
    )
    assert len(error["description"]) <= 140
    summary = (tmp_path / "summary.md").read_text()
    assert "❌ **The release did not go through.**" in summary
    assert "set KUBECONFIG to a kubeconfig for the cluster" in summary


@pytest.mark.parametrize(
    ("event", "ref", "payload"),
    [
        ("pull_request", "refs/pull/5/merge", {"pull_request": {"base": {"ref": "main"}}}),
        # a ref that claims a tag does not make a pull request a tag push
        ("pull_request", "refs/tags/v1.0.0", {"pull_request": {"base": {"ref": "main"}}}),
        ("pull_request_target", "refs/tags/v1.0.0", {}),
        ("push", "refs/heads/main", {}),
        ("workflow_dispatch", "refs/tags/v1.0.0", {}),
    ],
)
def test_only_a_tag_push_deploys(event: str, ref: str, payload: dict[str, Any]) -> None:
    everything = Trigger(environment="production", apply=True, deploy=True, build=True)
    triggers = Triggers(
        pull_request=everything,
        push=everything,
        tag=Trigger(pattern="v*", environment="production", deploy=True),
        declared=True,
    )
    ctx = GitHubContext(
        event_name=event,
        event=payload,
        ref=ref,
        sha="0" * 40,
        repository="acme/ml",
        api_url="http://127.0.0.1:1",
        server_url="https://github.example",
        run_id="77",
        summary=None,
        output=None,
        token=None,
    )

    class _Project:
        def __init__(self) -> None:
            self.triggers = triggers

    assert not decide(_Project(), ctx).deploy  # type: ignore[arg-type]
    tag = GitHubContext(**{**ctx.__dict__, "event_name": "push", "ref": "refs/tags/v1.0.0"})
    assert decide(_Project(), tag).deploy  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("release", "expected"),
    [
        ({"stage": "promoted", "release": {"name": "v2"}}, "promoted: v2 serving"),
        ({"stage": "unchanged", "release": {"name": "v2"}}, "unchanged: v2 was already serving"),
        (
            {"stage": "canary", "release": {"name": "v2"}},
            "canary: v2 waits for `kfops deploy --promote`",
        ),
        (
            {
                "stage": "rolled-back",
                "release": {"name": "v2"},
                "previous": {"name": "v1.0.0"},
                "steps": [{"what": "ready", "ok": True}, {"what": "smoke", "ok": False}],
            },
            "rolled back: smoke test failed; v1.0.0 serving",
        ),
        (
            {
                "stage": "failed",
                "release": {"name": "v2"},
                "previous": {"name": "v1"},
                "steps": [
                    {"what": "gate", "ok": False, "detail": "x"},
                    {"what": "check", "ok": False, "detail": "x"},
                ],
            },
            "failed: the metrics failed the gate",
        ),
        (
            {
                "stage": "failed",
                "release": {"name": "v2"},
                "previous": {"name": "v1"},
                "steps": [{"what": "check", "ok": False, "detail": "refused " * 40}],
            },
            "not released: " + ("refused " * 40)[: 140 - len("not released: ") - 1] + "…",
        ),
    ],
)
def test_deployment_status_descriptions_fit_in_140_characters(
    release: dict[str, Any], expected: str
) -> None:
    described = report.release_description(release)
    assert described == expected
    assert len(described) <= 140


# -- the GitHub API test server's deployments, through PyGithub -----------------------------


def _client(server: GitHubTestServer) -> Github:
    return Github(
        auth=Auth.Token(server.token),
        base_url=server.url,
        seconds_between_requests=0,
        seconds_between_writes=0,
        retry=None,
        lazy=True,
    )


def test_the_test_server_keeps_deployments_and_their_statuses(
    github_api: GitHubTestServer,
) -> None:
    github_api.add_repo("acme", "ml")
    repo = _client(github_api).get_repo("acme/ml")
    made = repo.create_deployment(
        "a" * 40, auto_merge=False, required_contexts=[], payload={"k": 1}, environment="qa"
    )
    made.create_status("in_progress", description="going")
    made.create_status("success", environment_url="http://127.0.0.1:9/", description="done")
    again = repo.get_deployment(made.id)
    assert (again.sha, again.environment, again.payload) == ("a" * 40, "qa", {"k": 1})
    assert [s.state for s in again.get_statuses()] == ["success", "in_progress"]  # newest first
    assert [d.id for d in repo.get_deployments(environment="qa")] == [made.id]
    assert list(repo.get_deployments(environment="production")) == []
    # what GitHub refuses
    with pytest.raises(GithubException) as unknown_ref:
        repo.create_deployment("v1.0.0", required_contexts=[])
    assert unknown_ref.value.status == 422
    with pytest.raises(GithubException) as checks:
        repo.create_deployment("b" * 40)  # GitHub checks every status context by default
    assert checks.value.status == 409
    with pytest.raises(GithubException) as long_text:
        made.create_status("failure", description="x" * 141)
    assert long_text.value.status == 422
    github_api.deployments_denied = True
    with pytest.raises(GithubException) as denied:
        made.create_status("failure", description="no")
    assert denied.value.status == 403
    assert [s["state"] for s in github_api.deployments("acme", "ml")[0]["statuses"]] == [
        "in_progress",
        "success",
    ]


# -- the action's kubeconfig input ------------------------------------------------------------


def test_the_action_writes_the_kubeconfig_privately_for_its_step_only(tmp_path: Path) -> None:
    """The `kfops ci` step of action/action.yml, run by bash as the runner runs it: kfops
    sees a path to a private file, not the secret, and the file is gone afterwards."""
    import os
    import subprocess

    import yaml

    from tests.conftest import ROOT

    steps = yaml.safe_load((ROOT / "action" / "action.yml").read_text())["runs"]["steps"]
    (step,) = [s for s in steps if s.get("id") == "ci"]
    assert step["env"]["KFOPS_KUBECONFIG_DATA"] == "${{ inputs.kubeconfig }}"
    fake = tmp_path / "kfops"
    fake.write_text(
        "#!/bin/bash\n"
        'echo "path=$KUBECONFIG"\n'
        'echo "mode=$(stat -c %a "$KUBECONFIG")"\n'
        'echo "secret-in-env=${KFOPS_KUBECONFIG_DATA:-no}"\n'
        'echo "args=$*"\n'
        'cmp -s "$KUBECONFIG" "$EXPECTED" && echo same\n'
        "exit 3\n"
    )
    fake.chmod(0o755)
    secret = "apiVersion: v1\nkind: Config\nusers: [{name: u, user: {token: s3cr3t}}]"
    expected = tmp_path / "expected"
    expected.write_text(secret + "\n")
    env = {
        "PATH": os.environ["PATH"],
        "RUNNER_TEMP": str(tmp_path),
        "KFOPS_BIN": str(fake),
        "KFOPS_PATH": "pipelines/iris",
        "KFOPS_ARGS": "--no-comment",
        "KFOPS_KUBECONFIG_DATA": secret,
        "EXPECTED": str(expected),
    }
    # GitHub runs `shell: bash` steps as `bash --noprofile --norc -eo pipefail {0}`
    script = tmp_path / "step.sh"
    script.write_text(step["run"])
    done = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 3, done.stderr  # kfops's exit code is the step's
    lines = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    assert lines["path"].startswith(str(tmp_path / "kfops-kubeconfig."))
    assert lines["mode"] == "600"
    assert lines["secret-in-env"] == "no"
    assert lines["args"] == "ci --no-comment -- pipelines/iris"
    assert done.stdout.splitlines()[-1] == "same"
    assert "s3cr3t" not in done.stdout + done.stderr
    assert not Path(lines["path"]).exists()


@pytest.mark.kube
def test_a_release_tag_runs_on_kubeflow_then_serves_that_runs_model(
    kube_env: KubeEnv,
    servers: dict[str, str],
    github_api: GitHubTestServer,
    kfp_api: Any,
    tmp_path: Path,
    in_dir: Any,
) -> None:
    """The whole loop on a tag: apply to KFP, run there and wait, find the model of that
    run (KFP's API for the run, ML Metadata for the URI), release it to KServe."""
    namespace = kube_env.namespace("cikfp")
    tag_on = (
        '  tag: {pattern: "v*", environment: production, apply: true, run: true, deploy: true}\n'
    )
    repo, sha = _repo(tmp_path, namespace, tag_on=tag_on)
    mlops = repo / "pipelines" / "iris" / "mlops.yaml"
    mlops.write_text(
        mlops.read_text().replace(
            "  production:\n",
            f"  production:\n    kfp: {{host: '{kfp_api.url}', token_env: KFP_TOKEN}}\n",
        )
    )
    git(repo, "commit", "-q", "-am", "deliver to kubeflow")
    sha = git(repo, "rev-parse", "HEAD")
    in_dir(repo)
    github_api.add_repo("acme", "ml")
    kfp_api.script_run("RUNNING", "SUCCEEDED", outputs={"train-model": ["model"]})
    env = ci_env(
        tmp_path,
        "push",
        {"ref": "refs/tags/v3.0.0", "after": sha},
        GITHUB_REF="refs/tags/v3.0.0",
        GITHUB_SHA=sha,
        GITHUB_API_URL=github_api.url,
        GITHUB_TOKEN=github_api.token,
        KUBECONFIG=str(kube_env.kubeconfig),
        KFP_TOKEN=kfp_api.token,
        KFOPS_METRICS="metrics-v1.json",
        KFOPS_POLL_SECONDS="0.05",
        KFOPS_RETRY_SECONDS="0",
    )
    with KServeController(
        kube_env.api_client(), namespace, Timeline.ready_at_once(url=servers["good"])
    ):
        result = CliRunner().invoke(cli, ["ci", "pipelines/iris"], env=env)
    assert result.exit_code == 0, result.output
    [run_id] = kfp_api.runs
    live = _live(kube_env, namespace)
    assert live is not None
    annotations = live["metadata"]["annotations"]
    assert live["spec"]["predictor"]["model"]["storageUri"] == (
        f"s3://mlpipeline/v2/artifacts/iris/{run_id}/train-model/00000001-salt/model"
    )
    assert annotations["kfops.dev/run-id"] == run_id
    assert annotations["kfops.dev/tag"] == "v3.0.0"
    assert annotations["kfops.dev/commit"] == sha
    [version] = kfp_api.versions.values()
    assert annotations["kfops.dev/pipeline-version"] == version["name"]
    (deployment,) = github_api.deployments("acme", "ml")
    assert deployment["sha"] == sha
