"""Child process of ``kfops run``: runs a compiled pipeline with kfp.local.

It runs apart from the CLI so that user code and kfp's global state cannot disturb it,
and reports each step's start and end as one JSON line on stdout behind ``EVENT_PREFIX``;
everything else it prints is the steps' own output.

Usage: python -m kfops.pipeline._worker PIPELINE_YAML ARGUMENTS_JSON PIPELINE_ROOT
       CACHE_ROOT|- [RUNNER [JOBS [EARLY]]]

RUNNER is ``-`` (steps as subprocesses here) or a JSON object
``{"kind": "docker", ...}``. JOBS is how many independent tasks run at once (1, the
default: one at a time, as kfp.local does). EARLY is ``-`` or a fork server that
``kfops run`` launched before compiling, as ``{"socket": PATH, "fd": READY_FD,
"modules": [...]}``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
import types
import warnings
from pathlib import Path
from typing import Any

from kfops.pipeline import _dag, _forkserver

EVENT_PREFIX = "\x1ekfops-event "


def emit(event: dict[str, Any]) -> None:
    with _PRINT_LOCK:
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


# The task being run, as its path from the pipeline's root: kfp.local runs the
# iterations of a ParallelFor in threads, so each thread (context) has its own.
_PATH: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("kfops_path", default=())
_LOG: contextvars.ContextVar[Path | None] = contextvars.ContextVar("kfops_log", default=None)
_HITS: contextvars.ContextVar[set[str]] = contextvars.ContextVar("kfops_hits")
_PRINT_LOCK = threading.Lock()
_ITERATION = re.compile(r"^(?P<loop>.+)-iteration-(?P<index>\d+)$")


def task_path(parts: tuple[str, ...]) -> tuple[str, str]:
    """(the task's name in a run, e.g. ``for-loop-2[1]/train``; its path in the IR, as
    ``kfops.pipeline.diff.steps_of`` names it, e.g. ``for-loop-2/train``)."""
    shown, base = [], []
    for part in parts:
        match = _ITERATION.match(part)
        if match:
            shown.append(f"{match['loop']}[{match['index']}]")
            base.append(match["loop"])
        else:
            shown.append(part)
            base.append(part)
    return "/".join(shown), "/".join(base)


class _ContextThreadPool(concurrent.futures.ThreadPoolExecutor):
    """A thread pool whose tasks see the submitting thread's context (the task path)."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        context = contextvars.copy_context()
        return super().submit(context.run, fn, *args, **kwargs)


def _trace_tasks(logs: Path | None) -> None:
    """Wrap kfp.local's per-task executor to report starts, ends and cache hits, each
    task under its full path, with its output in a log file of its own (under
    ``logs``, when given).

    kfp 2.17's orchestrators call ``task_executor.execute_single_task`` and
    ``enhanced_dag_orchestrator.execute_task`` through their module attributes, so
    replacing those is enough; kfops pins kfp to 2.17.x for this.
    """
    from kfp.local import cache
    from kfp.local.orchestrator import enhanced_dag_orchestrator, task_executor

    original = task_executor.execute_single_task
    original_task = enhanced_dag_orchestrator.execute_task
    original_get = cache.LocalCache.get
    enhanced_dag_orchestrator.concurrent = types.SimpleNamespace(
        futures=types.SimpleNamespace(
            ThreadPoolExecutor=_ContextThreadPool,
            as_completed=concurrent.futures.as_completed,
        )
    )

    def get(self: Any, key: str) -> Any:
        found = original_get(self, key)
        if found is not None:
            _HITS.get(set()).add(key)
        return found

    def execute_task(task_name: str, *args: Any, **kwargs: Any) -> Any:
        token = _PATH.set((*_PATH.get(), task_name))
        try:
            return original_task(task_name, *args, **kwargs)
        finally:
            _PATH.reset(token)

    def execute_single_task(task_name: str, *args: Any, **kwargs: Any) -> Any:
        parts = _PATH.get()
        if parts[-1:] != (task_name,):
            parts = (*parts, task_name)
        shown, base = task_path(parts)
        hits: set[str] = set()
        _HITS.set(hits)
        log = logs / f"{shown}.log" if logs is not None else None
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text("", encoding="utf-8")
        _LOG.set(log)
        _RUNNER.set("")  # set when the step's process starts (not for a cached step)
        started = time.monotonic()
        emit({"event": "start", "task": shown, "path": base})
        outputs, status = original(task_name, *args, **kwargs)
        if status.name == "SUCCESS":
            _touch_metrics(outputs or {})
        emit(
            {
                "event": "end",
                "task": shown,
                "path": base,
                "status": status.name,
                "cached": bool(hits),
                "seconds": round(time.monotonic() - started, 3),
                "outputs": {k: _serialise(v) for k, v in (outputs or {}).items()},
                # only a step run here has its output in its own log; in a container
                # (DockerRunner) it comes through kfp.local's streamed logs
                "log": str(log) if log is not None and _RUNNER.get() else None,
                "runner": _RUNNER.get(),
            }
        )
        return outputs, status

    cache.LocalCache.get = get
    task_executor.execute_single_task = execute_single_task
    enhanced_dag_orchestrator.execute_task = execute_task


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


