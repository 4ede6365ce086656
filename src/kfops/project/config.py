"""mlops.yaml: read with positions, check against the schema and the pipeline source, build
the frozen ``Project``. Imports nothing heavy: ``kfops validate`` must stay fast."""

from __future__ import annotations

import difflib
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from kfops.errors import (
    EXIT_USAGE,
    InvalidProject,
    KfopsError,
    Problem,
    did_you_mean,
    display_path,
)
from kfops.project import document, schema, source
from kfops.project.document import Document, Mark
from kfops.project.model import (
    DRIFT_DEFAULTS,
    Bound,
    Canary,
    CanaryGates,
    Drift,
    DriftTest,
    Environment,
    GateRule,
    ImageRecipe,
    KfpTarget,
    KubeTarget,
    Monitoring,
    NotebookRef,
    OnBreach,
    PayloadLogger,
    PipelineRef,
    ProbeRequest,
    ProbeSet,
    Project,
    Resources,
    Schedule,
    Serving,
    StepOverride,
    Trigger,
    Triggers,
)
from kfops.project.model import Gates as MonitorGates

CONFIG_NAMES = ("mlops.yaml", "mlops.yml")


def find_config(path: Path) -> Path:
    """The mlops.yaml for PATH: the file itself, or the one in the folder."""
    if path.is_dir():
        for name in CONFIG_NAMES:
            if (path / name).is_file():
                return path / name
        raise KfopsError(
            f"no mlops.yaml in {display_path(path)}",
            "write one with `kfops init PIPELINE.py` (or `kfops init NOTEBOOK.ipynb`),"
            " or pass a Kale-tagged notebook directly",
        )
    if not path.exists():
        raise KfopsError(f"{display_path(path)}: no such file or folder", exit_code=EXIT_USAGE)
    if path.suffix not in (".yaml", ".yml"):
        raise KfopsError(
            f"{display_path(path)} is not an mlops.yaml or a notebook",
            "pass the project folder, its mlops.yaml, or a .ipynb notebook"
            + (
                f" (or write one with `kfops init {display_path(path)}`)"
                if path.suffix == ".py"
                else ""
            ),
            exit_code=EXIT_USAGE,
        )
    return path


def check(path: Path) -> tuple[Project | None, list[Problem]]:
    """Every problem with the project at ``path``; the project when there are no errors.

    ``path`` is a project folder, its mlops.yaml, or a Kale-tagged notebook.
    """
    if path.suffix == ".ipynb" and path.is_file():
        return _check_notebook(path)
    config_file = find_config(path)
    shown = display_path(config_file)
    doc = document.load(config_file, shown)
    if doc.problems:
        return None, doc.problems
    if doc.data is None:
        return None, [
            Problem(shown, 0, 0, "file has no content", "run `kfops init` for a starter file")
        ]
    if not isinstance(doc.data, dict):
        return None, [
            doc.problem(
                (),
                f"the top level must be a mapping, found {schema.describe(doc.data)}",
                "start with `version: 1`, `name:` and `pipeline:` (run `kfops init` for a"
                " starter file)",
            )
        ]
    problems = schema.check(doc)
    failed_paths = {p.path for p in problems}
    problems += _check_source(doc, config_file, failed_paths)
    problems += _check_images(doc, config_file, failed_paths)
    problems += _check_serving(doc, config_file, failed_paths)
    problems += _check_monitoring(doc, config_file, failed_paths)
    if any(p.severity == "error" for p in problems):
        return None, problems
    return _project(doc, config_file, shown, problems), problems


def _check_notebook(path: Path) -> tuple[Project | None, list[Problem]]:
    """A notebook given directly: its own metadata makes the project, unless an
    mlops.yaml beside it names it; then that file wins, and we say so."""
    for name in CONFIG_NAMES:
        config_file = path.parent / name
        if config_file.is_file() and _names_notebook(config_file, path):
            project, problems = check(config_file)
            notice = Problem(
                display_path(path),
                0,
                0,
                f"using {display_path(config_file)}, which names this notebook;"
                " its settings take precedence over the notebook's metadata",
                severity="warning",
            )
            if project is not None:
                project = replace(project, warnings=(notice, *project.warnings))
            return project, [notice, *problems]
    from kfops.notebook import codegen

    shown = display_path(path)
    _, nb = codegen.from_notebook(path, shown, "pipeline")
    problems = list(nb.problems)
    if any(p.severity == "error" for p in problems):
        return None, problems
    project = Project(
        root=path.parent.resolve(),
        config_file=path.resolve(),
        shown=shown,
        name=dns_name(nb.name or path.stem) or "notebook",
        description=nb.description,
        pipeline=NotebookRef(file=path.resolve(), mark=Mark(0, 0)),
        warnings=tuple(problems),
    )
    return project, problems


def _names_notebook(config_file: Path, notebook: Path) -> bool:
    doc = document.load(config_file, str(config_file))
    pipeline = doc.data.get("pipeline") if isinstance(doc.data, dict) else None
    named = pipeline.get("notebook") if isinstance(pipeline, dict) else None
    return isinstance(named, str) and (config_file.parent / named).resolve() == notebook.resolve()


