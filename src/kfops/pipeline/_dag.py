"""kfp.local's DAG runner with a DAG's independent tasks run side by side (``--jobs``).

kfp 2.17's ``dag_orchestrator.run_dag`` (the runner of a pipeline without control
flow) runs its tasks one at a time in a topological order. ``run_dag`` here is a
drop-in replacement: a task starts, in a thread of a pool of ``jobs``, once every task
it depends on has succeeded, in kfp's order among those ready. The first failure stops
new tasks from starting; those running finish, and the failure is the one reported,
as kfp.local does. Outputs go into the DAG's IOStore from this thread only.

kfp.local's logging is not thread-safe: each task swaps the root logger's handlers
(``local_logger_context``) and ``builtins.print`` (``indented_print``) and puts back
what it found, so two tasks at once can leave the wrong ones in place for good.
``install`` makes both reference-counted: the first task in sets them up, the last one
out restores them. (kfp.local's own ParallelFor threads have the same race.) And
``sys.stdout`` takes whole lines from each thread (``_WholeLines``).

With ``jobs`` 1 nothing is replaced: kfp's runner runs as it is.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any


def install(jobs: int) -> None:
    """Run independent tasks side by side, at most ``jobs`` at a time (1: kfp's own)."""
    if jobs <= 1:
        return
    from kfp.local import logging_utils
    from kfp.local.orchestrator import dag_orchestrator

    logging_utils.local_logger_context = _shared(logging_utils.local_logger_context)
    logging_utils.indented_print = _shared(logging_utils.indented_print)
    dag_orchestrator.run_dag = _run_dag(jobs)
    sys.stdout = _WholeLines(sys.stdout)


class _WholeLines:
    """``sys.stdout`` shared by threads, written a whole line at a time.

    ``print`` writes its arguments, separators and end one by one (``indented_print``
    adds its indent as a write of its own), so another thread's line could land in the
    middle of one, and an event line that does not start a line is lost to ``kfops
    run``. Each thread's text is kept until it ends a line."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._pending = threading.local()

    def write(self, text: str) -> int:
        pending = getattr(self._pending, "text", "") + text
        lines, newline, rest = pending.rpartition("\n")
        if newline:
            with self._lock:
                self._stream.write(lines + newline)
        self._pending.text = rest
        return len(text)

    def flush(self) -> None:
        rest = getattr(self._pending, "text", "")
        self._pending.text = ""
        with self._lock:
            if rest:
                self._stream.write(rest)
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _shared(
    context: Callable[..., contextlib.AbstractContextManager[None]],
) -> Callable[..., contextlib.AbstractContextManager[None]]:
    """``context`` entered by the first thread in and left by the last one out."""
    lock = threading.Lock()
    state: dict[str, Any] = {"depth": 0, "entered": None}

    @contextlib.contextmanager
    def shared(*args: Any, **kwargs: Any) -> Iterator[None]:
        with lock:
            if state["depth"] == 0:
                entered = context(*args, **kwargs)
                entered.__enter__()
                state["entered"] = entered
            state["depth"] += 1
        try:
            yield
        finally:
            with lock:
                state["depth"] -= 1
                if state["depth"] == 0:
                    entered, state["entered"] = state["entered"], None
                    entered.__exit__(None, None, None)

    return shared


def _run_dag(jobs: int) -> Callable[..., tuple[dict[str, Any], Any]]:
    def run_dag(
        pipeline_resource_name: str,
        dag_component_spec: Any,
        executors: dict[str, Any],
        components: dict[str, Any],
        dag_arguments: dict[str, Any],
        pipeline_root: str,
        runner: Any,
        unique_pipeline_id: str,
        fail_stack: list[str],
        parent_io_store: Any = None,
    ) -> tuple[dict[str, Any], Any]:
        from kfp.local import graph_utils, io, status
        from kfp.local.orchestrator import task_executor
        from kfp.local.orchestrator.orchestrator_utils import OrchestratorUtils

        arguments = OrchestratorUtils.join_user_inputs_and_defaults(
            dag_arguments=dag_arguments,
            dag_inputs_spec=dag_component_spec.input_definitions,
        )
        io_store = io.IOStore(parent=parent_io_store)
        for key, value in arguments.items():
            io_store.put_parent_input(key, value)
        dag_spec = dag_component_spec.dag
        # kfp's order (a stack: the next task is the last one), kept among ready tasks
        order = list(reversed(graph_utils.topological_sort_tasks(dag_spec.tasks)))
        needs = {
            name: set(deps)
            for name, deps in graph_utils.build_dependency_map(dag_spec.tasks).items()
        }

        def start(name: str) -> tuple[dict[str, Any], Any]:
            task_spec = dag_spec.tasks[name]
            component_spec = components[task_spec.component_ref.name]
            if component_spec.WhichOneof("implementation") == "dag":
                return run_dag(
                    pipeline_resource_name=pipeline_resource_name,
                    dag_component_spec=component_spec,
                    components=components,
                    executors=executors,
                    dag_arguments=OrchestratorUtils.make_task_arguments(task_spec.inputs, io_store),
                    pipeline_root=pipeline_root,
                    runner=runner,
                    unique_pipeline_id=unique_pipeline_id,
                    fail_stack=fail_stack,
                    parent_io_store=io_store,
                )
            return task_executor.execute_single_task(  # type: ignore[no-any-return]
                task_name=name,
                task_spec=task_spec,
                pipeline_resource_name=pipeline_resource_name,
                components=components,
                executors=executors,
                io_store=io_store,
                pipeline_root=pipeline_root,
                runner=runner,
                unique_pipeline_id=unique_pipeline_id,
                fail_stack=fail_stack,
            )

        done: set[str] = set()
        started: set[str] = set()
        running: dict[concurrent.futures.Future[tuple[dict[str, Any], Any]], str] = {}
        failed: str | None = None
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            while True:
                for name in order:
                    if failed is not None or len(running) >= jobs:
                        break
                    if name not in started and needs.get(name, set()) <= done:
                        started.add(name)
                        # each task in a copy of this context: the task path kfops traces
                        context = contextvars.copy_context()
                        running[pool.submit(context.run, start, name)] = name
                if not running:
                    break
                finished, _ = concurrent.futures.wait(
                    running, return_when=concurrent.futures.FIRST_COMPLETED
                )
                # in the order they started, so that reports do not depend on timing
                for future in sorted(finished, key=lambda f: order.index(running[f])):
                    name = running.pop(future)
                    outputs, task_status = future.result()
                    if task_status == status.Status.FAILURE:
                        failed = failed or name
                    elif task_status == status.Status.SUCCESS:
                        for key, output in outputs.items():
                            io_store.put_task_output(name, key, output)
                        done.add(name)
                    else:
                        raise ValueError(f"Got unknown task status: {task_status.name}")
        if failed is not None:
            fail_stack.append(failed)
            return {}, status.Status.FAILURE
        dag_outputs = OrchestratorUtils.get_dag_outputs(
            dag_outputs_spec=dag_component_spec.dag.outputs, io_store=io_store
        )
        return dag_outputs, status.Status.SUCCESS

    return run_dag


def default_jobs() -> int:
    """The number of cores this process may use."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
