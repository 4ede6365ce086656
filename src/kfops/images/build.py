"""``kfops build``: each step image looked up by its content hash, built only when the
registry lacks it, pushed, and its digest read back; and the compiled pipeline pinned
to those digests (``kfops compile --env``) or to local tags (``kfops run --docker``)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from kfops.errors import KfopsError, Problem
from kfops.images import plan as image_plan
from kfops.images.engine import Engine, PipSettings
from kfops.images.recipe import (
    BuildSpec,
    Inputs,
    pinned_base,
    repository,
    spec_for,
)
from kfops.images.registry import Reference, Registry
from kfops.project.model import Project

# Images of a project built without an environment (`kfops run --docker`) live only in
# the local engine, under this made-up registry name.
LOCAL_REGISTRY = "kfops.local"


@dataclass
class ImageResult:
    """What happened to one image."""

    name: str
    ref: str  # REGISTRY/PROJECT-NAME:HASH
    status: str  # "unchanged" | "built" | "pushed" | "missing" (a dry run's "would build")
    seconds: float = 0.0
    digest: str | None = None  # sha256:..., as the registry reports it
    source: str = ""

    @property
    def pinned(self) -> str:
        """``repo@sha256:...`` once pushed; the content-addressed tag before."""
        return f"{self.ref.rsplit(':', 1)[0]}@{self.digest}" if self.digest else self.ref

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ref": self.ref,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "digest": self.digest,
            "pinned": self.pinned,
            "source": self.source,
        }


@dataclass
class Prepared:
    """The images a compiled pipeline needs, resolved to build specs."""

    assignment: image_plan.Assignment
    specs: dict[str, BuildSpec]  # recipe name -> spec
    warnings: list[Problem] = field(default_factory=list)


def prepare(
    project: Project, ir: dict[str, Any], registry_prefix: str, registry: Registry
) -> Prepared:
    """Build specs for every image the pipeline's steps run in.

    Raises:
        InvalidProject: mlops.yaml gives one component two images.
        KfopsError: a base image cannot be found, or its registry refuses us.
    """
    import kfp

    assignment = image_plan.assign(project, ir)
    digests: dict[str, str] = {}
    for recipe in assignment.unique_recipes():
        if recipe.base is None or "@sha256:" in recipe.base or recipe.base in digests:
            continue
        try:
            found = registry.digest(recipe.base)
        except KfopsError as exc:
            exc.message = f"base image {recipe.base} of {_where(project, recipe)}: {exc.message}"
            exc.hint = (
                "check `base` (or the component's base_image), and the login for its registry"
            )
            raise
        if found is None:
            where = Reference.parse(recipe.base).display_host
            raise KfopsError(
                f"base image {recipe.base} of {_where(project, recipe)} cannot be pulled:"
                f" {where} has no such tag",
                "check the name and tag of `base` (or the component's base_image)",
            )
        digests[recipe.base] = found
    inputs = Inputs(kfp_version=kfp.__version__, base_digests=digests)
    specs = {
        recipe.name: spec_for(
            recipe, repository(registry_prefix, project.name, recipe.name), inputs
        )
        for recipe in assignment.unique_recipes()
    }
    warnings = _unbaked(project, assignment, specs)
    for recipe in assignment.unique_recipes():
        spec = specs[recipe.name]
        notes = list(spec.notes)
        code = project.pipeline.file
        context = spec.context.resolve() if spec.context is not None else None
        if (
            context is not None
            and code.is_relative_to(context)
            and code.relative_to(context).as_posix() in spec.sent
        ):
            notes.append(
                f"the build context holds the pipeline's code ({code.name}): a change to"
                " it rebuilds this image; add it to .dockerignore unless the image needs it"
            )
        warnings += [
            Problem(
                project.shown,
                recipe.mark.line,
                recipe.mark.column,
                f"image `{recipe.name}`: {note}",
                path=f"images.{recipe.name}",
                severity="warning",
            )
            for note in notes
        ]
    return Prepared(assignment, specs, warnings)


def _where(project: Project, recipe: Any) -> str:
    if recipe.implicit:
        return f"a component ({recipe.name})"
    return f"image `{recipe.name}` ({project.shown}:{recipe.mark.line})"


def build(
    project: Project,
    ir: dict[str, Any],
    registry_prefix: str | None,
    *,
    push: bool,
    network: str | None = None,
    console: Console | None = None,
    registry: Registry | None = None,
    engine: Engine | None = None,
    dry_run: bool = False,
) -> tuple[list[ImageResult], Prepared]:
    """Make every image the pipeline needs exist: in the registry (``push``) or the
    local engine. An image already there is not rebuilt. ``dry_run`` only looks them
    up: what is missing is reported as "missing", and nothing is built or pushed.

    Raises:
        KfopsError: the engine, a registry or a build failed; what was pushed before the
            failure is said in the message's hint.
    """
    console = console or Console(stderr=True, highlight=False)
    registry = registry or Registry()
    local = registry_prefix is None
    prepared = prepare(project, ir, registry_prefix or LOCAL_REGISTRY, registry)
    for warning in prepared.warnings:
        console.print(warning.render(), markup=False, soft_wrap=True)
    pip = PipSettings.from_environment()
    labels = _labels(project)
    results: list[ImageResult] = []
    checked_engine = False
    for name, spec in sorted(prepared.specs.items()):
        started = time.monotonic()
        digest = None if local else _lookup(registry, spec.ref, push, console)
        if digest is not None or (not push and engine_has(engine, spec.ref)):
            results.append(
                ImageResult(
                    name, spec.ref, "unchanged", time.monotonic() - started, digest, spec.source
                )
            )
            _report(console, results[-1])
            continue
        if dry_run:
            results.append(ImageResult(name, spec.ref, "missing", 0.0, None, spec.source))
            _report(console, results[-1])
            continue
        engine = engine or Engine()
        if not checked_engine:
            engine.check()
            checked_engine = True
        console.print(f"  [dim]...[/] building {name} [dim]({spec.source})[/]")
        try:
            engine.build(
                spec,
                labels={
                    **labels,
                    "dev.kfops.image": name,
                    "dev.kfops.content-hash": spec.content_hash,
                },
                network=network,
                pip=pip,
                on_line=_progress(console),
            )
            if spec.context is not None:
                _check_kfp(engine, spec, console)
            status = "built"
            if push:
                engine.push(spec.ref)
                digest = registry.digest(spec.ref)
                if digest is None:
                    raise KfopsError(
                        f"pushed {spec.ref}, but the registry does not list it",
                        "check the registry's storage; nothing else was pushed",
                    )
                status = "pushed"
        except KfopsError as exc:
            done = [f"{r.name} ({r.status})" for r in results if r.status != "unchanged"]
            said = "images built before it: " + (", ".join(done) if done else "none")
            exc.hint = f"{exc.hint}; {said}" if exc.hint else said
            raise
        results.append(
            ImageResult(name, spec.ref, status, time.monotonic() - started, digest, spec.source)
        )
        _report(console, results[-1])
    return results, prepared


def _lookup(registry: Registry, ref: str, push: bool, console: Console) -> str | None:
    """The registry's digest for ``ref``; without a push, a registry that wants a login
    we lack (a fork's pull request) only means the image is built here to check it."""
    try:
        return registry.digest(ref)
    except KfopsError as exc:
        if push or "(HTTP 40" not in exc.message:
            raise
        console.print(f"  [yellow]notice:[/] {exc.message}; building it here (no push)")
        return None


def _check_kfp(engine: Engine, spec: BuildSpec, console: Console) -> None:
    """A Dockerfile image must hold kfp, or every step in it dies at start."""
    import kfp

    found = engine.kfp_version(spec.ref)
    if found is None:
        raise KfopsError(
            f"image `{spec.name}` ({spec.source}) was built, but it has no kfp (or no"
            " python3): its steps would fail with `No module named 'kfp'`; nothing was pushed",
            "add to the Dockerfile: `ARG KFOPS_KFP_VERSION` and"
            " `RUN python3 -m pip install --no-deps kfp==$KFOPS_KFP_VERSION`",
        )
    if found != kfp.__version__:
        console.print(
            f"  [yellow]warning:[/] image `{spec.name}` has kfp {found}; the pipeline is"
            f" compiled with kfp {kfp.__version__} (use the KFOPS_KFP_VERSION build argument)"
        )


def engine_has(engine: Engine | None, ref: str) -> bool:
    """Whether the local engine already holds ``ref`` (False when no engine is up)."""
    try:
        return (engine or Engine()).has_image(ref)
    except KfopsError:
        return False


def pinned(
    project: Project,
    ir_text: str,
    ir: dict[str, Any],
    registry_prefix: str,
    registry: Registry | None = None,
    *,
    environment: str = "ENV",
    built: tuple[Prepared, list[ImageResult]] | None = None,
) -> tuple[str, list[Problem]]:
    """The IR with every step image written as ``repo@sha256:...``, and the warnings
    about the images (packages a step asks for that its image lacks, build contexts).

    ``built`` (what ``build`` returned) saves looking the images up again.

    Raises:
        KfopsError: an image is not in the registry yet (with the command that builds
            it), or a container component's own image cannot be resolved.
    """
    registry = registry or Registry()
    if built is None:
        prepared = prepare(project, ir, registry_prefix, registry)
        digests = {name: registry.digest(spec.ref) for name, spec in prepared.specs.items()}
    else:
        prepared = built[0]
        digests = {result.name: result.digest for result in built[1]}
    refs: dict[str, str] = {}
    for name, spec in prepared.specs.items():
        digest = digests.get(name)
        if digest is None:
            raise KfopsError(
                f"image `{spec.name}` ({spec.source}) is not built yet: {spec.ref} is not in"
                " the registry",
                f"build and push it first: `kfops build --env {environment}`",
            )
        refs[spec.name] = f"{spec.repository}@{digest}"
    images = {label: refs[recipe.name] for label, recipe in prepared.assignment.recipes.items()}
    for label, image in prepared.assignment.external.items():
        images[label] = image if "@sha256:" in image else _digest_of(image, registry, label)
    return image_plan.pin(ir_text, images, set(prepared.assignment.recipes)), prepared.warnings


def local_ir(prepared: Prepared, ir_text: str) -> str:
    """The IR with each step in its locally built image, by content-addressed tag."""
    images = {
        label: prepared.specs[recipe.name].ref
        for label, recipe in prepared.assignment.recipes.items()
    }
    return image_plan.pin(ir_text, images, set(images))


def write_record(project: Project, environment: str, results: list[ImageResult]) -> Path:
    """``.kfops/images/ENV.json``: what the last build found or pushed."""
    target = project.root / ".kfops" / "images" / f"{environment}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(
        json.dumps([r.to_json() for r in results], indent=2, sort_keys=True) + "\n",
        encoding="utf-8",
    )
    return target