def dns_name(text: str) -> str:
    """``text`` made into a DNS-1123 label (may be empty)."""
    cleaned = re.sub(r"-+", "-", re.sub(r"[^a-z0-9]", "-", text.lower())).strip("-")
    return cleaned[:63].strip("-")


def load(path: Path) -> Project:
    """The validated project at ``path``.

    Raises:
        InvalidProject: with every problem found.
    """
    project, problems = check(path)
    if project is None:
        raise InvalidProject.of(problems)
    return project


def _check_source(doc: Document, config_file: Path, failed_paths: set[str]) -> list[Problem]:
    data: dict[str, Any] = doc.data
    pipeline = data.get("pipeline")
    if not isinstance(pipeline, dict):
        return []
    if isinstance(pipeline.get("notebook"), str) and "pipeline.notebook" not in failed_paths:
        return _check_notebook_source(doc, config_file, failed_paths)
    if not isinstance(pipeline.get("python"), str) or "pipeline.python" in failed_paths:
        return []
    where = ("pipeline", "python")
    file_part, function_name = pipeline["python"].rsplit(":", 1)
    file = (config_file.parent / file_part).resolve()
    if not file.is_file():
        return [_missing_file(doc, config_file, where, file_part, "*.py")]
    try:
        functions = source.functions_in(file)
    except source.SourceSyntaxError as exc:
        return [
            Problem(
                display_path(file),
                exc.line,
                exc.column,
                f"Python syntax: {exc.message}",
                f"fix the pipeline file named at {doc.file}:{doc.mark_of(where).line}",
            )
        ]
    except (OSError, UnicodeDecodeError) as exc:
        return [doc.problem(where, f"cannot read `{file_part}`: {exc}")]
    function = functions.get(function_name)
    if function is None:
        pipelines = sorted(n for n, f in functions.items() if f.is_pipeline)
        close = difflib.get_close_matches(function_name, list(functions), n=1)
        if close:
            hint = f"did you mean `{close[0]}`?"
        elif pipelines:
            hint = "pipelines defined there: " + ", ".join(f"`{n}`" for n in pipelines)
        else:
            hint = "define a function decorated with @dsl.pipeline"
        return [doc.problem(where, f"no function `{function_name}` in `{file_part}`", hint)]
    if not function.is_pipeline:
        return [
            doc.problem(
                where,
                f"`{function_name}` ({file_part}:{function.line}) is not a pipeline",
                "decorate it with @dsl.pipeline (from kfp import dsl)",
            )
        ]
    return _check_parameters(doc, function, failed_paths)


def _missing_file(
    doc: Document, config_file: Path, where: tuple[str, ...], file_part: str, pattern: str
) -> Problem:
    nearby = sorted(
        str(p.relative_to(config_file.parent))
        for p in config_file.parent.glob(f"**/{pattern}")
        if not any(part.startswith(".") for part in p.relative_to(config_file.parent).parts)
    )
    close = difflib.get_close_matches(file_part, nearby[:200], n=1)
    hint = f"did you mean `{close[0]}`?" if close else "paths are relative to mlops.yaml"
    return doc.problem(where, f"{where[-1]} file `{file_part}` not found", hint)


_RECIPE_KEYS: tuple[str, ...] = ("base", "requirements", "packages", "system_packages")
_DOCKERFILE_KEYS: tuple[str, ...] = ("dockerfile", "context", "build_args")


