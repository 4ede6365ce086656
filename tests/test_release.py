"""Which model a release serves: found through this commit's run on Kubeflow Pipelines
(the KFP API test server, driven by the real kfp_server_api), or given as a URI; and what
the release carries (commit, tag, run, pipeline version, metrics)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from kfops.cli import cli
from kfops.errors import KfopsError
from kfops.kubeflow.client import connect
from kfops.project import config
from kfops.serving import release as releases
from tests.conftest import ROOT, git
from tests.kfp_api import KfpTestServer


@pytest.fixture
def project(tmp_path: Path, kfp_api: KfpTestServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "iris"
    shutil.copytree(ROOT / "pipelines" / "iris", root, ignore=shutil.ignore_patterns(".kfops"))
    with (root / "mlops.yaml").open("a") as f:
        f.write(
            "environments:\n  prod:\n"
            f"    kfp: {{host: '{kfp_api.url}', token_env: KFP_TOKEN}}\n"
            "    kubernetes: {namespace: ml}\n"
        )
    git(root, "init", "-q", "-b", "main")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "iris")
    monkeypatch.setenv("KFP_TOKEN", kfp_api.token)
    monkeypatch.setenv("KFOPS_POLL_SECONDS", "0")
    monkeypatch.setenv("KFOPS_RETRY_SECONDS", "0")
    for name in ("GITHUB_SHA", "GITHUB_REF", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    return root


def _kfops(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def _resolve(project: Path, **kwargs: str) -> releases.Release:
    loaded = config.load(project)
    environment = loaded.environment("prod")
    return releases.resolve(loaded, environment, kfp=connect(environment), **kwargs)  # type: ignore[arg-type]


def test_no_version_of_this_commit_says_to_apply_and_run(project: Path) -> None:
    with pytest.raises(KfopsError) as caught:
        _resolve(project)
    commit = git(project, "rev-parse", "HEAD")[:12]
    assert caught.value.message.startswith(f"no pipeline version of commit {commit} on ")
    assert "`kfops apply --env prod` then `kfops run --env prod --wait`" in caught.value.hint


def test_a_run_that_did_not_succeed_is_no_model(project: Path, kfp_api: KfpTestServer) -> None:
    assert _kfops("apply", str(project), "--env", "prod")[0] == 0
    kfp_api.script_run("FAILED", failed_tasks={"train-model": "OOMKilled"})
    assert _kfops("run", str(project), "--env", "prod", "--wait")[0] == 1
    with pytest.raises(KfopsError) as caught:
        _resolve(project)
    assert "no successful run of commit" in caught.value.message


def test_the_model_of_this_commits_run_comes_from_ml_metadata(
    project: Path, kfp_api: KfpTestServer
) -> None:
    assert _kfops("apply", str(project), "--env", "prod")[0] == 0
    kfp_api.script_run(
        "RUNNING",
        "SUCCEEDED",
        outputs={"train-model": ["model"]},
        metrics={"evaluate": {"accuracy": 0.93, "f1_macro": 0.91}},
    )
    code, _, err = _kfops("run", str(project), "--env", "prod", "--wait")
    assert code == 0, err
    [run_id] = kfp_api.runs
    release = _resolve(project)
    # the gate's metrics come from the run's Metrics artifacts
    assert release.metrics == {"accuracy": 0.93, "f1_macro": 0.91}
    # KFP's minio:// is served to KServe as s3://; the salt is the launcher's own
    number = kfp_api.artifact_ids[(run_id, "train-model", "model")]
    assert release.model_uri == (
        f"s3://mlpipeline/v2/artifacts/iris/{run_id}/train-model/{number:08x}-salt/model"
    )
    assert release.source == f"run {run_id} on Kubeflow"
    assert release.run_id == run_id
    [version] = kfp_api.versions.values()
    assert release.pipeline_version == version["name"]
    assert release.commit == git(project, "rev-parse", "HEAD")
    calls = [path for _, path, _ in kfp_api.requests if path.startswith("/ml_metadata/")]
    assert calls == ["/ml_metadata/ml_metadata.MetadataStoreService/GetArtifactsByID"]
    # --model-uri wins, and ML Metadata is not asked
    given = _resolve(project, model_uri="s3://models/iris/given")
    assert (given.model_uri, given.source, given.run_id) == (
        "s3://models/iris/given",
        "--model-uri",
        run_id,
    )


def test_ml_metadata_faults_name_the_run_and_artifact(
    project: Path, kfp_api: KfpTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _kfops("apply", str(project), "--env", "prod")[0] == 0
    kfp_api.script_run("SUCCEEDED", outputs={"train-model": ["model"]})
    assert _kfops("run", str(project), "--env", "prod", "--wait")[0] == 0
    [run_id] = kfp_api.runs
    monkeypatch.setattr(kfp_api, "artifact_uris", dict)
    with pytest.raises(KfopsError) as caught:
        _resolve(project)
    assert caught.value.message == (
        f"found this commit's model, run {run_id}, step `train-model`, artifact `model` (ML"
        f" Metadata artifact 1), but ML Metadata at {kfp_api.url}/ml_metadata knows no URI"
        " for it"
    )
    assert "--model-uri" in caught.value.hint
    text = (project / "mlops.yaml").read_text()
    closed = "http://127.0.0.1:9/ml_metadata"
    (project / "mlops.yaml").write_text(
        text.replace("token_env: KFP_TOKEN}", f"token_env: KFP_TOKEN, metadata: '{closed}'}}")
    )
    with pytest.raises(KfopsError) as caught:
        _resolve(project)
    assert f"cannot reach Kubeflow's ML Metadata gateway at {closed}: ConnectError" in (
        caught.value.message
    )
    assert kfp_api.token not in caught.value.message + caught.value.hint


def test_a_wrong_step_or_artifact_is_named(project: Path, kfp_api: KfpTestServer) -> None:
    assert _kfops("apply", str(project), "--env", "prod")[0] == 0
    kfp_api.script_run("SUCCEEDED", outputs={"train-model": ["model", "scaler"]})
    assert _kfops("run", str(project), "--env", "prod", "--wait")[0] == 0
    text = (project / "mlops.yaml").read_text()
    (project / "mlops.yaml").write_text(text.replace("artifact: model", "artifact: modl"))
    with pytest.raises(KfopsError) as caught:
        _resolve(project, model_uri="s3://x/y")
    assert "has no output artifact `modl` (its artifacts: `model`, `scaler`)" in (
        caught.value.message
    )
    (project / "mlops.yaml").write_text(text.replace("from_step: train-model", "from_step: trian"))
    with pytest.raises(KfopsError) as caught:
        _resolve(project, model_uri="s3://x/y")
    assert "has no succeeded step `trian`" in caught.value.message


def test_the_tag_of_the_commit_names_the_release(project: Path) -> None:
    git(project, "tag", "v1.2.0")
    loaded = config.load(project)
    release = releases.resolve(loaded, loaded.environment("prod"), model_uri="s3://m/1")
    assert (release.tag, release.ref, release.name) == ("v1.2.0", "refs/tags/v1.2.0", "v1.2.0")
    ci = releases.resolve(
        loaded,
        loaded.environment("prod"),
        model_uri="s3://m/1",
        env={"GITHUB_SHA": "f" * 40, "GITHUB_REF": "refs/tags/v2.0.0"},
    )
    assert (ci.commit, ci.tag) == ("f" * 40, "v2.0.0")


def test_metrics_files(tmp_path: Path) -> None:
    plain = tmp_path / "m.json"
    plain.write_text(json.dumps({"accuracy": 0.9, "name": "x", "ok": True}))
    assert releases.read_metrics(plain) == {"accuracy": 0.9}
    run = tmp_path / "result.json"
    run.write_text(json.dumps({"metrics": {"evaluate": {"accuracy": 0.8, "f1": 0.7}}}))
    assert releases.read_metrics(run) == {"accuracy": 0.8, "f1": 0.7}
    bad = tmp_path / "bad.json"
    bad.write_text('{"accuracy": ')
    with pytest.raises(KfopsError, match=r"bad.json:1:14: not JSON"):
        releases.read_metrics(bad)
    with pytest.raises(KfopsError, match="no numeric metrics"):
        plain.write_text('{"a": "b"}')
        releases.read_metrics(plain)
    with pytest.raises(KfopsError, match="No such file"):
        releases.read_metrics(tmp_path / "missing.json")


def test_the_ml_metadata_gateway_checks_the_wire_and_errors_come_back(
    kfp_api: KfpTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kfops.kubeflow import metadata
    from tests import mlmd_api

    _, service = mlmd_api.protos()
    headers = {
        "Authorization": f"Bearer {kfp_api.token}",
        "Content-Type": "application/grpc-web+proto",
    }
    good = service.GetArtifactsByIDRequest(artifact_ids=[7]).SerializeToString()
    status, _, body = mlmd_api.answer(
        mlmd_api.PREFIX + "GetArtifactsByID",
        headers,
        mlmd_api.frame(good),
        {7: ("s3://a", "system.Model", {})},
        kfp_api.token,
    )
    assert status == 200 and b"s3://a" in body and b"grpc-status:0" in body
    unknown = good + b"\x48\x01"  # field 9, a varint: not in GetArtifactsByIDRequest
    _, _, body = mlmd_api.answer(
        mlmd_api.PREFIX + "GetArtifactsByID", headers, mlmd_api.frame(unknown), {}, kfp_api.token
    )
    assert b"grpc-status:3" in body
    # what kfops encodes is what ML Metadata's own classes read
    request_class, _ = metadata._messages()
    mine = request_class(artifact_ids=[7, 8]).SerializeToString()
    assert list(service.GetArtifactsByIDRequest.FromString(mine).artifact_ids) == [7, 8]
    # a gRPC error in the trailers comes back as a message
    monkeypatch.setattr(metadata, "METHOD", "GetArtifacts")
    with pytest.raises(KfopsError) as caught:
        metadata.artifacts(f"{kfp_api.url}/ml_metadata", [1], kfp_api.token)
    assert caught.value.message == (
        f"ML Metadata at {kfp_api.url}/ml_metadata answered gRPC status 12 to GetArtifacts:"
        " GetArtifacts is not served here"
    )
    with pytest.raises(KfopsError) as caught:
        metadata.artifacts(f"{kfp_api.url}/ml_metadata", [1], "wrong-token")
    assert "refused the token (HTTP 401)" in caught.value.message
    assert "wrong-token" not in caught.value.message
