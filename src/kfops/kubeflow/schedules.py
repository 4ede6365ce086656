"""``schedules:`` (and the monitor's run) reconciled with the environment's recurring runs.

kfops names each recurring run it creates ``kfops:PROJECT:SCHEDULE`` and writes a hash
of its spec into the description. Then, from one listing of the namespace:

- missing: created;
- same spec: only ``enabled`` is enforced (enable/disable calls);
- changed spec: the new one is created first, then the old one deleted with
  propagation ORPHAN, so runs it started keep going: KFP has no update call for
  recurring runs (kubeflow/pipelines#3789), and deleting first would stop them;
- gone from mlops.yaml: deleted (ORPHAN);
- a recurring run without kfops' name is never touched.

The runs of ``schedules:`` have no version pin: each trigger runs the pipeline's latest
version, which ``apply`` has just made this commit's, so a new commit replaces no
schedule. The monitor's (``kfops:PROJECT:kfops monitor``, see ``kfops.monitor.schedule``)
is pinned to the monitor pipeline's version of the commit applied, since that version
carries the mlops.yaml it runs with: a new version replaces it, as a new cron does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from kfops.kubeflow.client import Kfp
from kfops.project.model import Project, Schedule

_SPEC = "kfops-spec:"


@dataclass(frozen=True)
class ScheduleAction:
    kind: str  # "create" | "replace" | "enable" | "disable" | "delete"
    name: str
    detail: str = ""
    recurring_run_id: str | None = None  # the existing one, for replace/enable/disable/delete


@dataclass(frozen=True)
class Recurring:
    """A recurring run kfops keeps: one of ``schedules:``, or the monitor's."""

    name: str  # the schedule's name, or MONITOR
    cron: str  # 5-field Unix cron, as written
    spec: str  # a hash of what the run is made of, kept in its description
    pipeline_id: str
    version_id: str | None = None  # None: each trigger runs the pipeline's latest version
    parameters: tuple[tuple[str, Any], ...] = ()
    enabled: bool = True
    max_concurrency: int = 1
    detail: str = ""  # for plans: what it is

    @property
    def kfp_cron(self) -> str:
        """KFP's 6-field, seconds-first form."""
        return "0 " + " ".join(self.cron.split())


# The monitor's recurring run, among the project's schedules: no schedule name has a space.
MONITOR = "kfops monitor"


def display_name(project: Project, schedule_name: str) -> str:
    return f"kfops:{project.name}:{schedule_name}"


def spec_hash(schedule: Schedule, pipeline_id: str, experiment_id: str) -> str:
    spec = {
        "cron": schedule.kfp_cron,
        "parameters": dict(schedule.parameters),
        "max_concurrency": schedule.max_concurrency,
        "pipeline": pipeline_id,
        "experiment": experiment_id,
    }
    return _hash(spec)


def monitor_hash(cron: str, pipeline_id: str, version: str, experiment_id: str) -> str:
    """The monitor's spec: its cron, its pipeline and the version (by name: known before
    it is uploaded) it is pinned to."""
    spec = {
        "cron": "0 " + " ".join(cron.split()),
        "pipeline": pipeline_id,
        "version": version,
        "experiment": experiment_id,
    }
    return _hash(spec)


