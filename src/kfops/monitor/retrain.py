"""``kfops retrain``: run the pipeline again at the commit of the deployed model, gate the
candidate against the serving model, and propose the change that moves the model pointer.

1. The deployed commit: from the live InferenceService's ``kfops.dev/commit`` annotation
   (``--env``), from the record of the local run ``kfops serve`` serves (``--local``), or
   given (``--commit``).
2. The run: a temporary ``git worktree add --detach`` of the repository at that commit
   (removed afterwards, on a failure and on Ctrl-C too), and the local run in it, kept in
   the project's own runs folder; with an environment that has ``kfp:``, a run of that
   commit's pipeline version on Kubeflow Pipelines instead, waited for.
3. The gate: a local candidate is served by the KServe model server (``kfops serve``) on a
   free loopback port and scored with the serving model on each labelled probe set of
   ``monitoring.probes.sets``: each set's thresholds must hold and, per metric, the
   candidate must not be worse than the serving model; then ``serving.gate`` on the
   candidate's run metrics, against the serving model's recorded ones. A Kubeflow
   candidate (its model on the cluster's object store) is gated on its run's metrics from
   ML Metadata only: the probe sets are not scored.
4. On a pass, the Git change: ``serving.model.run: RUN_ID`` in mlops.yaml, a minimal text
   edit (``pointer_edit``). Proposing it (a pull request, or a comment on the sticky issue
   when the candidate fails) is the caller's: this module knows nothing of GitHub.
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfops.errors import EXIT_USAGE, KfopsError, display_path
from kfops.project.model import Environment, Project, Serving

LOWER_IS_BETTER = frozenset({"mae", "rmse"})
RUN_GATE = "serving.gate"  # the metrics table's row group for the run's own metrics
SERVE_READY_SECONDS = 90.0

Log = Callable[[str], None]


# --------------------------------------------------------------------------- the result


@dataclass(frozen=True)
class RetrainResult:
    """What a retrain found: the verdict, the metrics on both sides, and the change."""

    passed: bool
    deployed_commit: str
    candidate_run: str
    # {probe set (or "serving.gate"): {metric: (candidate, serving)}}; None: not measured
    metrics: dict[str, dict[str, tuple[float | None, float | None]]]
    reasons: list[str]
    pointer: tuple[Path, str] | None  # (the config file, its edited text) on a pass
    project: str = ""
    environment: str = ""  # the environment's name, or "local" (--local, --url)
    deployed_from: str = ""  # how the deployed commit was found
    candidate_model: str = ""  # the candidate's model file or URI
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # what was not checked, and why

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "project": self.project,
            "environment": self.environment,
            "deployed_commit": self.deployed_commit,
            "deployed_from": self.deployed_from,
            "candidate_run": self.candidate_run,
            "candidate_model": self.candidate_model,
            "metrics": {
                group: {
                    name: {"candidate": _round(pair[0]), "serving": _round(pair[1])}
                    for name, pair in sorted(values.items())
                }
                for group, values in sorted(self.metrics.items())
            },
            "reasons": list(self.reasons),
            "notes": list(self.notes),
            "pointer": None
            if self.pointer is None
            else {"file": display_path(self.pointer[0]), "run": self.candidate_run},
            "seconds": round(self.seconds, 3),
        }

    def markdown(self) -> str:
        """The pull request's body (a pass) or the issue comment (a fail)."""
        verdict = "passed" if self.passed else "failed"
        lines = [
            f"### kfops retrain: the candidate {verdict} the gate",
            "",
            f"- project `{self.project}`, environment `{self.environment}`",
            f"- deployed commit `{self.deployed_commit[:12]}` ({self.deployed_from})",
            f"- candidate: run `{self.candidate_run}`"
            + (f", model `{self.candidate_model}`" if self.candidate_model else ""),
            "",
            "| set | metric | candidate | serving | |",
            "|---|---|---:|---:|---|",
        ]
        for group, values in sorted(self.metrics.items()):
            for name, (candidate, serving) in sorted(values.items()):
                mark = "" if self.passed or not _worse(name, candidate, serving) else "worse"
                lines.append(
                    f"| {group} | {name} | {_shown(candidate)} | {_shown(serving)} | {mark} |"
                )
        if self.reasons:
            lines += ["", "Why it failed:", ""] + [f"- {r}" for r in self.reasons]
        if self.notes:
            lines += [""] + [f"- note: {n}" for n in self.notes]
        if self.pointer is not None:
            lines += [
                "",
                f"Merging this sets `serving.model.run: {self.candidate_run}` in"
                f" `{display_path(self.pointer[0])}`: `kfops deploy` and `kfops serve` then"
                " serve this run's model.",
            ]
        return "\n".join(lines) + "\n"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _worse(metric: str, candidate: float | None, serving: float | None, margin: float = 0) -> bool:
    if candidate is None or serving is None:
        return False
    if metric in LOWER_IS_BETTER:
        return candidate > serving + margin
    return candidate < serving - margin