_RUNNER: contextvars.ContextVar[str] = contextvars.ContextVar("kfops_runner", default="")


class _Forks:
    """The fork server, started when the first step actually runs (a fully cached
    re-run never starts it), and whether starting it failed."""

    def __init__(self, modules: list[str], early: dict[str, Any] | None = None) -> None:
        self.modules = modules
        self.server: _forkserver.ForkServer | None = None
        self.failed = False
        self.lock = threading.Lock()
        self.folder: str | None = None
        # a server that `kfops run --no-cache` launched before compiling, used when it
        # imports exactly what this one would
        self.early = early if early is not None and early["modules"] == modules else None

    def get(self) -> _forkserver.ForkServer | None:
        with self.lock:
            if self.server is None and self.early is not None:
                early, self.early = self.early, None
                self.server = _forkserver.ForkServer.adopt(early["fd"], Path(early["socket"]))
            if self.server is None and not self.failed:
                import tempfile

                self.folder = tempfile.mkdtemp(prefix="kfops-fork-")
                self.server = _forkserver.ForkServer.start(self.modules, Path(self.folder))
                self.failed = self.server is None
            return self.server

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self.folder is not None:
            import shutil

            shutil.rmtree(self.folder, ignore_errors=True)


def _run_steps(fast_installs: bool, forks: _Forks | None) -> None:
    """Run each step's process as kfp.local does, its output also kept in the task's
    own log file, and (with ``fast_installs``) without `pip install`s of packages that
    this environment already has; as a fork of the fork server where that is safe."""
    from kfp.local import subprocess_task_handler

    def write(line: str, out: Any) -> None:
        if out is not None:
            out.write(line)
        with _PRINT_LOCK:
            sys.stdout.write(line)

    def run_local_subprocess(
        full_command: list[str], env_vars: dict[str, str] | None = None
    ) -> int:
        command = skip_satisfied_installs(full_command) if fast_installs else full_command
        log = _LOG.get()
        with (
            log.open("a", encoding="utf-8") if log is not None else contextlib.nullcontext() as out
        ):
            code = None
            # A task's own environment variables may be read by a module at import
            # time, which the server has done already: such a task runs apart.
            call = _forkserver.lightweight_call(command) if forks and not env_vars else None
            server = forks.get() if forks is not None and call is not None else None
            if server is not None and call is not None:
                code = server.run(
                    call, str(Path.cwd()), dict(os.environ), lambda line: write(line, out)
                )
            if code is None:
                _RUNNER.set("subprocess")
                env = {**os.environ, **env_vars} if env_vars else None
                with subprocess.Popen(
                    command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
                ) as process:
                    assert process.stdout is not None
                    for line in process.stdout:
                        write(line, out)
                    code = process.wait()
            else:
                _RUNNER.set("fork")
            with _PRINT_LOCK:
                sys.stdout.write("\n\n")  # as kfp.local does, to end the task's output
                sys.stdout.flush()
            return code

    subprocess_task_handler.run_local_subprocess = run_local_subprocess
    if fast_installs:
        # kfp.local holds a global lock for a task's whole run when its command has a
        # `pip install`, so tasks that could run side by side (ParallelFor) wait for
        # each other: the satisfied installs go before the handler looks.
        handler = subprocess_task_handler.SubprocessTaskHandler
        original_init = handler.__init__

        def __init__(self: Any, image: str, full_command: list[str], *args: Any, **kw: Any) -> None:
            original_init(self, image, skip_satisfied_installs(full_command), *args, **kw)

        handler.__init__ = __init__


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


def _sources(ir: dict[str, Any]) -> list[str]:
    """The lightweight components' own source code, from the IR."""
    found = []
    for executor in ir.get("deploymentSpec", {}).get("executors", {}).values():
        command = executor.get("container", {}).get("command", [])
        if len(command) > 6 and isinstance(command[6], str):
            found.append(command[6])
    return found


