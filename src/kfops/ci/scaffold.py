"""``kfops init``: a commented starter mlops.yaml for an existing Python pipeline."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

from kfops.errors import EXIT_USAGE, KfopsError, display_path
from kfops.project import source
from kfops.project.config import dns_name
from kfops.project.schema import schema_path

_IGNORED = ".kfops/"


def init(
    pipeline_file: Path,
    *,
    function: str | None = None,
    name: str | None = None,
    force: bool = False,
) -> Path:
    """Write ``mlops.yaml`` beside ``pipeline_file`` and git-ignore ``.kfops/`` there.

    Raises:
        KfopsError: the file has no (or several) pipelines, or mlops.yaml exists.
    """
    if pipeline_file.suffix not in (".py", ".ipynb") or not pipeline_file.is_file():
        raise KfopsError(
            f"{display_path(pipeline_file)}: not a Python file or notebook",
            "pass the .py file that defines your @dsl.pipeline function, or a Kale-tagged"
            " .ipynb notebook",
            exit_code=EXIT_USAGE,
        )
    if pipeline_file.suffix == ".ipynb":
        return _init_notebook(pipeline_file, name, force)
    try:
        functions = source.functions_in(pipeline_file)
    except source.SourceSyntaxError as exc:
        raise KfopsError(
            f"{display_path(pipeline_file)}:{exc.line}:{exc.column}: Python syntax: {exc.message}"
        ) from None
    chosen = _choose(pipeline_file, functions, function)
    root = pipeline_file.parent
    target = _target(root, force)
    project_name = (
        name
        or dns_name(chosen.pipeline_name or "")
        or dns_name(root.resolve().name)
        or dns_name(chosen.name)
        or "pipeline"
    )
    _check_name(project_name)
    target.write_text(render(pipeline_file.name, chosen, project_name, root), encoding="utf-8")
    _ignore_runs(root)
    return target


def _init_notebook(path: Path, name: str | None, force: bool) -> Path:
    from kfops.notebook import tags

    nb = tags.read(path, display_path(path))
    if any(p.severity == "error" for p in nb.problems):
        raise KfopsError(
            f"{display_path(path)} has problems to fix first",
            f"run `kfops validate {display_path(path)}` to see them",
        )
    root = path.parent
    target = _target(root, force)
    project_name = name or dns_name(nb.name or path.stem) or "notebook"
    _check_name(project_name)
    params = [f"  #   {p.name}: {_yaml_literal(repr(p.value))}" for p in nb.parameters.values()]
    steps = list(nb.steps)
    lines = [
        *_header(root, project_name),
        "pipeline:",
        f"  notebook: {_scalar(path.name)}",
    ]
    if params:
        lines += [
            "  # Values for the notebook's pipeline-parameters (`kfops run --param NAME=VALUE`",
            "  # overrides them again):",
            "  # parameters:",
            *params,
        ]
    example = (steps[0] if steps else "train").replace("_", "-")
    lines += _steps_comment(example)
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _ignore_runs(root)
    return target


def _target(root: Path, force: bool) -> Path:
    for existing in (root / "mlops.yaml", root / "mlops.yml"):
        if existing.exists() and not force:
            raise KfopsError(
                f"{display_path(existing)} already exists",
                "pass --force to overwrite it, or edit it by hand",
            )
    return root / "mlops.yaml"


def _scalar(text: str) -> str:
    """A string as a YAML scalar, quoted when it needs to be (`#`, `: `, ...)."""
    import yaml

    dumped: str = yaml.safe_dump(text, default_flow_style=True, width=10_000).strip()
    return dumped.removesuffix("\n...").strip()


def _check_name(project_name: str) -> None:
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", project_name) or len(project_name) > 63:
        raise KfopsError(
            f"--name {project_name!r} is not a DNS-1123 name",
            "use lowercase letters, digits and '-', e.g. --name churn-model",
            exit_code=EXIT_USAGE,
        )


def _header(root: Path, name: str) -> list[str]:
    # Editors read the schema from the project's .kfops folder (git-ignored; `kfops init`
    # writes it), so the line is the same on every machine.
    copy = root / ".kfops" / "mlops.schema.json"
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_bytes(schema_path().read_bytes())
    return [
        "# yaml-language-server: $schema=.kfops/mlops.schema.json",
        "# kfops project file: `kfops validate` checks it, `kfops run` runs the pipeline",
        "# on this machine, `kfops compile` writes it as KFP IR YAML.",
        "version: 1",
        f"name: {name}  # names the compiled pipeline: lowercase letters, digits and '-'",
        "# description: What this pipeline does, in a sentence.",
        "",
    ]


def _steps_comment(example: str) -> list[str]:
    return [
        "  # Per-step settings, keyed by task name (a component or notebook step",
        "  # `train_model` is task `train-model`); they override the code's and tags' own:",
        "  # steps:",
        f"  #   {example}:",
        '  #     resources: {cpu: "2", memory: 4Gi, gpu: 1}',
        "  #     retries: 2",
        "  #     cache: false",
        "  #     env: {LOG_LEVEL: info}",
    ]


def _choose(
    file: Path, functions: dict[str, source.PipelineFunction], wanted: str | None
) -> source.PipelineFunction:
    pipelines = [f for f in functions.values() if f.is_pipeline]
    if wanted is not None:
        for candidate in pipelines:
            if candidate.name == wanted:
                return candidate
        raise KfopsError(
            f"{display_path(file)} has no @dsl.pipeline function `{wanted}`",
            "its pipelines: " + (", ".join(p.name for p in pipelines) or "none"),
            exit_code=EXIT_USAGE,
        )
    if len(pipelines) == 1:
        return pipelines[0]
    if not pipelines:
        raise KfopsError(
            f"{display_path(file)} defines no @dsl.pipeline function",
            "decorate your pipeline function with @dsl.pipeline (from kfp import dsl)",
        )
    raise KfopsError(
        f"{display_path(file)} defines several pipelines: " + ", ".join(p.name for p in pipelines),
        "choose one with --function NAME",
        exit_code=EXIT_USAGE,
    )


def render(file_name: str, function: source.PipelineFunction, name: str, root: Path) -> str:
    params = [p for p in function.parameters.values() if p.has_default]
    lines = [
        *_header(root, name),
        "pipeline:",
        f"  python: {_scalar(f'{file_name}:{function.name}')}",
    ]
    if params:
        lines.append(
            "  # Values for the pipeline's parameters (the defaults come from its signature;"
        )
        lines.append("  # `kfops run --param NAME=VALUE` overrides them again):")
        lines.append("  # parameters:")
        lines += [f"  #   {p.name}: {_yaml_literal(p.default)}" for p in params]
    lines += _steps_comment("train-model")
    return "\n".join(lines) + "\n"


def _yaml_literal(source_text: str | None) -> str:
    """A Python default's source as a YAML value (best effort; it is only a comment)."""
    try:
        value = ast.literal_eval(source_text or "")
    except (ValueError, SyntaxError):
        return f"{source_text}  # not a literal: set a value"
    import yaml

    text: str = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("\n...").strip()