# --------------------------------------------------------------------------- the commit


@dataclass(frozen=True)
class Deployed:
    """The model serving now: the commit it came from, and what it recorded."""

    commit: str
    source: str  # how it was found, for messages
    metrics: dict[str, float] = field(default_factory=dict)


def repo_root(project: Project) -> Path:
    """The top of the git checkout holding the project.

    Raises:
        KfopsError: the project is not in a git repository.
    """
    done = _git(project.root, "rev-parse", "--show-toplevel")
    if done.returncode != 0:
        raise KfopsError(
            f"{project.shown} is not in a git repository, so there is no commit to retrain at",
            "retrain works on a git checkout of the project (`git clone ...`)",
            exit_code=EXIT_USAGE,
        )
    return Path(done.stdout.strip()).resolve()


def full_commit(root: Path, commit: str) -> str:
    """``commit`` as the full SHA of a commit in the repository at ``root``.

    Raises:
        KfopsError: no such commit there.
    """
    done = _git(root, "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")
    if done.returncode != 0 or not commit:
        raise KfopsError(
            f"commit {commit or '(none)'} is not in the repository at {display_path(root)}",
            "fetch it first (`git fetch origin`, or `actions/checkout` with `fetch-depth: 0`),"
            " or pass --commit with a commit of this repository",
        )
    return done.stdout.strip()


def deployed_local(project: Project, runs_dir: Path | None = None) -> Deployed:
    """The commit of the local run ``kfops serve`` serves (``serving.model.run``, else the
    latest), from its result.json.

    Raises:
        KfopsError: no such run, or a run that records no commit.
    """
    from kfops.serving import server

    source = server.find_model(project, runs_dir=runs_dir)
    if not source.commit:
        raise KfopsError(
            f"local run {source.run_id} records no commit (it was made outside git, or by"
            " kfops before 0.9), so kfops cannot tell which code made the served model",
            "pass --commit SHA, or run the pipeline again and serve that run",
        )
    result = json.loads(
        (server.runs_folder(project, runs_dir) / str(source.run_id) / "result.json").read_text()
    )
    return Deployed(source.commit, f"local run {source.run_id}", _flat_metrics(result))


def deployed_in(project: Project, environment: Environment) -> Deployed:
    """The commit of the release serving in ``environment``, from the InferenceService's
    annotations (as ``kfops status`` reads them).

    Raises:
        KfopsError: no InferenceService, or one that kfops did not annotate.
    """
    from kfops.serving.kube import Kube
    from kfops.serving.render import Release

    serving = _serving(project)
    kube = Kube(environment)
    live = kube.get(serving.name)
    where = f"namespace {kube.where.namespace} of environment `{environment.name}`"
    if live is None:
        raise KfopsError(
            f"no InferenceService `{serving.name}` in {where}: no model is deployed there,"
            " so there is nothing to retrain",
            f"deploy one first (`kfops deploy --env {environment.name}`), or pass --commit SHA",
        )
    release = Release.from_annotations((live.get("metadata") or {}).get("annotations") or {})
    if not release.commit:
        raise KfopsError(
            f"InferenceService `{serving.name}` in {where} has no `kfops.dev/commit`"
            " annotation (kfops did not deploy it), so its commit is not known",
            "pass --commit SHA",
        )
    return Deployed(
        release.commit, f"InferenceService {serving.name} in {where}", dict(release.metrics)
    )


