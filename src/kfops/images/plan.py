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

import hashlib
import json
import shlex
from dataclasses import dataclass, field
from typing import Any

from kfops.project.document import Mark
from kfops.project.model import ImageRecipe, Project


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
    """Each executor's image recipe.

    Precedence: the step's ``image`` in mlops.yaml; an image the code names (a
    notebook's ``image:`` tag or base image, a component's base_image, equal to an
    ``images:`` key); ``pipeline.image`` (Python steps only: a container component keeps
    its own image unless its step names one); else an implicit recipe from the
    component's own base image and packages_to_install, named by its content so that
    it never clashes with an ``images:`` key and stays the same when components are added.
    """
    named = {recipe.name: recipe for recipe in project.images}
    by_step = {step.name: step.image for step in project.steps if step.image}
    result = Assignment(executors=executors(ir))
    for label, executor in result.executors.items():
        # KFP 2.17 gives every task an executor of its own (exec-x, exec-x-2, ...).
        chosen = sorted(by_step[t] for t in executor.tasks if t in by_step)
        name = chosen[0] if chosen else None
        if name is None and executor.image in named:
            name = executor.image
        if name is None and executor.lightweight:
            name = project.image
        if name is not None:
            result.recipes[label] = named[name]
        elif executor.lightweight:
            result.recipes[label] = implicit_recipe(executor)
        else:
            result.external[label] = executor.image
    return result


def implicit_recipe(executor: Executor) -> ImageRecipe:
    """The recipe a component's own base image and packages_to_install make."""
    key = json.dumps([executor.image, executor.packages]).encode()
    return ImageRecipe(
        name="py-" + hashlib.sha256(key).hexdigest()[:12],
        mark=Mark(0, 0),
        base=executor.image,
        packages=executor.packages,
        implicit=True,
    )


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
    which KFP adds, left out). KFP quotes each with ``repr()``; shell words read them
    back, quotes inside a requirement (``pandas; python_version>='3.8'``) included."""
    if command[:2] != ["sh", "-c"] or len(command) < 3 or "pip install" not in command[2]:
        return ()
    found: list[str] = []
    for line in command[2].splitlines():
        if "pip install" not in line:
            continue
        for install in line.split(" && "):
            try:
                words = shlex.split(install)
            except ValueError:
                continue
            if "install" not in words:
                continue
            words = words[words.index("install") + 1 :]
            if any(w.startswith("kfp==") for w in words) and "--no-deps" in words:
                continue  # the kfp install KFP injects
            skip = False
            for word in words:
                if skip:
                    skip = False
                elif word in ("--index-url", "--extra-index-url", "--trusted-host", "-i"):
                    skip = True  # the component's own index: pip's settings are used instead
                elif not word.startswith("-") and word != '"$0"':
                    found.append(word)
    return tuple(found)