def _ignore_runs(root: Path) -> None:
    """Keep local runs out of git: add `.kfops/` to the project's .gitignore."""
    gitignore = root / ".gitignore"
    existing = gitignore.read_text(encoding="utf-8") if gitignore.exists() else ""
    if any(line.strip() in (_IGNORED, ".kfops") for line in existing.splitlines()):
        return
    prefix = "" if not existing or existing.endswith("\n") else "\n"
    with gitignore.open("a", encoding="utf-8") as f:
        f.write(f"{prefix}# kfops: local runs, caches and compiled pipelines\n{_IGNORED}\n")


def github_workflow(project: Path, *, action: str, ref: str, force: bool) -> Path:
    """Write ``.github/workflows/kfops.yml`` at the root of the git repository holding
    ``project``: minimal permissions, one run at a time per ref, the action pinned.

    Raises:
        KfopsError: not inside a git repository, or the workflow exists (without force).
    """
    from kfops.ci.event import repo_root

    folder = project if project.is_dir() else project.parent
    root = repo_root(folder)
    if root is None:
        raise KfopsError(
            f"{display_path(folder)} is not inside a git repository",
            "run `git init` first; the workflow goes to the repository's .github/workflows",
        )
    target = root / ".github" / "workflows" / "kfops.yml"
    if target.exists() and not force:
        raise KfopsError(f"{display_path(target)} already exists", "pass --force to overwrite it")
    if not re.fullmatch(r"[A-Za-z0-9._/-]+", ref) or not re.fullmatch(r"[A-Za-z0-9._/-]+", action):
        raise KfopsError(
            f"--action {action!r} / --action-ref {ref!r}: not an action reference",
            "e.g. --action kfops/kfops/action --action-ref v0.1.0 (or a commit SHA)",
            exit_code=EXIT_USAGE,
        )
    if project.is_dir() and not any((project / n).is_file() for n in ("mlops.yaml", "mlops.yml")):
        raise KfopsError(
            f"{display_path(project)} has no mlops.yaml",
            "write one first with `kfops init PIPELINE.py`, or pass the project folder",
        )
    relative = Path(os.path.relpath(project.resolve(), root.resolve())).as_posix()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(
        _WORKFLOW.format(action=action, ref=ref, path=_scalar(relative)), encoding="utf-8"
    )
    return target


