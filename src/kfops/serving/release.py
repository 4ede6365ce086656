"""Which model a release serves, and what it carries: commit, tag, pipeline version, run id
and metrics.

The model comes from, in order: ``kfops deploy --model-uri``, ``serving.model.uri``, or
a successful run on the environment's Kubeflow Pipelines (``serving.model.from_step``):
the run ``serving.model.run`` pins (the pointer ``kfops retrain`` moves), else this
commit's newest. kfops checks that the run's step succeeded and produced the artifact, and
reads the artifact's URI from ML Metadata (KFP's API gives only its id), with the run's
metrics (its Metrics artifacts' properties) for the gate unless ``--metrics`` gives them.
The run id and pipeline version go on the release.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kfops.errors import EXIT_USAGE, KfopsError, display_path
from kfops.project.model import Environment, Project
from kfops.serving.render import Release


def git_tag(root: Path, env: Mapping[str, str]) -> tuple[str, str, str]:
    """(commit, ref, tag) of this checkout: GitHub's variables first, else git's."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = env.get("GITHUB_SHA") or git("rev-parse", "HEAD")
    ref = env.get("GITHUB_REF") or ""
    if ref.startswith("refs/tags/"):
        return commit, ref, ref.removeprefix("refs/tags/")
    tag = git("describe", "--tags", "--exact-match", "HEAD")
    if tag:
        return commit, ref or f"refs/tags/{tag}", tag
    return commit, ref or git("symbolic-ref", "-q", "HEAD"), ""


