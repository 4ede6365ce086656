"""A tagged notebook -> the Python source of a KFP pipeline (readable, deterministic).

Each step becomes a lightweight component that runs the step's cells with ``exec`` in a
fresh ``__main__`` namespace, as Jupyter does: imports and functions cells first, then
the values handed over from upstream steps, then the step's own cells. Values go to
later steps as artifacts, in a format chosen by type:

- ``None``, bool, int, float, str: JSON;
- NumPy arrays (not of objects): ``.npy`` (no pickle);
- pandas objects: pandas' pickle (keeps dtypes and the index);
- scikit-learn, XGBoost and LightGBM models: joblib;
- an ``xgboost.DMatrix``: its own binary format (``save_binary``), as Kale does;
- PyTorch modules and tensors: ``torch.save`` (the class must be importable where it
  is loaded, as with pickle);
- Keras models (Keras 3 or tf.keras): a ``model.keras`` file in the artifact's folder;
- anything else: pickle.

``kfops compile NOTEBOOK --emit-python`` prints what this module writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kfops.notebook.dataflow import Flow, function_name
from kfops.notebook.tags import Cell, Notebook, Step

DEFAULT_IMAGE = "python:3.11-slim"

# The hand-over helpers, written into every component (a component must be
# self-contained: KFP ships only the function's own source to the container).
_RUNTIME = """
    import json as _kfops_json
    import pickle as _kfops_pickle
    import sys as _kfops_sys
    import types as _kfops_types

    def _kfops_load(artifact):
        fmt = artifact.metadata.get("kfops_format", "pickle")
        if fmt == "json":
            with open(artifact.path, encoding="utf-8") as f:
                return _kfops_json.load(f)
        if fmt == "npy":
            import numpy

            with open(artifact.path, "rb") as f:
                return numpy.load(f, allow_pickle=False)
        if fmt == "pandas":
            import pandas

            return pandas.read_pickle(artifact.path)
        if fmt == "joblib":
            import joblib

            return joblib.load(artifact.path)
        if fmt == "xgboost-dmatrix":
            import xgboost

            return xgboost.DMatrix(artifact.path)
        if fmt == "torch":
            import torch

            return torch.load(artifact.path, weights_only=False)
        if fmt == "keras":
            import os
            import keras

            return keras.models.load_model(os.path.join(artifact.path, "model.keras"))
        with open(artifact.path, "rb") as f:
            return _kfops_pickle.load(f)

    def _kfops_display(*values, **options):
        for value in values:
            print(value)

    def _kfops_save(name, value, artifact):
        kind = type(value)
        package = kind.__module__.split(".")[0]
        # the libraries a class comes from, its bases' too (a user's torch.nn.Module)
        families = {c.__module__.split(".")[0] for c in kind.__mro__}
        try:
            if value is None or kind in (bool, int, float, str):
                fmt = "json"
                with open(artifact.path, "w", encoding="utf-8") as f:
                    _kfops_json.dump(value, f)
            elif package == "numpy" and kind.__name__ == "ndarray" and value.dtype != object:
                import numpy

                fmt = "npy"
                with open(artifact.path, "wb") as f:
                    numpy.save(f, value, allow_pickle=False)
            elif package == "pandas":
                fmt = "pandas"
                value.to_pickle(artifact.path)
            elif package == "xgboost" and kind.__name__ == "DMatrix":
                fmt = "xgboost-dmatrix"  # holds a C handle: it does not pickle
                value.save_binary(artifact.path)
            elif "keras" in families or "tf_keras" in families:
                import os

                fmt = "keras"
                os.makedirs(artifact.path, exist_ok=True)
                value.save(os.path.join(artifact.path, "model.keras"))
            elif "torch" in families:
                import torch

                fmt = "torch"
                torch.save(value, artifact.path)
            elif package in ("sklearn", "xgboost", "lightgbm"):
                import joblib

                fmt = "joblib"
                joblib.dump(value, artifact.path)
            else:
                fmt = "pickle"
                with open(artifact.path, "wb") as f:
                    _kfops_pickle.dump(value, f)
        except Exception as exc:
            raise TypeError(
                f"kfops cannot hand `{name}` ({package}.{kind.__name__}) to a later step:"
                f" {exc}. Define it in the functions cell, or compute it in the step that"
                " uses it."
            ) from None
        artifact.metadata["kfops_format"] = fmt
        artifact.metadata["python_type"] = f"{package}.{kind.__name__}"
