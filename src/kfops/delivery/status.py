"""``kfops status --env NAME``: one view of an environment, from what is live there.

The pipeline (its latest versions and the commits they came from), the last runs and
their states, the schedules kfops keeps, and the served model (URL, model URI, release,
commit, stage, readiness, traffic split, the releases before it), with links to the KFP
UI and the Kubeflow dashboard. Each part is read on its own: one that cannot be read says
why, and the others still show.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kfops.errors import KfopsError
from kfops.project.model import Environment, Project

RUNS_SHOWN = 5
VERSIONS_SHOWN = 3


@dataclass
class Status:
    environment: str
    dashboard: str = ""
    pipeline: dict[str, Any] | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    schedules: list[dict[str, Any]] = field(default_factory=list)
    serving: dict[str, Any] | None = None
    monitor: dict[str, Any] | None = None  # the last verdict, once monitoring reports one
    errors: dict[str, str] = field(default_factory=dict)  # part -> why it could not be read

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "dashboard": self.dashboard,
            "pipeline": self.pipeline,
            "runs": self.runs,
            "schedules": self.schedules,
            "serving": self.serving,
            "monitor": self.monitor,
            "errors": self.errors,
        }

    def markdown(self) -> str:
        lines = [
            f"### {self.environment}"
            + (f" ([dashboard]({self.dashboard}))" if self.dashboard else "")
        ]
        for part, why in sorted(self.errors.items()):
            lines.append(f"- **{part}**: could not be read: {why}")
        if self.pipeline is not None:
            live = self.pipeline.get("versions") or []
            head = live[0] if live else None
            lines.append(
                f"- **pipeline** [{self.pipeline['name']}]({self.pipeline['url']}): "
                + (
                    f"latest version `{head['name']}` (commit `{head['commit'][:12]}`)"
                    if head
                    else "no version"
                )
            )
        if self.runs:
            lines += ["", "| run | state | version | created |", "|---|---|---|---|"]
            lines += [
                f"| [{r['name']}]({r['url']}) | {r['state']} | {r['version']} | {r['created_at']} |"
                for r in self.runs
            ]
        if self.schedules:
            lines += ["", "| schedule | cron | enabled |", "|---|---|---|"]
            lines += [f"| {s['name']} | `{s['cron']}` | {s['enabled']} |" for s in self.schedules]
        serving = self.serving
        if serving is not None:
            if not serving.get("exists"):
                lines.append(f"- **model**: no InferenceService `{serving['name']}` yet")
            else:
                split = ", ".join(
                    f"{t['revision'] or 'predictor'} {t['percent']}%" for t in serving["traffic"]
                )
                lines.append(
                    f"- **model** `{serving['name']}`: release {serving['release'] or '?'}"
                    f" ({serving['stage'] or 'unknown stage'}), ready: {serving['ready']},"
                    f" {serving['url'] or 'no URL'}" + (f", traffic: {split}" if split else "")
                )
                lines.append(
                    f"  - model `{serving['model_uri']}`, commit `{serving['commit'][:12]}`"
                )
        monitor = self.monitor
        if monitor is not None and monitor["verdict"] is not None:
            issue = monitor["issue"]
            lines.append(
                f"- **monitor**: {monitor['verdict'].replace('_', ' ')} at {monitor['at']}"
                + (
                    f", [issue #{issue['number']}]({issue['url']}) {issue['state']}"
                    if issue is not None and issue["url"]
                    else ""
                )
            )
        return "\n".join(lines)

    def text(self) -> str:
        lines = [
            f"environment {self.environment}" + (f"  {self.dashboard}" if self.dashboard else "")
        ]
        for part, why in sorted(self.errors.items()):
            lines.append(f"  {part}: could not be read: {why}")
        if self.pipeline is not None:
            lines.append(f"  pipeline {self.pipeline['name']}  {self.pipeline['url']}")
            for version in self.pipeline.get("versions") or []:
                lines.append(
                    f"    version {version['name']}  commit {version['commit'][:12] or '?'}"
                    f"  {version['created_at']}"
                )
        for run in self.runs:
            lines.append(
                f"  run {run['name']}  {run['state']}  {run['version']}  {run['created_at']}"
                f"  {run['url']}"
            )
        for schedule in self.schedules:
            state = "enabled" if schedule["enabled"] else "disabled"
            lines.append(f"  schedule {schedule['name']}  {schedule['cron']}  {state}")
        serving = self.serving
        if serving is not None:
            if not serving.get("exists"):
                lines.append(f"  model: no InferenceService `{serving['name']}` yet")
            else:
                lines.append(
                    f"  model {serving['name']}  release {serving['release'] or '?'}"
                    f"  {serving['stage'] or '?'}  ready={serving['ready']}"
                    f"  {serving['url'] or 'no URL'}"
                )
                lines.append(
                    f"    model {serving['model_uri']}  commit {serving['commit'][:12] or '?'}"
                )
                for entry in serving["traffic"]:
                    lines.append(
                        f"    traffic {entry['percent']}% -> {entry['revision'] or 'predictor'}"
                        + (f" ({entry['tag']})" if entry.get("tag") else "")
                    )
                for entry in serving["releases"]:
                    lines.append(f"    release {entry['name']}  {entry['status']}  {entry['at']}")
        lines += self._monitor_lines("  ")
        return "\n".join(lines)

    def _monitor_lines(self, indent: str) -> list[str]:
        monitor = self.monitor
        if monitor is None:
            return [] if "monitor" in self.errors else [f"{indent}monitor: not configured"]
        if monitor["verdict"] is None:
            return [f"{indent}monitor: no verdict recorded yet (run `kfops monitor --once`)"]
        line = (
            f"{indent}monitor {monitor['verdict'].replace('_', ' ')} at {monitor['at']}"
            f"  breaching runs in a row: {monitor['breaches']}"
        )
        if monitor["breach"]:
            line += f"  breach {monitor['breach']}"
        lines = [line]
        issue = monitor["issue"]
        if issue is not None:
            lines.append(
                f"{indent}  issue #{issue['number']} {issue['state']}  {issue['url']}".rstrip()
            )
        if monitor["last_dispatch"]:
            lines.append(f"{indent}  retraining last dispatched {monitor['last_dispatch']}")
        return lines


def collect(
    project: Project, environment: Environment, env: Mapping[str, str] | None = None
) -> Status:
    """What is live in ``environment`` for ``project``; never raises for one part.

    ``env`` (the process environment) says where the monitor's last verdict is: the
    monitor's issue when GITHUB_REPOSITORY and a token are set, else its state file.
    """
    status = Status(environment.name)
    if project.monitoring is not None:
        try:
            status.monitor = _monitor(project, environment.name, env or {})
        except KfopsError as exc:
            status.errors["monitor"] = exc.message
    if environment.kfp is not None:
        status.dashboard = environment.kfp.host.rstrip("/").removesuffix("/pipeline")
        try:
            _kubeflow(project, environment, status)
        except KfopsError as exc:
            status.errors["kubeflow pipelines"] = exc.message
    if environment.kubernetes is not None and project.serving is not None:
        try:
            status.serving = _serving(project, environment)
        except KfopsError as exc:
            status.errors["model"] = exc.message
    return status


def _monitor(project: Project, environment: str, env: Mapping[str, str]) -> dict[str, Any]:
    """The monitor's last verdict and what it set off, from its issue or its state file."""

    from kfops.ci import monitor as github_side
    from kfops.delivery import monitor as watching

    ctx = github_side.context(env)
    issue, state, source = None, None, ""
    if ctx is not None:
        mark = github_side.marker(github_side.project_key(project.root), environment)
        issue, state = github_side.state_from_issue(ctx, mark)
        source = f"issue #{issue.number}" if issue is not None else ""
    if state is None:
        where = env.get("KFOPS_MONITOR_STATE") or watching.default_state_file(project, environment)
        state = github_side.load_state(where)
        source = str(where) if state.history else ""
    last = state.last_verdict
    return {
        "verdict": last[1] if last else None,
        "at": last[0] if last else None,
        "breaches": state.breaches,
        "clean": state.clean,
        "breach": state.episode,
        "issue": {"number": issue.number, "url": issue.url, "state": issue.state}
        if issue is not None
        else (
            {"number": state.issue, "url": "", "state": "open" if state.issue_open else "closed"}
            if state.issue is not None
            else None
        ),
        "last_dispatch": state.last_dispatch,
        "source": source,
    }


