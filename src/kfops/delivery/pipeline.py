"""Pipeline delivery: Git and the live Kubeflow Pipelines -> a plan -> its effects.

The pipeline is found by name in the environment's namespace; its version is named by
the commit and a hash of the compiled spec (``COMMIT12-SPEC10``), so the same commit
with the same spec is uploaded once, and a dirty tree or a changed parameter never
reuses a name. The version's description carries repository, ref, commit and workflow
run. ``plan`` only reads; ``apply`` executes the same plan (``dry_run``: not at all).
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

from kfops.kubeflow import runs, schedules
from kfops.kubeflow.client import AlreadyExists, Kfp
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

    @property
    def empty(self) -> bool:
        return not self.actions and not self.schedules

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
    # Always read: schedules removed from mlops.yaml are still to be deleted.
    existing = schedules.existing(kfp)
    wanted = any(s.environment == kfp.environment for s in project.schedules)
    if wanted or schedules.owned(project, existing):
        experiment = runs.find_experiment(kfp, experiment_name(project, kfp))
        result.schedules = schedules.plan(
            project,
            kfp,
            pipeline_id=result.pipeline_id,
            experiment_id=experiment,
            existing=existing,
        )
    return result


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
        _upload(project, ir_text, kfp, planned)
    if planned.schedules:
        _reconcile(project, kfp, planned, origin)
    return planned


def _reconcile(project: Project, kfp: Kfp, planned: PipelinePlan, origin: Origin) -> None:
    """The schedule actions again, now that the pipeline and experiment exist (their ids
    are part of each schedule's spec), then carried out."""
    assert planned.pipeline_id is not None
    experiment = runs.experiment_id(kfp, experiment_name(project, kfp))
    planned.schedules = schedules.plan(
        project,
        kfp,
        pipeline_id=planned.pipeline_id,
        experiment_id=experiment,
        existing=schedules.existing(kfp),
    )
    schedules.execute(
        project,
        kfp,
        planned.schedules,
        pipeline_id=planned.pipeline_id,
        experiment_id=experiment,
        origin=origin.describe(project),
    )


def _upload(project: Project, ir_text: str, kfp: Kfp, planned: PipelinePlan) -> None:
    if planned.pipeline_id is None:
        try:
            planned.pipeline_id = kfp.create_pipeline(project.name, planned.description).pipeline_id
        except AlreadyExists:
            found = kfp.pipeline_by_name(project.name)
            assert found is not None
            planned.pipeline_id = found.pipeline_id
            existing = kfp.version_by_name(planned.pipeline_id, planned.version)
            if existing is not None:
                planned.version_id = existing.pipeline_version_id
                return
    with tempfile.TemporaryDirectory(prefix="kfops-upload-") as tmp:
        package = Path(tmp) / f"{project.name}.yaml"
        package.write_text(ir_text, encoding="utf-8")
        try:
            version = kfp.upload_version(
                planned.pipeline_id, planned.version, planned.description, package
            )
            planned.version_id = version.pipeline_version_id
        except AlreadyExists:
            existing = kfp.version_by_name(planned.pipeline_id, planned.version)
            planned.version_id = existing.pipeline_version_id if existing is not None else None
