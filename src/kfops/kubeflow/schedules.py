"""``schedules:`` reconciled with the environment's recurring runs.

kfops names each recurring run it creates ``kfops:PROJECT:SCHEDULE`` and writes a hash
of its spec into the description. Then, from one listing of the namespace:

- missing: created;
- same spec: only ``enabled`` is enforced (enable/disable calls);
- changed spec: the new one is created first, then the old one deleted with
  propagation ORPHAN, so runs it started keep going: KFP has no update call for
  recurring runs (kubeflow/pipelines#3789), and deleting first would stop them;
- gone from mlops.yaml: deleted (ORPHAN);
- a recurring run without kfops' name is never touched.

The runs have no version pin: each trigger runs the pipeline's latest version, which
``apply`` has just made this commit's, so a new commit replaces no schedule.
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
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def plan(
    project: Project,
    kfp: Kfp,
    *,
    pipeline_id: str | None,
    experiment_id: str | None,
    existing: list[Any],
) -> list[ScheduleAction]:
    """What apply changes, from the schedules of this environment and one listing."""
    mine = [s for s in project.schedules if s.environment == kfp.environment]
    prefix = display_name(project, "")
    found: dict[str, list[Any]] = {}
    for run in owned(project, existing):
        found.setdefault(str(run.display_name), []).append(run)
    actions: list[ScheduleAction] = []
    for schedule in mine:
        name = display_name(project, schedule.name)
        want = f"{_SPEC}{spec_hash(schedule, pipeline_id or '', experiment_id or '')}"
        runs = found.pop(name, [])
        current = next((r for r in runs if want in str(r.description or "")), None)
        others = [r for r in runs if r is not current]
        if current is None and others:
            old = others.pop(0)
            actions.append(
                ScheduleAction(
                    "replace", schedule.name, f"cron {schedule.cron}", old.recurring_run_id
                )
            )
        elif current is None:
            actions.append(ScheduleAction("create", schedule.name, f"cron {schedule.cron}"))
        elif (str(current.status) == "ENABLED") != schedule.enabled:
            kind = "enable" if schedule.enabled else "disable"
            actions.append(ScheduleAction(kind, schedule.name, "", current.recurring_run_id))
        actions += [
            ScheduleAction("delete", schedule.name, "a duplicate", r.recurring_run_id)
            for r in others
        ]
    for name, runs in sorted(found.items()):
        for run in runs:
            actions.append(
                ScheduleAction(
                    "delete",
                    name.removeprefix(prefix),
                    "no longer in mlops.yaml",
                    run.recurring_run_id,
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
    *,
    pipeline_id: str,
    experiment_id: str,
    origin: str,
) -> None:
    """Carry the actions out: every create before any delete."""
    import kfp_server_api

    by_name = {s.name: s for s in project.schedules if s.environment == kfp.environment}
    for action in actions:
        if action.kind not in ("create", "replace"):
            continue
        schedule = by_name[action.name]
        body = kfp_server_api.V2beta1RecurringRun(
            display_name=display_name(project, schedule.name),
            description=f"{origin}; {_SPEC}{spec_hash(schedule, pipeline_id, experiment_id)}",
            pipeline_version_reference=kfp_server_api.V2beta1PipelineVersionReference(
                pipeline_id=pipeline_id
            ),
            runtime_config=kfp_server_api.V2beta1RuntimeConfig(
                parameters=dict(schedule.parameters)
            ),
            trigger=kfp_server_api.V2beta1Trigger(
                cron_schedule=kfp_server_api.V2beta1CronSchedule(cron=schedule.kfp_cron)
            ),
            max_concurrency=str(schedule.max_concurrency),
            mode="ENABLE" if schedule.enabled else "DISABLE",
            no_catchup=True,
            experiment_id=experiment_id,
            **kfp.namespaced(),
        )
        wanted = str(body.description)

        def recover(name: str = str(body.display_name), wanted: str = wanted) -> Any:
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