"""


@dataclass(frozen=True)
class Module:
    """A generated pipeline module.

    Attributes:
        text: its source text.
        sources: each component function's source as KFP embeds it in the IR (what
            ``inspect.getsource`` gives, less the decorator), by the line number of its
            decorator (the function's ``co_firstlineno``).
    """

    text: str
    sources: dict[int, str]


def generate(nb: Notebook, flow: Flow, pipeline_name: str) -> str:
    """The pipeline module's source text for ``nb``."""
    return generate_module(nb, flow, pipeline_name).text


def generate_module(nb: Notebook, flow: Flow, pipeline_name: str) -> Module:
    """The pipeline module for ``nb``, with its components' sources."""
    where = nb.path.name
    uses_kubernetes = bool(nb.volumes) or any(
        s.annotations or s.labels or s.secrets for s in nb.steps.values()
    )
    lines = [
        f"# KFP pipeline generated by kfops from {where!r}. Edit the notebook, not this file.",
        "",
        "from kfp import dsl",
    ]
    if uses_kubernetes:
        lines.append("from kfp import kubernetes")
    lines += ["from kfp.dsl import Artifact, Input, Metrics, Output", "", ""]
    sources = {}
    line = 1 + sum(1 + part.count("\n") for part in lines)
    for name in flow.order:
        component = _component(nb, flow, nb.steps[name])
        # A component ends with a statement, never a comment, and two blank lines and a
        # line at column 0 follow it, so inspect's block is exactly these lines; KFP
        # drops the decorator line (dedent changes nothing: the decorator is at column 0).
        sources[line] = "\n".join(component[1:]) + "\n"
        lines += [*component, "", ""]
        line += sum(1 + part.count("\n") for part in component) + 2
    lines += _pipeline(nb, flow, pipeline_name)
    return Module("\n".join(lines) + "\n", sources)


def _component(nb: Notebook, flow: Flow, step: Step) -> list[str]:
    image = step.image or nb.base_image or DEFAULT_IMAGE
    args = [f"{p}: {nb.parameters[p].kind}" for p in flow.parameters[step.name]]
    args += [f"in_{var}: Input[Artifact]" for var in sorted(flow.inputs[step.name])]
    args += [f"out_{var}: Output[Artifact]" for var in flow.outputs[step.name]]
    if flow.metrics[step.name]:
        args.append("kfops_metrics: Output[Metrics]")
    numbers = ", ".join(str(c.number) for c in step.cells)
    numbers = ("cells " if len(step.cells) > 1 else "cell ") + numbers
    source = Path(step.first.file).name if step.first.file else nb.path.name
    out = [
        f"@dsl.component(base_image={json.dumps(image)})",
        f"def {function_name(step.name)}({', '.join(args)}):",
        f"    # step `{step.name}` of {source!r}: {numbers}",
        *_RUNTIME.strip("\n").split("\n"),
        "",
        '    _kfops_module = _kfops_types.ModuleType("__main__")',
        '    _kfops_sys.modules["__main__"] = _kfops_module  # as in Jupyter: pickle finds classes',
        "    _kfops_scope = _kfops_module.__dict__",
        "    _kfops_scope['display'] = _kfops_display  # IPython's, which a notebook calls freely",
    ]
    if step.workdir:
        out.append("    import os as _kfops_os")
        out.append("")
        out.append(f"    _kfops_os.chdir({step.workdir!r})  # the sub-pipeline notebook's folder")
    for param in flow.parameters[step.name]:
        out.append(f"    _kfops_scope[{param!r}] = {param}")
    imports = step.imports if step.imports is not None else nb.imports
    functions = step.functions if step.functions is not None else nb.functions
    for kind, cells in (("imports", imports), ("functions", functions)):
        for cell, code in cells:
            out += _exec(nb.path.name, cell, code, kind)
    for carried in flow.carried.get(step.name, []):
        names = ", ".join(f"`{n}`" for n in carried.names)
        out += _exec(nb.path.name, carried.cell, carried.code, f"{names} from step {carried.step}")
    for var in sorted(flow.inputs[step.name]):
        producer = flow.inputs[step.name][var]
        out.append(f"    _kfops_scope[{var!r}] = _kfops_load(in_{var})  # from step `{producer}`")
    for cell, code in step.code:
        out += _exec(nb.path.name, cell, code, f"step {step.name}")
    for var in flow.outputs[step.name]:
        out.append(f"    _kfops_save({var!r}, _kfops_scope[{var!r}], out_{var})")
    for metric in flow.metrics[step.name]:
        out.append(f"    kfops_metrics.log_metric({metric!r}, float(_kfops_scope[{metric!r}]))")
    if flow.metrics[step.name]:
        # an empty metrics file keeps kfp.local's cache from treating the step as unfinished
        out.append('    open(kfops_metrics.path, "a").close()')
    return out


def _exec(notebook: str, cell: Cell, code: str, what: str) -> list[str]:
    if not code.strip():
        return []
    label = f"{Path(cell.file).name if cell.file else notebook}, cell {cell.number}"
    return [
        f"    # {what}: cell {cell.number}",
        f'    exec(compile({_literal(code)}, {label!r}, "exec"), _kfops_scope)',
    ]


def _literal(code: str) -> str:
    """Code as a readable string literal: a raw triple-quoted block when that is exact."""
    if '"""' not in code and not code.endswith("\\") and "\r" not in code:
        # [1:] drops the newline after the quotes, so line numbers match the cell
        return 'r"""\n' + code + '\n"""[1:]'
    return repr(code)


def _pipeline(nb: Notebook, flow: Flow, pipeline_name: str) -> list[str]:
    params = [f"{p.name}: {p.kind} = {p.value!r}" for p in nb.parameters.values()]
    description = f", description={json.dumps(nb.description)}" if nb.description else ""
    out = [
        f"@dsl.pipeline(name={json.dumps(pipeline_name)}{description})",
        f"def pipeline({', '.join(params)}):",
        "    tasks = {}",
    ]
    for name in flow.order:
        step = nb.steps[name]
        task = f"tasks[{name!r}]"
        call = [f"{p}={p}" for p in flow.parameters[name]]
        call += [
            f'in_{var}=tasks[{src!r}].outputs["out_{var}"]'
            for var, src in sorted(flow.inputs[name].items())
        ]
        out.append(f"    {task} = {function_name(name)}({', '.join(call)})")
        for prev in flow.upstream[name]:
            out.append(f"    {task}.after(tasks[{prev!r}])")
        out += _settings(nb, step, task)
    return out


def _settings(nb: Notebook, step: Step, task: str) -> list[str]:
    out = []
    for resource, value in sorted(step.limits.items()):
        if resource == "cpu":
            out.append(f"    {task}.set_cpu_limit({value!r})")
        elif resource == "memory":
            out.append(f"    {task}.set_memory_limit({value!r})")
        else:
            out.append(f"    {task}.set_accelerator_type({resource!r})")
            out.append(f"    {task}.set_accelerator_limit({value!r})")
    cache = step.cache if step.cache is not None else nb.enable_caching
    if cache is not None:
        out.append(f"    {task}.set_caching_options({cache!r})")
    for key, value in sorted(step.labels.items()):
        out.append(f"    kubernetes.add_pod_label({task}, {key!r}, {value!r})")
    for key, value in sorted(step.annotations.items()):
        out.append(f"    kubernetes.add_pod_annotation({task}, {key!r}, {value!r})")
    for secret, key, env in step.secrets:
        out.append(
            f"    kubernetes.use_secret_as_env({task}, secret_name={secret!r},"
            f" secret_key_to_env={{{key!r}: {env!r}}})"
        )
    for volume in nb.volumes:
        if volume.get("type", "pvc") in ("pvc", "new_pvc") and volume.get("name"):
            out.append(
                f"    kubernetes.mount_pvc({task}, pvc_name={str(volume['name'])!r},"
                f" mount_path={str(volume.get('mount_point', '/data'))!r})"
            )
    return out


def from_notebook(path: Path, shown: str, pipeline_name: str) -> tuple[str | None, Notebook]:
    """Read, analyse and generate: the module source (None if there are errors)."""
    module, nb = module_from_notebook(path, shown, pipeline_name)
    return (None if module is None else module.text), nb


def module_from_notebook(
    path: Path, shown: str, pipeline_name: str
) -> tuple[Module | None, Notebook]:
    """Read, analyse and generate: the module (None if there are errors)."""
    from kfops.notebook import dataflow, tags

    nb = tags.read(path, shown)
    if any(p.severity == "error" for p in nb.problems):
        if nb.steps:
            dataflow.analyse(nb, structure_only=True)
        return None, nb
    flow = dataflow.analyse(nb)
    if flow is None or any(p.severity == "error" for p in nb.problems):
        return None, nb
    return generate_module(nb, flow, pipeline_name), nb
