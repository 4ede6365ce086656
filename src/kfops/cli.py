"""The ``kfops`` command line. Each command parses options, calls one core function and
renders its result; errors are turned into messages and exit codes in one place."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

import click

from kfops import __version__
from kfops.errors import (
    EXIT_BUG,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    InvalidProject,
    KfopsError,
    UserCodeError,
    display_path,
)
from kfops.project.model import NotebookRef

_PATH = click.Path(path_type=Path)
# What an environment needs for commands that read both Kubeflow Pipelines and KServe.
_KFP_AND_KUBE = "kfp: {host: https://...}, kubernetes: {namespace: NAME}"


class _Cli(click.Group):
    """Renders KfopsError as a message (never a traceback) with its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except InvalidProject as exc:
            from kfops.ci.report import print_problems

            # validate's problems are its output; for other commands they are errors,
            # kept off stdout (which may be the compiled pipeline).
            print_problems(exc.problems, "text", err=True)
            ctx.exit(exc.exit_code)
        except KfopsError as exc:
            _print_error(exc)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except Exception:
            click.echo(
                "kfops: unexpected error (a bug in kfops; please report it with this output):",
                err=True,
            )
            click.echo(traceback.format_exc(), err=True)
            ctx.exit(EXIT_BUG)


def _print_error(exc: KfopsError) -> None:
    click.secho(f"error: {exc.message}", fg="red", err=True)
    if isinstance(exc, UserCodeError) and exc.traceback and os.environ.get("KFOPS_DEBUG"):
        click.echo(exc.traceback, err=True)
    if exc.hint:
        click.echo(f"  hint: {exc.hint}", err=True)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kfops")
def cli() -> None:
    """GitOps CI/CD for machine learning on Kubeflow.

    A project is a folder with an mlops.yaml that names a KFP pipeline. kfops
    validates it, compiles it to KFP IR YAML, runs it on this machine, and builds
    its step images.

    \b
    Exit codes: 0 ok, 1 invalid input or a failed step, 2 usage error,
    3 a bug in kfops, 130 interrupted.
    """


@cli.command()
@click.argument("path", type=_PATH, default=".")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json", "github"]),
    default="text",
    show_default=True,
    help="text for people; json for tools; github for workflow annotations on the exact line.",
)
def validate(path: Path, output_format: str) -> None:
    """Check a project without running any of its code.

    PATH is a project folder, its mlops.yaml, or a Kale-tagged notebook. Every
    problem is reported at once as FILE:LINE:COL with a hint. The pipeline file is
    read but not imported; step names are checked by `compile` and `run`.
    """
    from kfops.ci.report import print_problems
    from kfops.project import config

    _, problems = config.check(path)
    print_problems(problems, output_format)
    if any(p.severity == "error" for p in problems):
        sys.exit(EXIT_FAILED)


@cli.command(name="compile")
@click.argument("path", type=_PATH, default=".")
@click.option(
    "-o",
    "--output",
    type=_PATH,
    help="Where to write the IR YAML; '-' for standard output."
    "  [default: PROJECT/.kfops/NAME.yaml]",
)
@click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="Override a pipeline parameter's default (repeatable).",
)
@click.option(
    "--emit-python",
    is_flag=True,
    help="For a notebook: print the KFP pipeline code generated from it, instead of the IR.",
)
@click.option(
    "--env",
    "env_name",
    metavar="NAME",
    help="Pin every step image by digest (repo@sha256:...) from this environment's registry;"
    " the images must be built first (`kfops build --env NAME`).",
)
def compile_command(
    path: Path,
    output: Path | None,
    params: tuple[str, ...],
    emit_python: bool,
    env_name: str | None,
) -> None:
    """Compile PATH's pipeline to KFP IR YAML, ready to upload to Kubeflow Pipelines.

    PATH is a project folder, its mlops.yaml, or a Kale-tagged notebook. Applies
    mlops.yaml's `parameters` (as defaults) and `steps` settings. The output is
    byte-for-byte the same for the same inputs. With --env, every step runs in its
    kfops image, written as repo@sha256:... (never a mutable tag), and installs
    nothing when it starts.
    """
    from kfops.pipeline import compiler

    project = _load(path)
    if emit_python:
        click.echo(compiler.notebook_source(project), nl=False)
        return
    registry = _registry_of(project, env_name) if env_name else None
    compiled = compiler.compile_project(project, params)
    if registry is not None:
        from kfops.images import build as images

        text, warnings = images.pinned(
            project, compiled.ir_text, compiled.ir, registry, environment=env_name or "ENV"
        )
        for warning in warnings:
            click.echo(warning.render(), err=True)
        compiled = compiler.Compiled(text, compiled.parameters)
    if output is not None and str(output) == "-":
        click.echo(compiled.ir_text, nl=False)
        return
    target = output or project.root / ".kfops" / f"{project.name}.yaml"
    if target.is_dir():
        target = target / f"{project.name}.yaml"
    _write_atomically(target, compiled.ir_text)
    click.echo(f"compiled {project.name} -> {display_path(target)}", err=True)
    if isinstance(project.pipeline, NotebookRef):
        click.echo(
            "note: the notebook's steps run in their base image on Kubeflow, which needs the"
            " packages they import and the files they read",
            err=True,
        )


def _images(count: int) -> str:
    return f"{count} image" + ("" if count == 1 else "s")


def _registry_of(project: Any, env_name: str) -> str:
    """The registry that environment ``env_name`` pushes step images below."""
    environment = project.environment(env_name)
    if environment.registry is None:
        raise KfopsError(
            f"environment `{env_name}` has no `registry`, so its step images have nowhere to go",
            f"add `registry: HOST/PATH` under environments.{env_name}"
            f" ({project.shown}:{environment.mark.line})",
            exit_code=EXIT_USAGE,
        )
    registry: str = environment.registry
    return registry


def _load(path: Path) -> Any:
    """The project at PATH, with its warnings (e.g. removed notebook magics) on stderr."""
    from kfops.project import config

    project = config.load(path)
    for warning in project.warnings:
        click.echo(warning.render(), err=True)
    return project


def _write_atomically(target: Path, text: str) -> None:
    partial = target.with_name(f".{target.name}.partial")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(text, encoding="utf-8")
        partial.replace(target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise KfopsError(
            f"cannot write {display_path(target)}: {exc.strerror}",
            "pass -o with a file path in a folder you can write to",
            exit_code=EXIT_USAGE,
        ) from None


@cli.command()
@click.argument("path", type=_PATH, default=".")
@click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="Set a pipeline parameter, typed by its annotation (repeatable).",
)
@click.option(
    "--cache/--no-cache",
    default=True,
    show_default=True,
    help="Reuse a step's outputs from an earlier local run with the same code and inputs.",
)
@click.option(
    "--runs-dir",
    type=_PATH,
    help="Where runs (and their cache) are kept.  [default: PROJECT/.kfops/runs]",
)
@click.option(
    "--docker",
    is_flag=True,
    help="Run each step in its step image with a Docker engine (built first if needed,"
    " never pushed), as on Kubeflow.",
)
@click.option(
    "--network",
    metavar="MODE",
    help="With --docker: the step containers' network (e.g. none, host).  [default: the engine's]",
)
@click.option(
    "--build-network",
    metavar="MODE",
    help="With --docker: the network of image builds (e.g. host).  [default: the engine's]",
)
@click.option(
    "--env",
    "env_name",
    metavar="NAME",
    help="Run on the environment's Kubeflow Pipelines instead: this commit's version"
    " (uploaded first when missing), in the environment's experiment.",
)
@click.option("--wait", is_flag=True, help="With --env: wait for the run to finish.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=3600,
    show_default=True,
    help="With --env --wait: seconds to wait; the run is left running after that.",
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    metavar="N",
    help="Run up to N independent steps at once (1: one at a time, in kfp.local's order;"
    " --docker runs one at a time).  [default: the number of cores]",
)
def run(
    path: Path,
    params: tuple[str, ...],
    cache: bool,
    runs_dir: Path | None,
    docker: bool,
    network: str | None,
    build_network: str | None,
    env_name: str | None,
    wait: bool,
    timeout: float,
    jobs: int | None,
) -> None:
    """Run PATH's pipeline on this machine with kfp.local (no cluster needed).

    PATH is a project folder, its mlops.yaml, or a Kale-tagged notebook. Each step
    runs as a subprocess in the current Python environment (a notebook's steps in the
    notebook's folder, as in Jupyter). Outputs, artifacts and logs are kept in
    PROJECT/.kfops/runs/RUN_ID/. With --docker, each step runs in its image
    instead (see `kfops build`), with the project's folder mounted read-only.
    """
    from kfops.pipeline import local

    if (network or build_network) and not docker:
        raise click.UsageError("--network and --build-network go with --docker")
    if env_name is not None and (docker or runs_dir is not None):
        raise click.UsageError("--env runs on Kubeflow: --docker and --runs-dir are for local runs")
    if wait and env_name is None:
        raise click.UsageError("--wait goes with --env (a local run always waits)")
    if jobs is not None and env_name is not None:
        raise click.UsageError("--jobs is for local runs; --env runs on Kubeflow")
    project = _load(path)
    if env_name is not None:
        sys.exit(_run_on_kubeflow(project, env_name, params, wait, timeout))
    runner = local.DockerRun(network=network, build_network=build_network) if docker else None
    result = local.run(project, params, cache=cache, runs_dir=runs_dir, docker=runner, jobs=jobs)
    if not result.succeeded:
        sys.exit(EXIT_FAILED)


