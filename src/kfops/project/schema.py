"""The mlops.yaml JSON Schema and the messages its violations turn into."""

from __future__ import annotations

import difflib
import json
import math
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from kfops.errors import Problem
from kfops.project.document import Document, JsonPath, format_path, looks_like_yaml11_bool

SCHEMA_NAME = "mlops.schema.json"
_KEY_NOUNS = {
    "steps": "step name",
    "parameters": "parameter name",
    "env": "environment variable name",
}
_JSON_TYPES = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "list",
    dict: "mapping",
    type(None): "nothing (an empty value)",
}


def schema_path() -> Path:
    """The schema file: shipped inside the wheel, or ``schemas/`` in a source checkout."""
    shipped = resources.files("kfops") / "schemas" / SCHEMA_NAME
    if shipped.is_file():
        return Path(str(shipped))
    return Path(__file__).resolve().parents[3] / "schemas" / SCHEMA_NAME


@cache
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(schema_path().read_text(encoding="utf-8"))
    return loaded


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(schema())


def check(doc: Document) -> list[Problem]:
    """Every schema violation in ``doc``, each with its position and a hint."""
    problems: list[Problem] = []
    for error in _validator().iter_errors(doc.data):
        problems.extend(_explain(doc, error))
    return problems


def describe(value: Any) -> str:
    """A value and its type as a user sees them in YAML: ``string "abc"``."""
    kind = _JSON_TYPES.get(type(value), type(value).__name__)
    if value is None:
        return kind
    if isinstance(value, dict | list):
        return kind
    if isinstance(value, bool):
        return f"{kind} {'true' if value else 'false'}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{kind} {value}"
    shown = json.dumps(value) if isinstance(value, str) else repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{kind} {shown}"


def _explain(doc: Document, error: ValidationError) -> list[Problem]:
    path: JsonPath = tuple(error.absolute_path)
    where = _name(path)
    sub: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    value: Any = error.instance
    rule: Any = error.validator_value
    kind = error.validator

    if "propertyNames" in error.relative_schema_path:
        # jsonschema reports a bad key as a failure of the key string itself, located at
        # the mapping that holds it.
        noun = _KEY_NOUNS.get(str(path[-1]) if path else "", "key")
        return [
            doc.problem(
                (*path, value),
                f"invalid {noun} `{value}`",
                sub.get("patternErrorMessage", ""),
                key=True,
            )
        ]
    if kind == "additionalProperties":
        allowed = sorted(sub.get("properties", {}))
        extras = [k for k in value if k not in sub.get("properties", {})]
        # A key that would hold a secret (schema `secretKeys`: key -> the key to use).
        secrets: dict[str, str] = sub.get("secretKeys", {})
        return [
            doc.problem(
                (*path, key),
                f"`{key}` would put a secret in mlops.yaml, which is in Git: kfops never reads it",
                f"remove it (and revoke it), keep it in a secret, and name the variable that"
                f" holds it: `{secrets[key]}: KFP_TOKEN`"
                if secrets[key].isidentifier()
                else f"remove it (and revoke it); {secrets[key]}",
                key=True,
            )
            if key in secrets
            else _unknown_key(doc, path, key, allowed)
            for key in extras
        ]
    if kind == "required":
        missing = [k for k in rule if k not in value]
        # A misspelt key is reported as unknown with "did you mean"; saying it is also
        # missing would be the same mistake twice.
        extras = [k for k in value if k not in sub.get("properties", {})]
        out = []
        for key in missing:
            if difflib.get_close_matches(key, extras, n=1, cutoff=0.6):
                continue
            prop = sub.get("properties", {}).get(key, {})
            example = _example(prop)
            hint = f"add `{key}:`" + (f", e.g. `{key}: {example}`" if example else "")
            out.append(doc.problem(path, f"missing required key `{key}` in {where}", hint))
        return out
    if kind == "oneOf":
        if not isinstance(value, dict):
            return []  # its type error says it all
        # The schema names the two alternatives and how to add one (oneOfErrorMessage).
        first, second, add_hint = sub.get("oneOfErrorMessage", ("", "", ""))
        given = [k for k in (first, second) if k in value]
        extras = [k for k in value if k not in sub.get("properties", {})]
        for key in (first, second):
            if not given and difflib.get_close_matches(key, extras, n=1, cutoff=0.6):
                return []  # reported as a misspelt key, with "did you mean"
        if given:
            return [
                doc.problem(
                    (*path, second),
                    f"give either `{first}` or `{second}`, not both",
                    "remove one of them",
                    key=True,
                )
            ]
        return [doc.problem(path, f"{where} has neither `{first}` nor `{second}`", add_hint)]
    if kind == "type":
        return [doc.problem(path, _type_message(error), _type_hint(error))]
    if kind == "const":
        expected = json.dumps(rule)
        return [
            doc.problem(
                path,
                f"{where} must be {expected}, found {describe(value)}",
                f"set `{path[-1] if path else 'version'}: {expected}`",
            )
        ]
    if kind == "enum":
        allowed_values = ", ".join(json.dumps(v) for v in rule)
        return [
            doc.problem(
                path, f"{describe(value)} is not allowed here", f"use one of {allowed_values}"
            )
        ]
    if kind == "pattern":
        hint = sub.get("patternErrorMessage", f"it must match {rule}")
        return [doc.problem(path, f"invalid {where}: {json.dumps(value)}", hint)]
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        relation = {
            "minimum": "at least",
            "maximum": "at most",
            "exclusiveMinimum": "more than",
            "exclusiveMaximum": "less than",
        }[kind]
        return [
            doc.problem(
                path,
                f"{where} must be {relation} {rule}, found {value}",
                _description_hint(sub),
            )
        ]
    if kind in ("minLength", "maxLength"):
        relation = "at least" if kind == "minLength" else "at most"
        return [
            doc.problem(
                path,
                f"{where} must be {relation} {rule} characters, found {len(value)}",
                _description_hint(sub),
            )
        ]
    if kind == "minProperties":
        keys = ", ".join(sorted(sub.get("properties", {}))) or "a key"
        return [doc.problem(path, f"{where} is empty", f"add one of: {keys}; or remove it")]
    return [doc.problem(path, f"{where}: {error.message}", _description_hint(sub))]


