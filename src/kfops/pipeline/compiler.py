"""Project -> KFP pipeline -> IR YAML, with mlops.yaml's parameters and step settings applied.

This module imports the user's pipeline file (it runs their code) and kfp, so only
``compile`` and ``run`` use it, never ``validate``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib.util
import json
import math
import sys
import tempfile
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from kfops.errors import (
    EXIT_USAGE,
    InvalidProject,
    KfopsError,
    Problem,
    UserCodeError,
    display_path,
)
from kfops.pipeline._kfp_import import import_kfp
from kfops.project import document
from kfops.project.model import NotebookRef, PipelineRef, Project, StepOverride
from kfops.project.source import Parameter, parameter_problem

if TYPE_CHECKING:
    from kfops.notebook import codegen

import_kfp()  # without kfp.client: half of kfp's import time, never used here
from kfp import compiler as kfp_compiler  # noqa: E402
from kfp.compiler import pipeline_spec_builder  # noqa: E402
from kfp.dsl import component_factory, graph_component, pipeline_context, pipeline_task  # noqa: E402
from kfp.dsl import utils as kfp_utils  # noqa: E402

from kfops.pipeline import _yaml_emitter  # noqa: E402

# KFP's compiler sanitises every task name of a DAG again for each of its tasks (a
# number of calls that grows with the square of the steps: half a million regex pairs
# for a 500-step notebook); the function is pure, so its results are kept.
kfp_utils.maybe_rename_for_k8s = functools.lru_cache(maxsize=None)(kfp_utils.maybe_rename_for_k8s)
# KFP writes the IR with yaml.dump_all and PyYAML's pure-Python Dumper; kfops's Dumper
# writes the same bytes in a third of the time (see _yaml_emitter).
pipeline_spec_builder.yaml = _yaml_emitter.kfp_yaml()

# KFP embeds each component's source, found with inspect.getsource, which tokenizes the
# function again (a quarter of a 500-step notebook's compile). For the module kfops
# generates from a notebook, the sources are cut from its text by the AST instead:
# (file, first line) -> what _get_function_source_definition returns.
_GENERATED_SOURCES: dict[tuple[str, int], str] = {}
_kfp_function_source = component_factory._get_function_source_definition


def _function_source(func: Any) -> str:
    code = getattr(func, "__code__", None)
    key = None if code is None else (code.co_filename, code.co_firstlineno)
    known = None if key is None else _GENERATED_SOURCES.get(key)
    if known is None:
        return str(_kfp_function_source(func))
    return known


component_factory._get_function_source_definition = _function_source

# KFP's names for parameter types, as they appear in component_spec.inputs.
_PARAM_TYPES = {
    "Integer": "int",
    "Float": "float",
    "String": "str",
    "Boolean": "bool",
    "List": "list",
    "Dict": "dict",
}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True)
class Compiled:
    """A compiled pipeline: its IR text and the parameters it was compiled with."""

    ir_text: str
    parameters: dict[str, Any]

    @functools.cached_property
    def ir(self) -> dict[str, Any]:
        # With Kubernetes settings, KFP writes a second document: the platform spec.
        loaded: dict[str, Any] = self._documents[0]
        return loaded

    @functools.cached_property
    def platform(self) -> dict[str, Any]:
        documents = self._documents
        found: dict[str, Any] = documents[1] if len(documents) > 1 else {}
        return found

    @functools.cached_property
    def _documents(self) -> list[Any]:
        return list(yaml_documents(self.ir_text))


def yaml_documents(text: str) -> list[Any]:
    """The YAML documents in ``text``, parsed with libyaml when PyYAML has it (an IR
    parses in about 7 ms instead of 100 ms)."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return list(yaml.load_all(text, Loader=loader))


def load_pipeline(project: Project) -> graph_component.GraphComponent:
    """Import the user's pipeline (or the one generated from their notebook).

    Raises:
        UserCodeError: the user's module raised while being imported.
        InvalidProject: the attribute is not a pipeline, or the notebook has problems.
    """
    ref = project.pipeline
    if isinstance(ref, NotebookRef):
        with tempfile.TemporaryDirectory(prefix="kfops-notebook-") as tmp:
            generated = Path(tmp) / f"{ref.file.stem.replace('-', '_')}_pipeline.py"
            generated_module = _notebook_module(project)
            generated.write_text(generated_module.text, encoding="utf-8")
            with _known_sources(generated, generated_module.sources):
                module = _import_user_module(generated, project.root)
        component: Any = module.pipeline
        return component
    module = _import_user_module(ref.file, project.root)
    component = getattr(module, ref.function, None)
    if not isinstance(component, graph_component.GraphComponent):
        found = "missing" if component is None else f"a {type(component).__name__}"
        raise InvalidProject.of(
            [
                Problem(
                    project.shown,
                    ref.mark.line,
                    ref.mark.column,
                    f"`{ref.function}` in {ref.file.name} is {found}, not a @dsl.pipeline",
                    "decorate the function with @dsl.pipeline (from kfp import dsl)",
                    "pipeline.python",
                )
            ]
        )
    return component


