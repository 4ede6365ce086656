"""``kfops run``: run a project's pipeline on this machine with kfp.local.

The pipeline is compiled here, then executed by ``kfops.pipeline._worker`` in a child process
whose step events stream back over stdout; this module shows them live, keeps every
log, and prints the outputs and metrics at the end.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kfops.errors import EXIT_USAGE, KfopsError, display_path
from kfops.pipeline import compiler
from kfops.pipeline._worker import EVENT_PREFIX
from kfops.project.model import Project

_KFP_LOG = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} - [A-Z]+ - ")
# kfp.local's error records: its own format, and the root logger's default one
_KFP_ERROR = re.compile(r"^(\d\d:\d\d:\d\d\.\d{3} - ERROR - |ERROR:)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_METRICS_TYPES = {"system.Metrics"}
LOG_TAIL_LINES = 30


@dataclass
class StepResult:
    name: str  # the task's path in the run, e.g. `for-loop-2[1]/train`
    path: str = ""  # its path in the IR, e.g. `for-loop-2/train` (steps_of's names)
    status: str = "RUNNING"
    seconds: float = 0.0
    cached: bool = False
    outputs: dict[str, Any] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    runner: str = ""  # how its process started: "fork" (the fork server) or "subprocess"


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    parameters: dict[str, Any]
    steps: dict[str, StepResult] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    succeeded: bool = False
    seconds: float = 0.0
    # a failure that kfp.local reports at pipeline level, outside any task
    failure: list[str] | None = None
    error: str | None = None  # why kfp.local stopped, when it raised
    commit: str = ""  # the checkout's commit (``git rev-parse HEAD``); "" outside git

    def metrics(self) -> dict[str, dict[str, Any]]:
        """Metrics logged by each step: ``{step: {metric: value}}``."""
        found: dict[str, dict[str, Any]] = {}
        for step in self.steps.values():
            for value in _artifacts(step.outputs):
                if value["artifact"] in _METRICS_TYPES and value["metadata"]:
                    found.setdefault(step.name, {}).update(value["metadata"])
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "commit": self.commit,
            "succeeded": self.succeeded,
            "seconds": round(self.seconds, 3),
            "parameters": self.parameters,
            "outputs": self.outputs,
            "metrics": self.metrics(),
            "steps": {
                name: {
                    "status": s.status,
                    "seconds": s.seconds,
                    "cached": s.cached,
                    "outputs": s.outputs,
                    "runner": s.runner,
                }
                for name, s in self.steps.items()
            },
        }


def _artifacts(outputs: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for value in outputs.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict) and "artifact" in item:
                found.append(item)
    return found


@dataclass(frozen=True)
class DockerRun:
    """``kfops run --docker``: each step in its step image (built here when missing,
    never pushed), with the project's folder mounted read-only at the same path."""

    network: str | None = None  # the step containers' network; None: the engine's
    build_network: str | None = None  # the image builds' network

    def worker_argument(self, workdir: Path) -> str:
        return json.dumps({"kind": "docker", "network": self.network, "workdir": str(workdir)})


# What KFP puts before a lightweight component's function in the IR (the worker reads
# the fork server's modules from there).
_KFP_PREAMBLE = "\nimport kfp\nfrom kfp import dsl\nfrom kfp.dsl import *\nfrom typing import *\n\n"


class _EarlyForkServer:
    """A fork server launched before compiling a notebook whose every step will run
    (``--no-cache``), so that it imports the steps' libraries while kfops compiles. The
    worker uses it when it imports what the worker's own would (see ``early_modules``);
    this process stops it."""

    def __init__(self, modules: list[str], folder: Path, process: subprocess.Popen[str]) -> None:
        from kfops.pipeline import _forkserver

        self.modules = modules
        self.folder = folder
        self.server = _forkserver.ForkServer(process, _forkserver.socket_path(folder))

    @classmethod
    def launch(cls, project: Project) -> _EarlyForkServer | None:
        from kfops.pipeline import _forkserver

        if not _forkserver.supported():
            return None
        modules = early_modules(project)
        if modules is None:
            return None
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="kfops-fork-"))
        with (folder / "server.log").open("w", encoding="utf-8") as log:
            process = _forkserver.ForkServer.launch(modules, folder, stderr=log)
        if process is None:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
            return None
        return cls(modules, folder, process)

    def fds(self) -> tuple[int, ...]:
        stdout = self.server.process.stdout if self.server.process is not None else None
        return (stdout.fileno(),) if stdout is not None else ()

    def worker_argument(self) -> str:
        fds = self.fds()
        return json.dumps(
            {"socket": str(self.server.path), "fd": fds[0] if fds else -1, "modules": self.modules}
        )

    def log_to(self, run_log: Path) -> None:
        """Add what the server printed (its errors) to the run's log."""
        text = (self.folder / "server.log").read_text(encoding="utf-8", errors="replace")
        if text:
            with run_log.open("a", encoding="utf-8") as log:
                log.write(text)

    def stop(self) -> None:
        import shutil

        self.server.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def early_modules(project: Project) -> list[str] | None:
    """What the worker's fork server would import for a notebook project, known before
    compiling: the components' sources are the generated module's. None for a Python
    pipeline (its components exist only once its module is imported) or a notebook
    with errors."""
    from kfops.pipeline import _forkserver
    from kfops.project.model import NotebookRef

    ref = project.pipeline
    if not isinstance(ref, NotebookRef):
        return None
    from kfops.notebook import codegen

    module, _ = codegen.module_from_notebook(ref.file, display_path(ref.file), project.name)
    if module is None:
        return None
    return _forkserver.preload_modules(_KFP_PREAMBLE + s for s in module.sources.values())