def _yaml_loader() -> Any:
    import yaml

    # libyaml's loader parses an IR about 15x faster than the pure-Python one
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_pipeline(path: Path) -> Any:
    """The compiled pipeline at ``path`` as a component that runs the whole pipeline.

    KFP's own loader (``components.load_component_from_file``) takes the IR for a single
    component when an executor or component is named after the pipeline (a project
    `train` with a component `train`), and then runs only that component. Here the
    pipeline is looked up under a name that nothing else has.
    """
    import yaml
    from kfp.dsl import structures, utils, yaml_component

    text = path.read_text(encoding="utf-8")
    documents = list(yaml.load_all(text, Loader=_yaml_loader()))
    spec: dict[str, Any] = documents[0]
    platform: dict[str, Any] = documents[1] if len(documents) > 1 else {}
    name = str(spec["pipelineInfo"]["name"])
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    components = spec.get("components", {})
    lookup = name
    while (
        utils.sanitize_executor_label(lookup) in executors
        or utils.sanitize_component_name(lookup) in components
    ):
        lookup += "-pipeline"
    component_spec = structures.ComponentSpec.from_ir_dicts(
        {**spec, "pipelineInfo": {**spec["pipelineInfo"], "name": lookup}}, platform
    )
    component_spec.name = name
    graph = component_spec.implementation.graph
    if graph is not None:
        graph.pipeline_info.name = name
    return yaml_component.YamlComponent(component_spec=component_spec, component_yaml=text)


def _trace_pipeline_failures() -> None:
    """Report a failure that kfp.local finds at pipeline level, outside any task."""
    from kfp.local import pipeline_orchestrator

    original = pipeline_orchestrator.log_and_maybe_raise_for_failure

    def log_and_maybe_raise_for_failure(
        pipeline_name: str, raise_on_error: bool, fail_stack: list[str]
    ) -> None:
        emit({"event": "pipeline", "status": "FAILURE", "fail_stack": list(fail_stack)})
        original(pipeline_name=pipeline_name, raise_on_error=raise_on_error, fail_stack=fail_stack)

    pipeline_orchestrator.log_and_maybe_raise_for_failure = log_and_maybe_raise_for_failure


def main(argv: list[str]) -> int:
    pipeline_yaml, arguments_json, pipeline_root, cache_root = argv[:4]
    runner = argv[4] if len(argv) > 4 else "-"
    jobs = int(argv[5]) if len(argv) > 5 else 1
    early = json.loads(argv[6]) if len(argv) > 6 and argv[6] != "-" else None
    # kfp warns once per task about settings the local runner ignores; kfops lists them
    # once itself.
    warnings.filterwarnings("ignore", category=UserWarning)
    forks = None
    if _forkserver.supported() and runner == "-":
        import yaml

        text = Path(pipeline_yaml).read_text(encoding="utf-8")
        ir = next(yaml.load_all(text, Loader=_yaml_loader()))
        forks = _Forks(_forkserver.preload_modules(_sources(ir)), early)
        if cache_root == "-":
            # Every step will run: the server imports while this process imports kfp
            # and kfp.local sets up.
            threading.Thread(target=forks.get, daemon=True).start()
    from kfops.pipeline._kfp_import import import_kfp

    import_kfp()
    import kfp.local

    logs = os.environ.get("KFOPS_STEP_LOGS")
    _trace_tasks(Path(logs) if logs else None)
    _trace_pipeline_failures()
    _dag.install(jobs)
    _run_steps(
        fast_installs=os.environ.get("KFOPS_LOCAL_PIP") != "always" and runner == "-",
        forks=forks,
    )
    kfp.local.init(
        runner=_runner(runner),
        pipeline_root=pipeline_root,
        raise_on_error=False,
        enable_caching=cache_root != "-",
        cache_root=None if cache_root == "-" else cache_root,
    )
    pipeline = load_pipeline(Path(pipeline_yaml))
    arguments = json.loads(Path(arguments_json).read_text(encoding="utf-8"))
    try:
        task = pipeline(**arguments)
    except Exception as exc:
        # kfp.local refuses what it cannot run (a container component, an artifact
        # passed into a nested pipeline) by raising; the reason goes to the console.
        import traceback

        traceback.print_exc(file=sys.stdout)
        emit({"event": "error", "message": f"{type(exc).__name__}: {exc}"})
        return 1
    finally:
        if forks is not None:
            forks.stop()
    outputs = getattr(task, "outputs", None) or {}
    emit({"event": "done", "outputs": {k: _serialise(v) for k, v in outputs.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
