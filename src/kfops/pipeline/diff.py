"""What a change does to a pipeline: compare two compiled IRs (pure; no I/O).

Used on pull requests: the base side is the pipeline compiled at the merge base, the
head side the one in the pull request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StepChange:
    step: str
    aspects: tuple[str, ...]  # e.g. ("code", "image", "resources")


@dataclass(frozen=True)
class ParameterChange:
    name: str
    before: Any  # None: the parameter is new, or had no default
    after: Any  # None: removed, or has no default now
    status: str  # "added", "removed", "changed"


@dataclass(frozen=True)
class ImageChange:
    step: str
    before: str
    after: str


@dataclass
class Plan:
    """The difference between the base and the head pipeline."""

    new_project: bool = False
    steps_added: list[str] = field(default_factory=list)
    steps_removed: list[str] = field(default_factory=list)
    steps_changed: list[StepChange] = field(default_factory=list)
    parameters: list[ParameterChange] = field(default_factory=list)
    images: list[ImageChange] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (
            self.new_project
            or self.steps_added
            or self.steps_removed
            or self.steps_changed
            or self.parameters
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "new_project": self.new_project,
            "steps_added": self.steps_added,
            "steps_removed": self.steps_removed,
            "steps_changed": {c.step: list(c.aspects) for c in self.steps_changed},
            "parameters": [
                {"name": p.name, "before": p.before, "after": p.after, "status": p.status}
                for p in self.parameters
            ],
            "images": [{"step": i.step, "before": i.before, "after": i.after} for i in self.images],
        }


def steps_of(ir: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every task of the pipeline (nested DAGs included), with what defines it."""
    components = ir.get("components", {})
    executors = ir.get("deploymentSpec", {}).get("executors", {})
    found: dict[str, dict[str, Any]] = {}

    def walk(dag: dict[str, Any], prefix: str) -> None:
        for name, task in sorted(dag.get("tasks", {}).items()):
            component = components.get(task.get("componentRef", {}).get("name", ""), {})
            if "dag" in component:
                walk(component["dag"], f"{prefix}{name}/")
                continue
            container = executors.get(component.get("executorLabel", ""), {}).get("container", {})
            found[prefix + name] = {
                "code": [container.get("command"), container.get("args")],
                "image": container.get("image", ""),
                "resources": container.get("resources"),
                "env": container.get("env"),
                "inputs": task.get("inputs"),
                "interface": [
                    component.get("inputDefinitions"),
                    component.get("outputDefinitions"),
                ],
                "dependencies": sorted(task.get("dependentTasks", [])),
                "retries": task.get("retryPolicy"),
                "cache": task.get("cachingOptions"),
            }

    walk(ir.get("root", {}).get("dag", {}), "")
    return found


def _defaults(ir: dict[str, Any]) -> dict[str, Any]:
    params = ir.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    found = {}
    for name, spec in sorted(params.items()):
        value = spec.get("defaultValue")
        # protobuf keeps every number as a double: 50 is stored as 50.0
        if spec.get("parameterType") == "NUMBER_INTEGER" and isinstance(value, float):
            value = int(value)
        found[name] = value
    return found


def compare(base: dict[str, Any] | None, head: dict[str, Any]) -> Plan:
    """The plan from ``base`` (None: the project is new) to ``head``."""
    plan = Plan()
    if base is None:
        plan.new_project = True
        plan.steps_added = sorted(steps_of(head))
        plan.parameters = [
            ParameterChange(name, None, value, "added") for name, value in _defaults(head).items()
        ]
        return plan
    before, after = steps_of(base), steps_of(head)
    plan.steps_added = sorted(set(after) - set(before))
    plan.steps_removed = sorted(set(before) - set(after))
    for step in sorted(set(before) & set(after)):
        aspects = tuple(key for key in after[step] if before[step].get(key) != after[step][key])
        if aspects:
            plan.steps_changed.append(StepChange(step, aspects))
        if "image" in aspects:
            plan.images.append(ImageChange(step, before[step]["image"], after[step]["image"]))
    old, new = _defaults(base), _defaults(head)
    for name in sorted(set(old) | set(new)):
        if name not in old:
            plan.parameters.append(ParameterChange(name, None, new[name], "added"))
        elif name not in new:
            plan.parameters.append(ParameterChange(name, old[name], None, "removed"))
        elif old[name] != new[name]:
            plan.parameters.append(ParameterChange(name, old[name], new[name], "changed"))
    return plan
