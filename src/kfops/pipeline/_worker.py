"""Child process of ``kfops run``: runs a compiled pipeline with kfp.local.

It runs apart from the CLI so that user code and kfp's global state cannot disturb it,
and reports each step's start and end as one JSON line on stdout behind ``EVENT_PREFIX``;
everything else it prints is the steps' own output.

Usage: python -m kfops.pipeline._worker PIPELINE_YAML ARGUMENTS_JSON PIPELINE_ROOT
       CACHE_ROOT|- [RUNNER]

RUNNER is ``-`` (steps as subprocesses here) or a JSON object
``{"kind": "docker", ...}``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import Any

EVENT_PREFIX = "\x1ekfops-event "


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(EVENT_PREFIX + json.dumps(event, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def _serialise(value: Any) -> Any:
    from kfp import dsl

    if isinstance(value, dsl.Artifact):
        return {
            "artifact": value.schema_title,
            "uri": value.uri,
            "metadata": dict(value.metadata),
        }
    if isinstance(value, list):
        return [_serialise(v) for v in value]
    return value


_METRICS = {"system.Metrics", "system.ClassificationMetrics", "system.SlicedClassificationMetrics"}


def _touch_metrics(outputs: dict[str, Any]) -> None:
    """Metrics live in an artifact's metadata, and no file is written for them; kfp.local's
    cache takes the missing file for a lost output and reruns the step every time. An
    empty file makes the step cacheable like any other."""
    from kfp import dsl

    for value in outputs.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dsl.Artifact) and item.schema_title in _METRICS:
                path = Path(item.path)
                if not path.exists():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.touch()


def _trace_tasks() -> None:
    """Wrap kfp.local's per-task executor to report starts, ends and cache hits.

    kfp 2.17's orchestrators call ``task_executor.execute_single_task`` through the
    module attribute, so replacing it is enough; kfops pins kfp to 2.17.x for this.
    """
    from kfp.local import cache
    from kfp.local.orchestrator import task_executor

    original = task_executor.execute_single_task
    original_get = cache.LocalCache.get
    hits: set[str] = set()

    def get(self: Any, key: str) -> Any:
        found = original_get(self, key)
        if found is not None:
            hits.add(key)
        return found

    def execute_single_task(task_name: str, *args: Any, **kwargs: Any) -> Any:
        hits.clear()
        started = time.monotonic()
        emit({"event": "start", "task": task_name})
        outputs, status = original(task_name, *args, **kwargs)
        if status.name == "SUCCESS":
            _touch_metrics(outputs or {})
        emit(
            {
                "event": "end",
                "task": task_name,
                "status": status.name,
                "cached": bool(hits),
                "seconds": round(time.monotonic() - started, 3),
                "outputs": {k: _serialise(v) for k, v in (outputs or {}).items()},
            }
        )
        return outputs, status

    cache.LocalCache.get = get
    task_executor.execute_single_task = execute_single_task


_PIP_INSTALL = re.compile(
    r"(?:PIP_DISABLE_PIP_VERSION_CHECK=1 )?\S+ -m pip install --quiet --no-warn-script-location"
    r"(?P<args>(?: +'[^']*')+) *&& *"
)


def _satisfied(requirements: list[str]) -> bool:
    """Whether every requirement is already installed here (markers honoured)."""
    from importlib import metadata

    from packaging.requirements import InvalidRequirement, Requirement

    for text in requirements:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            return False
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            return False
        if not requirement.specifier.contains(installed, prereleases=True):
            return False
    return True


def skip_satisfied_installs(command: list[str]) -> list[str]:
    """A lightweight component's command without its `pip install` of packages that this
    environment already has (kfp.local runs steps here, so they would be no-ops; each
    costs a second per step). Installs that would change something are kept."""

    def drop(match: re.Match[str]) -> str:
        words = shlex.split(match.group("args"))
        return "" if _satisfied([w for w in words if not w.startswith("-")]) else match.group(0)

    return [_PIP_INSTALL.sub(drop, part) if "pip install" in part else part for part in command]


def _fast_installs() -> None:
    from kfp.local import subprocess_task_handler

    original = subprocess_task_handler.run_local_subprocess

    def run_local_subprocess(
        full_command: list[str], env_vars: dict[str, str] | None = None
    ) -> int:
        result: int = original(
            full_command=skip_satisfied_installs(full_command), env_vars=env_vars
        )
        return result

    subprocess_task_handler.run_local_subprocess = run_local_subprocess


def _runner(argument: str) -> Any:
    """kfp.local's runner: subprocesses here, or each step in its image (DockerRunner)."""
    import kfp.local

    if argument == "-":
        return kfp.local.SubprocessRunner(use_venv=False)
    from docker.types import Mount

    spec = json.loads(argument)
    workdir = spec["workdir"]
    options: dict[str, Any] = {
        # The project's files at the same path, read-only, as the step's working folder
        # (a notebook's relative paths resolve as in Jupyter); kfp.local mounts the
        # pipeline root inside it, writable.
        "mounts": [Mount(target=workdir, source=workdir, type="bind", read_only=True)],
        "working_dir": workdir,
    }
    if spec.get("network"):
        options["network_mode"] = spec["network"]
    return kfp.local.DockerRunner(**options)


def main(argv: list[str]) -> int:
    pipeline_yaml, arguments_json, pipeline_root, cache_root = argv[:4]
    runner = argv[4] if len(argv) > 4 else "-"
    # kfp warns once per task about settings the local runner ignores; kfops lists them
    # once itself.
    warnings.filterwarnings("ignore", category=UserWarning)
    import kfp.local
    from kfp import components

    _trace_tasks()
    if os.environ.get("KFOPS_LOCAL_PIP") != "always" and runner == "-":
        _fast_installs()
    kfp.local.init(
        runner=_runner(runner),
        pipeline_root=pipeline_root,
        raise_on_error=False,
        enable_caching=cache_root != "-",
        cache_root=None if cache_root == "-" else cache_root,
    )
    pipeline = components.load_component_from_file(pipeline_yaml)
    arguments = json.loads(Path(arguments_json).read_text(encoding="utf-8"))
    task = pipeline(**arguments)
    outputs = getattr(task, "outputs", None) or {}
    emit({"event": "done", "outputs": {k: _serialise(v) for k, v in outputs.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