def _check_images(doc: Document, config_file: Path, failed_paths: set[str]) -> list[Problem]:
    """What the schema cannot say about ``images:``: files that must exist, keys of the
    other kind of image, and image names used but not defined."""
    data: dict[str, Any] = doc.data
    images: dict[str, Any] = _mapping(data.get("images"))
    problems: list[Problem] = []
    for name, spec in images.items():
        if not isinstance(spec, dict) or document.format_path(("images", name)) in failed_paths:
            continue
        if "base" in spec and "dockerfile" in spec:
            continue  # the schema says "give either base or dockerfile"
        kind, others = (
            ("base", _DOCKERFILE_KEYS) if "base" in spec else ("dockerfile", _RECIPE_KEYS)
        )
        for key in others:
            if key in spec:
                problems.append(
                    doc.problem(
                        ("images", name, key),
                        f"`{key}` does not go with `{kind}` in image `{name}`",
                        "a recipe has base, requirements, packages, system_packages;"
                        " a Dockerfile image has dockerfile, context, build_args",
                        key=True,
                    )
                )
        for key, want_dir in (("requirements", False), ("dockerfile", False), ("context", True)):
            where = ("images", name, key)
            if not isinstance(spec.get(key), str) or document.format_path(where) in failed_paths:
                continue
            target = (config_file.parent / spec[key]).resolve()
            if want_dir and not target.is_dir():
                problems.append(
                    doc.problem(
                        where,
                        f"build context `{spec[key]}` of image `{name}` is not a folder",
                        "paths are relative to mlops.yaml",
                    )
                )
            elif not want_dir and not target.is_file():
                problems.append(_missing_file(doc, config_file, where, spec[key], "*"))
    uses: list[tuple[tuple[str, ...], str]] = []
    pipeline = _mapping(data.get("pipeline"))
    if isinstance(pipeline.get("image"), str):
        uses.append((("pipeline", "image"), pipeline["image"]))
    for step, spec in _mapping(pipeline.get("steps")).items():
        if isinstance(spec, dict) and isinstance(spec.get("image"), str):
            uses.append((("pipeline", "steps", step, "image"), spec["image"]))
    environments = _mapping(data.get("environments"))
    problems += _check_schedules(doc, environments, failed_paths)
    pull_request = _mapping(_mapping(data.get("on")).get("pull_request"))
    if pull_request.get("build") is True and "environment" not in pull_request:
        problems.append(
            doc.problem(
                ("on", "pull_request", "build"),
                "`build: true` needs `environment`: whose images should pull requests build?",
                "add `environment: NAME` (an environment with a `registry`)",
            )
        )
    for kind, spec in _mapping(data.get("on")).items():
        if _mapping(spec).get("apply") is True:
            target = _mapping(spec).get("environment")
            if not isinstance(target, str):
                problems.append(
                    doc.problem(
                        ("on", kind, "apply"),
                        "`apply: true` needs `environment`: which Kubeflow Pipelines?",
                        "add `environment: NAME` (an environment with `kfp:`)",
                    )
                )
            elif target in environments and "kfp" not in _mapping(environments[target]):
                problems.append(
                    doc.problem(
                        ("on", kind, "apply"),
                        f"environment `{target}` has no `kfp:` to apply to",
                        f"add `kfp: {{host: ...}}` under environments.{target}",
                    )
                )
        named = _mapping(spec).get("environment")
        where_env = ("on", kind, "environment")
        if isinstance(named, str) and named not in environments:
            if document.format_path(where_env) in failed_paths:
                continue
            hint = did_you_mean(
                named,
                environments,
                "environments defined: ",
                f"add `environments: {{{named}: {{registry: HOST/PATH}}}}`",
            )
            problems.append(
                doc.problem(where_env, f"no environment `{named}` under `environments:`", hint)
            )
    for used_at, name in uses:
        if name in images or document.format_path(used_at) in failed_paths:
            continue
        hint = did_you_mean(
            name,
            images,
            "images defined: ",
            f"define it: `images: {{{name}: {{base: python:3.11-slim, requirements:"
            " requirements.txt}}}}`",
        )
        problems.append(doc.problem(used_at, f"no image `{name}` under `images:`", hint))
    return problems


# minute, hour, day of month, month, day of week: the ranges of 5-field Unix cron.
_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
_CRON_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {m: i + 1 for i, m in enumerate(_MONTHS)}),
    ("day of week", 0, 7, {d: i for i, d in enumerate(_DAYS)}),
)


def _check_serving(doc: Document, config_file: Path, failed_paths: set[str]) -> list[Problem]:
    """What the schema cannot say about ``serving:`` and ``on.tag.deploy``."""
    data: dict[str, Any] = doc.data
    serving = _mapping(data.get("serving"))
    environments = _mapping(data.get("environments"))
    problems: list[Problem] = []
    canary = _mapping(serving.get("canary"))
    smoke = canary.get("smoke")
    where = ("serving", "canary", "smoke")
    if (
        isinstance(smoke, str)
        and document.format_path(where) not in failed_paths
        and not (config_file.parent / smoke).is_file()
    ):
        problems.append(_missing_file(doc, config_file, where, smoke, "*.json"))
    replicas = _mapping(serving.get("replicas"))
    low, high = replicas.get("min"), replicas.get("max")
    if isinstance(low, int) and isinstance(high, int) and low > high:
        problems.append(
            doc.problem(
                ("serving", "replicas", "max"),
                f"replicas.max ({high}) is below replicas.min ({low})",
                "make max at least min",
            )
        )
    for metric, rule in _mapping(serving.get("gate")).items():
        low, high = _mapping(rule).get("min"), _mapping(rule).get("max")
        if isinstance(low, int | float) and isinstance(high, int | float) and low > high:
            problems.append(
                doc.problem(
                    ("serving", "gate", metric, "max"),
                    f"the gate on `{metric}` can never pass: max {high} is below min {low}",
                    "swap them, or keep only the bound you mean",
                )
            )
    model = _mapping(serving.get("model"))
    if "run" in model and "uri" in model and "from_step" not in model:
        problems.append(
            doc.problem(
                ("serving", "model", "run"),
                "`run` pins the run whose step output is served, but `uri` names a fixed model",
                "keep `uri`, or replace it with `from_step: STEP` and keep `run`",
            )
        )
    tag = _mapping(_mapping(data.get("on")).get("tag"))
    if tag.get("deploy") is True:
        target = tag.get("environment")
        if not isinstance(target, str):
            problems.append(
                doc.problem(
                    ("on", "tag", "deploy"),
                    "`deploy: true` needs `environment`: which cluster serves the model?",
                    "add `environment: NAME` (an environment with `kubernetes:`)",
                )
            )
        elif target in environments and "kubernetes" not in _mapping(environments[target]):
            problems.append(
                doc.problem(
                    ("on", "tag", "environment"),
                    f"environment `{target}` has no `kubernetes:`, so nothing can serve the model",
                    f"add `kubernetes: {{namespace: NAME}}` under environments.{target}",
                )
            )
        if "serving" not in data:
            problems.append(
                doc.problem(
                    ("on", "tag", "deploy"),
                    "`deploy: true` needs a `serving:` section: which model, in which format?",
                    "add `serving: {model: {from_step: STEP}, format: sklearn}`",
                )
            )
    return problems