def _run_on_kubeflow(
    project: Any, env_name: str, params: tuple[str, ...], wait: bool, timeout: float
) -> int:
    """Apply this commit's version, start a run of it, and (``wait``) follow it."""
    from kfops.delivery import pipeline as delivery
    from kfops.kubeflow import runs
    from kfops.pipeline import compiler

    kfp, ir_text, origin = _delivery(project, env_name)
    done = delivery.apply(project, ir_text, kfp, origin)
    assert done.pipeline_id is not None and done.version_id is not None
    component = compiler.load_pipeline(project)
    parameters = compiler.parse_cli_params(params, compiler.parameter_types(component))
    experiment = project.environment(env_name).kfp.experiment or project.name
    run_id = runs.start(
        kfp,
        pipeline_id=done.pipeline_id,
        version_id=done.version_id,
        experiment=experiment,
        parameters=parameters,
        display_name=f"{project.name} {done.version}",
        description=done.description,
    )
    click.echo(
        f"started run {run_id} of {project.name} {done.version} in {experiment}:"
        f" {kfp.run_url(run_id)}"
    )
    if not wait:
        return 0

    def show(state: str, tasks: dict[str, str]) -> None:
        listed = ", ".join(
            f"{name} {task_state.lower()}" for name, task_state in sorted(tasks.items())
        )
        click.echo(f"  {state.lower()}" + (f": {listed}" if listed else ""))

    interval = float(os.environ.get("KFOPS_POLL_SECONDS") or 5)
    status = runs.wait(kfp, run_id, timeout=timeout, on_change=show, interval=interval)
    verdict = "succeeded" if status.succeeded else status.state.lower()
    click.echo(f"run {run_id} {verdict} in {status.seconds:.0f}s: {status.url}")
    for task, error in status.failed_tasks:
        click.secho(f"  failed: {task}" + (f": {error}" if error else ""), fg="red", err=True)
    return 0 if status.succeeded else EXIT_FAILED


@cli.command()
@click.argument("path", type=_PATH, default=".")
@click.option(
    "--env",
    "env_name",
    metavar="NAME",
    required=True,
    help="The environment (mlops.yaml `environments:`) whose registry the images go to.",
)
@click.option(
    "--push/--no-push",
    default=True,
    show_default=True,
    help="Push what is built; --no-push only builds (pull requests).",
)
@click.option(
    "--network",
    metavar="MODE",
    envvar="KFOPS_BUILD_NETWORK",
    help="The build's network, e.g. host where the engine runs without a bridge"
    " (or KFOPS_BUILD_NETWORK).  [default: the engine's]",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json prints each image's status, tag, digest and seconds on stdout.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Only look the images up: say which would be built; build and push nothing.",
)
def build(
    path: Path,
    env_name: str,
    push: bool,
    network: str | None,
    output_format: str,
    dry_run: bool,
) -> None:
    """Build the step images of PATH's pipeline and push them to the environment's registry.

    Each image is tagged by the hash of what goes into it (base image digest,
    requirements, packages, kfp's version; for a Dockerfile image the Dockerfile,
    build args and the context's files), so an image already in the registry is not
    rebuilt, and a change to step code rebuilds nothing. The images hold kfp, so
    steps install nothing when they start. Then `kfops compile --env NAME` pins them.
    """
    import json

    from rich.console import Console

    from kfops.images import build as images
    from kfops.pipeline import compiler

    project = _load(path)
    registry = _registry_of(project, env_name)
    compiled = compiler.compile_project(project)
    console = Console(stderr=True, highlight=False)
    verb = "looking up" if dry_run else "building" if push else "building (no push)"
    console.print(f"[bold]{verb}[/] step images of {project.name} for {env_name} ({registry})")
    results, _ = images.build(
        project,
        compiled.ir,
        registry,
        push=push,
        network=network,
        console=console,
        dry_run=dry_run,
    )
    changed = sum(r.status != "unchanged" for r in results)
    if dry_run:
        console.print(f"{_images(len(results))}, {changed} to build (dry run: nothing was built)")
    else:
        images.write_record(project, env_name, results)
        console.print(f"{_images(len(results))}, {changed} built" + (" and pushed" if push else ""))
    if output_format == "json":
        click.echo(json.dumps([r.to_json() for r in results], indent=2, sort_keys=True))


def _delivery(project: Any, env_name: str) -> tuple[Any, str, Any]:
    """The environment's KFP, the IR to deliver (images pinned when the environment has
    a registry) and where it comes from."""
    from kfops.delivery.pipeline import Origin
    from kfops.kubeflow.client import connect
    from kfops.pipeline import compiler

    environment = project.environment(env_name, "kfp: {host: https://...}")
    kfp = connect(environment)
    compiled = compiler.compile_project(project)
    ir_text = compiled.ir_text
    if environment.registry is not None:
        from kfops.images import build as images

        ir_text, warnings = images.pinned(
            project, compiled.ir_text, compiled.ir, environment.registry, environment=env_name
        )
        for warning in warnings:
            click.echo(warning.render(), err=True)
    return kfp, ir_text, Origin.detect(project.root)


@cli.command()
@click.argument("path", type=_PATH, default=".")
@click.option(
    "--env", "env_name", metavar="NAME", required=True, help="The environment to plan for."
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json", "markdown"]),
    default="text",
    show_default=True,
)
@click.option(
    "--model-uri", metavar="URI", help="The model a deploy would serve (default: serving.model)."
)
def plan(path: Path, env_name: str, output_format: str, model_uri: str | None) -> None:
    """Show what `kfops apply --env NAME` (and `kfops deploy`) would change (read-only).

    Compares this commit's compiled pipeline with the live Kubeflow Pipelines: the
    pipeline (found by name in the environment's namespace) and this commit's version
    (named COMMIT-SPECHASH). With `kubernetes:` and `serving:`, also the InferenceService a
    deploy would apply, from a server-side dry run. Nothing is created or changed.
    """
    import json

    project = _load(path)
    environment = project.environment(env_name, _KFP_AND_KUBE)
    serves = environment.kubernetes is not None and project.serving is not None
    document: dict[str, Any] = {}
    texts: list[str] = []
    if environment.kfp is not None or not serves:
        from kfops.delivery import pipeline as delivery

        kfp, ir_text, origin = _delivery(project, env_name)
        planned = delivery.plan(project, ir_text, kfp, origin)
        document = planned.to_json()
        texts.append(_render_plan(planned, output_format == "markdown"))
    if serves:
        from kfops.serving import release as releases
        from kfops.serving.rollout import Failed

        rollout = _rollout(project, env_name)
        try:
            release = releases.resolve(project, environment, model_uri=model_uri)
        except KfopsError:
            release = None  # the model comes from a run: known at deploy time
        try:
            serving = rollout.plan(release)
        except Failed as exc:
            raise KfopsError(exc.message, exc.hint) from None
        document["serving"] = serving.to_json()
        lines = serving.lines()
        if output_format == "markdown":
            texts.append(f"**{lines[0]}**\n\n" + "\n".join(f"- `{x}`" for x in lines[1:]))
        else:
            texts.append(lines[0] + "".join(f"\n  ~ {x}" for x in lines[1:]))
    if output_format == "json":
        click.echo(json.dumps(document, indent=2, sort_keys=True))
        return
    click.echo("\n".join(texts))


