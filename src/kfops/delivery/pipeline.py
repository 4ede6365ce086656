"""Pipeline delivery: Git and the live Kubeflow Pipelines -> a plan -> its effects.

The pipeline is found by name in the environment's namespace; its version is named by
the commit and a hash of the compiled spec (``COMMIT12-SPEC10``), so the same commit
with the same spec is uploaded once, and a dirty tree or a changed parameter never
reuses a name. The version's description carries repository, ref, commit and workflow
run. ``plan`` only reads; ``apply`` executes the same plan (``dry_run``: not at all).

With ``monitoring.schedule.runner: kfp`` for this environment, the monitor pipeline
(``kfops.monitor.schedule``) is delivered beside it the same way, under
``NAME-monitor``, and its recurring run is reconciled with the schedules.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfops.errors import KfopsError
from kfops.kubeflow import runs, schedules
from kfops.kubeflow.client import AlreadyExists, Kfp
from kfops.monitor import schedule as monitor_schedule
from kfops.project.model import Project


@dataclass(frozen=True)
class Origin:
    """Where this delivery comes from: what every object kfops makes carries."""

    commit: str  # full SHA, or "" outside git
    ref: str = ""
    repository: str = ""
    run_url: str = ""
    dirty: bool = False

    @classmethod
    def detect(cls, root: Path, env: Mapping[str, str] | None = None) -> Origin:
        env = os.environ if env is None else env

        def git(*args: str) -> str:
            done = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, check=False
            )
            return done.stdout.strip() if done.returncode == 0 else ""

        server, repo, run = (
            env.get(k, "") for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
        )
        return cls(
            commit=env.get("GITHUB_SHA") or git("rev-parse", "HEAD"),
            ref=env.get("GITHUB_REF") or git("symbolic-ref", "-q", "HEAD"),
            repository=repo,
            run_url=f"{server}/{repo}/actions/runs/{run}" if server and repo and run else "",
            dirty=bool(git("status", "--porcelain", "--untracked-files=no")),
        )

    def describe(self, project: Project) -> str:
        parts = [f"kfops project {project.name}"]
        if self.repository:
            parts.append(f"repository {self.repository}")
        if self.ref:
            parts.append(f"ref {self.ref}")
        parts.append(
            f"commit {self.commit or 'unknown'}"
            + (" (with uncommitted changes)" if self.dirty else "")
        )
        if self.run_url:
            parts.append(f"run {self.run_url}")
        return "; ".join(parts)


@dataclass(frozen=True)
class Action:
    kind: str  # "create-pipeline" | "upload-version"
    name: str
    detail: str = ""


@dataclass
class MonitorPlan:
    """The monitor pipeline's part of a plan (``monitoring.schedule.runner: kfp``)."""

    pipeline: str
    version: str
    description: str
    cron: str
    ir_text: str = field(repr=False)
    pipeline_id: str | None = None
    version_id: str | None = None
    actions: list[Action] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "pipeline_id": self.pipeline_id,
            "version": self.version,
            "version_id": self.version_id,
            "cron": self.cron,
            "actions": [{"kind": a.kind, "name": a.name, "detail": a.detail} for a in self.actions],
        }


@dataclass
class PipelinePlan:
    """What apply would do to the environment's pipeline, and what is there."""

    environment: str
    host: str
    pipeline: str
    version: str
    description: str
    pipeline_id: str | None = None
    version_id: str | None = None
    actions: list[Action] = field(default_factory=list)
    schedules: list[schedules.ScheduleAction] = field(default_factory=list)
    monitor: MonitorPlan | None = None

    @property
    def empty(self) -> bool:
        monitor = self.monitor is not None and bool(self.monitor.actions)
        return not self.actions and not self.schedules and not monitor

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "host": self.host,
            "pipeline": self.pipeline,
            "pipeline_id": self.pipeline_id,
            "version": self.version,
            "version_id": self.version_id,
            "actions": [{"kind": a.kind, "name": a.name, "detail": a.detail} for a in self.actions],
            "schedules": [
                {"kind": a.kind, "name": a.name, "detail": a.detail} for a in self.schedules
            ],
            "monitor": self.monitor.to_json() if self.monitor is not None else None,
        }


def version_name(ir_text: str, origin: Origin) -> str:
    """``COMMIT12-SPEC10``: the commit, and a hash of the spec exactly as uploaded."""
    spec = hashlib.sha256(ir_text.encode()).hexdigest()[:10]
    return f"{(origin.commit or 'nocommit')[:12]}-{spec}"


def plan(project: Project, ir_text: str, kfp: Kfp, origin: Origin) -> PipelinePlan:
    """Read the live state and say what apply would change (read calls only)."""
    result = PipelinePlan(
        environment=kfp.environment,
        host=kfp.host,
        pipeline=project.name,
        version=version_name(ir_text, origin),
        description=origin.describe(project),
    )
    pipeline = kfp.pipeline_by_name(project.name)
    if pipeline is None:
        result.actions.append(Action("create-pipeline", project.name, "not in the environment"))
    else:
        result.pipeline_id = pipeline.pipeline_id
        found = kfp.version_by_name(pipeline.pipeline_id, result.version)
        result.version_id = found.pipeline_version_id if found is not None else None
    if result.version_id is None:
        result.actions.append(Action("upload-version", result.version, result.description))
    if monitor_schedule.wanted_in(project, kfp.environment):
        result.monitor = _plan_monitor(project, kfp, origin)
    # Always read: schedules removed from mlops.yaml are still to be deleted.
    existing = schedules.existing(kfp)
    wanted = result.monitor is not None or any(
        s.environment == kfp.environment for s in project.schedules
    )
    if wanted or schedules.owned(project, existing):
        experiment = runs.find_experiment(kfp, experiment_name(project, kfp))
        result.schedules = schedules.plan(
            project, _recurring(project, kfp, result, experiment), existing
        )
    return result


