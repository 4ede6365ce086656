"""The validated project, as frozen dataclasses. Built only by ``config.load``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfops.errors import Problem
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

    @property
    def workdir(self) -> Path:
        """Where steps run locally: a notebook's folder (as in Jupyter), else the project."""
        if isinstance(self.pipeline, NotebookRef):
            return self.pipeline.file.parent
        return self.root
