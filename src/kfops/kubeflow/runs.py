"""Runs on Kubeflow Pipelines: started in the environment's experiment, and waited for
by kfops' own waiter, which stops on every terminal state. KFP's
``wait_for_run_completion`` spins forever on CANCELED (kubeflow/pipelines#14473)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kfops.errors import KfopsError
from kfops.kubeflow.client import AlreadyExists, Kfp

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "SKIPPED", "CANCELED"})


@dataclass
class RunStatus:
    run_id: str
    state: str
    url: str
    failed_tasks: list[tuple[str, str]] = field(default_factory=list)  # (task, error)
    seconds: float = 0.0

    @property
    def succeeded(self) -> bool:
        return self.state == "SUCCEEDED"


def find_experiment(kfp: Kfp, name: str) -> str | None:
    """The id of the experiment called ``name`` in the environment's namespace, or None."""
    predicate = {"key": "display_name", "operation": "EQUALS", "string_value": name}
    answer = kfp.call(
        "list experiments",
        kfp.experiments.experiment_service_list_experiments,
        filter=json.dumps({"predicates": [predicate]}),
        **kfp.namespaced(),
    )
    found = [e for e in (answer.experiments or []) if e.display_name == name]
    return str(found[0].experiment_id) if found else None


def experiment_id(kfp: Kfp, name: str) -> str:
    """The experiment called ``name`` in the environment's namespace (made when missing)."""
    import kfp_server_api

    existing = find_experiment(kfp, name)
    if existing is not None:
        return existing
    body = kfp_server_api.V2beta1Experiment(display_name=name, **kfp.namespaced())
    try:
        created = kfp.call(
            "create experiment",
            kfp.experiments.experiment_service_create_experiment,
            body,
            retry=False,
            recover=lambda: find_experiment(kfp, name),
        )
        if isinstance(created, str):
            return created
        return str(created.experiment_id)
    except AlreadyExists:
        again = find_experiment(kfp, name)
        assert again is not None
        return again


def start(
    kfp: Kfp,
    *,
    pipeline_id: str,
    version_id: str,
    experiment: str,
    parameters: dict[str, Any],
    display_name: str,
    description: str,
) -> str:
    """Start a run of the version; its id."""
    import kfp_server_api

    body = kfp_server_api.V2beta1Run(
        display_name=display_name,
        description=description,
        experiment_id=experiment_id(kfp, experiment),
        pipeline_version_reference=kfp_server_api.V2beta1PipelineVersionReference(
            pipeline_id=pipeline_id, pipeline_version_id=version_id
        ),
        runtime_config=kfp_server_api.V2beta1RuntimeConfig(parameters=parameters),
    )
    # Not retried: runs have no unique name to look a lost answer up by, and a second
    # run is worse than a clear error.
    run = kfp.call("create run", kfp.runs.run_service_create_run, body, retry=False)
    return str(run.run_id)


def wait(
    kfp: Kfp,
    run_id: str,
    *,
    timeout: float,
    on_change: Callable[[str, dict[str, str]], None] = lambda state, tasks: None,
    interval: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> RunStatus:
    """Poll the run until a terminal state; report the run's and its tasks' states as
    they change.

    Raises:
        KfopsError: the timeout passed (the run is left as it is, and the message says so).
    """
    started = clock()
    seen: tuple[str, dict[str, str]] | None = None
    while True:
        run = kfp.call("get run", kfp.runs.run_service_get_run, run_id)
        state = str(run.state)
        details = run.run_details.task_details if run.run_details else None
        tasks = {str(t.display_name): str(t.state) for t in details or []}
        if seen != (state, tasks):
            on_change(state, tasks)
            seen = (state, tasks)
        if state in TERMINAL:
            failed = [
                (str(t.display_name), str(t.error.message) if t.error else "")
                for t in details or []
                if t.state in ("FAILED", "CANCELED")
            ]
            return RunStatus(run_id, state, kfp.run_url(run_id), failed, clock() - started)
        if clock() - started > timeout:
            raise KfopsError(
                f"run {run_id} is still {state} after {timeout:.0f}s; it was left running:"
                f" {kfp.run_url(run_id)}",
                "wait longer with --timeout, or follow it in the KFP UI",
            )
        sleep(interval)