@contextlib.contextmanager
def _known_sources(file: Path, sources: dict[int, str]) -> Iterator[None]:
    """While ``file`` is imported, KFP takes the sources of the functions that start at
    these lines from here rather than from inspect."""
    keys = []
    for line, text in sources.items():
        key = (str(file), line)
        _GENERATED_SOURCES[key] = text
        keys.append(key)
    try:
        yield
    finally:
        for key in keys:
            _GENERATED_SOURCES.pop(key, None)


def notebook_source(project: Project) -> str:
    """The KFP pipeline module generated from the project's notebook.

    Raises:
        InvalidProject: the notebook has errors.
        KfopsError: the project's pipeline is not a notebook.
    """
    return _notebook_module(project).text


def _notebook_module(project: Project) -> codegen.Module:
    from kfops.notebook import codegen

    ref = project.pipeline
    if not isinstance(ref, NotebookRef):
        raise KfopsError(
            "--emit-python shows the code generated from a notebook;"
            f" this project's pipeline is already Python ({ref.file.name})",
            exit_code=EXIT_USAGE,
        )
    module, nb = codegen.module_from_notebook(ref.file, display_path(ref.file), project.name)
    if module is None:
        raise InvalidProject.of(nb.problems)
    return module


def parameter_types(component: graph_component.GraphComponent) -> dict[str, str]:
    """Each pipeline parameter's kind: int, float, str, bool, list, dict (or "artifact")."""
    inputs = component.component_spec.inputs or {}
    return {name: _param_kind(str(spec.type)) for name, spec in inputs.items()}


def _param_kind(type_name: str) -> str:
    # KFP keeps a subscripted annotation as written: `typing.List[int]`, `dict[str, int]`
    base = type_name.removeprefix("typing.").split("[", 1)[0]
    return _PARAM_TYPES.get(base) or _PARAM_TYPES.get(base.capitalize(), "artifact")