def cron_problem(cron: str) -> str | None:
    """What is wrong with a 5-field Unix cron expression, or None."""
    fields = cron.split()
    if cron.strip().startswith("@"):
        return f"`{cron}`: write the 5 fields (e.g. `0 3 * * *` for @daily)"
    if len(fields) != 5:
        return (
            f"`{cron}` has {len(fields)} fields; cron here has 5:"
            " minute hour day-of-month month day-of-week"
        )
    for text, (name, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        for part in text.split(","):
            base, _, step = part.partition("/")
            if step and not (step.isdigit() and int(step) > 0):
                return f"`{part}` in the {name} field: the step after `/` is a number above 0"
            if base == "*":
                continue
            bounds = base.split("-")
            if len(bounds) > 2:
                return f"`{part}` in the {name} field is not a value or a range"
            values = [names.get(b.upper(), int(b) if b.isdigit() else None) for b in bounds]
            if any(v is None for v in values):
                return f"`{part}` in the {name} field is not a number ({low}-{high})"
            if any(not low <= v <= high for v in values if v is not None):
                return f"`{part}` in the {name} field is out of range ({low}-{high})"
    return None


def _check_schedules(
    doc: Document, environments: dict[str, Any], failed_paths: set[str]
) -> list[Problem]:
    problems: list[Problem] = []
    schedules = doc.data.get("schedules")
    if not isinstance(schedules, list):
        return problems
    seen: set[str] = set()
    for index, spec in enumerate(schedules):
        if not isinstance(spec, dict) or document.format_path(("schedules", index)) in failed_paths:
            continue
        cron = spec.get("cron")
        if (
            isinstance(cron, str)
            and document.format_path(("schedules", index, "cron")) not in failed_paths
        ):
            wrong = cron_problem(cron)
            if wrong:
                problems.append(
                    doc.problem(
                        ("schedules", index, "cron"),
                        f"invalid cron: {wrong}",
                        "e.g. `0 3 * * *` (03:00 UTC daily), `*/15 * * * 1-5`",
                    )
                )
        name = spec.get("name")
        if isinstance(name, str):
            if name in seen:
                problems.append(
                    doc.problem(
                        ("schedules", index, "name"),
                        f"a second schedule named `{name}`",
                        "schedule names are unique in the project",
                    )
                )
            seen.add(name)
        named = spec.get("environment")
        if isinstance(named, str) and named not in environments:
            problems.append(
                doc.problem(
                    ("schedules", index, "environment"),
                    f"no environment `{named}` under `environments:`",
                    did_you_mean(
                        named,
                        environments,
                        "environments defined: ",
                        f"add `environments: {{{named}: {{kfp: {{host: ...}}}}}}`",
                    ),
                )
            )
        elif isinstance(named, str) and "kfp" not in _mapping(environments.get(named)):
            problems.append(
                doc.problem(
                    ("schedules", index, "environment"),
                    f"environment `{named}` has no `kfp:`, so nothing can run this schedule",
                    f"add `kfp: {{host: ...}}` under environments.{named}",
                )
            )
    return problems


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _check_notebook_source(
    doc: Document, config_file: Path, failed_paths: set[str]
) -> list[Problem]:
    from kfops.notebook import codegen

    where = ("pipeline", "notebook")
    file_part = doc.data["pipeline"]["notebook"]
    file = (config_file.parent / file_part).resolve()
    if not file.is_file():
        return [_missing_file(doc, config_file, where, file_part, "*.ipynb")]
    _, nb = codegen.from_notebook(file, display_path(file), "pipeline")
    problems = list(nb.problems)
    name = doc.data.get("name")
    if nb.name and isinstance(name, str) and dns_name(nb.name) != name:
        problems.append(
            doc.problem(
                ("name",),
                f"`name: {name}` is used; the notebook's pipeline_name `{nb.name}` is not",
                severity="warning",
            )
        )
    declared = {
        p.name: source.Parameter(p.name, p.kind, True, repr(p.value))
        for p in nb.parameters.values()
    }
    function = source.PipelineFunction(file.name, 0, True, declared)
    return problems + _check_parameters(doc, function, failed_paths)


def _check_parameters(
    doc: Document, function: source.PipelineFunction, failed_paths: set[str]
) -> list[Problem]:
    params = doc.data["pipeline"].get("parameters")
    if not isinstance(params, dict):
        return []
    problems = []
    for name, value in params.items():
        path = ("pipeline", "parameters", name)
        if document.format_path(path) in failed_paths:
            continue
        found = source.parameter_problem(name, value, function.parameters, function.name)
        if found is not None:
            message, hint, at_key = found
            problems.append(doc.problem(path, message, hint, key=at_key))
    return problems


def _project(doc: Document, config_file: Path, shown: str, problems: list[Problem]) -> Project:
    data: dict[str, Any] = doc.data
    pipeline: dict[str, Any] = data["pipeline"]
    ref: PipelineRef | NotebookRef
    if "notebook" in pipeline:
        ref = NotebookRef(
            file=(config_file.parent / pipeline["notebook"]).resolve(),
            mark=doc.mark_of(("pipeline", "notebook")),
        )
    else:
        file_part, function_name = pipeline["python"].rsplit(":", 1)
        ref = PipelineRef(
            file=(config_file.parent / file_part).resolve(),
            function=function_name,
            mark=doc.mark_of(("pipeline", "python")),
        )
    params: dict[str, Any] = pipeline.get("parameters") or {}
    steps = tuple(
        _step(name, spec, doc.mark_of(("pipeline", "steps", name), key=True))
        for name, spec in (pipeline.get("steps") or {}).items()
    )
    return Project(
        root=config_file.parent.resolve(),
        config_file=config_file.resolve(),
        shown=shown,
        name=data["name"],
        description=data.get("description"),
        pipeline=ref,
        parameters=dict(params),
        parameter_marks={
            name: doc.mark_of(("pipeline", "parameters", name), key=True) for name in params
        },
        steps=steps,
        warnings=tuple(p for p in problems if p.severity == "warning"),
        triggers=_triggers(data.get("on")),
        images=tuple(
            _image(name, spec, config_file.parent, doc.mark_of(("images", name), key=True))
            for name, spec in (data.get("images") or {}).items()
        ),
        image=pipeline.get("image"),
        schedules=tuple(
            Schedule(
                name=spec["name"],
                cron=spec["cron"],
                environment=spec["environment"],
                mark=doc.mark_of(("schedules", index)),
                parameters=tuple(sorted((spec.get("parameters") or {}).items())),
                enabled=spec.get("enabled", True),
                max_concurrency=spec.get("max_concurrency", 1),
            )
            for index, spec in enumerate(data.get("schedules") or [])
        ),
        environments=tuple(
            Environment(
                name=name,
                mark=doc.mark_of(("environments", name), key=True),
                registry=spec.get("registry"),
                kfp=KfpTarget(
                    host=spec["kfp"]["host"],
                    mark=doc.mark_of(("environments", name, "kfp"), key=True),
                    namespace=spec["kfp"].get("namespace"),
                    experiment=spec["kfp"].get("experiment"),
                    token_env=spec["kfp"].get("token_env"),
                    metadata=spec["kfp"].get("metadata"),
                )
                if "kfp" in spec
                else None,
                kubernetes=KubeTarget(
                    namespace=spec["kubernetes"]["namespace"],
                    mark=doc.mark_of(("environments", name, "kubernetes"), key=True),
                    context=spec["kubernetes"].get("context"),
                    deployment_mode=_MODES.get(spec["kubernetes"].get("deployment_mode", "")),
                    url=spec["kubernetes"].get("url"),
                )
                if "kubernetes" in spec
                else None,
            )
            for name, spec in (data.get("environments") or {}).items()
        ),
        serving=_serving(doc, data["name"], config_file.parent) if "serving" in data else None,
        monitoring=_monitoring(doc, config_file.parent) if "monitoring" in data else None,
    )


# KServe renamed its modes in 0.15; mlops.yaml takes either name.
_MODES = {
    "Knative": "Knative",
    "Serverless": "Knative",
    "Standard": "Standard",
    "RawDeployment": "Standard",
}


def _serving(doc: Document, project_name: str, root: Path) -> Serving:
    spec: dict[str, Any] = doc.data["serving"]
    model: dict[str, Any] = spec["model"]
    canary: dict[str, Any] | None = spec.get("canary")
    replicas: dict[str, Any] = spec.get("replicas") or {}
    return Serving(
        name=spec.get("name") or project_name[:45].strip("-"),
        mark=doc.mark_of(("serving",), key=True),
        format=spec["format"],
        from_step=model.get("from_step"),
        artifact=model.get("artifact"),
        uri=model.get("uri"),
        run=model.get("run"),
        runtime=spec.get("runtime"),
        protocol=spec.get("protocol", "v1"),
        resources=_resources(spec.get("resources")),
        min_replicas=replicas.get("min"),
        max_replicas=replicas.get("max"),
        service_account=spec.get("service_account"),
        timeout=spec.get("timeout", 600),
        canary=Canary(
            mark=doc.mark_of(("serving", "canary"), key=True),
            percent=canary.get("percent"),
            smoke=(root / canary["smoke"]).resolve() if "smoke" in canary else None,
            promote=canary.get("promote", "auto"),
        )
        if canary is not None
        else None,
        gate=tuple(
            GateRule(
                metric=metric,
                mark=doc.mark_of(("serving", "gate", metric), key=True),
                min=rule.get("min"),
                max=rule.get("max"),
                not_worse_than_serving=rule.get("not_worse_than_serving"),
            )
            for metric, rule in (spec.get("gate") or {}).items()
        ),
        logger=PayloadLogger(
            mark=doc.mark_of(("serving", "logger"), key=True),
            url=spec["logger"]["url"],
            mode=spec["logger"].get("mode", "all"),
        )
        if "logger" in spec
        else None,
        marks=tuple((key, doc.mark_of(("serving", key), key=True)) for key in spec),
    )


def _image(name: str, spec: dict[str, Any], root: Path, mark: Mark) -> ImageRecipe:
    def path(key: str) -> Path | None:
        return (root / spec[key]).resolve() if key in spec else None

    dockerfile = path("dockerfile")
    return ImageRecipe(
        name=name,
        mark=mark,
        base=spec.get("base"),
        requirements=path("requirements"),
        packages=tuple(spec.get("packages") or ()),
        system_packages=tuple(spec.get("system_packages") or ()),
        dockerfile=dockerfile,
        context=path("context") or (dockerfile.parent if dockerfile else None),
        build_args=tuple(sorted((spec.get("build_args") or {}).items())),
    )


def _triggers(on: dict[str, Any] | None) -> Triggers:
    if on is None:
        return Triggers()

    def trigger(key: str) -> Trigger | None:
        spec = on.get(key)
        if spec is None:
            return None
        return Trigger(
            branches=tuple(spec.get("branches") or ()),
            pattern=spec.get("pattern"),
            run=bool(spec.get("run", False)),
            environment=spec.get("environment"),
            build=bool(spec.get("build", False)),
            apply=bool(spec.get("apply", False)),
            deploy=bool(spec.get("deploy", False)),
        )

    return Triggers(
        pull_request=trigger("pull_request"),
        push=trigger("push"),
        tag=trigger("tag"),
        declared=True,
    )


def _resources(resources: dict[str, Any] | None) -> Resources | None:
    if not resources:
        return None
    return Resources(
        cpu=str(resources["cpu"]) if "cpu" in resources else None,
        memory=resources.get("memory"),
        gpu=resources.get("gpu"),
    )


def _step(name: str, spec: dict[str, Any], mark: Mark) -> StepOverride:
    return StepOverride(
        name=name,
        mark=mark,
        resources=_resources(spec.get("resources")),
        retries=spec.get("retries"),
        cache=spec.get("cache"),
        env=tuple(sorted((spec.get("env") or {}).items())),
        image=spec.get("image"),
    )


# ---------------------------------------------------------------- monitoring

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)$")
# KS and Wasserstein compare ordered values: they have no meaning for categories.
_NUMERIC_ONLY = ("ks", "wasserstein")
_MONITOR_FILES = {"body": "body file", "file": "probe set file", "reference": "reference profile"}


