"""``kfops status --env NAME``: the live view of an environment, against the KFP API test
server and a real kube-apiserver (with the fake KServe controller and a real model
server)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from kfops.cli import cli
from tests.conftest import ROOT, git
from tests.kfp_api import KfpTestServer
from tests.kserve_controller import KServeController, Timeline
from tests.kube_env import KubeEnv
from tests.model_servers import servers

__all__ = ["servers"]


@pytest.fixture
def project(
    tmp_path: Path, kfp_api: KfpTestServer, kube_env: KubeEnv, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, str]:
    namespace = kube_env.namespace("status")
    root = tmp_path / "iris"
    shutil.copytree(ROOT / "pipelines" / "iris", root, ignore=shutil.ignore_patterns(".kfops"))
    with (root / "mlops.yaml").open("a") as f:
        f.write(
            "environments:\n  prod:\n"
            f"    kfp: {{host: '{kfp_api.url}', token_env: KFP_TOKEN}}\n"
            f"    kubernetes: {{namespace: {namespace}}}\n"
            "schedules:\n  - {name: nightly, cron: '0 3 * * *', environment: prod}\n"
        )
    (root / "metrics.json").write_text('{"accuracy": 0.95}')
    git(root, "init", "-q", "-b", "main")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "iris")
    monkeypatch.setenv("KFP_TOKEN", kfp_api.token)
    monkeypatch.setenv("KUBECONFIG", str(kube_env.kubeconfig))
    monkeypatch.setenv("KFOPS_POLL_SECONDS", "0")
    monkeypatch.setenv("KFOPS_RETRY_SECONDS", "0")
    for name in ("GITHUB_SHA", "GITHUB_REF", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    return root, namespace


def _kfops(*args: str, **env: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=env or None)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.kube
def test_status_shows_the_pipeline_runs_schedules_and_the_served_model(
    project: tuple[Path, str],
    kfp_api: KfpTestServer,
    kube_env: KubeEnv,
    servers: dict[str, str],
) -> None:
    root, namespace = project
    code, out, err = _kfops("status", str(root), "--env", "prod")
    assert code == 0, out + err
    assert "model: no InferenceService `iris` yet" in out
    assert _kfops("apply", str(root), "--env", "prod")[0] == 0
    kfp_api.script_run("SUCCEEDED", outputs={"train-model": ["model"]})
    assert _kfops("run", str(root), "--env", "prod", "--wait")[0] == 0
    with KServeController(
        kube_env.api_client(), namespace, Timeline.ready_at_once(url=servers["good"])
    ):
        code, _, err = _kfops(
            "deploy", str(root), "--env", "prod", "--metrics", str(root / "metrics.json")
        )
        assert code == 0, err
    commit = git(root, "rev-parse", "HEAD")
    code, out, err = _kfops("status", str(root), "--env", "prod", "--format", "json")
    assert code == 0, err
    found: dict[str, Any] = json.loads(out)
    assert found["dashboard"] == kfp_api.url
    [version] = found["pipeline"]["versions"]
    assert version["commit"] == commit
    assert version["name"].startswith(commit[:12] + "-")
    [run] = found["runs"]
    assert run["state"] == "SUCCEEDED" and run["version"] == version["name"]
    assert run["url"].endswith(f"/pipeline/#/runs/details/{run['id']}")
    assert found["schedules"] == [{"name": "nightly", "cron": "0 0 3 * * *", "enabled": True}]
    serving = found["serving"]
    assert serving["exists"] and serving["ready"] and serving["stage"] == "promoted"
    assert serving["url"] == servers["good"]
    assert serving["commit"] == commit and serving["run_id"] == run["id"]
    assert serving["model_uri"].startswith(f"s3://mlpipeline/v2/artifacts/iris/{run['id']}/")
    assert [t["percent"] for t in serving["traffic"]] == [100]
    assert [r["status"] for r in serving["releases"]] == ["promoted"]
    assert found["errors"] == {}
    code, text, _ = _kfops("status", str(root), "--env", "prod")
    assert code == 0
    assert f"  pipeline iris  {kfp_api.url}/pipeline/#/pipelines/details/" in text
    assert "  schedule nightly  0 0 3 * * *  enabled" in text
    assert "ready=True" in text and "traffic 100% -> iris-predictor-00001" in text
    code, markdown, _ = _kfops("status", str(root), "--env", "prod", "--format", "markdown")
    assert code == 0
    assert markdown.startswith(f"### prod ([dashboard]({kfp_api.url}))")
    assert "| schedule | cron | enabled |" in markdown


@pytest.mark.kube
def test_a_part_that_cannot_be_read_says_why_and_the_rest_still_shows(
    project: tuple[Path, str], kfp_api: KfpTestServer, tmp_path: Path
) -> None:
    root, _ = project
    broken = tmp_path / "kubeconfig"
    broken.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\n")
    code, out, err = _kfops("status", str(root), "--env", "prod", KUBECONFIG=str(broken))
    assert code == 1
    assert "model: could not be read: environment `prod`: cannot use the kubeconfig" in out
    assert "  pipeline iris" in out  # (empty, never applied) but read
    assert kfp_api.token not in out + err


def test_an_environment_with_nothing_live_is_a_usage_error(tmp_path: Path) -> None:
    root = tmp_path / "iris"
    shutil.copytree(ROOT / "pipelines" / "iris", root, ignore=shutil.ignore_patterns(".kfops"))
    with (root / "mlops.yaml").open("a") as f:
        f.write("environments:\n  dev: {registry: ghcr.io/acme/iris}\n")
    code, _, err = _kfops("status", str(root), "--env", "dev")
    assert code == 2
    assert "environment `dev` has neither `kfp:` nor `kubernetes:`" in err
