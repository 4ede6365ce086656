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
from kfops.project import document
from tests.conftest import DATA, ROOT, git
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
def test_a_worse_candidate_fails_the_gate_and_nothing_is_proposed(
    repo: Repo, servers: dict[str, str]
) -> None:
    done = _retrain(repo, "--url", servers["good"], "--commit", repo.worse[:10], "--format", "json")
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