def new_run_id(now: datetime | None = None) -> str:
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(2)}"


def run(
    project: Project,
    cli_params: tuple[str, ...] = (),
    *,
    cache: bool = True,
    runs_dir: Path | None = None,
    console: Console | None = None,
    docker: DockerRun | None = None,
    jobs: int | None = None,
) -> RunResult:
    """Compile and run the project's pipeline locally; print progress and results.

    ``jobs`` independent steps run at once (None: as many as this machine has cores;
    1: one at a time, in kfp.local's order). With ``docker``, steps run one at a time:
    kfp.local streams a container's output through its own, shared, log.

    Raises:
        KfopsError: a required parameter is missing, or the runner could not start.
        InvalidProject, UserCodeError: from compiling.
    """
    console = console or _console()
    # Every step will run: the fork server imports their libraries while kfops compiles.
    early = _EarlyForkServer.launch(project) if not cache and docker is None else None
    try:
        return _run(project, cli_params, cache, runs_dir, console, docker, jobs, early)
    finally:
        if early is not None:
            early.stop()


def _run(
    project: Project,
    cli_params: tuple[str, ...],
    cache: bool,
    runs_dir: Path | None,
    console: Console,
    docker: DockerRun | None,
    jobs: int | None,
    early: _EarlyForkServer | None,
) -> RunResult:
    compiled = compiler.compile_project(project, cli_params)
    component_inputs = compiled.ir.get("root", {}).get("inputDefinitions", {})
    missing = [
        name
        for name, spec in component_inputs.get("parameters", {}).items()
        if not spec.get("isOptional") and name not in compiled.parameters
    ]
    if missing:
        raise KfopsError(
            "the pipeline needs a value for " + ", ".join(f"`{m}`" for m in sorted(missing)),
            "pass --param NAME=VALUE, or set it under pipeline.parameters in mlops.yaml",
        )
    if docker is not None:
        from kfops.images import build as images

        console.print(f"[bold]step images[/] of {project.name} (local engine, not pushed)")
        _, prepared = images.build(
            project, compiled.ir, None, push=False, network=docker.build_network, console=console
        )
        compiled = compiler.Compiled(
            images.local_ir(prepared, compiled.ir_text), compiled.parameters
        )
    run_id = new_run_id()
    run_dir = (runs_dir.resolve() if runs_dir else project.root / ".kfops" / "runs") / run_id
    try:
        (run_dir / "logs").mkdir(parents=True)
    except OSError as exc:
        raise KfopsError(
            f"cannot create the run folder {display_path(run_dir)}: {exc.strerror}",
            "pass --runs-dir with a folder you can write to",
            exit_code=EXIT_USAGE,
        ) from None
    _ignore_in_git(run_dir.parent.parent if runs_dir is None else run_dir.parent)
    (run_dir / "pipeline.yaml").write_text(compiled.ir_text, encoding="utf-8")
    (run_dir / "arguments.json").write_text(
        json.dumps(compiled.parameters, indent=2, sort_keys=True), encoding="utf-8"
    )
    result = RunResult(
        run_id=run_id, run_dir=run_dir, parameters=compiled.parameters, commit=_commit(project)
    )

    where = "in step images" if docker else "locally"
    console.print(f"[bold]running[/] {project.name} {where} (run {run_id})")
    for note in ignored_locally(compiled.ir, compiled.platform):
        console.print(f"[yellow]notice:[/] {note}")
    for note in cannot_run_locally(compiled.ir, docker=docker is not None):
        console.print(f"[yellow]warning:[/] {note}")
    # With --runs-dir the cache moves too, so runs kept elsewhere never share it.
    cache_dir = run_dir.parent / ".cache" if runs_dir else project.root / ".kfops" / "cache"
    cache_root = str(cache_dir) if cache else "-"
    started = time.monotonic()
    runner = docker.worker_argument(project.workdir) if docker else "-"
    if docker is not None:
        jobs = 1
    elif jobs is None:
        from kfops.pipeline._dag import default_jobs

        jobs = default_jobs()
    _execute(project, run_dir, cache_root, result, console, runner, jobs, early)
    if early is not None:
        early.log_to(run_dir / "run.log")
    result.seconds = time.monotonic() - started
    # Steps keep the order they ran in.
    (run_dir / "result.json").write_text(
        json.dumps(result.to_json(), indent=2, default=str), encoding="utf-8"
    )
    _print_summary(result, console)
    from kfops.pipeline.diff import steps_of

    not_run = sorted(set(steps_of(compiled.ir)) - {s.path or s.name for s in result.steps.values()})
    if not_run and not result.succeeded:
        console.print("[yellow]not run[/] (after the failure): " + ", ".join(not_run))
    return result