def _render_plan(planned: Any, markdown: bool) -> str:
    head = f"{planned.pipeline} -> {planned.environment} ({planned.host})"
    if planned.empty:
        line = f"version {planned.version} is there already: nothing to do"
        return f"**{head}**: {line}" if markdown else f"{head}: {line}"
    verbs = {"create-pipeline": "create pipeline", "upload-version": "upload version"}
    rows = [f"{verbs[a.kind]} {a.name}" for a in planned.actions]
    if planned.monitor is not None:
        rows += [
            f"{verbs[a.kind]} {a.name}"
            + (f" of {planned.monitor.pipeline}" if a.kind == "upload-version" else "")
            for a in planned.monitor.actions
        ]
    rows += [
        f"{a.kind} schedule {a.name}" + (f" ({a.detail})" if a.detail else "")
        for a in planned.schedules
    ]
    if markdown:
        return f"**{head}**\n\n" + "\n".join(f"- {row}" for row in rows)
    return head + "\n" + "\n".join(f"  + {row}" for row in rows)


@cli.command()
@click.argument("path", type=_PATH, default=".")
@click.option(
    "--env", "env_name", metavar="NAME", required=True, help="The environment to apply to."
)
@click.option("--dry-run", is_flag=True, help="Show the plan and change nothing.")
def apply(path: Path, env_name: str, dry_run: bool) -> None:
    """Make the environment match this commit: upload its pipeline version to Kubeflow
    Pipelines (creating the pipeline when missing). A second apply changes nothing.

    The version is named COMMIT-SPECHASH and its description carries the repository,
    ref, commit and workflow run. With a `registry` in the environment, the step images
    are pinned by digest (build them first: `kfops build --env NAME`).
    """
    from kfops.delivery import pipeline as delivery

    project = _load(path)
    kfp, ir_text, origin = _delivery(project, env_name)
    done = delivery.apply(project, ir_text, kfp, origin, dry_run=dry_run)
    if dry_run or done.empty:
        click.echo(
            _render_plan(done, False) + ("\n(dry run: nothing was changed)" if dry_run else "")
        )
        return
    assert done.pipeline_id is not None
    if done.actions:
        click.echo(
            f"uploaded {project.name} version {done.version} to {env_name}:"
            f" {kfp.pipeline_url(done.pipeline_id, done.version_id)}"
        )
    monitor = done.monitor
    if monitor is not None and monitor.actions and monitor.pipeline_id is not None:
        click.echo(
            f"uploaded {monitor.pipeline} version {monitor.version} to {env_name}:"
            f" {kfp.pipeline_url(monitor.pipeline_id, monitor.version_id)}"
        )
    for action in done.schedules:
        detail = f" ({action.detail})" if action.detail else ""
        click.echo(f"{action.kind}: schedule {action.name}{detail}")


def _rollout(project: Any, env_name: str) -> Any:
    """The release machinery for ``env_name``: its Kubernetes API, checked up front."""
    from rich.console import Console

    from kfops.serving.kube import Kube
    from kfops.serving.rollout import Rollout

    environment = project.environment(env_name, "kubernetes: {namespace: NAME}")
    if project.serving is None:
        raise KfopsError(
            f"{project.shown} has no `serving:` section, so there is no model to deploy",
            "add `serving: {model: {from_step: STEP}, format: sklearn}`",
            exit_code=EXIT_USAGE,
        )
    if environment.kubernetes is None:
        raise KfopsError(
            f"environment `{env_name}` has no `kubernetes:`, so nothing serves the model there",
            f"add `kubernetes: {{namespace: NAME}}` under environments.{env_name}",
            exit_code=EXIT_USAGE,
        )
    poll = float(os.environ.get("KFOPS_POLL_SECONDS") or 2)
    return Rollout(project, environment, Kube(environment), Console(stderr=True), poll_seconds=poll)


def _report_release(outcome: Any, output_format: str, verb: str) -> None:
    import json

    if output_format == "json":
        click.echo(json.dumps(outcome.to_json(), indent=2, sort_keys=True))
    elif outcome.release is not None:
        where = f"{outcome.name} in {outcome.environment} ({outcome.namespace})"
        if outcome.stage == "unchanged":
            click.echo(f"{where}: release {outcome.release.name} is already serving")
        elif outcome.stage == "planned":
            click.echo(f"{where}: {verb} release {outcome.release.name} (dry run: nothing changed)")
        elif outcome.stage == "canary":
            click.echo(
                f"{where}: release {outcome.release.name} is a canary; promote it with"
                f" `kfops deploy --env {outcome.environment} --promote`"
            )
        else:
            click.echo(
                f"{where}: release {outcome.release.name} is serving"
                + (f" at {outcome.url}" if outcome.url else "")
            )


def _report_failed(exc: Any, output_format: str, verb: str) -> NoReturn:
    """A release that did not go through: its outcome as JSON when asked, then the error
    (what is serving now is in its message)."""
    if output_format == "json":
        _report_release(exc.outcome, output_format, verb)
    raise exc


@cli.command()
@click.argument("path", type=_PATH, default=".")
@click.option("--env", "env_name", metavar="NAME", required=True, help="The environment.")
@click.option(
    "--model-uri",
    metavar="URI",
    help="The model to serve (s3://, gs://, pvc://, oci://, https://); default: serving.model.",
)
@click.option(
    "--metrics",
    "metrics_file",
    type=_PATH,
    metavar="FILE",
    help="The new model's metrics for `serving.gate` (JSON, or a local run's result.json).",
)
@click.option("--promote", is_flag=True, help="Promote the canary that is waiting.")
@click.option("--dry-run", is_flag=True, help="Check with the API server; change nothing.")
@click.option(
    "--force-conflicts",
    is_flag=True,
    help="Take over fields another field manager changed (server-side apply --force).",
)
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text")
def deploy(
    path: Path,
    env_name: str,
    model_uri: str | None,
    metrics_file: Path | None,
    promote: bool,
    dry_run: bool,
    force_conflicts: bool,
    output_format: str,
) -> None:
    """Release the model to the environment's KServe, safely.

    \b
    1. gate: the new model's metrics against `serving.gate` and the serving model's
    2. render the InferenceService (labels and annotations: project, commit, tag,
       pipeline version, run id, metrics) and check it with a server-side dry run
    3. apply it (server-side apply, field manager kfops): with `serving.canary.percent`,
       as a canary beside the serving model, the way the cluster's mode understands it
    4. wait until it is Ready, its model Loaded and UpToDate, and it answers
    5. smoke-test it (`serving.canary.smoke`), then promote it (or wait for --promote)

    Any failure after the apply returns to the previous release, which kfops keeps in
    a ConfigMap beside the InferenceService. A second deploy of the same release
    changes nothing. Exit 1 when the release did not go through.
    """
    from kfops.serving import release as releases
    from kfops.serving.render import Release
    from kfops.serving.rollout import Failed

    project = _load(path)
    rollout = _rollout(project, env_name)
    metrics = releases.read_metrics(metrics_file) if metrics_file else None
    kfp = None
    environment = project.environment(env_name, "kubernetes: {namespace: NAME}")
    if project.serving.from_step and environment.kfp is not None and not promote:
        from kfops.kubeflow.client import connect

        kfp = connect(environment)
    try:
        if promote:
            outcome = rollout.deploy(
                Release(model_uri="", commit=""),
                promote=True,
                dry_run=dry_run,
                force=force_conflicts,
            )
        else:
            release = releases.resolve(
                project, environment, model_uri=model_uri, metrics=metrics, kfp=kfp
            )
            named = f" {release.name}" if release.name != release.model_uri else ""
            click.echo(
                f"releasing {project.name}{named} to {env_name}: model {release.model_uri}"
                f" ({release.source})",
                err=True,
            )
            outcome = rollout.deploy(release, dry_run=dry_run, force=force_conflicts)
    except Failed as exc:
        _report_failed(exc, output_format, "deploy")
    _report_release(outcome, output_format, "deploy")


@cli.command()
@click.argument("path", type=_PATH, default=".")
@click.option("--env", "env_name", metavar="NAME", required=True, help="The environment.")
@click.option("--dry-run", is_flag=True, help="Check with the API server; change nothing.")
@click.option(
    "--force-conflicts",
    is_flag=True,
    help="Take over fields another field manager changed (server-side apply --force).",
)
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text")
def rollback(
    path: Path, env_name: str, dry_run: bool, force_conflicts: bool, output_format: str
) -> None:
    """Return the environment to the release before the one serving (or before a canary).

    The previous release's spec comes from kfops's release record, a ConfigMap beside
    the InferenceService; the rollback is recorded there too.
    """
    from kfops.serving.rollout import Failed

    project = _load(path)
    rollout = _rollout(project, env_name)
    try:
        outcome = rollout.rollback(dry_run=dry_run, force=force_conflicts)
    except Failed as exc:
        _report_failed(exc, output_format, "roll back to")
    _report_release(outcome, output_format, "roll back to")