def parse_cli_params(pairs: tuple[str, ...], types: dict[str, str]) -> dict[str, Any]:
    """``NAME=VALUE`` strings typed by the pipeline's parameter types.

    Raises:
        KfopsError: (exit 2) a malformed pair, an unknown name or a value of the wrong type.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise KfopsError(f"--param {pair!r}: expected NAME=VALUE", exit_code=EXIT_USAGE)
        if name not in types:
            known = ", ".join(sorted(types)) or "none"
            raise KfopsError(
                f"--param {name}: the pipeline has no parameter `{name}`",
                f"its parameters: {known}",
                exit_code=EXIT_USAGE,
            )
        out[name] = _parse_value(name, raw, types[name])
    return out


def _parse_value(name: str, raw: str, kind: str) -> Any:
    def bad(expected: str, example: str) -> KfopsError:
        return KfopsError(
            f"--param {name}={raw}: `{name}` is {expected}, and {raw!r} is not one",
            f"for example: --param {name}={example}",
            exit_code=EXIT_USAGE,
        )

    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise bad("an integer", "10") from None
    if kind == "float":
        try:
            number = float(raw)
        except ValueError:
            raise bad("a number", "0.5") from None
        if not math.isfinite(number):
            raise bad("a finite number", "0.5")
        return number
    if kind == "bool":
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise bad("a boolean", "true")
    if kind in ("list", "dict"):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, list if kind == "list" else dict):
            raise bad(f"a {kind} (JSON)", "'[1, 2]'" if kind == "list" else "'{\"a\": 1}'")
        return value
    if kind == "str":
        return raw
    raise KfopsError(
        f"--param {name}: `{name}` is an artifact input and cannot be set from the command line",
        exit_code=EXIT_USAGE,
    )


def check_parameters(project: Project, component: graph_component.GraphComponent) -> list[Problem]:
    """mlops.yaml's ``parameters`` against the real pipeline's parameters and types."""
    inputs = component.component_spec.inputs or {}
    declared = {
        name: Parameter(name, kind, inputs[name].default is not None, None)
        for name, kind in parameter_types(component).items()
    }
    problems = []
    for name, value in project.parameters.items():
        ref = project.pipeline
        function = ref.function if isinstance(ref, PipelineRef) else ref.file.name
        found = parameter_problem(name, value, declared, function)
        if found is not None:
            message, hint, _ = found
            mark = project.parameter_marks[name]
            problems.append(
                Problem(
                    project.shown,
                    mark.line,
                    mark.column,
                    message,
                    hint,
                    document.format_path(("pipeline", "parameters", name)),
                )
            )
    return problems


def compile_project(project: Project, cli_params: tuple[str, ...] = ()) -> Compiled:
    """Compile the project's pipeline to IR YAML text (byte-for-byte deterministic).

    Raises:
        InvalidProject: mlops.yaml names steps or parameters the pipeline does not have.
        UserCodeError: the user's code raised.
        KfopsError: a bad ``--param``.
    """
    component = load_pipeline(project)
    types = parameter_types(component)
    problems = check_parameters(project, component)
    if problems:
        raise InvalidProject.of(problems)
    parameters = {**project.parameters, **parse_cli_params(cli_params, types)}
    parameters = {k: float(v) if types[k] == "float" else v for k, v in parameters.items()}
    rebuilt = _with_overrides(component, project)
    with tempfile.TemporaryDirectory(prefix="kfops-compile-") as tmp:
        out = Path(tmp) / "pipeline.yaml"
        try:
            kfp_compiler.Compiler().compile(
                rebuilt,
                package_path=str(out),
                pipeline_name=project.name,
                pipeline_parameters=parameters or None,
            )
        except Exception as exc:
            raise _user_error(exc, project.root, "compiling the pipeline") from None
        text = out.read_text(encoding="utf-8")
        text = _with_nested_overrides(text, project, out)
    return Compiled(ir_text=text, parameters=parameters)


def _nested(project: Project) -> list[StepOverride]:
    return [s for s in project.steps if "/" in s.name]


def _with_nested_overrides(text: str, project: Project, out: Path) -> str:
    """Apply ``pipeline.steps`` entries named by path (``sub-pipeline/task``, as `kfops
    run` prints them) to tasks inside sub-pipelines, in the IR: a sub-pipeline's tasks
    are built with it, before the pipeline that calls it can reach them."""
    nested = _nested(project)
    if not nested:
        return text
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    from kfops.pipeline.diff import steps_of

    documents = yaml_documents(text)
    ir = documents[0]
    paths = sorted(steps_of(ir))
    problems = [_unknown_step(project, s, paths) for s in nested if s.name not in paths]
    if problems:
        raise InvalidProject.of(problems)
    for step in nested:
        _apply_in_ir(ir, step)
    spec = json_format.ParseDict(ir, pipeline_spec_pb2.PipelineSpec())
    platform = pipeline_spec_pb2.PlatformSpec()
    if len(documents) > 1:
        json_format.ParseDict(documents[1], platform)
    description = ir.get("pipelineInfo", {}).get("description")
    pipeline_spec_builder.write_pipeline_spec_to_file(spec, description, platform, str(out))
    return out.read_text(encoding="utf-8")


def _apply_in_ir(ir: dict[str, Any], step: StepOverride) -> None:
    """``step``'s settings on the task at its path, copying (under a new name) each
    component on the way that another task shares, so that only this task changes."""
    components: dict[str, Any] = ir["components"]
    executors: dict[str, Any] = ir["deploymentSpec"]["executors"]
    suffix = "-kfops-" + step.name.replace("/", "-")
    dag = ir["root"]["dag"]
    *outer, last = step.name.split("/")
    for name in [*outer, last]:
        task = dag["tasks"][name]
        ref = task["componentRef"]["name"]
        component = copy.deepcopy(components[ref])
        components[ref + suffix] = component
        task["componentRef"]["name"] = ref + suffix
        if name != last:
            dag = component["dag"]
    label = component["executorLabel"]
    container = copy.deepcopy(executors[label])["container"]
    executors[label + suffix] = {"container": container}
    component["executorLabel"] = label + suffix
    if step.resources is not None:
        resources = container.setdefault("resources", {})
        if step.resources.cpu is not None:
            resources["resourceCpuLimit"] = resources["resourceCpuRequest"] = step.resources.cpu
        if step.resources.memory is not None:
            memory = step.resources.memory
            resources["resourceMemoryLimit"] = resources["resourceMemoryRequest"] = memory
        if step.resources.gpu is not None:
            resources["accelerator"] = {
                "resourceType": "nvidia.com/gpu",
                "resourceCount": str(step.resources.gpu),
            }
    if step.retries is not None:
        task["retryPolicy"] = {"maxRetryCount": step.retries}
    if step.cache is not None:
        task["cachingOptions"] = {"enableCache": True} if step.cache else {}
    if step.env:
        env = [e for e in container.get("env", []) if e["name"] not in dict(step.env)]
        container["env"] = env + [{"name": k, "value": v} for k, v in step.env]


def _with_overrides(
    component: graph_component.GraphComponent, project: Project
) -> graph_component.GraphComponent:
    """Rebuild the pipeline, applying ``pipeline.steps`` to its tasks once they exist."""
    if not project.steps and not project.description:
        return component  # nothing to apply: building it again costs as much as the first
    original = component.pipeline_func
    unknown: list[StepOverride] = []
    rejected: list[tuple[StepOverride, str]] = []
    seen_tasks: list[str] = []

    @functools.wraps(original)
    def with_overrides(*args: Any) -> Any:
        outputs = original(*args)
        pipeline = pipeline_context.Pipeline.get_default_pipeline()
        tasks: dict[str, pipeline_task.PipelineTask] = pipeline.tasks
        seen_tasks.extend(tasks)
        for step in project.steps:
            if "/" in step.name:
                continue  # in a sub-pipeline: applied to the IR (_with_nested_overrides)
            task = tasks.get(step.name)
            if task is None:
                unknown.append(step)
                continue
            try:
                _apply(step, task)
            except (ValueError, TypeError) as exc:
                rejected.append((step, str(exc)))
        return outputs

    spec = copy.deepcopy(component.component_spec)
    if project.description:
        spec.description = project.description
    try:
        rebuilt = graph_component.GraphComponent(
            component_spec=spec,
            pipeline_func=with_overrides,
            display_name=component.pipeline_spec.pipeline_info.display_name or None,
            pipeline_config=component.pipeline_config,
        )
    except Exception as exc:
        raise _user_error(exc, project.root, "building the pipeline") from None
    if unknown or _nested(project):
        from google.protobuf import json_format

        from kfops.pipeline.diff import steps_of

        # tasks inside sub-pipelines go by path; the suggestions cover them too
        paths = steps_of(json_format.MessageToDict(component.pipeline_spec))
        unknown += [s for s in _nested(project) if s.name not in paths]
        seen_tasks.extend(paths)
    problems = [_unknown_step(project, s, sorted(set(seen_tasks))) for s in unknown]
    problems += [
        Problem(
            project.shown,
            step.mark.line,
            step.mark.column,
            f"KFP rejects the settings of step `{step.name}`: {reason}",
            path=f"pipeline.steps.{step.name}",
        )
        for step, reason in rejected
    ]
    if problems:
        raise InvalidProject.of(problems)
    return rebuilt


def _apply(step: StepOverride, task: pipeline_task.PipelineTask) -> None:
    if step.resources is not None:
        if step.resources.cpu is not None:
            task.set_cpu_request(step.resources.cpu).set_cpu_limit(step.resources.cpu)
        if step.resources.memory is not None:
            task.set_memory_request(step.resources.memory)
            task.set_memory_limit(step.resources.memory)
        if step.resources.gpu is not None:
            task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(step.resources.gpu)
    if step.retries is not None:
        task.set_retry(num_retries=step.retries)
    if step.cache is not None:
        task.set_caching_options(enable_caching=step.cache)
    for name, value in step.env:
        task.set_env_variable(name, value)


def _unknown_step(project: Project, step: StepOverride, tasks: list[str]) -> Problem:
    import difflib

    close = difflib.get_close_matches(step.name.replace("_", "-"), tasks, n=1, cutoff=0.5)
    hint = (
        f"did you mean `{close[0]}`?"
        if close
        else "the pipeline's steps: " + (", ".join(f"`{t}`" for t in sorted(tasks)) or "none")
    )
    return Problem(
        project.shown,
        step.mark.line,
        step.mark.column,
        f"the pipeline has no step `{step.name}`",
        hint,
        f"pipeline.steps.{step.name}",
    )


def _import_user_module(file: Path, root: Path) -> ModuleType:
    name = "_kfops_user_" + file.stem.replace("-", "_")
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise KfopsError(f"cannot import {file}")
    module = importlib.util.module_from_spec(spec)
    # The pipeline file may import modules beside it, as it would when run as a script.
    sys.path.insert(0, str(file.parent))
    # Compiling must not leave __pycache__ folders in the user's project (or CI's checkout).
    writes_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise _user_error(exc, root, f"importing {file.name}") from None
    finally:
        sys.path.remove(str(file.parent))
        sys.dont_write_bytecode = writes_bytecode
    return module


def _user_error(exc: BaseException, root: Path, doing: str) -> UserCodeError:
    """An exception from the user's code, pointed at the user's own deepest frame."""
    frames = traceback.extract_tb(exc.__traceback__)
    root_s = str(root.resolve())
    mine = [
        f
        for f in frames
        if f.filename.startswith(root_s)
        and "site-packages" not in f.filename
        and "/.venv/" not in f.filename
    ]
    described = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    if not mine:
        return UserCodeError(
            message=f"{doing} failed: {described}",
            hint="the error comes from KFP while reading your pipeline; check its components"
            " and their type annotations",
        )
    last = mine[-1]
    shown = display_path(Path(last.filename))
    return UserCodeError(
        message=f"{shown}:{last.lineno}: {described}",
        hint=f"raised while {doing}; this is an error in your pipeline code",
        file=shown,
        line=last.lineno or 0,
        traceback="".join(traceback.format_list(mine)),
    )