def _commit(project: Project) -> str:
    """The commit the project's checkout is at, recorded so `kfops retrain` can run the
    pipeline of the model `kfops serve` serves again; "" outside git."""
    done = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "HEAD"],
        cwd=project.root,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() if done.returncode == 0 else ""


def _ignore_in_git(folder: Path) -> None:
    """Runs and caches never belong in git: a `.gitignore` of `*` in kfops' own folder."""
    ignore = folder / ".gitignore"
    if folder.name == ".kfops" and not ignore.exists():
        ignore.write_text("# written by kfops: local runs, caches, compiled pipelines\n*\n")


def _console() -> Console:
    """A console; off a terminal (CI logs) it is wide enough not to wrap paths."""
    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(highlight=False, width=160 if wide else None)


def ignored_locally(ir: dict[str, Any], platform: dict[str, Any]) -> list[str]:
    """Settings in the compiled pipeline that kfp.local does not apply, said once."""
    executors = ir.get("deploymentSpec", {}).get("executors", {})
    components = ir.get("components", {})
    with_resources = []
    for task_name, task in sorted(ir.get("root", {}).get("dag", {}).get("tasks", {}).items()):
        component = components.get(task.get("componentRef", {}).get("name", ""), {})
        executor = executors.get(component.get("executorLabel", ""), {})
        if executor.get("container", {}).get("resources"):
            with_resources.append(task_name)
    notes = []
    if with_resources:
        notes.append(
            "resource requests and limits (cpu, memory, gpu) apply on Kubeflow only; the"
            " local runner ignores them for: " + ", ".join(with_resources)
        )
    kubernetes = platform.get("platforms", {}).get("kubernetes", {})
    configs = kubernetes.get("deploymentSpec", {}).get("executors", {})
    kinds = sorted({_K8S_SETTINGS.get(key, key) for config in configs.values() for key in config})
    if kinds:
        notes.append(
            "Kubernetes settings (" + ", ".join(kinds) + ") apply on Kubeflow only;"
            " the local runner ignores them"
        )
    return notes


def cannot_run_locally(ir: dict[str, Any], *, docker: bool = False) -> list[str]:
    """What the compiled pipeline holds that kfp.local 2.17 cannot run, said before the
    run starts (kfp.local would stop at the first of them). With ``docker`` (`kfops run
    --docker`), container components run in their images."""
    components = ir.get("components", {})
    executors = ir.get("deploymentSpec", {}).get("executors", {})
    found: list[str] = []

    def walk(dag: dict[str, Any], prefix: str) -> None:
        for name, task in sorted(dag.get("tasks", {}).items()):
            path = prefix + name
            component = components.get(task.get("componentRef", {}).get("name", ""), {})
            if "dag" in component:
                if component.get("inputDefinitions", {}).get("artifacts"):
                    found.append(
                        f"`{path}` passes an artifact into a nested pipeline, which kfp.local"
                        " cannot do; run it on Kubeflow, or call the components directly"
                    )
                walk(component["dag"], path + "/")
                continue
            container = executors.get(component.get("executorLabel", ""), {}).get("container")
            if container is None:
                continue  # an importer
            words = [*container.get("command", []), *container.get("args", [])]
            if any(_EXECUTOR_MODULE in str(word) for word in words):
                continue
            image = str(container.get("image", ""))
            if image.startswith("argostub/"):
                found.append(
                    f"`{path}` creates or deletes a PersistentVolumeClaim, which only a"
                    " cluster can do"
                )
            elif not docker:
                found.append(
                    f"`{path}` is a container component (image {image}); the local runner"
                    " runs lightweight Python components only (`kfops run --docker` runs it"
                    " in its image)"
                )

    walk(ir.get("root", {}).get("dag", {}), "")
    return found