@cli.command()
@click.argument("path", type=_PATH, default=".")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=8080,
    show_default=True,
    help="The HTTP port. KServe's server listens on all interfaces.",
)
@click.option(
    "--run", "run_id", metavar="ID", help="Serve this local run's model.  [default: the latest]"
)
@click.option(
    "--runs-dir",
    type=_PATH,
    help="Where the local runs are (as given to `kfops run`).  [default: PROJECT/.kfops/runs]",
)
@click.option(
    "--model",
    "model_file",
    type=_PATH,
    metavar="FILE",
    help="Serve this model file (or folder) instead of a local run's.",
)
def serve(
    path: Path, port: int, run_id: str | None, runs_dir: Path | None, model_file: Path | None
) -> None:
    """Serve the model of PATH's latest local run with the KServe model server.

    The model is serving.model's artifact (from_step, artifact) in the run's
    result.json, loaded by serving.format (sklearn, xgboost or lightgbm), and served
    under serving.name with the V1 (/v1/models/NAME:predict) and V2
    (/v2/models/NAME/infer) protocols, health and metadata. Stop it with Ctrl-C.
    """
    from kfops.serving import server

    if model_file is not None and run_id is not None:
        raise click.UsageError("--model serves a file: it does not go with --run")
    project = _load(path)
    serving = server.serving_of(project)
    source = server.find_model(project, run_id=run_id, runs_dir=runs_dir, model_file=model_file)
    loaded = server.load_model(serving.format, source.path)

    def on_ready(urls: Any) -> None:
        click.echo(server.ready_message(project, source, urls), err=True)

    def log(line: str) -> None:
        click.echo(f"  {line}", err=True)

    click.echo(f"starting the KServe model server for {serving.name} ...", err=True)
    import contextlib

    with contextlib.suppress(KeyboardInterrupt):  # ^C is how a server stops: no error
        server.serve(serving.name, loaded, port, on_ready=on_ready, log=log)
    click.echo("stopped", err=True)


def _served_model_options(function: Any) -> Any:
    """Which model server a command talks to: ``--local``, ``--url`` or ``--env``."""
    for option in reversed(
        [
            click.option(
                "--local",
                is_flag=True,
                help="The server `kfops serve` runs: http://127.0.0.1:PORT.",
            ),
            click.option(
                "--url", metavar="URL", help="A KServe endpoint's base URL (without /v1 or /v2)."
            ),
            click.option(
                "--env",
                "env_name",
                metavar="NAME",
                help="The model served in this environment (its kubernetes.url, else its"
                " InferenceService's status.url).",
            ),
        ]
    ):
        function = option(function)
    return function


def _request_options(function: Any) -> Any:
    """How a command talks to a model server: output, port, model name, protocol, timeout."""
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
    )(_connection_options(function))


def _connection_options(function: Any) -> Any:
    """Port (with --local), model name, protocol and timeout of a model server."""
    for option in reversed(
        [
            click.option(
                "--port",
                type=click.IntRange(1, 65535),
                default=8080,
                show_default=True,
                help="With --local.",
            ),
            click.option(
                "--model-name",
                metavar="NAME",
                help="[default: serving.name, else the project's name]",
            ),
            click.option(
                "--protocol",
                type=click.Choice(["v1", "v2"]),
                help="[default: serving.protocol, else v1]",
            ),
            click.option(
                "--timeout",
                type=click.FloatRange(min=0.001),
                default=30.0,
                show_default=True,
                help="Seconds, per request.",
            ),
        ]
    ):
        function = option(function)
    return function


