"""``kfops retrain``: the deployed commit (a local run's record, a live InferenceService,
or --commit), the pipeline run again at that commit in a temporary worktree (not at HEAD),
the candidate served by the real KServe model server and gated against a real serving
model on labelled probe sets, the pointer edit of mlops.yaml, and the pull request or the
issue comment."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kfops.errors import KfopsError
from kfops.monitor import retrain
from kfops.project import config, document
from tests.conftest import DATA, ROOT, git
from tests.github_api import BOT_LOGIN, GitHubTestServer
from tests.kfp_api import KfpTestServer
from tests.kube_env import KubeEnv
from tests.model_servers import servers
from tests.test_serve import start_serve

__all__ = ["servers"]  # the fixture

# ------------------------------------------------------------------ the pointer edit


def _data(text: str) -> Any:
    return document.parse(text, "mlops.yaml").data


def _with_run(data: Any, run_id: str) -> Any:
    data["serving"]["model"]["run"] = run_id
    return data


IRIS = (ROOT / "pipelines" / "iris" / "mlops.yaml").read_text()


def test_the_iris_pointer_is_added_to_the_flow_mapping() -> None:
    edited = retrain.pointer_edit(IRIS, "20261202-014002-2440")
    assert edited == IRIS.replace(
        "model: {from_step: train-model, artifact: model}",
        "model: {from_step: train-model, artifact: model, run: 20261202-014002-2440}",
    )
    # and moved again in place
    again = retrain.pointer_edit(edited, "20261203-000000-abcd")
    assert again == edited.replace("20261202-014002-2440", "20261203-000000-abcd")


def test_a_block_mapping_gets_a_line_at_its_indentation_with_comments_kept() -> None:
    text = (
        "name: iris  # the project\n"
        "serving:\n"
        "    model:\n"
        "        from_step: train-model   # the step\n"
        "        artifact: 'model'\n"
        "    # the format\n"
        "    format: sklearn\n"
    )
    edited = retrain.pointer_edit(text, "run-1")
    assert edited == text.replace(
        "        artifact: 'model'\n", "        artifact: 'model'\n        run: run-1\n"
    )


def test_a_quoted_run_keeps_its_quotes_and_an_id_yaml_would_misread_is_quoted() -> None:
    text = "serving:\n  model:\n    run: 'old'\n    from_step: train\n  format: sklearn\n"
    assert retrain.pointer_edit(text, "new-1") == text.replace("'old'", "'new-1'")
    # a number, a boolean, null: written quoted so that they stay strings
    for tricky in ("12345", "1e5", "true", "null", "0x1f", "a: b", "#x"):
        edited = retrain.pointer_edit("serving:\n  model: {from_step: t}\n", tricky)
        assert _data(edited)["serving"]["model"]["run"] == tricky, edited


def test_a_file_without_serving_model_is_an_error() -> None:
    with pytest.raises(KfopsError) as caught:
        retrain.pointer_edit("name: iris\n", "run-1")
    assert caught.value.message == "mlops.yaml has no `serving.model` mapping to point at a run"


_KEY = st.sampled_from(["from_step", "artifact", "uri_note", "extra"])
_VALUE = st.one_of(
    st.sampled_from(["train-model", "model", "'quoted'", '"double"', "1", "x.y"]),
)
_RUN = st.one_of(
    st.from_regex(r"\A[0-9]{8}-[0-9]{6}-[0-9a-f]{4}\Z"),
    st.uuids().map(str),
    st.text(alphabet="abc019:-# '\"", min_size=1, max_size=12),
)


@st.composite
def _mlops(draw: Any) -> str:
    """An mlops.yaml-like text whose serving.model is block or flow style, with comments,
    other keys around it, maybe an existing run (plain or quoted), and any indentation."""
    indent = " " * draw(st.sampled_from([2, 4]))
    keys = draw(st.lists(_KEY, min_size=1, max_size=3, unique=True))
    entries = [(k, draw(_VALUE)) for k in keys]
    existing = draw(st.sampled_from([None, "plain-old", "'quoted-old'", '"dq-old"']))
    if existing is not None:
        entries.insert(draw(st.integers(0, len(entries))), ("run", existing))
    comment = draw(st.sampled_from(["", "  # a comment"]))
    head = "# top comment\nversion: 1\nname: iris\n" if draw(st.booleans()) else ""
    after = f"{indent}format: sklearn{comment}\n" if draw(st.booleans()) else ""
    tail = "monitoring:\n  schedule: '0 * * * *'\n" if draw(st.booleans()) else ""
    if draw(st.booleans()):
        inner = ", ".join(f"{k}: {v}" for k, v in entries)
        model = f"{indent}model: {{{inner}}}{comment}\n"
    else:
        lines = [f"{indent}{indent}{k}: {v}{comment}\n" for k, v in entries]
        model = f"{indent}model:{comment}\n" + "".join(lines)
    before = f"{indent}name: iris\n" if draw(st.booleans()) else ""
    end = "" if draw(st.booleans()) else "\n# trailing comment\n"
    return head + "serving:\n" + before + model + after + tail + end


@settings(max_examples=300, deadline=None)
@given(text=_mlops(), run_id=_RUN)
def test_the_edit_changes_only_the_run_key(text: str, run_id: str) -> None:
    edited = retrain.pointer_edit(text, run_id)
    assert _data(edited) == _with_run(_data(text), run_id)
    # one contiguous change, in the run entry alone: the rest (comments, order,
    # quoting) is the same text
    prefix = 0
    while prefix < min(len(text), len(edited)) and text[prefix] == edited[prefix]:
        prefix += 1
    suffix = 0
    while (
        suffix < min(len(text), len(edited)) - prefix
        and text[len(text) - 1 - suffix] == edited[len(edited) - 1 - suffix]
    ):
        suffix += 1
    removed = text[prefix : len(text) - suffix]
    inserted = edited[prefix : len(edited) - suffix]
    assert "#" not in removed and ":" not in removed and "\n" not in removed, removed
    assert inserted.count("\n") <= 1 and inserted.count("#") <= run_id.count("#"), inserted
    assert edited.count("\n") - text.count("\n") in (0, 1)
    # a second edit with the same id changes nothing
    assert retrain.pointer_edit(edited, run_id) == edited


def test_a_run_key_with_no_value_and_an_empty_flow_mapping() -> None:
    assert (
        retrain.pointer_edit("serving:\n  model: {}\n", "r-1") == "serving:\n  model: {run: r-1}\n"
    )
    text = "serving:\n  model:\n    from_step: t\n    run:\n  format: sklearn\n"
    edited = retrain.pointer_edit(text, "r-1")
    assert edited == text.replace("    run:\n", "    run: r-1\n")


# ------------------------------------------------------------------ a project in git

KFOPS = [sys.executable, "-m", "kfops"]
SETS = (
    "monitoring:\n"
    "  probes:\n"
    "    sets:\n"
    "      - name: holdout\n"
    "        file: holdout.jsonl\n"
    "        metrics: {accuracy: {min: 0.9}, f1: {min: 0.5}}\n"
)
DUMMY = (  # a model that always answers the most frequent class
    "    classifier = RandomForestClassifier(n_estimators=n_estimators, random_state=seed)\n",
    "    from sklearn.dummy import DummyClassifier\n\n    classifier = DummyClassifier()\n",
)


@dataclass
class Repo:
    """A git repository holding the iris project at ``repo/iris``: commit ``deployed`` (with
    a local run made there), HEAD one commit later with other parameters, and commits off
    main whose pipeline is worse (``worse``) or broken (``broken``)."""

    root: Path
    deployed: str
    head: str
    worse: str
    broken: str
    deployed_run: str

    @property
    def project(self) -> Path:
        return self.root / "iris"

    @property
    def runs(self) -> Path:
        return self.project / ".kfops" / "runs"


def _commit(root: Path, message: str) -> str:
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
    return git(root, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    root = tmp_path_factory.mktemp("retrain") / "repo"
    project = root / "iris"
    shutil.copytree(ROOT / "pipelines" / "iris", project, ignore=shutil.ignore_patterns(".kfops"))
    shutil.copy(DATA / "monitor" / "holdout.jsonl", project / "holdout.jsonl")
    with (project / "mlops.yaml").open("a") as f:
        f.write(SETS)
    git(root, "init", "-q", "-b", "main")
    deployed = _commit(root, "iris")
    done = subprocess.run(
        [*KFOPS, "run", str(project)], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [deployed_run] = [p.name for p in (project / ".kfops" / "runs").iterdir() if p.name[0] != "."]
    pipeline = (project / "pipeline.py").read_text()
    (project / "pipeline.py").write_text(pipeline.replace(*DUMMY))
    worse = _commit(root, "a worse model")
    (project / "pipeline.py").write_text(
        pipeline.replace("    frame = pd.read_csv(train.path)\n", "    raise SystemExit(3)\n")
    )
    broken = _commit(root, "a broken pipeline")
    git(root, "reset", "-q", "--hard", deployed)
    mlops = (project / "mlops.yaml").read_text()
    (project / "mlops.yaml").write_text(mlops.replace("n_estimators: 50", "n_estimators: 7"))
    head = _commit(root, "fewer trees")
    return Repo(root, deployed, head, worse, broken, deployed_run)


@pytest.fixture
def repo(made: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Repo:
    """A fresh copy of the module's repository (runs and all), for one test."""
    copy = tmp_path / "repo"
    shutil.copytree(made.root, copy, symlinks=True)
    for name in ("GITHUB_TOKEN", "GITHUB_REPOSITORY", "KFOPS_GITHUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return dataclasses.replace(made, root=copy)


def _retrain(repo: Repo, *args: str, env: dict[str, str] | None = None) -> Any:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    return subprocess.run(
        [*KFOPS, "retrain", str(repo.project), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**clean, "COLUMNS": "200", **(env or {})},
    )


def _worktrees(repo: Repo) -> list[str]:
    listed = git(repo.root, "worktree", "list", "--porcelain")
    return [line for line in listed.splitlines() if line.startswith("worktree ")]


def _result_of(repo: Repo, run_id: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((repo.runs / run_id / "result.json").read_text())
    return found


# ------------------------------------------------------------------ the whole cycle


@pytest.mark.slow
def test_local_retrain_runs_at_the_deployed_commit_and_proposes_the_pointer(repo: Repo) -> None:
    """The model `kfops serve` serves came from commit `deployed`; HEAD is one commit on
    (7 trees instead of 50). The candidate is trained at `deployed`, not at HEAD."""
    served = start_serve(repo.project, repo.runs)
    try:
        served.wait_for(r"^ready; Ctrl-C stops$")
        started = time.monotonic()
        done = _retrain(repo, "--local", "--port", str(served.port), "--format", "json")
        seconds = time.monotonic() - started
    finally:
        served.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["passed"] is True, result
    assert result["deployed_commit"] == repo.deployed != repo.head
    assert result["deployed_from"] == f"local run {repo.deployed_run}"
    candidate = result["candidate_run"]
    assert candidate != repo.deployed_run
    record = _result_of(repo, candidate)
    # run at the deployed commit: its record says so, and it has that commit's parameters
    assert record["commit"] == repo.deployed
    assert record["parameters"]["n_estimators"] == 50  # HEAD has 7
    # the same code and seed: the same scores as the serving model
    assert result["metrics"]["holdout"] == {
        "accuracy": {"candidate": 1.0, "serving": 1.0},
        "f1": {"candidate": 1.0, "serving": 1.0},
    }
    assert result["metrics"]["serving.gate"]["accuracy"]["candidate"] == pytest.approx(0.8889)
    assert result["reasons"] == []
    # the pointer: HEAD's mlops.yaml with serving.model.run, as a diff and a file
    assert result["pointer"] == {"file": str(repo.project / "mlops.yaml"), "run": candidate}
    assert result["diff"].endswith(
        "-  model: {from_step: train-model, artifact: model}\n"
        f"+  model: {{from_step: train-model, artifact: model, run: {candidate}}}\n"
        + result["diff"].split(f"run: {candidate}}}\n", 1)[1]
    )
    saved = Path(result["diff_file"])
    assert saved.read_text() == result["diff"]
    assert f"git switch -c kfops/retrain/local-{candidate}" in done.stderr
    assert f"git apply {saved}" in done.stderr.replace(str(Path.cwd()) + "/", "")
    # progress on stderr; the worktree is gone; the checkout is untouched
    for line in (
        f"deployed commit {repo.deployed[:12]} (local run {repo.deployed_run})",
        f"checked out commit {repo.deployed[:12]} in a temporary worktree",
        f"candidate run {candidate}; scoring it on the probe sets",
    ):
        assert line in done.stderr
    assert _worktrees(repo) == [f"worktree {repo.root}"]
    assert git(repo.root, "status", "--porcelain") == ""
    assert git(repo.root, "rev-parse", "HEAD") == repo.head
    # applied, the pointer pins what `kfops serve` serves: the candidate, not the latest run
    git(repo.root, "apply", str(saved))
    print(f"retrain of the iris example, local: {seconds:.1f}s")


@pytest.mark.slow
def test_a_worse_candidate_fails_the_gate_and_the_monitor_issue_gets_a_comment(
    repo: Repo, servers: dict[str, str], github_api: GitHubTestServer
) -> None:
    from kfops.ci import monitor as github_side

    mark = github_side.marker(github_side.project_key(repo.project), "local")
    number = github_api.add_issue(
        "acme",
        "ml",
        title="iris: breach",
        body=f"{mark}\ndrift",
        author=BOT_LOGIN,
        author_type="Bot",
        labels=("kfops-monitor",),
    )
    done = _retrain(
        repo,
        "--url",
        servers["good"],
        "--commit",
        repo.worse[:10],
        "--key",
        "k1",
        "--format",
        "json",
        env=_github(github_api),
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout, done.stderr
    result = json.loads(done.stdout)
    assert result["passed"] is False and result["pointer"] is None
    assert result["deployed_commit"] == repo.worse
    assert result["deployed_from"] == "--commit"
    holdout = result["metrics"]["holdout"]
    assert holdout["accuracy"]["serving"] == 1.0
    assert holdout["accuracy"]["candidate"] < 0.5
    reasons = result["reasons"]
    assert reasons[0].startswith("probe set `holdout`: accuracy ")
    assert "is below its min 0.9" in reasons[0]
    assert (
        f"probe set `holdout`: accuracy {holdout['accuracy']['candidate']:.4f} is worse than"
        " the serving model's 1.0000"
    ) in reasons
    assert any(r.startswith("serving.gate: `accuracy` 0.3") for r in reasons), reasons
    assert "- note: serving.gate: `accuracy`: no value recorded for the serving model" in (
        _markdown(result)
    )
    assert "diff" not in result and not (repo.project / ".kfops" / "retrain").exists()
    assert result["comment"] == {"issue": number}
    [comment] = github_api.comments("acme", "ml", number)
    assert comment["body"].startswith("### kfops retrain: the candidate failed the gate\n")
    assert "| holdout | accuracy | 0.3333 | 1.0000 | worse |" in comment["body"]
    assert github_api.pulls("acme", "ml") == []
    assert github_api.token not in done.stdout + done.stderr + comment["body"]
    assert _worktrees(repo) == [f"worktree {repo.root}"]
    assert _result_of(repo, result["candidate_run"])["commit"] == repo.worse


def _markdown(result: dict[str, Any]) -> str:
    return retrain.RetrainResult(
        passed=result["passed"],
        deployed_commit=result["deployed_commit"],
        candidate_run=result["candidate_run"],
        metrics={},
        reasons=result["reasons"],
        pointer=None,
        notes=result["notes"],
    ).markdown()


@pytest.mark.slow
def test_a_failed_run_is_an_error_and_the_worktree_is_removed(
    repo: Repo, servers: dict[str, str]
) -> None:
    done = _retrain(repo, "--url", servers["good"], "--commit", repo.broken)
    assert done.returncode == 1, done.stdout + done.stderr
    [message] = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert re.fullmatch(
        rf"error: the retraining run \S+ at commit {repo.broken[:12]} failed \(at train-model\)",
        message,
    ), message
    assert "nothing was proposed" in done.stderr
    assert "Traceback" not in done.stderr
    assert _worktrees(repo) == [f"worktree {repo.root}"]
    assert not list(Path(tempfile.gettempdir()).glob("kfops-retrain-*/checkout"))


def _github(server: GitHubTestServer) -> dict[str, str]:
    server.add_repo("acme", "ml")
    return {
        "GITHUB_TOKEN": server.token,
        "GITHUB_REPOSITORY": "acme/ml",
        "GITHUB_API_URL": server.url,
        "KFOPS_RETRY_SECONDS": "0",
    }


@pytest.mark.slow
def test_a_pass_opens_the_pull_request_once_per_key(
    repo: Repo, servers: dict[str, str], github_api: GitHubTestServer
) -> None:
    env = _github(github_api)
    args = ("--url", servers["wrong"], "--commit", repo.deployed, "--key", "ab12")
    done = _retrain(repo, *args, "--format", "json", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["passed"] is True
    candidate = result["candidate_run"]
    [pull] = github_api.pulls("acme", "ml")
    assert result["pull"] == {
        "number": pull["number"],
        "url": pull["html_url"],
        "branch": "kfops/retrain/local-ab12",
    }
    assert pull["head"]["ref"] == "kfops/retrain/local-ab12" and pull["base"]["ref"] == "main"
    assert pull["title"] == f"kfops retrain: serve run {candidate} (local)"
    assert "| holdout | accuracy | 1.0000 | 0.3333 |  |" in pull["body"]
    edited = github_api.file_at("acme", "ml", "kfops/retrain/local-ab12", "iris/mlops.yaml")
    assert edited == retrain.pointer_edit((repo.project / "mlops.yaml").read_text(), candidate)
    assert f"opened pull request #{pull['number']}: {pull['html_url']}" in done.stderr
    # the same key again: nothing runs, nothing is opened
    runs = sorted(p.name for p in repo.runs.iterdir())
    again = _retrain(repo, *args, env=env)
    assert again.returncode == 0, again.stderr
    assert again.stderr.strip() == (
        f"a retrain pull request for key ab12 is already open: #{pull['number']}"
        f" {pull['html_url']} (branch kfops/retrain/local-ab12); nothing to do"
    )
    assert sorted(p.name for p in repo.runs.iterdir()) == runs
    assert len(github_api.pulls("acme", "ml")) == 1
    assert github_api.token not in done.stdout + done.stderr + pull["body"]


# ------------------------------------------------------------------ what cannot go on


def _error(done: Any) -> tuple[str, str]:
    lines = done.stderr.splitlines()
    message = next(line for line in lines if line.startswith("error: "))
    hint = next((line for line in lines if line.startswith("  hint: ")), "")
    return message.removeprefix("error: "), hint.removeprefix("  hint: ")


def _cli(*args: str) -> Any:
    from click.testing import CliRunner

    from kfops.cli import cli

    return CliRunner().invoke(cli, ["retrain", *args])


def test_dry_run_says_what_it_would_do_and_changes_nothing(repo: Repo) -> None:
    runs = sorted(p.name for p in repo.runs.iterdir())
    done = _cli(str(repo.project), "--local", "--dry-run")
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines() == [
        f"deployed commit {repo.deployed[:12]} (local run {repo.deployed_run})",
        f"would run iris at commit {repo.deployed[:12]} locally, in a temporary worktree",
        "would gate the candidate against http://127.0.0.1:8080 on probe sets holdout",
        f"on a pass, would set serving.model.run in {repo.project / 'mlops.yaml'} and print"
        " the diff (no GITHUB_TOKEN/GITHUB_REPOSITORY)",
        "dry run: nothing ran, nothing changed",
    ]
    assert sorted(p.name for p in repo.runs.iterdir()) == runs
    assert git(repo.root, "status", "--porcelain") == ""
    assert _worktrees(repo) == [f"worktree {repo.root}"]


def test_the_deployed_commit_of_a_local_run_and_the_pinned_run(repo: Repo) -> None:
    project = config.load(repo.project)
    found = retrain.deployed_local(project)
    assert (found.commit, found.source) == (repo.deployed, f"local run {repo.deployed_run}")
    assert found.metrics["accuracy"] == pytest.approx(0.8889)
    # serving.model.run pins what `kfops serve` serves (and so the deployed commit)
    from kfops.serving import server

    other = repo.runs / "20000101-000000-0000"
    shutil.copytree(repo.runs / repo.deployed_run, other)
    record = json.loads((other / "result.json").read_text())
    (other / "result.json").write_text(json.dumps({**record, "commit": repo.worse}))
    assert server.find_model(config.load(repo.project)).run_id == repo.deployed_run  # latest
    text = (repo.project / "mlops.yaml").read_text()
    (repo.project / "mlops.yaml").write_text(retrain.pointer_edit(text, other.name))
    pinned = config.load(repo.project)
    assert server.find_model(pinned).run_id == other.name
    assert retrain.deployed_local(pinned).commit == repo.worse
    # a pointer at a run this machine does not have (one on Kubeflow)
    (repo.project / "mlops.yaml").write_text(retrain.pointer_edit(text, "kfp-run-1"))
    with pytest.raises(KfopsError) as caught:
        server.find_model(config.load(repo.project))
    line = text.splitlines().index("  model: {from_step: train-model, artifact: model}") + 1
    assert caught.value.message == (
        f"serving.model.run is kfp-run-1 ({repo.project / 'mlops.yaml'}:{line}), but"
        f" {repo.runs} has no such local run (a run on Kubeflow, or one made on another"
        " machine?)"
    )
    assert caught.value.hint.startswith(
        "serve a local run with --run ID, or a model file with --model FILE; "
    )


def test_errors_before_anything_runs(repo: Repo, made: Repo, tmp_path: Path) -> None:
    project = str(repo.project)
    # --url gives no commit
    done = _cli(project, "--url", "http://127.0.0.1:9")
    assert done.exit_code == 2
    assert _error(done) == (
        "--url names a model server, not the commit its model came from",
        "pass --commit SHA (or use --env NAME or --local, where kfops reads it)",
    )
    # a commit that is not in the repository
    done = _cli(project, "--url", "http://127.0.0.1:9", "--commit", "0badc0de")
    assert done.exit_code == 1
    assert _error(done) == (
        f"commit 0badc0de is not in the repository at {repo.root}",
        "fetch it first (`git fetch origin`, or `actions/checkout` with `fetch-depth: 0`),"
        " or pass --commit with a commit of this repository",
    )
    # one of --local, --url, --env
    done = _cli(project)
    assert done.exit_code == 2 and "give one of --local, --url URL or --env NAME" in done.output
    # no local run: no deployed model
    shutil.rmtree(repo.runs)
    done = _cli(project, "--local")
    assert done.exit_code == 1
    message, hint = _error(done)
    assert hint == "run `kfops run " + project + "` first"
    assert message.startswith("no local run of iris in ")
    assert message.endswith(", so there is no model to serve")
    # a run made before runs recorded their commit
    run = repo.runs / "20000101-000000-0000"
    shutil.copytree(made.runs / repo.deployed_run, run)
    record = json.loads((run / "result.json").read_text())
    del record["commit"]
    (run / "result.json").write_text(json.dumps(record))
    done = _cli(project, "--local")
    assert done.exit_code == 1
    assert _error(done) == (
        "local run 20000101-000000-0000 records no commit (it was made outside git, or by"
        " kfops before 0.9), so kfops cannot tell which code made the served model",
        "pass --commit SHA, or run the pipeline again and serve that run",
    )
    # no probe sets: no gate
    mlops = repo.project / "mlops.yaml"
    mlops.write_text(mlops.read_text().split("monitoring:")[0])
    done = _cli(project, "--url", "http://127.0.0.1:9", "--commit", repo.deployed)
    assert done.exit_code == 2
    assert _error(done)[0] == (
        "mlops.yaml has no labelled probe sets (`monitoring.probes.sets`), so a candidate"
        " cannot be gated against the serving model"
    ).replace("mlops.yaml", str(mlops))
    # not a git repository
    outside = tmp_path / "outside"
    shutil.copytree(repo.project, outside, ignore=shutil.ignore_patterns(".kfops"))
    (outside / "mlops.yaml").write_text((outside / "mlops.yaml").read_text() + SETS)
    done = _cli(str(outside), "--url", "http://127.0.0.1:9", "--commit", "HEAD")
    assert done.exit_code == 2
    assert _error(done)[0] == (
        f"{outside / 'mlops.yaml'} is not in a git repository, so there is no commit to retrain at"
    )


# ------------------------------------------------------------------ a live InferenceService


@pytest.mark.kube
@pytest.mark.slow
def test_the_deployed_commit_comes_from_the_live_inference_service(
    repo: Repo, kube_env: KubeEnv, servers: dict[str, str]
) -> None:
    from kubernetes import client

    from kfops.serving import render
    from kfops.serving.render import Release

    namespace = kube_env.namespace("retrain")
    mlops = repo.project / "mlops.yaml"
    mlops.write_text(
        mlops.read_text()
        + "environments:\n  prod:\n"
        + f"    kubernetes: {{namespace: {namespace}, url: '{servers['wrong']}'}}\n"
    )
    head = _commit(repo.root, "the prod environment")
    env = {"KUBECONFIG": str(kube_env.kubeconfig)}
    where = f"namespace {namespace} of environment `prod`"
    done = _retrain(repo, "--env", "prod", env=env)
    assert done.returncode == 1, done.stderr
    assert _error(done) == (
        f"no InferenceService `iris` in {where}: no model is deployed there, so there is"
        " nothing to retrain",
        "deploy one first (`kfops deploy --env prod`), or pass --commit SHA",
    )
    # what `kfops deploy` applies, for the release of commit `deployed`
    project = config.load(repo.project)
    assert project.serving is not None
    release = Release(
        model_uri="s3://models/iris/v1", commit=repo.deployed, metrics={"accuracy": 0.85}
    )
    obj = render.render("iris", project.serving, namespace, release, mode=render.STANDARD)
    annotations = dict(obj["metadata"]["annotations"])
    del obj["metadata"]["annotations"][render.COMMIT]
    api = client.CustomObjectsApi(kube_env.api_client())
    api.create_namespaced_custom_object(
        "serving.kserve.io", "v1beta1", namespace, "inferenceservices", obj
    )
    done = _retrain(repo, "--env", "prod", env=env)
    assert done.returncode == 1, done.stderr
    assert _error(done) == (
        f"InferenceService `iris` in {where} has no `kfops.dev/commit` annotation (kfops did"
        " not deploy it), so its commit is not known",
        "pass --commit SHA",
    )
    api.patch_namespaced_custom_object(
        "serving.kserve.io",
        "v1beta1",
        namespace,
        "inferenceservices",
        "iris",
        {"metadata": {"annotations": annotations}},
    )
    done = _retrain(repo, "--env", "prod", "--key", "k9", "--format", "json", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["passed"] is True and result["environment"] == "prod"
    assert result["deployed_commit"] == repo.deployed != head
    assert result["deployed_from"] == f"InferenceService iris in {where}"
    record = _result_of(repo, result["candidate_run"])
    assert record["commit"] == repo.deployed and record["parameters"]["n_estimators"] == 50
    # the serving model (at environments.prod.kubernetes.url) answers wrongly
    assert result["metrics"]["holdout"]["accuracy"] == {"candidate": 1.0, "serving": 0.333333}
    # serving.gate against the metrics the release recorded
    assert result["metrics"]["serving.gate"]["accuracy"]["serving"] == 0.85
    assert "git switch -c kfops/retrain/prod-k9" in done.stderr


# ------------------------------------------------------------------ on Kubeflow Pipelines


@pytest.fixture
def on_kfp(repo: Repo, kfp_api: KfpTestServer, monkeypatch: pytest.MonkeyPatch) -> tuple[Repo, str]:
    """The repository with environment `staging` on the KFP API test server, applied at HEAD."""
    mlops = repo.project / "mlops.yaml"
    mlops.write_text(
        mlops.read_text()
        + f"environments:\n  staging:\n    kfp: {{host: '{kfp_api.url}', token_env: KFP_TOKEN}}\n"
    )
    head = _commit(repo.root, "the staging environment")
    monkeypatch.setenv("KFP_TOKEN", kfp_api.token)
    monkeypatch.setenv("KFOPS_POLL_SECONDS", "0")
    monkeypatch.setenv("KFOPS_RETRY_SECONDS", "0")
    for name in ("GITHUB_SHA", "GITHUB_REF"):
        monkeypatch.delenv(name, raising=False)
    applied = _cli_command("apply", str(repo.project), "--env", "staging")
    assert applied.exit_code == 0, applied.output
    return repo, head


def _cli_command(*args: str) -> Any:
    from click.testing import CliRunner

    from kfops.cli import cli

    return CliRunner().invoke(cli, list(args))


def test_on_kubeflow_the_candidate_is_a_run_of_that_commits_version_gated_on_its_metrics(
    on_kfp: tuple[Repo, str], kfp_api: KfpTestServer
) -> None:
    repo, head = on_kfp
    kfp_api.script_run(
        "RUNNING",
        "SUCCEEDED",
        outputs={"train-model": ["model"]},
        metrics={"evaluate": {"accuracy": 0.93, "f1_macro": 0.91}},
    )
    done = _cli(str(repo.project), "--env", "staging", "--commit", head, "--format", "json")
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    [run_id] = kfp_api.runs
    assert result["passed"] is True and result["candidate_run"] == run_id
    assert result["deployed_commit"] == head
    assert result["candidate_model"].startswith(f"s3://mlpipeline/v2/artifacts/iris/{run_id}/")
    assert result["metrics"] == {"serving.gate": {"accuracy": {"candidate": 0.93, "serving": None}}}
    assert result["notes"][0].endswith(
        "gated on its run's metrics (ML Metadata), the probe sets were not scored"
    )
    assert (
        f"+  model: {{from_step: train-model, artifact: model, run: {run_id}}}" in (result["diff"])
    )
    [version] = kfp_api.versions.values()
    assert version["name"].startswith(head[:12] + "-")
    assert (
        kfp_api.runs[run_id]["pipeline_version_reference"]["pipeline_version_id"]
        == (version["pipeline_version_id"])
    )
    # the pointer, merged: `kfops deploy` takes the model of that run, not this commit's
    from kfops.kubeflow.client import connect
    from kfops.serving import release as releases

    (repo.project / "mlops.yaml").write_text(
        retrain.pointer_edit((repo.project / "mlops.yaml").read_text(), run_id)
    )
    _commit(repo.root, "serve the retrained run")  # a commit with no version on KFP
    pinned = config.load(repo.project)
    environment = pinned.environment("staging")
    chosen = releases.resolve(pinned, environment, kfp=connect(environment))
    assert chosen.run_id == run_id
    assert chosen.model_uri == result["candidate_model"]
    assert chosen.source == f"run {run_id} on Kubeflow (serving.model.run)"
    assert chosen.pipeline_version == version["name"]
    assert chosen.metrics == {"accuracy": 0.93, "f1_macro": 0.91}
    # a pointer at a run the server does not know
    (repo.project / "mlops.yaml").write_text(
        retrain.pointer_edit((repo.project / "mlops.yaml").read_text(), "no-such-run")
    )
    unknown = config.load(repo.project)
    with pytest.raises(KfopsError) as caught:
        releases.resolve(unknown, unknown.environment("staging"), kfp=connect(environment))
    assert caught.value.message.startswith(
        f"serving.model.run is no-such-run, but {kfp_api.url} has no such run: "
    )


def test_on_kubeflow_a_commit_with_no_version_and_a_failed_run_are_errors(
    on_kfp: tuple[Repo, str], kfp_api: KfpTestServer
) -> None:
    repo, head = on_kfp
    done = _cli(str(repo.project), "--env", "staging", "--commit", repo.deployed)
    assert done.exit_code == 1
    assert _error(done) == (
        f"no pipeline version of the deployed commit {repo.deployed[:12]} on {kfp_api.url},"
        " so it cannot run there again",
        f"apply that commit first (`git checkout {repo.deployed[:12]} && kfops apply --env"
        " staging`), or retrain it locally with --local",
    )
    kfp_api.script_run("FAILED", failed_tasks={"train-model": "OOMKilled"})
    done = _cli(str(repo.project), "--env", "staging", "--commit", head)
    assert done.exit_code == 1
    [run_id] = kfp_api.runs
    message, hint = _error(done)
    assert message == (f"the retraining run {run_id} at commit {head[:12]} failed (at train-model)")
    assert hint.endswith("; nothing was proposed")
    assert kfp_api.token not in done.output


# ------------------------------------------------------------------ the worktree goes


def test_the_worktree_is_removed_when_the_block_is_interrupted(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "a.txt").write_text("one\n")
    first = _commit(root, "one")
    (root / "a.txt").write_text("two\n")
    _commit(root, "two")
    seen: list[str] = []
    with pytest.raises(KeyboardInterrupt), retrain.checkout(root, first, seen.append) as there:
        assert (there / "a.txt").read_text() == "one\n"  # the commit, not HEAD
        assert len(git(root, "worktree", "list").splitlines()) == 2
        raise KeyboardInterrupt
    assert not there.exists() and not there.parent.exists()
    assert git(root, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert seen == [f"checked out commit {first[:12]} in a temporary worktree"]


@pytest.mark.slow
def test_ctrl_c_during_the_run_removes_the_worktree(repo: Repo) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    command = [*KFOPS, "retrain", str(repo.project), "--url", "http://127.0.0.1:9"]
    process = subprocess.Popen(
        [*command, "--commit", repo.deployed],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=clean,
    )
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if line.startswith("checked out commit"):
            worktree = [w for w in _worktrees(repo) if w != f"worktree {repo.root}"]
            assert len(worktree) == 1
            process.send_signal(signal.SIGINT)
            break
    rest = process.stderr.read()
    process.stderr.close()
    assert process.wait(timeout=60) == 130, "".join(lines) + rest
    assert "interrupted" in rest
    assert _worktrees(repo) == [f"worktree {repo.root}"]
    assert not Path(worktree[0].removeprefix("worktree ")).exists()