# kfp.dsl.component_factory.EXECUTOR_MODULE: what a lightweight component's command runs
_EXECUTOR_MODULE = "kfp.dsl.executor_main"

_K8S_SETTINGS = {
    "podMetadata": "pod labels and annotations",
    "secretAsEnv": "secrets",
    "pvcMount": "volumes",
}


def _execute(
    project: Project,
    run_dir: Path,
    cache_root: str,
    result: RunResult,
    console: Console,
    runner: str = "-",
    jobs: int = 1,
    early: _EarlyForkServer | None = None,
) -> None:
    command = [
        sys.executable,
        "-m",
        "kfops.pipeline._worker",
        str(run_dir / "pipeline.yaml"),
        str(run_dir / "arguments.json"),
        str(run_dir / "artifacts"),
        cache_root,
        runner,
        str(jobs),
        early.worker_argument() if early is not None else "-",
    ]
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "NO_COLOR": "1",
        "KFOPS_STEP_LOGS": str(run_dir / "logs" / ".raw"),
    }
    status = console.status("starting the local runner") if console.is_terminal else None
    if status is not None:
        status.start()
    current: StepResult | None = None
    streaming = False
    with (run_dir / "run.log").open("w", encoding="utf-8") as run_log:
        try:
            process = subprocess.Popen(
                command,
                cwd=project.workdir,
                env=env,
                # steps never read the terminal (or whatever kfops's stdin is): end-of-file,
                # as in a pipeline on a cluster, whether a step is forked or a subprocess
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                pass_fds=early.fds() if early is not None else (),
            )
        except OSError as exc:
            raise KfopsError(f"cannot start the local runner: {exc}") from None
        with process:
            assert process.stdout is not None
            try:
                for raw in process.stdout:
                    line = _ANSI.sub("", raw.rstrip("\n"))
                    if line.startswith(EVENT_PREFIX):
                        event = json.loads(line[len(EVENT_PREFIX) :])
                        current = _on_event(event, result, run_dir, console, status)
                        continue
                    run_log.write(line + "\n")
                    if _KFP_LOG.match(line):
                        # kfp.local prints a step's own output after "Streamed logs:" and
                        # before its next log record.
                        streaming = line.endswith("Streamed logs:")
                    elif current is not None and streaming:
                        current.log.append(line[4:] if line.startswith("    ") else line)
                process.wait()
            except KeyboardInterrupt:
                process.terminate()
                process.wait()
                console.print(f"interrupted; what ran is kept in {display_path(run_dir)}")
                raise
            finally:
                if status is not None:
                    status.stop()
    if result.error is not None:
        console.print(f"[red]kfp.local stopped the run:[/] {escape(result.error)}")
        result.succeeded = False
        return
    steps_ok = all(s.status == "SUCCESS" for s in result.steps.values())
    result.succeeded = (
        process.returncode == 0 and steps_ok and bool(result.steps) and result.failure is None
    )
    if not result.succeeded and steps_ok:
        # Not a step's own failure (whose log is shown already): kfp.local refused or
        # failed outside any task; its reason is in its own log records.
        log = (run_dir / "run.log").read_text(encoding="utf-8").splitlines()
        reasons = [line for line in log if _KFP_ERROR.search(line)]
        if result.failure is not None:
            from kfops.pipeline._worker import task_path

            inner = " inside ".join(task_path((t,))[0] for t in result.failure) or "the pipeline"
            console.print(f"[red]the local run failed at pipeline level[/] ({inner}):")
        else:
            console.print("[red]the local runner failed:[/]")
        shown = reasons[-LOG_TAIL_LINES:] if reasons and process.returncode == 0 else None
        console.print("\n".join(shown or log[-LOG_TAIL_LINES:]), markup=False)