def _kubeflow(project: Project, environment: Environment, status: Status) -> None:
    from kfops.kubeflow import runs, schedules
    from kfops.kubeflow.client import connect

    kfp = connect(environment)
    pipeline = kfp.pipeline_by_name(project.name)
    if pipeline is None:
        status.pipeline = {"name": project.name, "url": "", "versions": [], "exists": False}
        return
    answer = kfp.call(
        "list pipeline versions",
        kfp.pipelines.pipeline_service_list_pipeline_versions,
        pipeline.pipeline_id,
        sort_by="created_at desc",
        page_size=VERSIONS_SHOWN,
    )
    versions = answer.pipeline_versions or []
    names = {}
    shown = []
    for version in versions:
        names[version.pipeline_version_id] = version.name
        shown.append(
            {
                "name": version.name,
                "id": version.pipeline_version_id,
                "commit": _commit_of(version),
                "created_at": str(version.created_at or ""),
                "url": kfp.pipeline_url(pipeline.pipeline_id, version.pipeline_version_id),
            }
        )
    status.pipeline = {
        "name": project.name,
        "id": pipeline.pipeline_id,
        "url": kfp.pipeline_url(pipeline.pipeline_id),
        "versions": shown,
        "exists": True,
    }
    target = environment.kfp
    assert target is not None
    experiment = runs.find_experiment(kfp, target.experiment or project.name)
    if experiment is not None:
        listed = kfp.call(
            "list runs",
            kfp.runs.run_service_list_runs,
            experiment_id=experiment,
            sort_by="created_at desc",
            page_size=RUNS_SHOWN,
        )
        for run in (listed.runs or [])[:RUNS_SHOWN]:
            version_id = getattr(run.pipeline_version_reference, "pipeline_version_id", "")
            status.runs.append(
                {
                    "id": run.run_id,
                    "name": run.display_name or run.run_id,
                    "state": run.state or "?",
                    "version": names.get(version_id, version_id or ""),
                    "created_at": str(run.created_at or ""),
                    "url": kfp.run_url(run.run_id),
                }
            )
    for recurring in schedules.owned(project, schedules.existing(kfp)):
        trigger = getattr(recurring, "trigger", None)
        cron = getattr(getattr(trigger, "cron_schedule", None), "cron", "") or ""
        status.schedules.append(
            {
                "name": str(recurring.display_name).removeprefix(
                    schedules.display_name(project, "")
                ),
                "cron": cron,
                "enabled": str(getattr(recurring, "status", "")) == "ENABLED",
            }
        )