def _unknown_key(doc: Document, parent: JsonPath, key: str, allowed: list[str]) -> Problem:
    where = _name(parent)
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        hint = f"did you mean `{close[0]}`?"
    else:
        hint = "allowed keys: " + ", ".join(f"`{k}`" for k in allowed)
    return doc.problem((*parent, key), f"unknown key `{key}` in {where}", hint, key=True)


def _type_message(error: ValidationError) -> str:
    expected: Any = error.validator_value
    names = [expected] if isinstance(expected, str) else list(expected)
    shown = " or ".join(_TYPE_NAMES.get(n, n) for n in names)
    return f"{_name(tuple(error.absolute_path))} must be {shown}, found {describe(error.instance)}"


def _name(path: JsonPath) -> str:
    """How a message names the value at ``path``; the full path follows as "(at ...)"."""
    if not path:
        return "the top level"
    last = path[-1]
    return f"`{format_path(path[-2:])}`" if isinstance(last, int) else f"`{last}`"


_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "null": "empty",
}


def _type_hint(error: ValidationError) -> str:
    expected: Any = error.validator_value
    names = {expected} if isinstance(expected, str) else set(expected)
    value: Any = error.instance
    sub = error.schema if isinstance(error.schema, dict) else {}
    if value is None:
        example = _example(sub)
        return "give it a value" + (f", e.g. {example}" if example else "")
    if "string" in names and isinstance(value, bool | int | float):
        if "pattern" in sub:
            return f"write it as a string, e.g. {_example(sub)}"
        literal = ("true" if value else "false") if isinstance(value, bool) else str(value)
        return f'quote it: "{literal}"'
    if "boolean" in names and looks_like_yaml11_bool(value):
        return f"`{value}` is a string in YAML 1.2 (which kfops reads); write true or false"
    if isinstance(value, str) and names & {"integer", "number", "boolean"}:
        try:
            json.loads(value)
        except ValueError:
            pass
        else:
            return "remove the quotes"
    return _description_hint(sub)


def _description_hint(sub: dict[str, Any]) -> str:
    example = _example(sub)
    return f"for example: {example}" if example else ""


def _example(sub: dict[str, Any]) -> str:
    """The schema's first example, written as YAML flow style."""
    examples = sub.get("examples") or []
    if not examples:
        return ""
    import yaml

    text: str = yaml.safe_dump(
        examples[0], default_flow_style=True, sort_keys=False, width=1000
    ).strip()
    return text.removesuffix("\n...").strip()