def _on_event(
    event: dict[str, Any],
    result: RunResult,
    run_dir: Path,
    console: Console,
    status: Any,
) -> StepResult | None:
    kind = event["event"]
    if kind == "start":
        step = StepResult(name=event["task"], path=event.get("path", ""))
        result.steps[step.name] = step
        if status is not None:
            status.update(f"running [cyan]{step.name}[/]")
        else:
            console.print(f"  ... {step.name}")
        return step
    if kind == "end":
        step = result.steps[event["task"]]
        step.status = event["status"]
        step.seconds = event["seconds"]
        step.cached = event["cached"]
        step.outputs = event["outputs"]
        step.runner = event.get("runner", "")
        log_file = run_dir / "logs" / f"{step.name}.log"
        if event.get("log"):
            # the worker kept the task's own output apart (ParallelFor runs in threads)
            raw = Path(event["log"]).read_text(encoding="utf-8", errors="replace")
            step.log = [_ANSI.sub("", line) for line in raw.splitlines()]
        step.log = step_output(step.log)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.write_text("\n".join(step.log) + "\n", encoding="utf-8")
        if step.status == "SUCCESS":
            how = "cached" if step.cached else f"{step.seconds:.1f}s"
            console.print(f"  [green]ok[/]  {step.name}  [dim]{how}[/]")
        else:
            console.print(f"  [red]FAILED[/]  {step.name}  [dim]{step.seconds:.1f}s[/]")
            tail = [line for line in step.log if line.strip()][-LOG_TAIL_LINES:]
            console.print(f"[red]--- last lines of {display_path(log_file)} ---[/]")
            console.print("\n".join(tail), markup=False, soft_wrap=True)
        return None
    if kind == "pipeline":
        result.failure = list(event["fail_stack"])
    if kind == "error":
        result.error = event["message"]
        for running in result.steps.values():
            if running.status == "RUNNING":
                running.status = "ERROR"
                console.print(f"  [red]FAILED[/]  {running.name}")
    if kind == "done":
        result.outputs = event["outputs"]
    return None


# Traceback frames of kfp and of the fork server that starts a step, not the user's.
_OWN_FRAMES = ("/kfp/", "<frozen runpy>", "/kfops/pipeline/_forkserver.py")


def step_output(lines: list[str]) -> list[str]:
    """What a step printed, without the KFP executor's bookkeeping.

    Drops ``[KFP Executor ...]`` log lines, the executor-input JSON dump and traceback
    frames inside kfp itself, so the user's own output and frames remain. The full,
    unfiltered output is in run.log.
    """
    kept: list[str] = []
    in_dump = False
    skip_frame_body = False
    for line in lines:
        if in_dump:
            in_dump = line != "}"
            continue
        if line.startswith("[KFP Executor"):
            in_dump = line.endswith("Got executor_input:")
            continue
        if skip_frame_body:
            skip_frame_body = line.startswith("    ")
            if skip_frame_body:
                continue
        if line.startswith('  File "') and any(frame in line for frame in _OWN_FRAMES):
            skip_frame_body = True
            continue
        kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    while kept and not kept[0].strip():
        kept.pop(0)
    return kept


def _print_summary(result: RunResult, console: Console) -> None:
    outputs = Table(title="outputs", title_justify="left", show_edge=False)
    outputs.add_column("step", no_wrap=True)
    outputs.add_column("output", no_wrap=True)
    outputs.add_column("value", overflow="fold")
    for step in result.steps.values():
        for name, value in sorted(step.outputs.items()):
            outputs.add_row(step.name, name, _show(value, result.run_dir))
    if outputs.row_count:
        console.print(outputs)
    metrics = result.metrics()
    if metrics:
        table = Table(title="metrics", title_justify="left", show_edge=False)
        for column in ("step", "metric", "value"):
            table.add_column(column)
        for step_name, values in metrics.items():
            for name, value in sorted(values.items()):
                table.add_row(step_name, name, str(value))
        console.print(table)
    verdict = "[green]succeeded[/]" if result.succeeded else "[red]failed[/]"
    console.print(
        f"run {result.run_id} {verdict} in {result.seconds:.1f}s;"
        f" logs and artifacts: {display_path(result.run_dir)}"
    )


def _show(value: Any, run_dir: Path) -> str:
    """A parameter's value, or an artifact's path relative to the run folder."""
    if isinstance(value, dict) and "artifact" in value:
        if "://" in str(value["uri"]):
            return str(value["uri"])  # gs://, s3://, ...: Path would fold the "//"
        uri = Path(value["uri"])
        return str(uri.relative_to(run_dir)) if uri.is_relative_to(run_dir) else str(uri)
    if isinstance(value, list):
        return ", ".join(_show(v, run_dir) for v in value)
    return json.dumps(value) if not isinstance(value, str) else value