def duration_seconds(text: str) -> float:
    """``"250ms"``, ``"1.5s"``, ``"30m"``, ``"24h"``, ``"7d"`` in seconds (the schema has
    checked the form)."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r}")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def _check_monitoring(doc: Document, config_file: Path, failed_paths: set[str]) -> list[Problem]:
    """What the schema cannot say about ``monitoring:``: files that must exist, unique
    probe names, bounds that can never pass, the cron, tests that do not fit a type."""
    monitoring = _mapping(doc.data.get("monitoring"))
    problems: list[Problem] = []

    def missing(where: tuple[str | int, ...], pattern: str) -> None:
        value = _dig(doc.data, where)
        if (
            isinstance(value, str)
            and document.format_path(where) not in failed_paths
            and not (config_file.parent / value).is_file()
        ):
            problems.append(_missing_monitor_file(doc, config_file, where, value, pattern))

    probes = _mapping(monitoring.get("probes"))
    seen: dict[str, int] = {}
    for kind in ("requests", "sets"):
        items = probes.get(kind)
        for index, item in enumerate(items if isinstance(items, list) else []):
            if not isinstance(item, dict):
                continue
            base: tuple[str | int, ...] = ("monitoring", "probes", kind, index)
            name = item.get("name")
            if isinstance(name, str):
                if name in seen:
                    problems.append(
                        doc.problem(
                            (*base, "name"),
                            f"a second probe named `{name}` (the first is at line {seen[name]})",
                            "probe names are unique across requests and sets",
                        )
                    )
                else:
                    seen[name] = doc.mark_of((*base, "name")).line
            if kind == "requests":
                missing((*base, "body"), "*.json")
            else:
                missing((*base, "file"), "*.jsonl")
                for metric, rule in _mapping(item.get("metrics")).items():
                    low, high = _mapping(rule).get("min"), _mapping(rule).get("max")
                    if (
                        isinstance(low, int | float)
                        and isinstance(high, int | float)
                        and low > high
                    ):
                        problems.append(
                            doc.problem(
                                (*base, "metrics", metric, "max"),
                                f"the threshold on `{metric}` can never pass: max {high} is"
                                f" below min {low}",
                                "swap them, or keep only the bound you mean",
                            )
                        )
    drift = _mapping(monitoring.get("drift"))
    missing(("monitoring", "drift", "reference"), "*.json")
    if drift.get("source") == "logger" and "logs" not in drift:
        problems.append(
            doc.problem(
                ("monitoring", "drift", "source"),
                "`source: logger` needs `logs`: where `kfops monitor sink` stores the events",
                "add `logs: s3://BUCKET/PREFIX` (or a folder, e.g. `logs: monitor/logs`)",
            )
        )
    tests: list[tuple[tuple[str | int, ...], Any]] = [
        (("monitoring", "drift", "categorical"), drift.get("categorical"))
    ]
    for feature, spec in _mapping(drift.get("features")).items():
        tests.append((("monitoring", "drift", "features", feature), spec))
    for where, spec in tests:
        method = _mapping(spec).get("method")
        if method in _NUMERIC_ONLY and where[-1] == "categorical":
            problems.append(
                doc.problem(
                    (*where, "method"),
                    f"`{method}` compares ordered numbers; categorical features need another test",
                    "use `psi` or `jensen_shannon` for categorical features",
                )
            )
    schedule = monitoring.get("schedule")
    where_cron: tuple[str, ...] = ("monitoring", "schedule")
    if isinstance(schedule, dict):
        problems += _check_monitor_runner(doc, schedule, failed_paths)
        schedule = schedule.get("cron")
        where_cron = ("monitoring", "schedule", "cron")
    if isinstance(schedule, str) and document.format_path(where_cron) not in failed_paths:
        wrong = cron_problem(schedule)
        if wrong:
            problems.append(
                doc.problem(
                    where_cron,
                    f"invalid cron: {wrong}",
                    "e.g. `0 * * * *` (hourly), `*/15 * * * *`",
                )
            )
    return problems


def _check_monitor_runner(
    doc: Document, schedule: dict[str, Any], failed_paths: set[str]
) -> list[Problem]:
    """``monitoring.schedule.environment`` must exist; ``runner: kfp`` needs its ``kfp:``."""
    environments = _mapping(doc.data.get("environments"))
    name = schedule.get("environment")
    where = ("monitoring", "schedule", "environment")
    if schedule.get("runner") == "kfp":
        lacking = [key for key in ("environment", "image") if key not in schedule]
        if lacking:
            return [
                doc.problem(
                    ("monitoring", "schedule", "runner"),
                    "`runner: kfp` needs "
                    + " and ".join(f"`{k}`" for k in lacking)
                    + ": which cluster runs the monitor, and an image with kfops in it",
                    "add `environment: NAME` (an environment with `kfp:`) and"
                    " `image: REGISTRY/kfops:TAG` (with `pip install 'kfops[monitor]'`)",
                )
            ]
    if not isinstance(name, str) or document.format_path(where) in failed_paths:
        return []
    if name not in environments:
        return [
            doc.problem(
                where,
                f"no environment `{name}` under `environments:`",
                did_you_mean(
                    name,
                    environments,
                    "environments: ",
                    f"add `environments: {{{name}: {{kubernetes: {{namespace: NAME}}}}}}`",
                ),
            )
        ]
    if schedule.get("runner") == "kfp" and "kfp" not in _mapping(environments[name]):
        return [
            doc.problem(
                ("monitoring", "schedule", "runner"),
                f"`runner: kfp` runs the monitor in environment `{name}`'s Kubeflow Pipelines,"
                " but it has no `kfp:`",
                f"add `kfp: {{host: URL}}` under environments.{name}, or use `runner: github`",
            )
        ]
    return []


def _missing_monitor_file(
    doc: Document, config_file: Path, where: tuple[str | int, ...], value: str, pattern: str
) -> Problem:
    nearby = sorted(
        str(p.relative_to(config_file.parent))
        for p in config_file.parent.glob(f"**/{pattern}")
        if not any(part.startswith(".") for part in p.relative_to(config_file.parent).parts)
    )
    close = difflib.get_close_matches(value, nearby[:200], n=1)
    hint = f"did you mean `{close[0]}`?" if close else "paths are relative to mlops.yaml"
    if str(where[-1]) == "reference" and not close:
        hint += "; write the profile with `kfops monitor baseline --data FILE -o " + value + "`"
    return doc.problem(where, f"{_MONITOR_FILES[str(where[-1])]} `{value}` not found", hint)


def _dig(data: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        if isinstance(part, int):
            data = data[part] if isinstance(data, list) and part < len(data) else None
        else:
            data = data.get(part) if isinstance(data, dict) else None
    return data


def _monitoring(doc: Document, root: Path) -> Monitoring:
    spec: dict[str, Any] = doc.data["monitoring"]
    where = ("monitoring",)
    probes: dict[str, Any] = spec.get("probes") or {}
    gates: dict[str, Any] | None = spec.get("gates")
    drift: dict[str, Any] | None = spec.get("drift")
    on_breach: dict[str, Any] = spec.get("on_breach") or {}
    canary: dict[str, Any] | None = (gates or {}).get("canary")
    schedule: Any = spec.get("schedule")
    timing: dict[str, Any] = schedule if isinstance(schedule, dict) else {"cron": schedule}
    logs = (drift or {}).get("logs")

    def test(value: dict[str, Any] | None, default: DriftTest) -> DriftTest:
        value = value or {}
        method = value.get("method", default.method)
        # A method given without a threshold takes its usual one.
        threshold = value.get("threshold", _USUAL_THRESHOLDS[method])
        return DriftTest(method, float(threshold))

    requests = tuple(
        ProbeRequest(
            name=item["name"],
            mark=doc.mark_of((*where, "probes", "requests", index)),
            rows=tuple(item["rows"]) if "rows" in item else None,
            body=(root / item["body"]).resolve() if "body" in item else None,
            status=(item.get("expect") or {}).get("status", 200),
            expect=tuple(
                sorted((k, v) for k, v in (item.get("expect") or {}).items() if k != "status")
            ),
        )
        for index, item in enumerate(probes.get("requests") or [])
    )
    sets = tuple(
        ProbeSet(
            name=item["name"],
            mark=doc.mark_of((*where, "probes", "sets", index)),
            file=(root / item["file"]).resolve(),
            metrics=tuple(
                Bound(
                    metric=metric,
                    mark=doc.mark_of((*where, "probes", "sets", index, "metrics", metric)),
                    min=rule.get("min"),
                    max=rule.get("max"),
                )
                for metric, rule in item["metrics"].items()
            ),
        )
        for index, item in enumerate(probes.get("sets") or [])
    )
    return Monitoring(
        mark=doc.mark_of(where, key=True),
        requests=requests,
        sets=sets,
        gates=MonitorGates(
            mark=doc.mark_of((*where, "gates"), key=True),
            error_rate=gates.get("error_rate"),
            latency_p95_ms=duration_seconds(gates["latency_p95"]) * 1000
            if "latency_p95" in gates
            else None,
            availability=gates.get("availability"),
            canary=CanaryGates(
                mark=doc.mark_of((*where, "gates", "canary"), key=True),
                latency_ratio=canary.get("latency_ratio"),
                agreement=canary.get("agreement"),
                metric_delta=tuple(
                    (metric, float(delta))
                    for metric, delta in (canary.get("metric_delta") or {}).items()
                ),
            )
            if canary is not None
            else None,
        )
        if gates is not None
        else None,
        drift=Drift(
            mark=doc.mark_of((*where, "drift"), key=True),
            reference=(root / drift["reference"]).resolve(),
            source=drift.get("source", "probes"),
            logs=logs if logs is None or logs.startswith("s3://") else str((root / logs).resolve()),
            signature=tuple(drift.get("signature") or ()),
            window=drift.get("window", "24h"),
            window_seconds=duration_seconds(drift.get("window", "24h")),
            min_samples=drift.get("min_samples", 100),
            numeric=test(drift.get("numeric"), DRIFT_DEFAULTS["numeric"]),
            categorical=test(drift.get("categorical"), DRIFT_DEFAULTS["categorical"]),
            features=tuple(
                (name, test(rule, DRIFT_DEFAULTS["numeric"]))
                for name, rule in (drift.get("features") or {}).items()
            ),
            prediction=test(drift["prediction"], DRIFT_DEFAULTS["categorical"])
            if "prediction" in drift
            else None,
            drift_share=float(drift.get("drift_share", 0.5)),
        )
        if drift is not None
        else None,
        schedule=timing.get("cron"),
        runner=timing.get("runner", "github"),
        schedule_environment=timing.get("environment"),
        image=timing.get("image"),
        on_breach=OnBreach(
            consecutive=on_breach.get("consecutive", 1),
            cooldown=on_breach.get("cooldown", "24h"),
            cooldown_seconds=duration_seconds(on_breach.get("cooldown", "24h")),
            retrain=on_breach.get("retrain", "issue"),
            close_after=on_breach.get("close_after", 2),
            workflow=on_breach.get("workflow", "kfops-retrain.yml"),
        ),
    )


# The thresholds commonly used with each method (PSI's 0.2 is the classic "significant
# shift"; the others follow Evidently's defaults).
_USUAL_THRESHOLDS = {"psi": 0.2, "jensen_shannon": 0.1, "ks": 0.1, "wasserstein": 0.1}