def _commit_of(version: Any) -> str:
    """The commit a version came from: its description says it (``commit SHA``)."""
    words = str(version.description or "").replace(";", " ").split()
    for before, word in itertools.pairwise(words):
        if before == "commit" and len(word) >= 7:
            return word
    return ""


def _serving(project: Project, environment: Environment) -> dict[str, Any]:
    from kfops.serving import render
    from kfops.serving.kube import Kube
    from kfops.serving.render import Release

    serving = project.serving
    assert serving is not None
    kube = Kube(environment)
    live = kube.get(serving.name)
    found: dict[str, Any] = {"name": serving.name, "namespace": kube.where.namespace}
    if live is None:
        found["exists"] = False
        return found
    annotations = (live.get("metadata") or {}).get("annotations") or {}
    release = Release.from_annotations(annotations)
    status = live.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    predictor = (status.get("components") or {}).get("predictor") or {}
    records, _ = (
        kube.record(serving.name) if render.managed_by_kfops(live, project.name) else ([], None)
    )
    found.update(
        exists=True,
        managed_by_kfops=render.managed_by_kfops(live, project.name),
        url=environment.kubernetes.url
        if environment.kubernetes and environment.kubernetes.url
        else status.get("url", ""),
        release=release.name if release.model_uri else "",
        stage=annotations.get(render.STAGE, ""),
        model_uri=release.model_uri,
        commit=release.commit,
        tag=release.tag,
        run_id=release.run_id,
        metrics=release.metrics,
        ready=conditions.get("Ready") == "True",
        mode=status.get("deploymentMode", ""),
        traffic=[
            {
                "revision": t.get("revisionName", ""),
                "percent": int(t.get("percent") or 0),
                "tag": t.get("tag", ""),
                "latest": bool(t.get("latestRevision")),
            }
            for t in predictor.get("traffic") or []
        ]
        + [
            {
                "revision": f"canary ({c.get('name')})",
                "percent": int(c.get("trafficPercent") or 0),
                "tag": "canary",
                "latest": True,
            }
            for c in status.get("canaryStatuses") or []
        ],
        releases=[
            {
                "name": r.get("tag") or str(r.get("commit") or "")[:12] or r.get("model_uri"),
                "status": r.get("status", ""),
                "at": r.get("at", ""),
                "model_uri": r.get("model_uri", ""),
            }
            for r in reversed(records[-5:])
        ],
    )
    return found


def render_json(status: Status) -> str:
    return json.dumps(status.to_json(), indent=2, sort_keys=True, default=str)