def _plan_monitor(project: Project, kfp: Kfp, origin: Origin) -> MonitorPlan:
    """The monitor pipeline: compiled, and looked up (read calls only).

    Raises:
        KfopsError: the monitor cannot run in a pod (``monitor.schedule.check``), or a
            pipeline of that name is there, but kfops did not make it for this project.
    """
    assert project.monitoring is not None and project.monitoring.schedule is not None
    monitor_schedule.check(project)
    ir_text = monitor_schedule.compile_ir(project)
    name = monitor_schedule.pipeline_name(project)
    marker = monitor_schedule.description(project)
    planned = MonitorPlan(
        pipeline=name,
        version=version_name(ir_text, origin),
        description=f"{marker}; {origin.describe(project)}",
        cron=project.monitoring.schedule,
        ir_text=ir_text,
    )
    pipeline = kfp.pipeline_by_name(name)
    if pipeline is None:
        planned.actions.append(Action("create-pipeline", name, "not in the environment"))
    elif not str(pipeline.description or "").startswith(f"{marker};"):
        raise KfopsError(
            f"environment `{kfp.environment}` has a pipeline `{name}` that kfops did not make"
            f" for project {project.name}'s monitor (its description does not start with"
            f' "{marker};"); kfops leaves it alone',
            "rename or delete that pipeline, or run the monitor from GitHub"
            " (`runner: github` under monitoring.schedule)",
        )
    else:
        planned.pipeline_id = pipeline.pipeline_id
        found = kfp.version_by_name(pipeline.pipeline_id, planned.version)
        planned.version_id = found.pipeline_version_id if found is not None else None
    if planned.version_id is None:
        planned.actions.append(Action("upload-version", planned.version, planned.description))
    return planned


def _recurring(
    project: Project, kfp: Kfp, planned: PipelinePlan, experiment: str | None
) -> list[schedules.Recurring]:
    """The recurring runs this environment should have: its schedules, and the monitor's."""
    wanted = schedules.wanted(
        project, kfp.environment, pipeline_id=planned.pipeline_id, experiment_id=experiment
    )
    monitor = planned.monitor
    if monitor is not None:
        wanted.append(
            schedules.Recurring(
                name=schedules.MONITOR,
                cron=monitor.cron,
                spec=schedules.monitor_hash(
                    monitor.cron, monitor.pipeline_id or "", monitor.version, experiment or ""
                ),
                pipeline_id=monitor.pipeline_id or "",
                version_id=monitor.version_id,
                detail=f"cron {monitor.cron}; {monitor.pipeline} version {monitor.version}",
            )
        )
    return wanted


def experiment_name(project: Project, kfp: Kfp) -> str:
    environment = project.environment(kfp.environment)
    return (environment.kfp.experiment if environment.kfp else None) or project.name


def apply(
    project: Project, ir_text: str, kfp: Kfp, origin: Origin, *, dry_run: bool = False
) -> PipelinePlan:
    """Make the environment hold this commit's version; a second apply changes nothing.

    A 409 from a concurrent apply means "already there": the object is looked up by
    name instead, so a race never makes a duplicate.
    """
    planned = plan(project, ir_text, kfp, origin)
    if dry_run or planned.empty:
        return planned
    if planned.actions:
        planned.pipeline_id, planned.version_id = _upload(
            kfp, project.name, ir_text, planned.version, planned.description, planned.pipeline_id
        )
    monitor = planned.monitor
    if monitor is not None and monitor.actions:
        monitor.pipeline_id, monitor.version_id = _upload(
            kfp,
            monitor.pipeline,
            monitor.ir_text,
            monitor.version,
            monitor.description,
            monitor.pipeline_id,
        )
    if planned.schedules:
        _reconcile(project, kfp, planned, origin)
    return planned


def _reconcile(project: Project, kfp: Kfp, planned: PipelinePlan, origin: Origin) -> None:
    """The schedule actions again, now that the pipelines and experiment exist (their ids
    are part of each schedule's spec), then carried out."""
    assert planned.pipeline_id is not None
    experiment = runs.experiment_id(kfp, experiment_name(project, kfp))
    wanted = _recurring(project, kfp, planned, experiment)
    planned.schedules = schedules.plan(project, wanted, schedules.existing(kfp))
    schedules.execute(
        project,
        kfp,
        planned.schedules,
        wanted,
        experiment_id=experiment,
        origin=origin.describe(project),
    )


def _upload(
    kfp: Kfp,
    name: str,
    ir_text: str,
    version: str,
    description: str,
    pipeline_id: str | None,
) -> tuple[str, str | None]:
    """Upload ``version`` of pipeline ``name`` (made when ``pipeline_id`` is None): the
    pipeline's id and the version's."""
    if pipeline_id is None:
        try:
            pipeline_id = str(kfp.create_pipeline(name, description).pipeline_id)
        except AlreadyExists:
            found = kfp.pipeline_by_name(name)
            assert found is not None
            pipeline_id = str(found.pipeline_id)
            existing = kfp.version_by_name(pipeline_id, version)
            if existing is not None:
                return pipeline_id, str(existing.pipeline_version_id)
    with tempfile.TemporaryDirectory(prefix="kfops-upload-") as tmp:
        package = Path(tmp) / f"{name}.yaml"
        package.write_text(ir_text, encoding="utf-8")
        try:
            uploaded = kfp.upload_version(pipeline_id, version, description, package)
            return pipeline_id, str(uploaded.pipeline_version_id)
        except AlreadyExists:
            existing = kfp.version_by_name(pipeline_id, version)
            return pipeline_id, str(existing.pipeline_version_id) if existing is not None else None