def _hash(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def wanted(
    project: Project, environment: str, *, pipeline_id: str | None, experiment_id: str | None
) -> list[Recurring]:
    """The recurring runs ``schedules:`` asks of ``environment``."""
    return [
        Recurring(
            name=s.name,
            cron=s.cron,
            spec=spec_hash(s, pipeline_id or "", experiment_id or ""),
            pipeline_id=pipeline_id or "",
            parameters=s.parameters,
            enabled=s.enabled,
            max_concurrency=s.max_concurrency,
            detail=f"cron {s.cron}",
        )
        for s in project.schedules
        if s.environment == environment
    ]


def plan(project: Project, wanted: list[Recurring], existing: list[Any]) -> list[ScheduleAction]:
    """What apply changes, from the recurring runs wanted and one listing."""
    prefix = display_name(project, "")
    found: dict[str, list[Any]] = {}
    for run in owned(project, existing):
        found.setdefault(str(run.display_name), []).append(run)
    actions: list[ScheduleAction] = []
    for recurring in wanted:
        name = display_name(project, recurring.name)
        want = f"{_SPEC}{recurring.spec}"
        runs = found.pop(name, [])
        current = next((r for r in runs if want in str(r.description or "")), None)
        others = [r for r in runs if r is not current]
        if current is None and others:
            old = others.pop(0)
            actions.append(
                ScheduleAction("replace", recurring.name, recurring.detail, old.recurring_run_id)
            )
        elif current is None:
            actions.append(ScheduleAction("create", recurring.name, recurring.detail))
        elif (str(current.status) == "ENABLED") != recurring.enabled:
            kind = "enable" if recurring.enabled else "disable"
            actions.append(ScheduleAction(kind, recurring.name, "", current.recurring_run_id))
        actions += [
            ScheduleAction("delete", recurring.name, "a duplicate", r.recurring_run_id)
            for r in others
        ]
    for name, runs in sorted(found.items()):
        gone = name.removeprefix(prefix)
        why = "monitoring.schedule no longer runs it here" if gone == MONITOR else ""
        for run in runs:
            actions.append(
                ScheduleAction(
                    "delete", gone, why or "no longer in mlops.yaml", run.recurring_run_id
                )
            )
    return actions


def owned(project: Project, runs: list[Any]) -> list[Any]:
    """The recurring runs kfops made for this project (by their name)."""
    prefix = display_name(project, "")
    return [r for r in runs if str(r.display_name or "").startswith(prefix)]


def existing(kfp: Kfp) -> list[Any]:
    """The namespace's recurring runs (every page of one listing)."""
    found: list[Any] = []
    token = ""
    while True:
        answer = kfp.call(
            "list recurring runs",
            kfp.recurring.recurring_run_service_list_recurring_runs,
            page_size=200,
            page_token=token,
            **kfp.namespaced(),
        )
        found += answer.recurring_runs or []
        token = answer.next_page_token or ""
        if not token:
            return found


def execute(
    project: Project,
    kfp: Kfp,
    actions: list[ScheduleAction],
    wanted: list[Recurring],
    *,
    experiment_id: str,
    origin: str,
) -> None:
    """Carry the actions out: every create before any delete."""
    import kfp_server_api

    by_name = {r.name: r for r in wanted}
    for action in actions:
        if action.kind not in ("create", "replace"):
            continue
        recurring = by_name[action.name]
        body = kfp_server_api.V2beta1RecurringRun(
            display_name=display_name(project, recurring.name),
            description=f"{origin}; {_SPEC}{recurring.spec}",
            pipeline_version_reference=kfp_server_api.V2beta1PipelineVersionReference(
                pipeline_id=recurring.pipeline_id,
                **({"pipeline_version_id": recurring.version_id} if recurring.version_id else {}),
            ),
            runtime_config=kfp_server_api.V2beta1RuntimeConfig(
                parameters=dict(recurring.parameters)
            ),
            trigger=kfp_server_api.V2beta1Trigger(
                cron_schedule=kfp_server_api.V2beta1CronSchedule(cron=recurring.kfp_cron)
            ),
            max_concurrency=str(recurring.max_concurrency),
            mode="ENABLE" if recurring.enabled else "DISABLE",
            no_catchup=True,
            experiment_id=experiment_id,
            **kfp.namespaced(),
        )
        described = str(body.description)

        def recover(name: str = str(body.display_name), wanted: str = described) -> Any:
            return next(
                (r for r in existing(kfp) if r.display_name == name and r.description == wanted),
                None,
            )

        kfp.call(
            "create recurring run",
            kfp.recurring.recurring_run_service_create_recurring_run,
            body,
            retry=False,
            recover=recover,
        )
    for action in actions:
        if action.kind == "enable":
            kfp.call(
                "enable recurring run",
                kfp.recurring.recurring_run_service_enable_recurring_run,
                action.recurring_run_id,
            )
        elif action.kind == "disable":
            kfp.call(
                "disable recurring run",
                kfp.recurring.recurring_run_service_disable_recurring_run,
                action.recurring_run_id,
            )
    for action in actions:
        if action.kind in ("replace", "delete"):
            kfp.call(
                "delete recurring run",
                kfp.recurring.recurring_run_service_delete_recurring_run,
                action.recurring_run_id,
                propagation_policy="ORPHAN",
                missing_ok=True,  # a retry after a lost answer finds it gone
            )
