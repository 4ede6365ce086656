"""The monitor on a KFP recurring run (monitoring.schedule.runner: kfp): the monitor
pipeline kfops compiles, delivered beside the project's and kept as one recurring run,
against the KFP API test server (tests/kfp_api.py) through the real client; and the
pod's command run here, as the container would run it, against the committed reference."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from kfops.cli import cli
from kfops.errors import KfopsError
from tests.conftest import ROOT, git
from tests.kfp_api import KfpTestServer

pytestmark = pytest.mark.slow

IMAGE = "registry.example/kfops:1.0"
HOURLY = f'{{cron: "0 * * * *", runner: kfp, environment: staging, image: "{IMAGE}"}}'
ARTIFACT = "{{$.outputs.artifacts['report'].path}}"


def _rows(n: int, shift: float, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {"petal": rng.gauss(shift, 1.0), "colour": rng.choice(["red", "green", "blue"])}
        for _ in range(n)
    ]


def _reference(path: Path) -> None:
    from kfops.monitor import profile
    from kfops.monitor.samples import from_rows

    rows = list(enumerate(_rows(1000, 0.0, 1), start=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(profile.build(from_rows("r", rows), data_sha256="0" * 64).dumps())


LOGGER = 'source: logger, logs: "s3://models/iris-logs"'


def _monitoring(project: Path, schedule: str | None, extra: str = "", source: str = LOGGER) -> None:
    """Rewrite mlops.yaml's tail: the environment, `monitoring:` with this schedule and
    drift source, and ``extra`` (e.g. `schedules:`)."""
    mlops = project / "mlops.yaml"
    head = mlops.read_text().split("\nenvironments:", 1)[0].rstrip() + "\n"
    url = (project.parent / "kfp-url").read_text()
    text = head + f"environments:\n  staging:\n    kfp: {{host: '{url}', token_env: KFP_TOKEN}}\n"
    text += (
        f"monitoring:\n  drift: {{{source}, reference: monitor/reference.json, min_samples: 50}}\n"
    )
    if schedule is not None:
        text += f"  schedule: {schedule}\n"
    mlops.write_text(text + extra)


@pytest.fixture
def project(tmp_path: Path, kfp_api: KfpTestServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "iris"
    shutil.copytree(ROOT / "pipelines" / "iris", root, ignore=shutil.ignore_patterns(".kfops"))
    (tmp_path / "kfp-url").write_text(kfp_api.url)
    _reference(root / "monitor" / "reference.json")
    _monitoring(root, HOURLY)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "iris")
    monkeypatch.setenv("KFP_TOKEN", kfp_api.token)
    monkeypatch.setenv("KFOPS_RETRY_SECONDS", "0")
    for name in ("GITHUB_SHA", "GITHUB_REF", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    return root


def _kfops(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def _by_name(kfp_api: KfpTestServer) -> dict[str, dict[str, Any]]:
    return {r["display_name"]: r for r in kfp_api.recurring_runs.values()}


def _versions(kfp_api: KfpTestServer, pipeline: str) -> list[dict[str, Any]]:
    [found] = [p for p in kfp_api.pipelines.values() if p["name"] == pipeline]
    return [v for v in kfp_api.versions.values() if v["pipeline_id"] == found["pipeline_id"]]


# ------------------------------------------------------------------ delivery


def test_apply_delivers_the_monitor_and_keeps_its_recurring_run(
    project: Path, kfp_api: KfpTestServer
) -> None:
    commit = git(project, "rev-parse", "HEAD")
    code, out, err = _kfops("plan", str(project), "--env", "staging")
    assert code == 0, err
    assert (
        f"  + create schedule kfops monitor (cron 0 * * * *; iris-monitor version {commit[:12]}-"
        in out
    )
    assert kfp_api.mutating_requests() == []  # plan only reads

    code, out, err = _kfops("apply", str(project), "--env", "staging")
    assert code == 0, err
    assert "create: schedule kfops monitor (cron 0 * * * *; iris-monitor version" in out
    pipelines = {p["name"]: p for p in kfp_api.pipelines.values()}
    assert set(pipelines) == {"iris", "iris-monitor"}
    monitor = pipelines["iris-monitor"]
    assert monitor["description"].startswith("kfops monitor of project iris; kfops project iris;")
    [version] = _versions(kfp_api, "iris-monitor")
    assert version["name"].startswith(f"{commit[:12]}-")
    assert f"commit {commit}" in version["description"]
    assert kfp_api.specs[version["pipeline_version_id"]]["pipelineInfo"]["name"] == "iris-monitor"

    run = _by_name(kfp_api)["kfops:iris:kfops monitor"]
    assert run["trigger"]["cron_schedule"]["cron"] == "0 0 * * * *"  # seconds first
    # Pinned to the version carrying this commit's mlops.yaml.
    assert run["pipeline_version_reference"] == {
        "pipeline_id": monitor["pipeline_id"],
        "pipeline_version_id": version["pipeline_version_id"],
    }
    assert "kfops project iris" in run["description"]
    assert f"commit {commit}" in run["description"]
    assert run["status"] == "ENABLED" and run["no_catchup"] is True
    assert run["max_concurrency"] == "1"
    [experiment] = kfp_api.experiments.values()
    assert run["experiment_id"] == experiment["experiment_id"]
    assert experiment["display_name"] == "iris"

    # Nothing changed: reads only.
    before = len(kfp_api.mutating_requests())
    code, out, _ = _kfops("apply", str(project), "--env", "staging")
    assert code == 0
    assert out.endswith("is there already: nothing to do\n")
    assert len(kfp_api.mutating_requests()) == before


def test_a_new_cron_or_commit_replaces_the_monitors_run_and_nothing_else(
    project: Path, kfp_api: KfpTestServer
) -> None:
    nightly = '  - {name: nightly, cron: "0 3 * * *", environment: staging}\n'
    _monitoring(project, HOURLY, "schedules:\n" + nightly)
    git(project, "commit", "-q", "-am", "nightly")
    assert _kfops("apply", str(project), "--env", "staging")[0] == 0
    runs = _by_name(kfp_api)
    assert set(runs) == {"kfops:iris:kfops monitor", "kfops:iris:nightly"}
    first, kept = runs["kfops:iris:kfops monitor"], runs["kfops:iris:nightly"]

    # The cron changed (and with it the mlops.yaml the monitor carries): a new version,
    # then the new run first and the old one deleted with ORPHAN, so its runs finish.
    _monitoring(project, HOURLY.replace("0 * * * *", "*/15 * * * *"), "schedules:\n" + nightly)
    code, out, err = _kfops("plan", str(project), "--env", "staging")
    assert code == 0, err
    assert "  + replace schedule kfops monitor (cron */15 * * * *; iris-monitor version" in out
    marker = len(kfp_api.mutating_requests())
    code, out, err = _kfops("apply", str(project), "--env", "staging")
    assert code == 0, err
    calls = [(m, p) for m, p, _ in kfp_api.mutating_requests()[marker:]]
    assert calls == [
        ("POST", "/apis/v2beta1/pipelines/upload_version"),  # the monitor's, not iris's
        ("POST", "/apis/v2beta1/recurringruns"),
        ("DELETE", f"/apis/v2beta1/recurringruns/{first['recurring_run_id']}"),
    ]
    assert kfp_api.deleted_recurring_runs == [("kfops:iris:kfops monitor", "ORPHAN")]
    second = _by_name(kfp_api)["kfops:iris:kfops monitor"]
    assert second["trigger"]["cron_schedule"]["cron"] == "0 */15 * * * *"
    newest = max(_versions(kfp_api, "iris-monitor"), key=lambda v: v["pipeline_version_id"])
    assert (
        second["pipeline_version_reference"]["pipeline_version_id"]
        == (newest["pipeline_version_id"])
    )

    # A new commit: a new monitor version the run is pinned to; `nightly` runs the
    # latest version of iris and stays as it is.
    git(project, "commit", "-q", "-am", "every 15 minutes")
    commit = git(project, "rev-parse", "HEAD")
    assert _kfops("apply", str(project), "--env", "staging")[0] == 0
    third = _by_name(kfp_api)["kfops:iris:kfops monitor"]
    [pinned] = [
        v
        for v in kfp_api.versions.values()
        if v["pipeline_version_id"] == third["pipeline_version_reference"]["pipeline_version_id"]
    ]
    assert pinned["name"].startswith(commit[:12]) and f"commit {commit}" in third["description"]
    assert _by_name(kfp_api)["kfops:iris:nightly"]["recurring_run_id"] == kept["recurring_run_id"]
    assert [name for name, _ in kfp_api.deleted_recurring_runs] == ["kfops:iris:kfops monitor"] * 2


def test_removing_the_schedule_deletes_the_monitors_run_only(
    project: Path, kfp_api: KfpTestServer
) -> None:
    # A user schedule called `monitor`, and recurring runs kfops did not make (one of
    # them on the monitor's pipeline, once it exists): none of them is touched.
    user = '  - {name: monitor, cron: "0 6 * * *", environment: staging}\n'
    _monitoring(project, HOURLY, "schedules:\n" + user)
    assert _kfops("apply", str(project), "--env", "staging")[0] == 0
    [monitor_pipeline] = [p for p in kfp_api.pipelines.values() if p["name"] == "iris-monitor"]
    for key, name in (("hand", "kfops monitor"), ("hand-2", "iris-monitor hourly")):
        kfp_api.recurring_runs[key] = {
            "recurring_run_id": key,
            "display_name": name,
            "status": "ENABLED",
            "namespace": "",
            "pipeline_version_reference": {"pipeline_id": monitor_pipeline["pipeline_id"]},
        }

    # runner: github (GitHub's workflow runs it): the recurring run goes.
    _monitoring(project, '{cron: "0 * * * *", runner: github}', "schedules:\n" + user)
    code, out, err = _kfops("plan", str(project), "--env", "staging")
    assert code == 0, err
    assert [line for line in out.splitlines() if line.startswith("  + ")] == [
        "  + delete schedule kfops monitor (monitoring.schedule no longer runs it here)"
    ]
    code, out, err = _kfops("apply", str(project), "--env", "staging")
    assert code == 0, err
    assert "delete: schedule kfops monitor (monitoring.schedule no longer runs it here)" in out
    assert kfp_api.deleted_recurring_runs == [("kfops:iris:kfops monitor", "ORPHAN")]
    assert set(_by_name(kfp_api)) == {"kfops:iris:monitor", "kfops monitor", "iris-monitor hourly"}
    assert len(_versions(kfp_api, "iris-monitor")) == 1  # versions are history: kept

    # No schedule at all: nothing left to do.
    _monitoring(project, None, "schedules:\n" + user)
    code, out, _ = _kfops("apply", str(project), "--env", "staging")
    assert code == 0 and out.endswith("nothing to do\n")


def test_a_pipeline_of_that_name_kfops_did_not_make_is_left_alone(
    project: Path, kfp_api: KfpTestServer
) -> None:
    from kfops.kubeflow.client import connect
    from kfops.project import config

    kfp = connect(config.load(project).environment("staging"))
    kfp.create_pipeline("iris-monitor", "the team's own monitoring")
    before = len(kfp_api.mutating_requests())
    for command in ("plan", "apply"):
        code, _, err = _kfops(command, str(project), "--env", "staging")
        assert code == 1
        assert (
            "error: environment `staging` has a pipeline `iris-monitor` that kfops did not make"
            " for project iris's monitor (its description does not start with"
            ' "kfops monitor of project iris;"); kfops leaves it alone' in err
        )
        assert "hint: rename or delete that pipeline, or run the monitor from GitHub" in err
    assert len(kfp_api.mutating_requests()) == before
    assert len(kfp_api.versions) == 0


def test_too_many_bytes_to_carry_is_refused(project: Path, kfp_api: KfpTestServer) -> None:
    reference = project / "monitor" / "reference.json"
    document = json.loads(reference.read_text())
    document["padding"] = "x" * (600 * 1024)
    reference.write_text(json.dumps(document))
    carried = ("mlops.yaml", "pipeline.py", "smoke.json", "monitor/reference.json")
    size = sum((project / name).stat().st_size for name in carried) // 1024
    assert size > 600
    code, _, err = _kfops("plan", str(project), "--env", "staging")
    assert code == 1
    assert f"error: the monitor pipeline would carry {size} KiB of files (mlops.yaml and the" in err
    assert f"more than 512 KiB; the largest is {reference}" in err
    assert "runner: github" in err
    assert kfp_api.mutating_requests() == []


def test_ci_on_a_main_push_keeps_the_monitor_too(project: Path, kfp_api: KfpTestServer) -> None:
    from kfops.ci import report
    from tests.test_delivery import _ci

    with (project / "mlops.yaml").open("a") as f:
        f.write("on:\n  push: {branches: [main], environment: staging, apply: true}\n")
    result = _ci(project, "push", "refs/heads/main")
    assert not result.failed, result.delivery_error  # type: ignore[attr-defined]
    run = _by_name(kfp_api)["kfops:iris:kfops monitor"]
    assert "commit 0123456789abcdef" in run["description"]
    assert "repository acme/ml" in run["description"]
    body = report.markdown(result, "<!-- kfops -->")  # type: ignore[arg-type]
    assert (
        "- schedule `kfops monitor`: created (`cron 0 * * * *; iris-monitor version 0123456789ab-"
        in body
    )
    assert result.delivery["monitor"]["pipeline"] == "iris-monitor"  # type: ignore[attr-defined]


# ------------------------------------------------------------------ the pipeline


def _compiled(project: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from kfops.monitor import schedule
    from kfops.project import config

    spec, platform = yaml.safe_load_all(schedule.compile_ir(config.load(project)))
    return spec, platform


def test_the_monitor_pipeline_is_one_uncached_task_the_kfp_compiler_reads_back(
    project: Path, tmp_path: Path
) -> None:
    from google.protobuf import json_format
    from kfp import compiler, components
    from kfp.pipeline_spec import pipeline_spec_pb2

    from kfops.monitor import schedule
    from kfops.project import config

    loaded = config.load(project)
    text = schedule.compile_ir(loaded)
    assert schedule.compile_ir(loaded) == text  # the same files, the same spec
    spec, platform = yaml.safe_load_all(text)
    # KFP's own types accept it, and its compiler compiles it again.
    json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
    json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec())
    again = tmp_path / "again.yaml"
    compiler.Compiler().compile(components.load_component_from_text(text), str(again))
    assert list(yaml.safe_load_all(again.read_text())) == [spec, platform]

    assert spec["pipelineInfo"] == {
        "name": "iris-monitor",
        "description": "kfops monitor of project iris: kfops monitor --once --env staging",
    }
    [(name, task)] = spec["root"]["dag"]["tasks"].items()
    assert name == "kfops-monitor"
    assert task["cachingOptions"] == {}  # no enableCache: every trigger looks again
    container = spec["deploymentSpec"]["executors"]["exec-kfops-monitor"]["container"]
    assert container["image"] == IMAGE
    # a pod keeps nothing between runs: the monitor's state sits beside the payload logs
    state = "s3://models/iris-logs/.kfops-monitor/staging.json"
    assert container["args"] == [ARTIFACT, "--once", "--env", "staging", "--state", state]
    assert container["command"][:2] == ["python3", "-c"]
    files = json.loads(container["command"][3])
    assert sorted(files) == ["mlops.yaml", "monitor/reference.json", "pipeline.py", "smoke.json"]
    assert files["mlops.yaml"] == ["text", (project / "mlops.yaml").read_text()]
    assert container["command"][4] == "."  # the project's folder among the files
    outputs = spec["components"]["comp-kfops-monitor"]["outputDefinitions"]["artifacts"]
    assert list(outputs) == ["report"]
    kubernetes = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    [secret] = kubernetes["exec-kfops-monitor"]["secretAsEnv"]
    assert secret["secretName"] == "iris-monitor" and secret["optional"] is True
    keys = ["GITHUB_TOKEN", "GITHUB_REPOSITORY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
    keys += ["AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"]
    assert [(k["envVar"], k["secretKey"]) for k in secret["keyToEnv"]] == [(k, k) for k in keys]

    assert schedule.wanted_in(loaded, "staging")
    assert not schedule.wanted_in(loaded, "production")


def test_files_named_outside_the_project_and_a_notebook_without_outputs(tmp_path: Path) -> None:
    from kfops.ci import monitor as github_side
    from kfops.monitor import schedule
    from kfops.project import config

    root = tmp_path / "repo" / "wine"
    shutil.copytree(ROOT / "pipelines" / "wine-notebook", root)
    git(tmp_path / "repo", "init", "-q")
    _reference(tmp_path / "repo" / "shared" / "reference.json")
    notebook = json.loads((root / "train.ipynb").read_text())
    code = next(c for c in notebook["cells"] if c["cell_type"] == "code")
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["x" * 10_000]}]
    code["execution_count"] = 7
    (root / "train.ipynb").write_text(json.dumps(notebook))
    with (root / "mlops.yaml").open("a") as f:
        f.write(
            "environments:\n  prod: {kfp: {host: 'http://127.0.0.1:9'}}\n"
            "monitoring:\n  drift: {reference: ../shared/reference.json}\n"
            "  probes: {sets: [{name: holdout, file: ../../holdout.jsonl,"
            " metrics: {accuracy: {min: 0.5}}}]}\n"
            f'  schedule: {{cron: "0 * * * *", runner: kfp, environment: prod, image: "{IMAGE}"}}\n'
        )
    (tmp_path / "holdout.jsonl").write_text('{"inputs": [1, 2], "label": 0}\n')
    files, folder = schedule.files(config.load(root))
    # Laid out from the repository's top (the project is where it is there: its issue's
    # marker comes from that path), and a file beyond the repository beside it.
    assert folder == "repo/wine"
    assert github_side.project_key(root) == "wine"
    assert sorted(files) == [
        "holdout.jsonl",
        "repo/shared/reference.json",
        "repo/wine/mlops.yaml",
        "repo/wine/requirements.txt",  # validation checks that an image's requirements exist
        "repo/wine/train.ipynb",
    ]
    kind, text = files["repo/wine/train.ipynb"]  # type: ignore[misc]
    carried = json.loads(text)
    cells = [c for c in carried["cells"] if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in cells)
    assert [c["source"] for c in carried["cells"]] == [c["source"] for c in notebook["cells"]]
    assert kind == "text" and len(text) < 10_000

    loaded = config.load(root)
    (tmp_path / "repo" / "shared" / "reference.json").unlink()  # gone after validation
    with pytest.raises(KfopsError) as raised:
        schedule.files(loaded)
    assert raised.value.message.startswith(
        f"the monitor pipeline embeds {tmp_path}/repo/shared/reference.json, which cannot be"
        " read: [Errno 2] No such file or directory"
    )


# ------------------------------------------------------------------ the pod's command


def _pod_command(project: Path, report: Path, served: Path) -> list[str]:
    """The container's command and arguments as the KFP launcher would run them: the
    report artifact's placeholder resolved, and `python3` this interpreter.

    One change: in the cluster, `--env staging` finds the model and its payload logs in a
    bucket; here drift.source is probes and `--env staging` becomes `--inputs FILE`.
    Everything else runs exactly as compiled."""
    _monitoring(project, HOURLY, source="source: probes")
    spec, _ = _compiled(project)
    container = spec["deploymentSpec"]["executors"]["exec-kfops-monitor"]["container"]
    args = [str(report) if a == ARTIFACT else a for a in container["args"]]
    assert args[1:] == ["--once", "--env", "staging"]
    args = [*args[:2], "--inputs", str(served)]
    return [sys.executable, *container["command"][1:], *args]


@pytest.mark.parametrize(
    ("rows", "verdict"),
    [
        (_rows(300, 2.0, 2), "breach"),
        (_rows(300, 0.0, 3), "ok"),
        (_rows(20, 0.0, 4), "insufficient_data"),
    ],
)
def test_the_pods_command_runs_kfops_monitor_once_against_the_committed_reference(
    project: Path, tmp_path: Path, rows: list[dict[str, Any]], verdict: str
) -> None:
    served = tmp_path / "served.jsonl"
    served.write_text("".join(json.dumps({"inputs": row}) + "\n" for row in rows))
    report = tmp_path / "outputs" / "report"  # the launcher's path, its folder not made yet
    pod = tmp_path / "pod"  # no checkout: an empty working directory
    pod.mkdir()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TMPDIR": str(scratch)}
    done = subprocess.run(
        _pod_command(project, report, served),
        cwd=pod,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # A breach and too little data are answers, not failed runs: report.json says which.
    assert done.returncode == 0, done.stdout + done.stderr
    written = json.loads(report.read_text())
    assert written["schema"] == "kfops.monitor/v1" and written["verdict"] == verdict
    assert written["reference"]["rows"] == 1000  # the committed reference, carried
    assert f"kfops monitor: {verdict.replace('_', ' ')}; report.json is the task's output" in (
        done.stdout
    )
    assert list(pod.iterdir()) == []
    assert list(scratch.iterdir()) == []  # the files it wrote are gone


def test_runs_in_the_pod_share_one_issue_found_by_the_checkouts_marker(
    project: Path, tmp_path: Path, github_api: Any
) -> None:
    """Two breaching runs in pods (GitHub's token and repository from the Secret, as
    environment variables): one issue, opened then updated, under the marker a checkout
    of the repository computes, so `kfops status` there finds it too."""
    from kfops.ci import monitor as github_side

    github_api.add_repo("acme", "ml")
    served = tmp_path / "served.jsonl"
    served.write_text("".join(json.dumps({"inputs": r}) + "\n" for r in _rows(300, 2.0, 2)))
    secret = {
        "GITHUB_REPOSITORY": "acme/ml",
        "GITHUB_TOKEN": github_api.token,
        "GITHUB_API_URL": github_api.url,
    }
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **secret}
    for name in ("KFOPS_MONITOR_STATE", "KFOPS_GITHUB_TOKEN", "GITHUB_STEP_SUMMARY"):
        environment.pop(name, None)
    outputs = []
    for attempt in range(2):
        pod = tmp_path / f"pod-{attempt}"
        pod.mkdir()
        done = subprocess.run(
            _pod_command(project, pod / "report", served),
            cwd=pod,
            env={**environment, "TMPDIR": str(pod)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        outputs.append(done.stdout)
    assert "opened issue #" in outputs[0] and "updated issue #" in outputs[1]
    [issue] = [i for i in github_api.issues("acme", "ml") if "kfops-monitor" in str(i["labels"])]
    mark = github_side.marker(github_side.project_key(project), "local")
    assert issue["body"].startswith(mark)
    assert github_api.token not in "".join(outputs)


def test_a_pod_needs_the_payload_logs_in_a_bucket(project: Path, kfp_api: KfpTestServer) -> None:
    _monitoring(project, HOURLY, source="source: probes")
    code, _, err = _kfops("plan", str(project), "--env", "staging")
    assert code == 1
    assert (
        "error: monitoring.schedule.runner kfp runs `kfops monitor --once --env staging` in a"
        " pod, but drift.source `probes` reads the served inputs from --inputs FILE, which a"
        " pod has not" in err
    )
    assert "hint: keep KServe's payload logs in a bucket: `source: logger` and" in err
    _monitoring(project, HOURLY, source="source: logger, logs: monitor/logs")
    code, _, err = _kfops("plan", str(project), "--env", "staging")
    assert code == 1
    logs = project / "monitor" / "logs"
    assert (
        "error: monitoring.schedule.runner kfp runs the monitor in a pod, which cannot read"
        f" drift.logs `{logs}` (a folder of this machine)" in err
    )
    assert kfp_api.mutating_requests() == []


def test_an_error_in_the_pod_fails_the_task(project: Path, tmp_path: Path) -> None:
    report = tmp_path / "outputs" / "report"
    done = subprocess.run(
        _pod_command(project, report, tmp_path / "missing.jsonl"),
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2  # kfops monitor's usage error, passed on
    assert "missing.jsonl: no such file" in done.stderr
    assert not report.exists()