def _digest_of(image: str, registry: Registry, label: str) -> str:
    digest = registry.digest(image)
    if digest is None:
        raise KfopsError(
            f"the image {image} of {label.removeprefix('exec-')} (a container component)"
            " is not in its registry, so it cannot be pinned by digest",
            "check the component's image name and tag",
        )
    return pinned_base(image, digest)


def _unbaked(
    project: Project, assignment: image_plan.Assignment, specs: dict[str, BuildSpec]
) -> list[Problem]:
    """Warnings for components whose packages_to_install the image they run in lacks:
    with a kfops image, nothing is installed when a step starts."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    def names(requirements: tuple[str, ...]) -> set[str]:
        found: set[str] = set()
        for text in requirements:
            try:
                found.add(canonicalize_name(Requirement(text).name))
            except InvalidRequirement:
                found.add(canonicalize_name(text))
        return found

    warnings = []
    for label, recipe in sorted(assignment.recipes.items()):
        spec = specs[recipe.name]
        if recipe.implicit or recipe.dockerfile is not None:
            continue
        executor = assignment.executors[label]
        missing = sorted(names(executor.packages) - names(spec.packages))
        if missing:
            warnings.append(
                Problem(
                    project.shown,
                    recipe.mark.line,
                    recipe.mark.column,
                    f"step {', '.join(executor.tasks) or label} asks for "
                    + ", ".join(missing)
                    + f" (packages_to_install), which image `{recipe.name}` does not list;"
                    " steps in a kfops image install nothing when they start",
                    f"add them to images.{recipe.name}",
                    f"images.{recipe.name}",
                    severity="warning",
                )
            )
    return warnings


def _labels(project: Project) -> dict[str, str]:
    """OCI labels that say where an image came from (the commit that first built it)."""
    labels = {"dev.kfops.project": project.name}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=project.root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        labels["org.opencontainers.image.revision"] = commit
    except (OSError, subprocess.CalledProcessError):
        pass
    server, repo = os.environ.get("GITHUB_SERVER_URL"), os.environ.get("GITHUB_REPOSITORY")
    if server and repo:
        labels["org.opencontainers.image.source"] = f"{server}/{repo}"
    return labels


def _progress(console: Console) -> Any:
    """BuildKit's step headers as they start (``#5 [2/3] RUN ...``), dimmed."""
    import re

    from rich.markup import escape

    header = re.compile(r"^#\d+ \[\d+/\d+\] ")

    def on_line(line: str) -> None:
        if header.match(line):
            shown = line if len(line) <= 100 else line[:99] + "…"
            console.print(f"      [dim]{escape(shown)}[/]", soft_wrap=True)

    return on_line


def _report(console: Console, result: ImageResult) -> None:
    colour = {"unchanged": "dim", "built": "green", "pushed": "green", "missing": "yellow"}
    status = "to build" if result.status == "missing" else result.status
    console.print(
        f"  [{colour[result.status]}]{status:<9}[/] {result.name}  {result.pinned}"
        f"  [dim]{result.seconds:.1f}s[/]",
        highlight=False,
        soft_wrap=True,
    )