def _flat_metrics(result: dict[str, Any]) -> dict[str, float]:
    found: dict[str, float] = {}
    for by_step in (result.get("metrics") or {}).values():
        if isinstance(by_step, dict):
            for name, value in by_step.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    found[str(name)] = float(value)
    return found


def _serving(project: Project) -> Serving:
    from kfops.serving.server import serving_of

    return serving_of(project)


# --------------------------------------------------------------------------- the run


@contextlib.contextmanager
def checkout(root: Path, commit: str, log: Log) -> Iterator[Path]:
    """A temporary worktree of ``root`` at ``commit``, removed afterwards (also on an error,
    Ctrl-C or SIGTERM)."""
    parent = Path(tempfile.mkdtemp(prefix="kfops-retrain-"))
    worktree = parent / "checkout"
    done = _git(root, "worktree", "add", "--detach", "--quiet", str(worktree), commit)
    if done.returncode != 0:
        shutil.rmtree(parent, ignore_errors=True)
        raise KfopsError(
            f"cannot check out commit {commit[:12]}: git worktree add: {done.stderr.strip()}",
            "check the repository with `git worktree list` and `git worktree prune`",
        )
    log(f"checked out commit {commit[:12]} in a temporary worktree")
    previous = _sigterm_as_interrupt()
    try:
        yield worktree
    finally:
        _git(root, "worktree", "remove", "--force", str(worktree))
        shutil.rmtree(parent, ignore_errors=True)
        _git(root, "worktree", "prune")
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _sigterm_as_interrupt() -> Any:
    """A cancelled CI job gets SIGTERM: turn it into KeyboardInterrupt, so the worktree
    goes as on Ctrl-C. Only the main thread may set signal handlers."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def project_at(project: Project, root: Path, worktree: Path) -> Project:
    """The project as it is in ``worktree`` (the same path below the repository's top).

    Raises:
        KfopsError: the commit has no such project.
    """
    from kfops.project import config

    relative = project.config_file.resolve().relative_to(root)
    there = worktree / relative
    if not there.is_file():
        raise KfopsError(
            f"the deployed commit has no {relative.as_posix()}, so its pipeline cannot run",
            "pass --commit with a commit that has the project",
        )
    return config.load(there)


@dataclass(frozen=True)
class Candidate:
    run_id: str
    model: str  # the model file (local) or URI (Kubeflow)
    metrics: dict[str, float]  # what the run logged
    local: bool


def run_local(
    project: Project, runs_dir: Path, console: Any, commit: str, jobs: int | None = None
) -> Candidate:
    """The pipeline of ``project`` (a checkout at the deployed commit) run here, with no
    cache (the point is to train again, on today's data), kept in ``runs_dir``.

    Raises:
        KfopsError: the run failed, or it has no model.
    """
    from kfops.pipeline import local
    from kfops.serving import server

    result = local.run(project, cache=False, runs_dir=runs_dir, console=console, jobs=jobs)
    if not result.succeeded:
        failed = [s.name for s in result.steps.values() if s.status != "SUCCESS"]
        raise KfopsError(
            f"the retraining run {result.run_id} at commit {commit[:12]} failed"
            + (f" (at {', '.join(failed)})" if failed else "")
            + (f": {result.error}" if result.error else ""),
            f"its logs are in {display_path(result.run_dir / 'logs')}; nothing was proposed",
        )
    source = server.find_model(project, run_id=result.run_id, runs_dir=runs_dir)
    return Candidate(result.run_id, str(source.path), _flat_metrics(result.to_json()), True)


def run_kubeflow(
    project: Project, environment: Environment, commit: str, kfp: Any, log: Log, timeout: float
) -> Candidate:
    """A run of the pipeline version of ``commit`` on the environment's Kubeflow Pipelines,
    waited for; its model URI and metrics from ML Metadata.

    Raises:
        KfopsError: no version of that commit, or the run did not succeed.
    """
    from kfops.kubeflow import runs
    from kfops.serving import release

    prefix = commit[:12]
    pipeline, versions = release.versions_of_commit(kfp, project.name, prefix)
    if pipeline is None or not versions:
        raise KfopsError(
            f"no pipeline version of the deployed commit {prefix} on {kfp.host}, so it cannot"
            " run there again",
            f"apply that commit first (`git checkout {prefix} && kfops apply --env"
            f" {environment.name}`), or retrain it locally with --local",
        )
    version = sorted(versions, key=lambda v: str(v.created_at or ""))[-1]
    target = environment.kfp
    experiment = (target.experiment if target else None) or project.name
    run_id = runs.start(
        kfp,
        pipeline_id=pipeline.pipeline_id,
        version_id=version.pipeline_version_id,
        experiment=experiment,
        parameters={},
        display_name=f"{project.name} {version.name} retrain",
        description=f"kfops retrain of commit {commit}",
    )
    log(f"started run {run_id} of {project.name} {version.name}: {kfp.run_url(run_id)}")

    def show(state: str, tasks: dict[str, str]) -> None:
        listed = ", ".join(f"{name} {s.lower()}" for name, s in sorted(tasks.items()))
        log(f"  {state.lower()}" + (f": {listed}" if listed else ""))

    interval = float(os.environ.get("KFOPS_POLL_SECONDS") or 5)
    status = runs.wait(kfp, run_id, timeout=timeout, on_change=show, interval=interval)
    if not status.succeeded:
        failed = ", ".join(task for task, _ in status.failed_tasks)
        raise KfopsError(
            f"the retraining run {run_id} at commit {prefix} {status.state.lower()}"
            + (f" (at {failed})" if failed else ""),
            f"see {status.url}; nothing was proposed",
        )
    log(f"run {run_id} succeeded in {status.seconds:.0f}s")
    found_id, _, uri, metrics = release.run_model(
        project, kfp, run_id, need_uri=True, need_metrics=True
    )
    return Candidate(found_id, uri, metrics, False)


# --------------------------------------------------------------------------- serving it


def free_port() -> int:
    """A port free on every interface (KServe's server listens on all of them)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def served(project: Project, run_id: str, runs_dir: Path, log: Log) -> Iterator[str]:
    """``kfops serve`` of the run ``run_id`` on a free port, for as long as the block runs;
    its base URL (loopback)."""
    import httpx

    serving = _serving(project)
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "kfops",
        "serve",
        str(project.config_file),
        "--run",
        run_id,
        "--runs-dir",
        str(runs_dir),
        "--port",
        str(port),
    ]
    with tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors
        )
        base = f"http://127.0.0.1:{port}"
        ready = (
            f"{base}/v1/models/{serving.name}"
            if serving.protocol == "v1"
            else f"{base}/v2/models/{serving.name}/ready"
        )
        try:
            deadline = time.monotonic() + SERVE_READY_SECONDS
            while True:
                if process.poll() is not None:
                    errors.seek(0)
                    said = _last_error(errors.read())
                    raise KfopsError(
                        f"the candidate's model server stopped before it was ready: {said}",
                        f"try it yourself: `kfops serve {display_path(project.root)}"
                        f" --run {run_id}`",
                    )
                try:
                    if httpx.get(ready, timeout=1.0).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise KfopsError(
                        f"the candidate's model server did not answer {ready} within"
                        f" {SERVE_READY_SECONDS:.0f}s",
                        f"try it yourself: `kfops serve {display_path(project.root)}"
                        f" --run {run_id}`",
                    )
                time.sleep(0.1)
            log(f"serving the candidate (run {run_id}) at {base}")
            yield base
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _last_error(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors[-1].removeprefix("error:").strip() if errors else lines[-1]) if lines else "?"


# --------------------------------------------------------------------------- the gate


@dataclass
class Verdict:
    metrics: dict[str, dict[str, tuple[float | None, float | None]]] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def gate_sets(
    project: Project,
    candidate_url: str,
    candidate_name: str,
    candidate_protocol: str,
    serving_url: str,
    verdict: Verdict,
    timeout: float = 30.0,
) -> None:
    """Score every labelled probe set on both models: the candidate must meet each set's
    thresholds and be no worse than the serving model on each metric.

    Raises:
        KfopsError: the serving model could not be scored (no comparison is possible).
    """
    from kfops.monitor import probes

    monitoring = _sets_of(project)
    serving = _serving(project)
    only_sets = dataclasses.replace(monitoring, requests=(), gates=None)
    candidate = probes.run(
        only_sets, candidate_url, candidate_name, candidate_protocol, timeout=timeout
    )
    current = probes.run(only_sets, serving_url, serving.name, serving.protocol, timeout=timeout)
    for mine, theirs in zip(candidate.results, current.results, strict=True):
        if theirs.exchanges and theirs.exchanges[-1].error is not None and not theirs.metrics:
            raise KfopsError(
                f"cannot score the serving model at {serving_url} on probe set `{theirs.name}`:"
                f" {theirs.detail}",
                "check that the serving model answers (`kfops probe` with the same"
                " --url/--local/--env)",
            )
        values = dict(mine.metrics)
        serving_values = dict(theirs.metrics)
        verdict.metrics[mine.name] = {
            name: (values.get(name), serving_values.get(name))
            for name in sorted(set(values) | set(serving_values))
        }
        if not mine.passed:
            verdict.reasons.append(f"probe set `{mine.name}`: {mine.detail}")
        for name, (value, recorded) in verdict.metrics[mine.name].items():
            if _worse(name, value, recorded):
                assert value is not None and recorded is not None
                verdict.reasons.append(
                    f"probe set `{mine.name}`: {name} {value:.4f} is worse than the serving"
                    f" model's {recorded:.4f}"
                )


def gate_run_metrics(
    serving: Serving, candidate: dict[str, float], deployed: Deployed, verdict: Verdict
) -> None:
    """``serving.gate`` on the candidate's run metrics, as ``kfops deploy`` checks them."""
    if not serving.gate:
        return
    table = verdict.metrics.setdefault(RUN_GATE, {})
    for rule in serving.gate:
        value = candidate.get(rule.metric)
        recorded = deployed.metrics.get(rule.metric)
        table[rule.metric] = (value, recorded)
        if value is None:
            known = ", ".join(sorted(candidate)) or "none"
            verdict.reasons.append(
                f"serving.gate: the candidate's run logged no `{rule.metric}` (its metrics:"
                f" {known})"
            )
            continue
        if rule.min is not None and value < rule.min:
            verdict.reasons.append(
                f"serving.gate: `{rule.metric}` {value:g} is below the minimum {rule.min:g}"
            )
        if rule.max is not None and value > rule.max:
            verdict.reasons.append(
                f"serving.gate: `{rule.metric}` {value:g} is above the maximum {rule.max:g}"
            )
        if rule.not_worse_than_serving is not None:
            if recorded is None:
                verdict.notes.append(
                    f"serving.gate: `{rule.metric}`: no value recorded for the serving model"
                )
                continue
            margin = rule.not_worse_than_serving
            worse = (
                value < recorded - margin if rule.higher_is_better else value > recorded + margin
            )
            if worse:
                verdict.reasons.append(
                    f"serving.gate: `{rule.metric}` {value:g} is worse than the serving"
                    f" model's {recorded:g} by more than {margin:g}"
                )


def _sets_of(project: Project) -> Any:
    monitoring = project.monitoring
    if monitoring is None or not monitoring.sets:
        raise KfopsError(
            f"{project.shown} has no labelled probe sets (`monitoring.probes.sets`), so a"
            " candidate cannot be gated against the serving model",
            "add `monitoring: {probes: {sets: [{name: holdout, file: holdout.jsonl,"
            " metrics: {accuracy: {min: 0.9}}}]}}` (JSON lines of inputs and label)",
            exit_code=EXIT_USAGE,
        )
    return monitoring


# --------------------------------------------------------------------------- all of it


@dataclass(frozen=True)
class Target:
    """Where the serving model is, and how it was chosen."""

    label: str  # the environment's name, or "local" (--local, --url)
    serving_url: str
    environment: Environment | None = None  # --env
    local: bool = False


def find_deployed(
    project: Project, target: Target, commit: str | None, runs_dir: Path | None = None
) -> Deployed:
    """The deployed commit for ``target`` (``commit`` wins), as a full SHA of this repository.

    Raises:
        KfopsError: it cannot be found, or is not in the repository.
    """
    root = repo_root(project)
    if commit:
        found = Deployed(commit, "--commit")
        if target.environment is not None and target.environment.kubernetes is not None:
            with contextlib.suppress(KfopsError):
                found = Deployed(
                    commit, "--commit", deployed_in(project, target.environment).metrics
                )
        elif target.local:
            with contextlib.suppress(KfopsError):
                found = Deployed(commit, "--commit", deployed_local(project, runs_dir).metrics)
    elif target.environment is not None:
        if target.environment.kubernetes is None:
            raise KfopsError(
                f"environment `{target.environment.name}` has no `kubernetes:`, so kfops cannot"
                " read which commit is deployed there",
                "pass --commit SHA",
                exit_code=EXIT_USAGE,
            )
        found = deployed_in(project, target.environment)
    elif target.local:
        found = deployed_local(project, runs_dir)
    else:
        raise KfopsError(
            "--url names a model server, not the commit its model came from",
            "pass --commit SHA (or use --env NAME or --local, where kfops reads it)",
            exit_code=EXIT_USAGE,
        )
    return dataclasses.replace(found, commit=full_commit(root, found.commit))


def retrain(
    project: Project,
    target: Target,
    *,
    commit: str | None = None,
    log: Log,
    console: Any,
    kfp: Any = None,
    runs_dir: Path | None = None,
    timeout: float = 3600.0,
    probe_timeout: float = 30.0,
    jobs: int | None = None,
) -> RetrainResult:
    """Run the pipeline at the deployed commit, gate the candidate against the serving
    model, and (on a pass) edit the model pointer.

    Raises:
        KfopsError: the deployed commit cannot be found, the run failed, or the serving
            model cannot be scored; a failed gate is a result, not an error.
    """
    from kfops.serving import server

    started = time.monotonic()
    serving = _serving(project)
    on_kubeflow = target.environment is not None and target.environment.kfp is not None
    if serving.from_step is None:
        raise KfopsError(
            f"serving.model has no `from_step` ({project.shown}:{serving.mark_of('model').line}):"
            " the model does not come from the pipeline, so retraining cannot replace it",
            "set serving.model.from_step (and artifact) to the step that outputs the model",
            exit_code=EXIT_USAGE,
        )
    if not on_kubeflow:
        _sets_of(project)  # before the long run: without sets there is no gate
    root = repo_root(project)
    deployed = find_deployed(project, target, commit, runs_dir)
    log(f"deployed commit {deployed.commit[:12]} ({deployed.source})")
    runs = server.runs_folder(project, runs_dir)
    verdict = Verdict()
    if on_kubeflow:
        assert target.environment is not None
        log(f"retraining commit {deployed.commit[:12]} on Kubeflow Pipelines")
        candidate = run_kubeflow(project, target.environment, deployed.commit, kfp, log, timeout)
        verdict.notes.append(
            f"the candidate's model is at {candidate.model}, on the cluster's object store:"
            " gated on its run's metrics (ML Metadata), the probe sets were not scored"
        )
    else:
        with checkout(root, deployed.commit, log) as worktree:
            there = project_at(project, root, worktree)
            log(f"running {there.name} at commit {deployed.commit[:12]} (no cache)")
            candidate = run_local(there, runs, console, deployed.commit, jobs)
            log(f"candidate run {candidate.run_id}; scoring it on the probe sets")
            name = there.serving.name if there.serving else serving.name
            protocol = there.serving.protocol if there.serving else serving.protocol
            with served(there, candidate.run_id, runs, log) as url:
                gate_sets(project, url, name, protocol, target.serving_url, verdict, probe_timeout)
    gate_run_metrics(serving, candidate.metrics, deployed, verdict)
    passed = not verdict.reasons
    pointer = None
    if passed:
        text = project.config_file.read_text(encoding="utf-8")
        pointer = (project.config_file, pointer_edit(text, candidate.run_id))
    return RetrainResult(
        passed=passed,
        deployed_commit=deployed.commit,
        candidate_run=candidate.run_id,
        metrics=verdict.metrics,
        reasons=verdict.reasons,
        pointer=pointer,
        project=project.name,
        environment=target.label,
        deployed_from=deployed.source,
        candidate_model=display_path(Path(candidate.model)) if candidate.local else candidate.model,
        seconds=time.monotonic() - started,
        notes=verdict.notes,
    )


# --------------------------------------------------------------------------- the pointer

_PLAIN_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def pointer_edit(text: str, run_id: str) -> str:
    """``text`` (an mlops.yaml) with ``serving.model.run`` set to ``run_id``: the value
    replaced in place (its quoting kept) or the key added after the last key of
    ``serving.model`` (block or flow style); every other character stays as it was.

    Raises:
        KfopsError: the text has no ``serving.model`` mapping.
    """
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise KfopsError(f"cannot edit mlops.yaml: it is not YAML: {exc}") from None
    model = _child(_child(root, "serving"), "model")
    if not isinstance(model, yaml.MappingNode):
        raise KfopsError(
            "mlops.yaml has no `serving.model` mapping to point at a run",
            "write `serving: {model: {from_step: STEP, artifact: OUTPUT}}`",
            exit_code=EXIT_USAGE,
        )
    for key, value in model.value:
        if key.value == "run":
            if isinstance(value, yaml.ScalarNode) and value.style in ("'", '"'):
                new = _quoted(run_id, value.style)
            else:
                new = _scalar(run_id)
            start, end = value.start_mark.index, value.end_mark.index
            if isinstance(value, yaml.ScalarNode) and value.value == "" and value.style is None:
                # `run:` with no value: the empty scalar sits just after the colon
                return text[:start] + " " + new + text[end:]
            return text[:start] + new + text[end:]
    entry = f"run: {_scalar(run_id)}"
    if model.flow_style:
        if not model.value:
            # `{}`: the opening brace is where the node starts
            at = model.start_mark.index + 1
            return text[:at] + entry + text[at:]
        at = model.value[-1][1].end_mark.index
        return text[:at] + ", " + entry + text[at:]
    if not model.value:
        raise KfopsError("serving.model is empty", exit_code=EXIT_USAGE)
    indent: int = model.value[0][0].start_mark.column
    last = model.value[-1][1].end_mark
    if last.column == 0:  # a block value ends at the start of the next line
        at = last.index
    else:
        newline = text.find("\n", last.index)
        at = len(text) if newline < 0 else newline + 1
    prefix = "" if at == 0 or text[at - 1] == "\n" else "\n"
    return text[:at] + prefix + " " * indent + entry + "\n" + text[at:]


def _child(node: Any, name: str) -> Any:
    import yaml

    if not isinstance(node, yaml.MappingNode):
        return None
    for key, value in node.value:
        if isinstance(key, yaml.ScalarNode) and key.value == name:
            return value
    return None


def _scalar(value: str) -> str:
    """``value`` as a YAML string: plain when it reads back as that string, else quoted."""
    from kfops.project.document import resolve_plain

    if _PLAIN_SAFE.match(value) and resolve_plain(value) == value:
        return value
    return json.dumps(value)


def _quoted(value: str, style: str) -> str:
    if style == "'":
        return "'" + value.replace("'", "''") + "'"
    return json.dumps(value)


def pointer_diff(path: Path, old: str, new: str, shown: str) -> str:
    """A unified diff of the pointer change, as ``git apply`` takes it."""
    import difflib

    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=f"a/{shown}",
            tofile=f"b/{shown}",
        )
    )


def branch_name(label: str, key: str) -> str:
    """``kfops/retrain/ENV-KEY``, with what a Git ref cannot hold made safe."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{label}-{key}").strip("-.") or "retrain"
    return f"kfops/retrain/{safe}"


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def base_branch(env: dict[str, str]) -> str:
    """The branch a pull request goes into: the workflow's branch, else main (as the
    monitor dispatches the retraining on it). Not the checkout's branch: a local branch
    need not exist on GitHub."""
    ref = env.get("GITHUB_REF", "")
    if ref.startswith("refs/heads/"):
        return ref.removeprefix("refs/heads/")
    return env.get("GITHUB_REF_NAME") or "main"
