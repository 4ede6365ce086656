"""The validated project, as frozen dataclasses. Built only by ``config.load``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfops.document import JsonPath, Mark


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
class Project:
    """An mlops.yaml that passed validation."""

    root: Path  # the folder holding mlops.yaml
    config_file: Path
    shown: str  # the config file as the user named it, for messages
    name: str
    description: str | None
    pipeline: PipelineRef
    parameters: dict[str, Any] = field(default_factory=dict)
    parameter_marks: dict[str, Mark] = field(default_factory=dict)
    steps: tuple[StepOverride, ...] = ()

    def ignored_locally(self) -> list[str]:
        """Step settings in mlops.yaml that the local runner cannot apply."""
        notes = []
        for step in self.steps:
            kinds = []
            if step.resources is not None:
                kinds.append("resources")
            if step.retries is not None:
                kinds.append("retries")
            if step.cache is not None:
                kinds.append("cache")
            if kinds:
                notes.append(f"{step.name}: {', '.join(kinds)}")
        return notes


def path_mark(values: dict[JsonPath, Mark], path: JsonPath) -> Mark:
    return values.get(path, Mark(1, 1))
