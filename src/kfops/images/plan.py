"""Which image each step runs in, and the compiled pipeline rewritten to use it.

Every executor of the compiled IR gets an image: the one mlops.yaml names for its task
(``pipeline.steps.NAME.image``, then ``pipeline.image``), the ``images:`` entry a
notebook's ``image:`` tag or base image names, or else an implicit recipe made from the
component's own base image and ``packages_to_install``. Steps in a kfops image drop
KFP's ``pip install`` preamble: the image holds their packages and kfp, so nothing is
installed when a step starts. Step code stays in the IR, so a change to one step
changes only that step's task spec.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from kfops.errors import InvalidProject, Problem
from kfops.project.document import Mark
from kfops.project.model import ImageRecipe, Project

_QUOTED = re.compile(r"'([^']*)'")


@dataclass(frozen=True)
class Executor:
    """One executor of the compiled pipeline, as far as images are concerned."""

    label: str  # exec-train-model
    tasks: tuple[str, ...]  # the tasks that run it
    image: str  # as written in the IR
    packages: tuple[str, ...] = ()  # the component's packages_to_install
    lightweight: bool = False  # KFP's Python-function wrapper (its preamble can go)


@dataclass
class Assignment:
    """Each executor's recipe (or, for a container component, its image kept as is)."""

    recipes: dict[str, ImageRecipe] = field(default_factory=dict)  # executor label -> recipe
    external: dict[str, str] = field(default_factory=dict)  # executor label -> its own image
    executors: dict[str, Executor] = field(default_factory=dict)

    def unique_recipes(self) -> list[ImageRecipe]:
        seen: dict[str, ImageRecipe] = {}
        for recipe in self.recipes.values():
            seen.setdefault(recipe.name, recipe)
        return sorted(seen.values(), key=lambda r: r.name)


def executors(ir: dict[str, Any]) -> dict[str, Executor]:
    """The IR's container executors, with the tasks (at any depth) that run each."""
    components = ir.get("components", {})
    tasks_of: dict[str, list[str]] = {}

    def walk(dag: dict[str, Any]) -> None:
        for task_name, task in dag.get("tasks", {}).items():
            component = components.get(task.get("componentRef", {}).get("name", ""), {})
            if "executorLabel" in component:
                tasks_of.setdefault(component["executorLabel"], []).append(task_name)
            if "dag" in component:
                walk(component["dag"])

    walk(ir.get("root", {}).get("dag", {}))
    found = {}
    for label, spec in sorted(ir.get("deploymentSpec", {}).get("executors", {}).items()):
        container = spec.get("container")
        if container is None:
            continue  # an importer or resolver: no image
        command = container.get("command", [])
        found[label] = Executor(
            label=label,
            tasks=tuple(sorted(tasks_of.get(label, []))),
            image=container.get("image", ""),
            packages=_packages(command),
            lightweight=_is_lightweight(command),
        )
    return found


def assign(project: Project, ir: dict[str, Any]) -> Assignment:
    """Each executor's image recipe, from mlops.yaml, the notebook's tags or the component.

    Raises:
        InvalidProject: tasks that share one component are given different images.
    """
    named = {recipe.name: recipe for recipe in project.images}
    by_step = {step.name: step for step in project.steps if step.image}
    result = Assignment(executors=executors(ir))
    implicit: dict[tuple[str, tuple[str, ...]], ImageRecipe] = {}
    problems = []
    for label, executor in result.executors.items():
        chosen = {by_step[t].image for t in executor.tasks if t in by_step}
        if len(chosen) > 1:
            problems.append(_shared_component(project, executor, by_step))
            continue
        # pipeline.image is for Python steps; a container component keeps its own image
        # unless its step names one.
        name = next(iter(chosen), None) or (project.image if executor.lightweight else None)
        if name is None and executor.image in named:
            name = executor.image  # a notebook's image: tag or base_image names it
        if name is not None:
            result.recipes[label] = named[name]
        elif executor.lightweight:
            key = (executor.image, executor.packages)
            if key not in implicit:
                implicit[key] = ImageRecipe(
                    name=label.removeprefix("exec-"),
                    mark=Mark(0, 0),
                    base=executor.image,
                    packages=executor.packages,
                    implicit=True,
                )
            result.recipes[label] = implicit[key]
        else:
            result.external[label] = executor.image
    if problems:
        raise InvalidProject.of(problems)
    return result


def pin(ir_text: str, images: dict[str, str], strip: set[str]) -> str:
    """The IR with each executor's image replaced (``images``: label -> ref) and KFP's
    ``pip install`` preamble removed from the executors in ``strip``.

    The text is written as KFP writes it (its header comments, then the documents with
    sorted keys), so a pinned pipeline reads like a compiled one.
    """
    import yaml

    header_lines = []
    for line in ir_text.splitlines(keepends=True):
        if not line.startswith("#"):
            break
        header_lines.append(line)
    documents = list(yaml.load_all(ir_text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
    executors_spec = documents[0].get("deploymentSpec", {}).get("executors", {})
    for label, ref in images.items():
        container = executors_spec[label]["container"]
        container["image"] = ref
        if label in strip and _is_lightweight(container.get("command", [])):
            command = container["command"]
            if command[:2] == ["sh", "-c"] and "pip install" in command[2]:
                container["command"] = command[3:]
    return "".join(header_lines) + yaml.dump_all(documents, sort_keys=True)


def _is_lightweight(command: list[str]) -> bool:
    """KFP's Python-function command, with or without its pip preamble."""
    body = command[3:] if command[:2] == ["sh", "-c"] else command
    return body[:2] == ["sh", "-ec"] and "kfp.dsl.executor_main" in (body[2:3] or [""])[0]


def _packages(command: list[str]) -> tuple[str, ...]:
    """``packages_to_install`` as KFP wrote them into the preamble (kfp's own install,
    which KFP adds, left out)."""
    if command[:2] != ["sh", "-c"] or len(command) < 3 or "pip install" not in command[2]:
        return ()
    found = []
    for install in command[2].split("&&"):
        words = _QUOTED.findall(install)
        if any(w.startswith("kfp==") for w in words) and "--no-deps" in words:
            continue  # the kfp install KFP injects
        found += [w for w in words if not w.startswith("-")]
    return tuple(found)


def _shared_component(project: Project, executor: Executor, by_step: dict[str, Any]) -> Problem:
    steps = [by_step[t] for t in executor.tasks if t in by_step]
    first = steps[0]
    return Problem(
        project.shown,
        first.mark.line,
        first.mark.column,
        "tasks " + ", ".join(f"`{t}`" for t in executor.tasks) + " run the same component"
        " and must share one image; mlops.yaml gives them "
        + ", ".join(sorted({f"`{s.image}`" for s in steps})),
        "give these steps the same `image`, or make them different components",
        f"pipeline.steps.{first.name}.image",
    )