def monitor_workflows(project: Path, *, action: str, ref: str, force: bool) -> list[Path]:
    """Write the monitor and retrain workflows beside kfops.yml when the project has
    ``monitoring:``: the monitor on monitoring.schedule (``runner: github``), and the
    retrain workflow it dispatches (on_breach.workflow). Minimal permissions each.

    Raises:
        KfopsError: a workflow exists (without force).
    """
    from kfops.ci.event import repo_root
    from kfops.project import config

    folder = project if project.is_dir() else project.parent
    root = repo_root(folder)
    try:
        loaded = config.load(project)
    except KfopsError:
        return []  # kfops.yml's own run reports what is wrong with mlops.yaml
    monitoring = loaded.monitoring
    if root is None or monitoring is None:
        return []
    environment = (
        monitoring.schedule_environment
        or (loaded.triggers.tag.environment if loaded.triggers.tag else None)
        or next((e.name for e in loaded.environments if e.kubernetes), "")
    )
    relative = _scalar(Path(os.path.relpath(loaded.root.resolve(), root.resolve())).as_posix())
    values = {
        "action": action,
        "ref": ref,
        "path": relative,
        "environment": _scalar(environment) if environment else '""',
        "group": re.sub(r"[^A-Za-z0-9_-]", "-", environment or "local"),
        "workflow": monitoring.on_breach.workflow,
    }
    written = []
    wanted = [(monitoring.on_breach.workflow, _RETRAIN)]
    if monitoring.schedule and monitoring.runner == "github":
        wanted.insert(0, ("kfops-monitor.yml", _MONITOR))
        values["cron"] = _scalar(monitoring.schedule)
    for name, template in wanted:
        target = root / ".github" / "workflows" / name
        if target.exists() and not force:
            raise KfopsError(
                f"{display_path(target)} already exists", "pass --force to overwrite it"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(template.format(**values), encoding="utf-8")
        written.append(target)
    return written


_MONITOR = """\
# kfops: watch the served model on monitoring.schedule. A breach opens (or updates) one
# issue for the project and environment; with `on_breach.retrain: auto` it also
# dispatches {workflow}, once per breach, outside the cooldown. Clean runs close the
# issue again. Written by `kfops init --github`.
name: kfops monitor

on:
  schedule:
    - cron: {cron}
  workflow_dispatch:

permissions: {{}}

concurrency:
  group: kfops-monitor-{group}
  cancel-in-progress: false

jobs:
  monitor:
    runs-on: ubuntu-latest
    timeout-minutes: 20
    permissions:
      contents: read
      issues: write  # the monitor's issue
      actions: write  # dispatch the retrain workflow
    env:
      # The monitor's memory between runs (breaches in a row, the last dispatch).
      KFOPS_MONITOR_STATE: ${{{{ github.workspace }}}}/.kfops-monitor/state.json
    steps:
      - uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2
        with:
          persist-credentials: false
      - uses: actions/setup-python@0b93645e9fea7318ecaed2b359559ac225c90a2b # v5.3.0
        with:
          python-version: "3.11"
      - uses: actions/cache/restore@5a3ec84eff668545956fd18022155c47e93e2684 # v4.2.3
        with:
          path: .kfops-monitor
          key: kfops-monitor-{group}-${{{{ github.run_id }}}}
          restore-keys: kfops-monitor-{group}-
      - uses: {action}@{ref}
        with:
          path: {path}
          command: monitor
          environment: {environment}
          kubeconfig: ${{{{ secrets.KUBECONFIG }}}}  # to find the model's URL
        # env:  # where `kfops monitor sink` stores the logged requests (drift.logs: s3://...)
        #   AWS_ACCESS_KEY_ID: ${{{{ secrets.MONITOR_AWS_ACCESS_KEY_ID }}}}
        #   AWS_SECRET_ACCESS_KEY: ${{{{ secrets.MONITOR_AWS_SECRET_ACCESS_KEY }}}}
      - uses: actions/cache/save@5a3ec84eff668545956fd18022155c47e93e2684 # v4.2.3
        if: always()  # a breaching run fails the job, and must still be remembered
        with:
          path: .kfops-monitor
          key: kfops-monitor-{group}-${{{{ github.run_id }}}}
"""

_RETRAIN = """\
# kfops: retrain the served model when the monitor asks (workflow_dispatch, with the
# breach's key). `kfops retrain` runs the pipeline at the deployed commit, gates the
# candidate against the serving model on the labelled probe sets, and opens one pull
# request per breach that moves serving.model.run; a failing candidate is reported on
# the monitor's issue. Nothing served changes until that pull request is merged and
# released. Written by `kfops init --github`.
name: kfops retrain

on:
  workflow_dispatch:
    inputs:
      key:
        description: The breach's idempotency key (one pull request per key).
        required: true
        type: string
      environment:
        description: The environment whose model is retrained.
        required: true
        type: string
      project:
        description: The project folder (informational).
        required: false
        type: string
      issue:
        description: The monitor's issue number (informational).
        required: false
        type: string

permissions: {{}}

concurrency:
  group: kfops-retrain-{group}
  cancel-in-progress: false

jobs:
  retrain:
    runs-on: ubuntu-latest
    timeout-minutes: 120
    permissions:
      contents: write  # the branch that moves the model pointer
      pull-requests: write  # the pull request
      issues: write  # a comment on the monitor's issue when the candidate fails
    steps:
      - uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2
        with:
          fetch-depth: 0  # the deployed commit is somewhere in the history
          persist-credentials: false
      - uses: actions/setup-python@0b93645e9fea7318ecaed2b359559ac225c90a2b # v5.3.0
        with:
          python-version: "3.11"
      - uses: {action}@{ref}
        with:
          path: {path}
          command: retrain
          environment: ${{{{ inputs.environment }}}}
          key: ${{{{ inputs.key }}}}
          kubeconfig: ${{{{ secrets.KUBECONFIG }}}}
          # A pull request opened with the workflow's own token starts no workflow; to
          # have kfops.yml check it, give a token of a GitHub App or a user instead:
          # github-token: ${{{{ secrets.KFOPS_PR_TOKEN }}}}
"""


_WORKFLOW = """\
# kfops: validate, compile and plan the pipeline on every pull request and push, and keep
# one pull-request comment up to date; on a release tag, do what `on.tag` asks (with
# `deploy: true`, release the model, recorded as a GitHub deployment).
# Written by `kfops init --github`.
name: kfops

on:
  pull_request:
  push:
    branches: [main]
    tags: ["v*"]

permissions: {{}}

concurrency:
  group: kfops-${{{{ github.ref }}}}
  cancel-in-progress: true

jobs:
  kfops:
    if: github.ref_type != 'tag'
    runs-on: ubuntu-latest
    timeout-minutes: 30
    permissions:
      contents: read
      pull-requests: write  # the report comment
    steps:
      - uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2
        with:
          fetch-depth: 0  # the plan compares with the base branch's history
          persist-credentials: false
      - uses: actions/setup-python@0b93645e9fea7318ecaed2b359559ac225c90a2b # v5.3.0
        with:
          python-version: "3.11"
      # For the strongest pin, use a commit SHA: kfops init --github --action-ref SHA
      - uses: {action}@{ref}
        with:
          path: {path}

  release:
    # Tags only: the one job that may record GitHub deployments. A pull request, from a
    # fork or not, never runs it.
    if: github.ref_type == 'tag'
    runs-on: ubuntu-latest
    timeout-minutes: 60
    concurrency:
      group: kfops-release  # one release at a time; never cancel one half-way
      cancel-in-progress: false
    permissions:
      contents: read
      deployments: write  # the GitHub deployment that records the release
    steps:
      - uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2
        with:
          persist-credentials: false
      - uses: actions/setup-python@0b93645e9fea7318ecaed2b359559ac225c90a2b # v5.3.0
        with:
          python-version: "3.11"
      - uses: {action}@{ref}
        with:
          path: {path}
          kubeconfig: ${{{{ secrets.KUBECONFIG }}}}  # the cluster that serves the model
          # model-uri: s3://bucket/models/iris  # when serving.model gives no URI
"""
