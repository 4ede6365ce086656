"""The validated project, as frozen dataclasses. Built only by ``config.load``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfops.errors import EXIT_USAGE, KfopsError, Problem, did_you_mean
from kfops.project.document import Mark


@dataclass(frozen=True)
class Resources:
    cpu: str | None = None
    memory: str | None = None
    gpu: int | None = None


@dataclass(frozen=True)
class StepOverride:
    """Settings from ``pipeline.steps.NAME``; ``None`` means "leave the pipeline's own"."""

    name: str
    mark: Mark
    resources: Resources | None = None
    retries: int | None = None
    cache: bool | None = None
    env: tuple[tuple[str, str], ...] = ()
    image: str | None = None  # a name from ``images:``


@dataclass(frozen=True)
class ImageRecipe:
    """``images.NAME``: a recipe (``base`` plus packages) or the user's own Dockerfile.

    An implicit recipe comes from a component's own ``base_image`` and
    ``packages_to_install``; it has no place in mlops.yaml (its mark is 0:0).
    """

    name: str
    mark: Mark
    base: str | None = None
    requirements: Path | None = None  # absolute
    packages: tuple[str, ...] = ()
    system_packages: tuple[str, ...] = ()
    dockerfile: Path | None = None  # absolute
    context: Path | None = None  # absolute; a Dockerfile image's build context
    build_args: tuple[tuple[str, str], ...] = ()
    implicit: bool = False


@dataclass(frozen=True)
class KfpTarget:
    """``environments.NAME.kfp``: the Kubeflow Pipelines API an environment delivers to."""

    host: str
    mark: Mark
    namespace: str | None = None
    experiment: str | None = None
    token_env: str | None = None  # the variable holding the bearer token; never the token


@dataclass(frozen=True)
class Environment:
    """``environments.NAME``: one place the project is delivered to."""

    name: str
    mark: Mark
    registry: str | None = None
    kfp: KfpTarget | None = None


@dataclass(frozen=True)
class Schedule:
    """``schedules[]``: one recurring run on an environment's Kubeflow Pipelines."""

    name: str
    cron: str  # 5-field Unix cron, as written
    environment: str
    mark: Mark
    parameters: tuple[tuple[str, Any], ...] = ()
    enabled: bool = True
    max_concurrency: int = 1

    @property
    def kfp_cron(self) -> str:
        """KFP's 6-field, seconds-first form."""
        return "0 " + " ".join(self.cron.split())


@dataclass(frozen=True)
class PipelineRef:
    """``pipeline.python``: a @dsl.pipeline function in a Python file."""

    file: Path  # absolute
    function: str
    mark: Mark


@dataclass(frozen=True)
class Trigger:
    """One entry of ``on:``: which events count, and whether CI also runs the pipeline."""

    branches: tuple[str, ...] = ()  # globs; empty means every branch
    pattern: str | None = None  # tags only
    run: bool = False
    environment: str | None = None  # whose images are built (pushed on push and tag)
    build: bool = False  # pull requests: build the environment's images, without pushing
    apply: bool = False  # pushes and tags: apply to the environment's Kubeflow Pipelines


@dataclass(frozen=True)
class Triggers:
    """The ``on:`` section. Without it: validate and compile on pull requests and pushes."""

    pull_request: Trigger | None = Trigger()
    push: Trigger | None = Trigger()
    tag: Trigger | None = None
    declared: bool = False


@dataclass(frozen=True)
class NotebookRef:
    """``pipeline.notebook``: a Jupyter notebook with Kale cell tags."""

    file: Path  # absolute
    mark: Mark


@dataclass(frozen=True)
class Project:
    """An mlops.yaml that passed validation."""

    root: Path  # the folder holding mlops.yaml
    config_file: Path
    shown: str  # the config file as the user named it, for messages
    name: str
    description: str | None
    pipeline: PipelineRef | NotebookRef
    parameters: dict[str, Any] = field(default_factory=dict)
    parameter_marks: dict[str, Mark] = field(default_factory=dict)
    steps: tuple[StepOverride, ...] = ()
    warnings: tuple[Problem, ...] = ()
    triggers: Triggers = Triggers()
    images: tuple[ImageRecipe, ...] = ()
    image: str | None = None  # ``pipeline.image``: the default image's name
    environments: tuple[Environment, ...] = ()
    schedules: tuple[Schedule, ...] = ()

    def environment(self, name: str) -> Environment:
        """The environment called ``name``.

        Raises:
            KfopsError: (exit 2) no such environment, with did-you-mean.
        """
        for environment in self.environments:
            if environment.name == name:
                return environment
        hint = did_you_mean(
            name,
            (e.name for e in self.environments),
            f"environments in {self.shown}: ",
            f"add `environments: {{{name}: {{registry: HOST/PATH}}}}` to {self.shown}",
        )
        raise KfopsError(
            f"--env {name}: {self.shown} has no environment `{name}`", hint, exit_code=EXIT_USAGE
        )

    @property
    def workdir(self) -> Path:
        """Where steps run locally: a notebook's folder (as in Jupyter), else the project."""
        if isinstance(self.pipeline, NotebookRef):
            return self.pipeline.file.parent
        return self.root