def read_metrics(path: Path) -> dict[str, float]:
    """Metrics from a JSON file: ``{"accuracy": 0.93}``, or a local run's result.json
    (``{"metrics": {"step": {"accuracy": 0.93}}}``).

    Raises:
        KfopsError: the file is missing or not such JSON.
    """
    shown = display_path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise KfopsError(f"--metrics {shown}: {exc.strerror}", exit_code=EXIT_USAGE) from None
    except json.JSONDecodeError as exc:
        raise KfopsError(
            f"{shown}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}",
            'write {"accuracy": 0.93, ...}',
        ) from None
    if isinstance(data, dict) and isinstance(data.get("metrics"), dict):
        data = {
            name: value
            for by_step in data["metrics"].values()
            if isinstance(by_step, dict)
            for name, value in by_step.items()
        }
    if not isinstance(data, dict):
        raise KfopsError(f"{shown}: metrics must be a JSON object", 'write {"accuracy": 0.93}')
    found = {
        str(k): float(v)
        for k, v in data.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    if not found:
        raise KfopsError(f"{shown}: no numeric metrics", 'write {"accuracy": 0.93}')
    return found


def resolve(
    project: Project,
    environment: Environment,
    *,
    model_uri: str | None = None,
    metrics: dict[str, float] | None = None,
    env: Mapping[str, str] | None = None,
    kfp: Any | None = None,
) -> Release:
    """The release this checkout makes in ``environment``.

    Raises:
        KfopsError: no model URI can be found (naming what was looked for).
    """
    env = os.environ if env is None else env
    serving = project.serving
    if serving is None:
        raise KfopsError(
            f"{project.shown} has no `serving:` section, so there is no model to deploy",
            "add `serving: {model: {from_step: STEP}, format: sklearn}`",
            exit_code=EXIT_USAGE,
        )
    commit, ref, tag = git_tag(project.root, env)
    run_id = version = ""
    source = ""
    if model_uri:
        source = "--model-uri"
    elif serving.uri:
        model_uri, source = serving.uri, "serving.model.uri"
    if serving.from_step and environment.kfp is not None and kfp is not None:
        wants = (not model_uri, metrics is None and bool(serving.gate))
        if serving.run is not None:
            run_id, version, found_uri, found_metrics = run_model(
                project, kfp, serving.run, need_uri=wants[0], need_metrics=wants[1]
            )
        else:
            run_id, version, found_uri, found_metrics = _run_of_commit(
                project, kfp, commit, need_uri=wants[0], need_metrics=wants[1]
            )
        if not model_uri and found_uri:
            pinned = " (serving.model.run)" if serving.run is not None else ""
            model_uri, source = found_uri, f"run {run_id} on Kubeflow{pinned}"
        if metrics is None and found_metrics:
            metrics = found_metrics
    if not model_uri:
        raise KfopsError(
            f"no model to deploy: {project.shown} takes it from step"
            f" `{serving.from_step}`, and environment `{environment.name}` has no `kfp:` to"
            " find this commit's run in",
            "pass --model-uri URI, or set `serving.model.uri`",
            exit_code=EXIT_USAGE,
        )
    return Release(
        model_uri=model_uri,
        commit=commit,
        ref=ref,
        tag=tag,
        pipeline_version=version,
        run_id=run_id,
        metrics=dict(metrics or {}),
        source=source or f"run {run_id}",
    )


def versions_of_commit(kfp: Any, name: str, prefix: str) -> tuple[Any, list[Any]]:
    """The pipeline ``name`` on ``kfp`` (or None) and its versions made from the commit
    whose first 12 characters are ``prefix`` (kfops names them ``PREFIX-...``)."""
    pipeline = kfp.pipeline_by_name(name)
    if pipeline is None:
        return None, []
    answer = kfp.call(
        "list pipeline versions",
        kfp.pipelines.pipeline_service_list_pipeline_versions,
        pipeline.pipeline_id,
        page_size=100,
    )
    versions = [
        v for v in (answer.pipeline_versions or []) if (v.name or "").startswith(prefix + "-")
    ]
    return pipeline, versions


def _run_of_commit(
    project: Project, kfp: Any, commit: str, *, need_uri: bool, need_metrics: bool = False
) -> tuple[str, str, str, dict[str, float]]:
    """(run id, pipeline version, model URI, metrics) of this commit's newest successful
    run on ``kfp``; the URI and the metrics (from ML Metadata) only when asked for."""
    from kfops.kubeflow import runs

    serving = project.serving
    assert serving is not None and serving.from_step is not None
    prefix = (commit or "nocommit")[:12]
    _, versions = versions_of_commit(kfp, project.name, prefix)
    if not versions:
        raise KfopsError(
            f"no pipeline version of commit {prefix} on {kfp.host}: nothing has run this"
            " commit there, so there is no model to deploy",
            f"apply and run it first: `kfops apply --env {kfp.environment}` then"
            f" `kfops run --env {kfp.environment} --wait`",
        )
    target = project.environment(kfp.environment).kfp
    experiment = runs.find_experiment(kfp, (target.experiment if target else None) or project.name)
    found: list[Any] = []
    for version in versions:
        predicate = {
            "key": "pipeline_version_id",
            "operation": "EQUALS",
            "string_value": version.pipeline_version_id,
        }
        answer = kfp.call(
            "list runs",
            kfp.runs.run_service_list_runs,
            filter=json.dumps({"predicates": [predicate]}),
            sort_by="created_at desc",
            page_size=20,
            **({"experiment_id": experiment} if experiment else kfp.namespaced()),
        )
        found += [
            (r, version.name)
            for r in answer.runs or []
            if r.state == "SUCCEEDED"
            and getattr(r.pipeline_version_reference, "pipeline_version_id", None)
            == version.pipeline_version_id
        ]
    if not found:
        raise KfopsError(
            f"no successful run of commit {prefix} on {kfp.host}: the model must come from a"
            " run that succeeded",
            f"run it: `kfops run --env {kfp.environment} --wait`",
        )
    found.sort(key=lambda pair: str(pair[0].created_at or ""), reverse=True)
    listed, version_name = found[0]
    # A listing may leave out the task details: read the run itself.
    run = kfp.call("get run", kfp.runs.run_service_get_run, listed.run_id)
    return _model_of_run(
        project,
        kfp,
        run,
        str(version_name),
        f"of commit {prefix} ",
        need_uri=need_uri,
        need_metrics=need_metrics,
    )


def run_model(
    project: Project, kfp: Any, run_id: str, *, need_uri: bool, need_metrics: bool = False
) -> tuple[str, str, str, dict[str, float]]:
    """(run id, pipeline version, model URI, metrics) of the run ``run_id`` on ``kfp``
    (``serving.model.run``, or the run ``kfops retrain`` started); the URI and the metrics
    (from ML Metadata) only when asked for.

    Raises:
        KfopsError: no such run, a run that did not succeed, or no model in it.
    """
    try:
        run = kfp.call("get run", kfp.runs.run_service_get_run, run_id)
    except KfopsError as exc:
        raise KfopsError(
            f"serving.model.run is {run_id}, but {kfp.host} has no such run: {exc.message}",
            "set `serving.model.run` to a run of this pipeline on Kubeflow (the pull request"
            " of `kfops retrain` writes it), or remove it to take this commit's run",
        ) from None
    if run.state != "SUCCEEDED":
        raise KfopsError(
            f"run {run_id} on {kfp.host} is {str(run.state or 'in an unknown state').lower()}:"
            " the model must come from a run that succeeded",
            "point `serving.model.run` at a run that succeeded",
        )
    version_name = ""
    reference = run.pipeline_version_reference
    if reference is not None and reference.pipeline_id and reference.pipeline_version_id:
        version = kfp.call(
            "get pipeline version",
            kfp.pipelines.pipeline_service_get_pipeline_version,
            reference.pipeline_id,
            reference.pipeline_version_id,
        )
        version_name = str(version.name or "")
    return _model_of_run(
        project, kfp, run, version_name, "", need_uri=need_uri, need_metrics=need_metrics
    )


def _model_of_run(
    project: Project,
    kfp: Any,
    run: Any,
    version_name: str,
    of: str,
    *,
    need_uri: bool,
    need_metrics: bool,
) -> tuple[str, str, str, dict[str, float]]:
    serving = project.serving
    assert serving is not None and serving.from_step is not None
    task = next(
        (
            t
            for t in (run.run_details.task_details if run.run_details else None) or []
            if t.display_name == serving.from_step
        ),
        None,
    )
    if task is None or task.state != "SUCCEEDED":
        raise KfopsError(
            f"run {run.run_id} {of}has no succeeded step `{serving.from_step}`",
            "check `serving.model.from_step` against the pipeline's task names",
        )
    outputs = task.outputs or {}
    artifact = serving.artifact or (next(iter(outputs)) if len(outputs) == 1 else None)
    if artifact is None or artifact not in outputs:
        names = ", ".join(f"`{n}`" for n in sorted(outputs)) or "none"
        raise KfopsError(
            f"step `{serving.from_step}` of run {run.run_id} has no output artifact"
            f" `{serving.artifact or '?'}` (its artifacts: {names})",
            "set `serving.model.artifact` to one of them",
        )
    if not (need_uri or need_metrics):
        return str(run.run_id), str(version_name), "", {}
    from kfops.kubeflow import metadata

    ids = [int(i) for i in (outputs[artifact].artifact_ids or [])]
    everything = sorted(
        {
            int(i)
            for t in (run.run_details.task_details if run.run_details else None) or []
            for listed in (t.outputs or {}).values()
            for i in listed.artifact_ids or []
        }
    )
    whose = "this commit's model" if of else "the model"
    target = project.environment(kfp.environment).kfp
    gateway = (target.metadata if target else None) or metadata.gateway_url(kfp.host)
    where = (
        f"run {run.run_id}, step `{serving.from_step}`, artifact `{artifact}` (ML Metadata"
        f" artifact {', '.join(map(str, ids)) or '?'})"
    )
    try:
        known = metadata.artifacts(gateway, everything, kfp.token) if everything else {}
    except KfopsError as exc:
        message = f"found {whose}, {where}, but {exc.message}"
        raise KfopsError(message, exc.hint) from None
    metrics: dict[str, float] = {}
    for item in known.values():
        if item.type == "system.Metrics":
            metrics.update(item.metrics())
    found = [known[i].uri for i in ids if i in known and known[i].uri]
    if need_uri and not found:
        raise KfopsError(
            f"found {whose}, {where}, but ML Metadata at {gateway} knows no URI for it",
            "pass its URI with --model-uri, or set `serving.model.uri`",
        )
    uri = metadata.servable(found[-1]) if found else ""
    return str(run.run_id), str(version_name), uri, metrics