@cli.command()
@click.argument("path", type=_PATH, default=".")
@_served_model_options
@click.option(
    "--data",
    "data",
    required=True,
    metavar="FILE|-",
    help="Rows as JSON (a list of rows or objects, {instances}, or a V2 body) or CSV with a"
    " header; - reads stdin.",
)
@_request_options
def predict(
    path: Path,
    local: bool,
    url: str | None,
    env_name: str | None,
    data: str,
    output_format: str,
    port: int,
    model_name: str | None,
    protocol: str | None,
    timeout: float,
) -> None:
    """POST rows to a served model and print its predictions (V1 :predict or V2 /infer).

    Give one of --local (the server `kfops serve` runs), --url URL or --env NAME.
    With --url and both --model-name and --protocol, PATH need not be a project.
    """
    import json

    from kfops.serving import predict as client

    chosen = [
        flag for flag, given in (("--local", local), ("--url", url), ("--env", env_name)) if given
    ]
    if len(chosen) != 1:
        raise click.UsageError("give one of --local, --url URL or --env NAME")
    project = None
    if env_name is not None or model_name is None or protocol is None:
        project = _load(path)
    serving = project.serving if project is not None else None
    name = model_name or (serving.name if serving else project.name if project else "")
    chosen_protocol = protocol or (serving.protocol if serving else "v1")
    if local:
        base = f"http://127.0.0.1:{port}"
    elif url is not None:
        base = url
    else:
        base = client._env_url(project, env_name or "")
    text = sys.stdin.read() if data == "-" else None
    rows = client.read_rows(data, text)
    answer = client.predict(base, name, rows, chosen_protocol, timeout=timeout)
    if output_format == "json":
        document = {
            "url": answer.url,
            "protocol": chosen_protocol,
            "predictions": answer.predictions,
            "latency_ms": answer.latency_ms,
        }
        click.echo(json.dumps(document, indent=2, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_edge=False)
    columns = rows.columns or tuple(f"{i}" for i in range(len(rows.rows[0]) if rows.rows else 0))
    for column in columns:
        table.add_column(column, justify="right")
    table.add_column("prediction", style="bold")
    for index, prediction in enumerate(answer.predictions):
        values = rows.rows[index] if index < len(rows.rows) else [""] * len(columns)
        shown = prediction if isinstance(prediction, str) else json.dumps(prediction)
        table.add_row(*(str(v) for v in values), shown)
    console = Console(highlight=False)
    console.print(table)
    console.print(
        f"{len(answer.predictions)} prediction{'s' * (len(answer.predictions) != 1)}"
        f" from {answer.url} ({chosen_protocol}) in {answer.latency_ms:.1f} ms",
        soft_wrap=True,
    )


# ------------------------------------------------------------ watching a served model
# kfops probe, kfops monitor, kfops monitor baseline (the first part of issue 9).


def _base_url(project: Any, local: bool, url: str | None, env_name: str | None, port: int) -> str:
    chosen = [f for f, given in (("--local", local), ("--url", url), ("--env", env_name)) if given]
    if len(chosen) != 1:
        raise click.UsageError("give one of --local, --url URL or --env NAME")
    if local:
        return f"http://127.0.0.1:{port}"
    if url is not None:
        return url
    from kfops.serving import predict as client

    return client._env_url(project, env_name or "")


def _monitoring(project: Any, section: str = "") -> Any:
    monitoring = project.monitoring
    if monitoring is None or (section and getattr(monitoring, section) is None):
        example = {
            "": "monitoring: {probes: {requests: [{name: setosa, rows: [[5.1, 3.5, 1.4, 0.2]]}]}}",
            "drift": "monitoring: {drift: {reference: monitor/reference.json}}",
        }[section]
        raise KfopsError(
            f"{project.shown} has no `monitoring:{(' ' + section + ':') if section else ''}`",
            f"add `{example}`",
            exit_code=EXIT_USAGE,
        )
    return monitoring


@cli.command()
@click.argument("path", type=_PATH, default=".")
@_served_model_options
@_request_options
@click.option(
    "--compare-with",
    "compare_with",
    metavar="URL",
    help="Also send the probes to the model at URL (the stable one) and check"
    " monitoring.gates.canary: latency ratio, agreement, metric deltas.",
)
def probe(
    path: Path,
    local: bool,
    url: str | None,
    env_name: str | None,
    output_format: str,
    port: int,
    model_name: str | None,
    protocol: str | None,
    timeout: float,
    compare_with: str | None,
) -> None:
    """Send the probes of monitoring.probes to a served model once; check the gates.

    Each request's HTTP status and answer are checked against its `expect`; each
    labelled probe set is scored (accuracy, f1, mae, ...) against its thresholds;
    then monitoring.gates: error_rate, latency_p95 and availability over the run.
    Give one of --local, --url URL or --env NAME.

    With --compare-with URL, the model given is the canary and URL the stable model:
    both get the probes, one probe to each in turn, and the canary must also meet
    monitoring.gates.canary (as `kfops deploy` checks a canary).

    \b
    Exit codes: 0 every probe and gate passed, 1 one failed (or an error),
    2 usage error, 3 a bug in kfops.
    """
    import json

    from kfops.monitor import probes

    project = _load(path)
    monitoring = _monitoring(project)
    base = _base_url(project, local, url, env_name, port)
    serving = project.serving
    name = model_name or (serving.name if serving else project.name)
    chosen_protocol = protocol or (serving.protocol if serving else "v1")
    analysis = None
    if compare_with is not None:
        try:
            probes.comparable(monitoring)
        except KfopsError as exc:
            raise KfopsError(exc.message, exc.hint, exit_code=EXIT_USAGE) from None
        analysis = probes.compare(
            monitoring, base, compare_with, name, chosen_protocol, timeout=timeout
        )
        result = analysis.canary
    else:
        result = probes.run(monitoring, base, name, chosen_protocol, timeout=timeout)
    passed = result.passed if analysis is None else analysis.passed
    if output_format == "json":
        document = result.to_json()
        if analysis is not None:
            document["passed"] = passed
            document["comparison"] = {
                "stable_url": analysis.stable.url,
                "passed": all(c.passed for c in analysis.comparisons),
                "comparisons": [c.to_json() for c in analysis.comparisons],
                "stable": analysis.stable.to_json(),
            }
        click.echo(json.dumps(document, indent=2, sort_keys=True))
    else:
        from rich.console import Console
        from rich.table import Table

        console = Console(highlight=False)
        table = Table(show_edge=False)
        for column in ("probe", "kind", "result", "detail"):
            table.add_column(column)
        for item in result.results:
            verdict = "[green]pass[/]" if item.passed else "[red]FAIL[/]"
            table.add_row(item.name, item.kind, verdict, item.detail)
        for gate in result.gates:
            verdict = "[green]pass[/]" if gate.passed else "[red]FAIL[/]"
            table.add_row(gate.name, "gate", verdict, gate.detail)
        for comparison in analysis.comparisons if analysis is not None else ():
            verdict = "[green]pass[/]" if comparison.passed else "[red]FAIL[/]"
            table.add_row(probes.label(comparison), "compare", verdict, comparison.detail)
        console.print(table)
        failed = sum(not r.passed for r in result.results) + sum(not g.passed for g in result.gates)
        if analysis is not None:
            failed += sum(not c.passed for c in analysis.comparisons)
        against = f" against {analysis.stable.url}" if analysis is not None else ""
        console.print(
            f"{name} at {result.url} ({chosen_protocol}){against}: "
            + ("all probes and gates passed" if not failed else f"{failed} failed"),
            soft_wrap=True,
        )
    if not passed:
        sys.exit(EXIT_FAILED)


class _MonitorGroup(click.Group):
    """`kfops monitor [PATH] ...` runs `check`; `kfops monitor baseline ...` the baseline."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or args[0] not in self.commands:
            args = ["check", *args]
        return super().parse_args(ctx, args)


class _MonitorContext(click.Context):
    @property
    def command_path(self) -> str:
        return self.parent.command_path if self.parent else super().command_path


class _DefaultMonitorCommand(click.Command):
    """`check`, shown as `kfops monitor` in its usage and error lines: users never type
    `check`."""

    context_class = _MonitorContext


@cli.group(cls=_MonitorGroup)
def monitor() -> None:
    """Drift of the served inputs against a reference profile.

    `kfops monitor [PATH] --once --inputs FILE.jsonl` checks once;
    `kfops monitor baseline [PATH] --data FILE` writes the reference profile.
    """


@monitor.command(name="check", cls=_DefaultMonitorCommand)
@click.argument("path", type=_PATH, default=".")
@_served_model_options
@click.option(
    "--once", is_flag=True, help="Check once and exit; without it, check on monitoring.schedule."
)
@click.option(
    "--inputs",
    "inputs",
    type=_PATH,
    metavar="FILE.jsonl",
    help='With drift.source probes: the served inputs, one JSON line each: {"inputs": ROW,'
    ' "prediction": VALUE} or a bare ROW (a list of values or an object of column: value),'
    " e.g. collected probe traffic.",
)
@click.option(
    "--report",
    "report_file",
    type=_PATH,
    default=Path("report.json"),
    show_default=True,
    help="Where report.json (schema kfops.monitor/v1) is written.",
)
@click.option(
    "--state",
    "state_file",
    metavar="FILE|s3://BUCKET/KEY",
    envvar="KFOPS_MONITOR_STATE",
    help="The monitor's memory between runs (breaches in a row, the breach in progress, the"
    " last dispatch). [default: .kfops/monitor/ENV.json in the project; env"
    " KFOPS_MONITOR_STATE]",
)
@click.option(
    "--plot",
    "plot_file",
    type=_PATH,
    metavar="FILE.png",
    help="Also draw the drift: one panel per feature, worst first (needs matplotlib).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the verdict and what it would set off; write, open and dispatch nothing.",
)
@click.option(
    "--window",
    "window",
    metavar="DURATION",
    help="With drift.source logger: how far back the payload logs are read, e.g. 6h"
    " [default: monitoring.drift.window].",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "markdown", "json"]),
    default="table",
    show_default=True,
)
@_connection_options
def monitor_check(
    path: Path,
    local: bool,
    url: str | None,
    env_name: str | None,
    once: bool,
    inputs: Path | None,
    report_file: Path,
    state_file: str | None,
    plot_file: Path | None,
    dry_run: bool,
    output_format: str,
    port: int,
    model_name: str | None,
    protocol: str | None,
    timeout: float,
    window: str | None = None,
) -> None:
    """Watch the served model: probes and gates, drift of the served inputs, a verdict,
    and on a breach the next model cycle.

    Sends monitoring.probes to the model given by --local, --url or --env (none: drift
    only); scores every feature of the served inputs against monitoring.drift's reference
    (psi, jensen_shannon, ks or wasserstein), the predictions, and the drift share.
    A failed probe or gate, or enough drift, is a breaching run. After
    on_breach.consecutive of them in a row, kfops opens one issue for the project and
    environment (GITHUB_REPOSITORY and GITHUB_TOKEN set), updates it on later runs and
    closes it after on_breach.close_after clean ones; with on_breach.retrain auto it also
    dispatches the retrain workflow once per breach, outside the cooldown.
    The served inputs come from --inputs (drift.source probes) or from KServe's payload
    logger (drift.source logger, through `kfops monitor sink`). Writes report.json and
    prints a table, worst features first. `kfops monitor baseline --help` tells how the
    reference profile is written.

    \b
    Exit codes: 0 ok, 1 breach (or an error, printed on stderr), 2 usage error,
    3 a bug in kfops, 4 insufficient data (fewer inputs than min_samples: never ok).
    """
    from kfops.delivery import monitor as watching

    project = _with_window(_load(path), window)
    monitoring = _monitoring(project, "drift")
    drift = monitoring.drift
    chosen = [f for f, given in (("--local", local), ("--url", url), ("--env", env_name)) if given]
    if len(chosen) > 1:
        raise click.UsageError("give at most one of --local, --url URL or --env NAME")
    if drift.source == "probes" and inputs is None:
        raise click.UsageError(
            "give --inputs FILE.jsonl: the served inputs to check (drift.source is probes)"
        )
    base = _base_url(project, local, url, env_name, port) if chosen else None
    environment = env_name or "local"
    serving = project.serving
    watch = watching.Watch(
        project=project,
        environment=environment,
        base_url=base,
        model_name=model_name or (serving.name if serving else project.name),
        protocol=protocol or (serving.protocol if serving else "v1"),
        samples=lambda: _served_samples(project, drift, inputs),
        state_file=state_file or watching.default_state_file(project, environment),
        dry_run=dry_run,
        timeout=timeout,
    )
    if once:
        sys.exit(_monitor_once(watch, report_file, output_format, plot_file))
    _monitor_forever(watch, report_file, output_format, monitoring.schedule, plot_file)


def _served_samples(project: Any, drift: Any, inputs: Path | None) -> Any:
    from kfops.monitor import samples

    if drift.source == "logger" and inputs is None:
        return _logged_samples(project, drift)
    assert inputs is not None
    return samples.read_jsonl(inputs)


def _monitor_once(
    watch: Any, report_file: Path, output_format: str, plot_file: Path | None = None
) -> int:
    import json
    from datetime import datetime, timezone

    from kfops.delivery import monitor as watching

    result = watching.run_once(watch, now=datetime.now(timezone.utc), env=os.environ)
    document = json.dumps(result.document, indent=2, sort_keys=True) + "\n"
    if not watch.dry_run:
        _write_atomically(report_file, document)
        _job_summary(watching.markdown(result.document, result.drift, result.probes))
        if plot_file is not None:
            from kfops.monitor import plot

            plot.write_png(result.document, result.reference, result.samples, plot_file)
            click.echo(f"drew the drift in {display_path(plot_file)}", err=True)
    if output_format == "json":
        click.echo(document, nl=False)
    elif output_format == "markdown":
        click.echo(watching.markdown(result.document, result.drift, result.probes), nl=False)
    else:
        _monitor_table(result, watch, report_file)
    return result.exit_code


def _job_summary(text: str) -> None:
    """Append to the GitHub job summary, when there is one."""

    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with Path(summary).open("a", encoding="utf-8") as out:
            out.write(text + "\n")


def _monitor_table(result: Any, watch: Any, report_file: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    if result.probes is not None:
        probes = Table(show_edge=False)
        for column in ("probe", "kind", "result", "detail"):
            probes.add_column(column)
        for item in result.probes.results:
            probes.add_row(
                item.name,
                item.kind,
                "[green]pass[/]" if item.passed else "[red]FAIL[/]",
                item.detail,
            )
        for gate in result.probes.gates:
            probes.add_row(
                gate.name, "gate", "[green]pass[/]" if gate.passed else "[red]FAIL[/]", gate.detail
            )
        console.print(probes)
    table = Table(show_edge=False)
    for column in ("feature", "kind", "method", "score", "threshold", "drifted"):
        table.add_column(column, justify="right" if column in ("score", "threshold") else "left")
    found = result.drift
    for f in list(found.features) + ([found.prediction] if found.prediction else []):
        table.add_row(
            f.name,
            f.kind,
            f.method,
            f"{f.score:.4f}",
            f"{f.threshold:g}",
            "[red]yes[/]" if f.drifted else "no",
        )
    console.print(table)
    for reason in result.reasons:
        console.print(f"- {reason}", soft_wrap=True)
    for note in result.decision.notes:
        console.print(f"  {note}", soft_wrap=True)
    for line in result.done:
        console.print(
            f"  {line}" + (f": {result.issue_url}" if "issue" in line else ""), soft_wrap=True
        )
    if result.notice:
        console.print(f"  {result.notice}", soft_wrap=True)
    console.print(
        f"{watch.project.name} in {watch.environment}: {result.verdict.replace('_', ' ')}:"
        f" {found.samples} served inputs against {found.reference}"
        + ("" if watch.dry_run else f"; report in {display_path(report_file)}"),
        soft_wrap=True,
    )


def _monitor_forever(
    watch: Any,
    report_file: Path,
    output_format: str,
    cron: str | None,
    plot_file: Path | None = None,
) -> None:
    """Check at every tick of monitoring.schedule until Ctrl-C; a failed run is printed and
    the next one still happens."""
    import time
    from datetime import datetime, timezone

    if cron is None:
        raise click.UsageError(
            "give --once, or set monitoring.schedule (a 5-field cron) to check on a schedule"
        )
    try:
        from croniter import croniter  # type: ignore[import-untyped]
    except ImportError:
        raise KfopsError(
            "watching on a schedule needs croniter",
            "pip install 'kfops[monitor]' (or run `kfops monitor --once` from cron)",
        ) from None
    ticks = croniter(cron, datetime.now(timezone.utc))
    click.echo(
        f"watching {watch.project.name} in {watch.environment} on `{cron}` (UTC); Ctrl-C stops",
        err=True,
    )
    while True:
        due = ticks.get_next(datetime)
        time.sleep(max(0.0, (due - datetime.now(timezone.utc)).total_seconds()))
        try:
            _monitor_once(watch, report_file, output_format, plot_file)
        except KfopsError as exc:
            _print_error(exc)


@monitor.command(name="baseline")
@click.argument("path", type=_PATH, default=".")
@click.option(
    "--data",
    "data",
    type=_PATH,
    required=True,
    metavar="FILE",
    help="The reference data: CSV with a header, JSON rows (as kfops predict reads them)"
    " or JSON lines of served inputs.",
)
@click.option(
    "-o",
    "--output",
    "output",
    type=_PATH,
    help="[default: monitoring.drift.reference]",
)
@click.option(
    "--prediction-column",
    metavar="NAME",
    help="A column of the data that holds the predictions (or labels): profiled as the"
    " prediction, not as a feature.",
)
@click.option(
    "--model",
    "model_ref",
    metavar="FILE|URI",
    help="The model this profile describes: a file or folder (hashed by content) or a URI"
    " or commit (hashed as text).",
)
def monitor_baseline(
    path: Path,
    data: Path,
    output: Path | None,
    prediction_column: str | None,
    model_ref: str | None,
) -> None:
    """Write the reference profile the served inputs are compared with.

    Per feature: bins cut at the deciles with their shares and 101 quantiles (numbers),
    or the categories and their shares; the same for --prediction-column. A small
    JSON file: commit it beside the model, whose SHA-256 it records (--model).
    """
    import hashlib

    from kfops.monitor import profile

    if output is None:
        project = _load(path)
        output = _monitoring(project, "drift").drift.reference
    assert output is not None
    found = _reference_samples(data, prediction_column)
    built = profile.build(
        found,
        data_sha256=hashlib.sha256(data.read_bytes()).hexdigest(),
        model=model_ref,
        model_sha256=profile.model_sha256(model_ref) if model_ref else None,
    )
    _write_atomically(output, built.dumps())
    kinds = ", ".join(f"{f.name} ({f.kind})" for f in built.features)
    click.echo(
        f"wrote {display_path(output)}: {built.rows} rows; features {kinds}"
        + ("; and the predictions" if built.prediction else ""),
        err=True,
    )


def _reference_samples(data: Path, prediction_column: str | None) -> Any:
    from kfops.monitor import samples
    from kfops.serving import predict as client

    if data.suffix == ".jsonl":
        found = samples.read_jsonl(data)
    else:
        rows = client.read_rows(data)
        columns = rows.columns
        numbered = [
            (i + 1, dict(zip(columns, row, strict=True)) if columns else row)
            for i, row in enumerate(rows.rows)
        ]
        found = samples.from_rows(display_path(data), numbered)
    if prediction_column is None:
        return found
    if prediction_column not in found.values:
        from kfops.errors import did_you_mean

        raise KfopsError(
            f"--prediction-column {prediction_column}: {display_path(data)} has no such column",
            did_you_mean(prediction_column, found.columns, "columns: ", "check the name"),
            exit_code=EXIT_USAGE,
        )
    values = dict(found.values)
    predictions = values.pop(prediction_column)
    columns = tuple(c for c in found.columns if c != prediction_column)
    return samples.Samples(columns, values, predictions, found.count, found.named)


def _with_window(project: Any, window: str | None) -> Any:
    """The project with monitor --window in place of monitoring.drift.window."""
    import dataclasses

    from kfops.project.config import duration_seconds

    if window is None:
        return project
    drift = _monitoring(project, "drift").drift
    if drift.source != "logger":
        raise click.UsageError(
            "--window reads KServe's payload logs: monitoring.drift.source is probes, whose"
            " inputs are the --inputs file"
        )
    try:
        seconds = duration_seconds(window)
    except ValueError:
        raise click.BadParameter(
            f"{window!r} is not a duration: give e.g. 30m, 6h or 7d", param_hint="--window"
        ) from None
    drift = dataclasses.replace(drift, window=window, window_seconds=seconds)
    monitoring = dataclasses.replace(project.monitoring, drift=drift)
    return dataclasses.replace(project, monitoring=monitoring)


def _logged_samples(project: Any, drift: Any) -> Any:
    """The window of served inputs in the payload logs (drift.source logger)."""
    from datetime import datetime, timezone

    from kfops.monitor import logger, profile, sink

    assert drift.logs, "the schema checks: source logger needs logs"
    found = logger.window_samples(
        sink.open_store(drift.logs),
        until=datetime.now(timezone.utc),
        seconds=drift.window_seconds,
        signature=drift.signature,
        reference_columns=tuple(f.name for f in profile.load(drift.reference).features),
        service=project.serving.name if project.serving else None,
    )
    click.echo(found.summary(drift.logs), err=True)
    return found.samples


@monitor.command(name="sink")
@click.argument("path", type=_PATH, default=".")
@click.option("--port", type=int, default=8099, show_default=True, help="The port to listen on.")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="The address to listen on (0.0.0.0 inside a cluster, where the logger reaches it).",
)
@click.option(
    "--store",
    metavar="DIR|s3://BUCKET/PREFIX",
    help="Where the events are kept [default: monitoring.drift.logs].",
)
@click.option(
    "--flush-seconds",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="How often buffered events are written (S3 stores; a folder is written at once).",
)
def monitor_sink(path: Path, port: int, host: str, store: str | None, flush_seconds: float) -> None:
    """Receive KServe's payload logger and keep its events for `kfops monitor`.

    An HTTP server for `serving.logger.url`: it takes the logger's CloudEvents
    (binary or structured), answers 202 at once, and appends each as one JSON line to
    STORE/YYYY/MM/DD/HH/<id>.jsonl; an event it cannot read is answered 400 with the
    reason. With `monitoring.drift.source: logger`, `kfops monitor --once` reads
    the window back. Ctrl-C stops it.
    """
    from kfops.monitor import sink

    if store is None:
        project = _load(path)
        drift = _monitoring(project, "drift").drift
        if not drift.logs:
            raise KfopsError(
                f"{project.shown}: monitoring.drift has no `logs`: the sink does not know"
                " where to keep the events",
                "give --store DIR|s3://BUCKET/PREFIX, or add `logs:` under monitoring.drift",
                exit_code=EXIT_USAGE,
            )
        store = drift.logs
    receiver = sink.Sink(sink.open_store(store, create=True))

    def ready(url: str) -> None:
        click.echo(
            f"kfops monitor sink: listening on {url}; keeping events in {store}\n"
            f"  set serving.logger.url to {url} (as the cluster reaches this address)"
            "; Ctrl-C stops",
            err=True,
        )

    def warn(message: str) -> None:
        click.echo(f"kfops monitor sink: {message}", err=True)

    sink.serve(receiver, host, port, flush_seconds=flush_seconds, ready=ready, warn=warn)
    click.echo(
        f"kfops monitor sink: stopped; {receiver.received} events kept,"
        f" {receiver.rejected} rejected",
        err=True,
    )


@cli.command(name="retrain")
@click.argument("path", type=_PATH, default=".")
@click.option("--local", is_flag=True, help="The model `kfops serve` serves (on --port).")
@click.option("--url", metavar="URL", help="A serving model's base URL (give --commit too).")
@click.option("--env", "env_name", metavar="NAME", help="The model served in this environment.")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8080, show_default=True, help="With --local."
)
@click.option("--commit", metavar="SHA", help="Retrain at this commit (default: the deployed one).")
@click.option(
    "--key",
    metavar="KEY",
    help="Idempotency key (the monitor's dispatch gives one): the pull request's branch is"
    " kfops/retrain/ENV-KEY, and a re-run while it is open does nothing.",
)
@click.option("--dry-run", is_flag=True, help="Say what would run and be opened; do nothing.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
)
def retrain_command(
    path: Path,
    local: bool,
    url: str | None,
    env_name: str | None,
    port: int,
    commit: str | None,
    key: str | None,
    dry_run: bool,
    output_format: str,
) -> None:
    """Retrain at the deployed commit; propose the candidate if it beats the serving model.

    \b
    1. the deployed commit: --env reads it from the InferenceService, --local from the
       local run `kfops serve` serves, --commit gives it (needed with --url)
    2. the pipeline at that commit, in a temporary git worktree (removed afterwards):
       a local run; with --env and `kfp:`, a run on Kubeflow Pipelines, waited for
    3. the gate: the candidate, served by the KServe model server on a free port, and
       the serving model are scored on monitoring.probes.sets; the candidate must meet
       each set's thresholds, be no worse on any metric, and pass serving.gate
    4. on a pass, `serving.model.run: RUN` in mlops.yaml: a pull request on branch
       kfops/retrain/ENV-KEY (with GITHUB_TOKEN and GITHUB_REPOSITORY), else the diff on
       stdout; on a fail, a comment on the monitor's issue

    \b
    Exit codes: 0 the candidate passed (pull request opened, or already open),
    1 it failed the gate (or an error), 2 usage error, 3 a bug in kfops.
    """
    import json

    from rich.console import Console

    from kfops.monitor import retrain as core

    chosen = [f for f, given in (("--local", local), ("--url", url), ("--env", env_name)) if given]
    if len(chosen) != 1:
        raise click.UsageError("give one of --local, --url URL or --env NAME")
    project = _load(path)
    environment = project.environment(env_name, _KFP_AND_KUBE) if env_name else None
    on_kubeflow = environment is not None and environment.kfp is not None
    label = env_name or "local"  # as `kfops monitor` names it (its issue, the branch)
    base = "" if on_kubeflow else _base_url(project, local, url, env_name, port)
    target = core.Target(label, base, environment, local)
    repository = None
    token = os.environ.get("KFOPS_GITHUB_TOKEN") or os.environ.get("GITHUB_TOKEN")
    if token and os.environ.get("GITHUB_REPOSITORY"):
        from kfops.ci.event import GitHubContext
        from kfops.ci.github import Repository

        environ = os.environ
        repository = Repository(
            GitHubContext(
                event_name=environ.get("GITHUB_EVENT_NAME", "workflow_dispatch"),
                event={},
                ref=environ.get("GITHUB_REF", ""),
                sha=environ.get("GITHUB_SHA", ""),
                repository=environ["GITHUB_REPOSITORY"],
                api_url=environ.get("GITHUB_API_URL", "https://api.github.com"),
                server_url=environ.get("GITHUB_SERVER_URL", "https://github.com"),
                run_id=environ.get("GITHUB_RUN_ID", ""),
                summary=None,
                output=None,
                token=token,
            ),
            backoff=float(environ.get("KFOPS_RETRY_SECONDS") or 1),
        )
    branch = core.branch_name(label, key) if key else None
    if repository is not None and branch is not None:
        existing = repository.find_pull(branch, state="open")
        if existing is not None:
            click.echo(
                f"a retrain pull request for key {key} is already open: #{existing.number}"
                f" {existing.url} (branch {branch}); nothing to do",
                err=True,
            )
            if output_format == "json":
                skipped = {
                    "skipped": True,
                    "pull": {"number": existing.number, "url": existing.url},
                }
                click.echo(json.dumps(skipped, indent=2, sort_keys=True))
            return

    def log(line: str) -> None:
        click.echo(line, err=True)

    if dry_run:
        deployed = core.find_deployed(project, target, commit)
        where = "on Kubeflow Pipelines" if on_kubeflow else "locally, in a temporary worktree"
        sets = ", ".join(s.name for s in (project.monitoring.sets if project.monitoring else ()))
        shown = branch or core.branch_name(label, "RUN")
        lines = [
            f"deployed commit {deployed.commit[:12]} ({deployed.source})",
            f"would run {project.name} at commit {deployed.commit[:12]} {where}",
            f"would gate the candidate against {base or 'the serving release'}"
            + (f" on probe sets {sets}" if sets and not on_kubeflow else ""),
            f"on a pass, would set serving.model.run in {display_path(project.config_file)}"
            + (
                f" and open a pull request on branch {shown}"
                if repository is not None
                else " and print the diff (no GITHUB_TOKEN/GITHUB_REPOSITORY)"
            ),
            "dry run: nothing ran, nothing changed",
        ]
        if output_format == "json":
            planned = {"dry_run": True, "deployed_commit": deployed.commit, "plan": lines}
            click.echo(json.dumps(planned, indent=2, sort_keys=True))
        else:
            click.echo("\n".join(lines))
        return
    kfp = None
    if on_kubeflow:
        from kfops.kubeflow.client import connect

        assert environment is not None
        kfp = connect(environment)
    result = core.retrain(
        project, target, commit=commit, log=log, console=Console(stderr=True), kfp=kfp
    )
    document: dict[str, Any] = result.to_json()
    branch = branch or core.branch_name(label, result.candidate_run)
    root = core.repo_root(project)
    shown = project.config_file.resolve().relative_to(root).as_posix()
    if result.pointer is not None:
        old = project.config_file.read_text(encoding="utf-8")
        diff = core.pointer_diff(project.config_file, old, result.pointer[1], shown)
        document["diff"] = diff
        if repository is not None:
            pull = repository.open_pull(
                base=core.base_branch(dict(os.environ)),
                branch=branch,
                title=f"kfops retrain: serve run {result.candidate_run} ({label})",
                body=result.markdown(),
                files={shown: result.pointer[1]},
                message=f"serving: serve run {result.candidate_run}, retrained at commit"
                f" {result.deployed_commit[:12]}",
            )
            document["pull"] = {"number": pull.number, "url": pull.url, "branch": pull.branch}
            log(f"opened pull request #{pull.number}: {pull.url}")
        else:
            saved = project.root / ".kfops" / "retrain" / (branch.rsplit("/", 1)[-1] + ".diff")
            _write_atomically(saved, diff)
            document["diff_file"] = str(saved)
            log(
                f"no GITHUB_TOKEN/GITHUB_REPOSITORY, so no pull request: the change is in"
                f" {display_path(saved)}. To propose it: `git switch -c {branch} && git apply"
                f" {display_path(saved)} && git commit -am 'serving: serve run"
                f" {result.candidate_run}' && git push -u origin {branch}`, then open the pull"
                " request"
            )
    elif repository is not None:
        from kfops.ci import monitor as github_side

        mark = github_side.marker(github_side.project_key(project.root), label)
        issue = repository.sticky_issue(mark, github_side.LABEL)
        if issue is not None:
            repository.comment(issue.number, result.markdown())
            document["comment"] = {"issue": issue.number}
            log(f"commented on issue #{issue.number}")
        else:
            log(f"no open monitor issue for {label}: the result is reported here only")
    if output_format == "json":
        click.echo(json.dumps(document, indent=2, sort_keys=True))
    else:
        click.echo(result.markdown(), nl=False)
        if result.pointer is not None and repository is None:
            click.echo(document["diff"], nl=False)
    if not result.passed:
        sys.exit(EXIT_FAILED)


@cli.command()
@click.argument("path", type=_PATH, default=".")
@click.option("--env", "env_name", metavar="NAME", required=True, help="The environment.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json", "markdown"]),
    default="text",
    show_default=True,
)
def status(path: Path, env_name: str, output_format: str) -> None:
    """One view of an environment, read from what is live there (read-only).

    The pipeline's latest versions and their commits, the last runs and their states,
    the schedules kfops keeps, and the served model: URL, release, model URI, commit,
    stage, readiness, traffic split and the releases before it; the monitor's last
    verdict, its issue and the last retraining dispatched; with links to the KFP UI and
    the Kubeflow dashboard. A part that cannot be read says why, the others still
    show; the exit code is then 1.
    """
    from kfops.delivery import status as live

    project = _load(path)
    environment = project.environment(env_name, _KFP_AND_KUBE)
    if environment.kfp is None and (environment.kubernetes is None or project.serving is None):
        raise KfopsError(
            f"environment `{env_name}` has neither `kfp:` nor `kubernetes:` with a"
            " `serving:` section: there is nothing live to show",
            f"add `kfp: {{host: ...}}` or `kubernetes: {{namespace: ...}}` under"
            f" environments.{env_name}",
            exit_code=EXIT_USAGE,
        )
    found = live.collect(project, environment, os.environ)
    if output_format == "json":
        click.echo(live.render_json(found))
    elif output_format == "markdown":
        click.echo(found.markdown())
    else:
        click.echo(found.text())
    if found.errors:
        sys.exit(EXIT_FAILED)


@cli.command()
@click.argument("pipeline_file", type=_PATH, required=False)
@click.option("--function", help="The @dsl.pipeline function (default: the only one in the file).")
@click.option("--name", help="Project name (default: from the pipeline or folder).")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.option(
    "--github",
    "github_project",
    type=_PATH,
    is_flag=False,
    flag_value=Path(),
    default=None,
    metavar="[PROJECT]",
    help="Write .github/workflows/kfops.yml for PROJECT (default: this folder) instead.",
)
@click.option(
    "--action",
    default="kfops/kfops/action",
    show_default=True,
    help="With --github: the action to use (OWNER/REPO/action).",
)
@click.option(
    "--action-ref",
    default=f"v{__version__}",
    show_default=True,
    help="With --github: the action's version; a commit SHA pins it best.",
)
def init(
    pipeline_file: Path | None,
    function: str | None,
    name: str | None,
    force: bool,
    github_project: Path | None,
    action: str,
    action_ref: str,
) -> None:
    """Write a commented starter mlops.yaml beside PIPELINE_FILE (a Python KFP pipeline
    or a Kale-tagged notebook), or with --github a ready GitHub Actions workflow."""
    from kfops.ci import scaffold

    if github_project is not None:
        written = scaffold.github_workflow(
            github_project, action=action, ref=action_ref, force=force
        )
        more = scaffold.monitor_workflows(
            github_project, action=action, ref=action_ref, force=force
        )
        names = ", ".join(display_path(p) for p in [written, *more])
        click.echo(f"wrote {names}; commit them and open a pull request", err=True)
        return
    if pipeline_file is None:
        raise click.UsageError("give PIPELINE_FILE, or --github for a workflow")
    written = scaffold.init(pipeline_file, function=function, name=name, force=force)
    click.echo(f"wrote {display_path(written)}; check it with: kfops validate", err=True)


@cli.command()
@click.argument("path", type=_PATH, default=".")
@click.option(
    "--no-comment",
    is_flag=True,
    help="Do not write the pull-request comment (the summary and outputs still are).",
)
def ci(path: Path, no_comment: bool) -> None:
    """What the GitHub Action runs: validate, compile, plan and report, for this event.

    Reads the GitHub Actions environment (GITHUB_EVENT_NAME, GITHUB_EVENT_PATH, ...)
    and does what mlops.yaml's `on:` section asks for the event (by default: validate
    and compile on pull requests and pushes). Problems become annotations on their
    lines; the report goes to one pull-request comment (kept up to date), the job
    summary and the step outputs. On a release tag with `on.tag.deploy: true`, it
    releases the model (as `kfops deploy`) and records a GitHub deployment. Exits 1 when
    the project is invalid, does not compile, its run fails, or a tag's release is
    rolled back or fails.
    """
    from rich.console import Console

    from kfops.ci import event, github, report

    context = event.GitHubContext.from_env(os.environ)
    # The pipeline's code runs from here on (compile imports it, steps run it): it must
    # not see the token that can write to the repository.
    for name in ("GITHUB_TOKEN", "KFOPS_GITHUB_TOKEN"):
        os.environ.pop(name, None)
    result = event.execute(path, context, Console(stderr=True, highlight=False))
    result.environment = os.environ.get("KFOPS_ENVIRONMENT", "")
    for problem in sorted(result.problems):
        click.echo(report.github_annotation(problem))
    mark = github.marker(result.project)
    body = report.markdown(result, mark)
    comment = github.Published()
    token_error: KfopsError | None = None
    wanted = context.pull_number is not None and not no_comment
    if wanted and (result.decision is None or result.decision.kind):
        try:
            comment = github.publish(context, context.pull_number or 0, body, mark)
        except KfopsError as exc:  # a rejected token: report everywhere else, then fail
            token_error = exc
    summary_body = report.markdown(result, mark, limit=report.SUMMARY_LIMIT)
    if comment.notice:
        click.echo(f"::notice title=kfops::{comment.notice}")
        summary_body += f"\n> {report.escape(comment.notice)}\n"
    import json

    try:
        if context.summary is not None:
            with context.summary.open("a", encoding="utf-8") as summary:
                summary.write(summary_body)
        if context.output is not None:
            event.write_outputs(
                context.output,
                {
                    "status": "failed" if result.failed else "ok",
                    "compiled": result.compiled,
                    "comment-url": comment.url,
                    "report": json.dumps(report.to_json(result, comment.url), sort_keys=True),
                },
            )
    except OSError as exc:
        click.echo(f"::warning title=kfops::cannot write the job summary or step outputs: {exc}")
    if token_error is not None:
        raise token_error
    verdict = "failed" if result.failed else "ok"
    click.echo(
        f"kfops ci: {result.project}: {verdict}" + (f" ({comment.url})" if comment.url else ""),
        err=True,
    )
    if result.failed:
        sys.exit(EXIT_FAILED)


def main() -> None:
    cli(prog_name="kfops")
