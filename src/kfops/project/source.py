"""Static facts about the user's pipeline file, read from its AST (never by running it)."""

from __future__ import annotations

import ast
import difflib
from dataclasses import dataclass, field
from pathlib import Path

# Annotations we can check a YAML value against; anything else is accepted as is.
_SIMPLE_TYPES = {"int": "int", "float": "float", "str": "str", "bool": "bool"}
_CONTAINERS = {"list": "list", "List": "list", "dict": "dict", "Dict": "dict"}


@dataclass(frozen=True)
class Parameter:
    name: str
    kind: str | None  # "int", "float", "str", "bool", "list", "dict" or None when unknown
    has_default: bool
    default: str | None = None  # the default's source text, when it has one


@dataclass(frozen=True)
class PipelineFunction:
    name: str
    line: int
    is_pipeline: bool
    parameters: dict[str, Parameter] = field(default_factory=dict)
    pipeline_name: str | None = None  # @dsl.pipeline(name=...), when a literal


class SourceSyntaxError(Exception):
    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


def functions_in(file: Path) -> dict[str, PipelineFunction]:
    """Module-level functions of ``file``, with whether each is a @dsl.pipeline.

    Raises:
        SourceSyntaxError: the file is not valid Python.
        OSError, UnicodeDecodeError: the file cannot be read as text.
    """
    text = file.read_text(encoding="utf-8")
    try:
        tree = ast.parse(text, filename=str(file))
    except SyntaxError as exc:
        raise SourceSyntaxError(exc.msg, exc.lineno or 0, exc.offset or 0) from None
    except ValueError as exc:  # e.g. source code with NUL bytes
        raise SourceSyntaxError(str(exc), 0, 0) from None
    found: dict[str, PipelineFunction] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found[node.name] = PipelineFunction(
                name=node.name,
                line=node.lineno,
                is_pipeline=any(_is_pipeline_decorator(d) for d in node.decorator_list),
                parameters=_parameters(node.args),
                pipeline_name=next(
                    (n for n in map(_pipeline_name, node.decorator_list) if n is not None), None
                ),
            )
    return found


def _is_pipeline_decorator(node: ast.expr) -> bool:
    target = node.func if isinstance(node, ast.Call) else node
    if isinstance(target, ast.Attribute):
        return target.attr == "pipeline"
    return isinstance(target, ast.Name) and target.id == "pipeline"


def _pipeline_name(node: ast.expr) -> str | None:
    if not isinstance(node, ast.Call) or not _is_pipeline_decorator(node):
        return None
    for keyword in node.keywords:
        if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
            return str(keyword.value.value)
    return None


def _parameters(args: ast.arguments) -> dict[str, Parameter]:
    positional = [*args.posonlyargs, *args.args]
    defaults: dict[str, ast.expr] = dict(
        zip(
            [a.arg for a in positional[len(positional) - len(args.defaults) :]],
            args.defaults,
            strict=True,
        )
    )
    defaults |= {
        a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None
    }
    return {
        a.arg: Parameter(
            a.arg,
            _kind(a.annotation),
            a.arg in defaults,
            ast.unparse(defaults[a.arg]) if a.arg in defaults else None,
        )
        for a in [*positional, *args.kwonlyargs]
    }


def _kind(annotation: ast.expr | None) -> str | None:
    if isinstance(annotation, ast.Subscript):
        annotation = annotation.value
    if isinstance(annotation, ast.Attribute):  # typing.List, builtins.int
        name = annotation.attr
    elif isinstance(annotation, ast.Name):
        name = annotation.id
    elif isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        name = annotation.value.split("[")[0]
    else:
        return None
    return _SIMPLE_TYPES.get(name) or _CONTAINERS.get(name)


def with_article(kind: str | None) -> str:
    """``an int``, ``a float``: a parameter kind in a sentence."""
    return f"an {kind}" if kind == "int" else f"a {kind}"


def parameter_problem(
    name: str, value: object, declared: dict[str, Parameter], function: str
) -> tuple[str, str, bool] | None:
    """What is wrong with giving ``value`` to parameter ``name``: (message, hint, at_key).

    None when the pipeline has the parameter and the value fits its type.
    """
    param = declared.get(name)
    if param is None:
        close = difflib.get_close_matches(name, list(declared), n=1)
        known = ", ".join(f"`{p}`" for p in declared) or "none"
        hint = f"did you mean `{close[0]}`?" if close else f"its parameters: {known}"
        return f"`{name}` is not a parameter of `{function}`", hint, True
    if value_fits(param.kind, value):
        return None
    from kfops.project.schema import describe

    message = f"parameter `{name}` is {with_article(param.kind)}, found {describe(value)}"
    return message, how_to_write(param, value), False


def how_to_write(param: Parameter, value: object) -> str:
    """A hint for a YAML value that does not fit the parameter's annotation."""
    shape = {
        "int": "a whole number",
        "float": "a number",
        "bool": "true or false",
        "str": "a string (quote it)",
        "list": "a list, e.g. [1, 2]",
        "dict": "a mapping, e.g. {a: 1}",
    }.get(param.kind or "", "a value of its type")
    hint = f"write {shape}"
    if isinstance(value, str) and param.kind in ("int", "float", "bool"):
        hint += " without quotes"
    if param.default is not None:
        hint += f"; its default is {param.default}"
    return hint


def value_fits(kind: str | None, value: object) -> bool:
    """Whether a YAML value can be given to a parameter annotated as ``kind``."""
    if kind is None:
        return True
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        import math

        return (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        )
    if kind == "str":
        return isinstance(value, str)
    if kind == "list":
        return isinstance(value, list)
    return isinstance(value, dict)
