"""Read a YAML file into plain data while remembering where every key and value stands.

PyYAML alone is not enough for a configuration file people edit by hand:

- it silently keeps the last of two duplicate keys;
- it expands aliases without bound, so a "billion laughs" document hangs the reader;
- it resolves scalars by YAML 1.1, where ``on``, ``yes`` and ``no`` are booleans and
  ``2024-01-01`` is a date.

So we let PyYAML *compose* the node graph (linear in the file's size, aliases stay
shared nodes) and construct the data ourselves: keys are strings, plain scalars follow
the YAML 1.2 core schema, duplicates are problems, and alias expansion is counted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kfops.errors import Problem

MAX_FILE_BYTES = 1024 * 1024
# A real mlops.yaml has a few hundred nodes; alias bombs reach billions.
MAX_NODES = 100_000

JsonPath = tuple[str | int, ...]

_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_TRUE = re.compile(r"^(?:true|True|TRUE)$")
_FALSE = re.compile(r"^(?:false|False|FALSE)$")
_INT = re.compile(r"^[-+]?[0-9]+$")
_OCT = re.compile(r"^0o[0-7]+$")
_HEX = re.compile(r"^0x[0-9a-fA-F]+$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_INF = re.compile(r"^[-+]?\.(?:inf|Inf|INF)$")
_NAN = re.compile(r"^\.(?:nan|NaN|NAN)$")
_STANDARD_TAG = "tag:yaml.org,2002:"
# The tags PyYAML's resolver gives plain scalars, and explicit `!!str` and the like.
_SCALAR_TAGS = {
    _STANDARD_TAG + name
    for name in ("str", "int", "float", "bool", "null", "timestamp", "merge", "value")
}
_YAML_1_1_BOOLS = {"yes", "no", "on", "off", "y", "n"}


@dataclass(frozen=True)
class Mark:
    line: int  # 1-based
    column: int  # 1-based


@dataclass
class Document:
    """A parsed YAML document: the data and the position of every key and value."""

    file: str
    text: str
    data: Any = None
    values: dict[JsonPath, Mark] = field(default_factory=dict)
    keys: dict[JsonPath, Mark] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def mark_of(self, path: JsonPath, *, key: bool = False) -> Mark:
        """The position of the value (or its key) at ``path``, else of its nearest parent."""
        table = self.keys if key else self.values
        probe = path
        while probe:
            if probe in table:
                return table[probe]
            if not key and probe in self.keys:
                return self.keys[probe]
            probe = probe[:-1]
        return self.values.get((), Mark(1, 1))

    def problem(
        self,
        path: JsonPath,
        message: str,
        hint: str = "",
        *,
        key: bool = False,
        severity: str = "error",
    ) -> Problem:
        mark = self.mark_of(path, key=key)
        return Problem(
            self.file, mark.line, mark.column, message, hint, format_path(path), severity
        )


def format_path(path: JsonPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _mark(node_mark: Any) -> Mark:
    return Mark(node_mark.line + 1, node_mark.column + 1)


def read_text(path: Path, shown: str) -> tuple[str | None, list[Problem]]:
    """The file's text, or the problems that make it unreadable as a UTF-8 text file."""

    def fail(
        message: str, hint: str = "", line: int = 0, column: int = 0
    ) -> tuple[None, list[Problem]]:
        return None, [Problem(shown, line, column, message, hint)]

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return fail("file not found", "check the path, or run `kfops init` to create mlops.yaml")
    except IsADirectoryError:
        return fail("is a directory, not a file")
    except OSError as exc:
        return fail(f"cannot read the file: {exc.strerror}")
    if len(raw) > MAX_FILE_BYTES:
        return fail(
            f"file is {len(raw):,} bytes; an mlops.yaml is at most {MAX_FILE_BYTES:,}",
            "keep data out of mlops.yaml; reference files by path instead",
        )
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return fail("file is UTF-16 encoded", "save it as UTF-8")
    if len(raw) >= 4 and (raw[1::2].count(0) > len(raw) // 4 or raw[0::2].count(0) > len(raw) // 4):
        return fail("file looks UTF-16 encoded (every other byte is NUL)", "save it as UTF-8")
    if b"\x00" in raw:
        offset = raw.index(b"\x00")
        line, column = _position_of_byte(raw, offset)
        return fail("binary file (contains a NUL byte), not YAML text", line=line, column=column)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line, column = _position_of_byte(raw, exc.start)
        return fail(
            f"not valid UTF-8 (byte 0x{raw[exc.start]:02x})",
            "save the file as UTF-8",
            line,
            column,
        )
    if not text.strip():
        return fail("file is empty", "run `kfops init` to write a starter mlops.yaml")
    if all(not line.strip() or line.lstrip().startswith("#") for line in text.splitlines()):
        return fail("file has only comments", "run `kfops init` to write a starter mlops.yaml")
    return text, []


def _position_of_byte(raw: bytes, offset: int) -> tuple[int, int]:
    before = raw[:offset]
    line = before.count(b"\n") + 1
    column = offset - (before.rfind(b"\n") + 1) + 1
    return line, column


def load(path: Path, shown: str) -> Document:
    """Read and parse ``path``. Problems are collected in the document, never raised."""
    text, problems = read_text(path, shown)
    doc = Document(file=shown, text=text or "")
    if text is None:
        doc.problems.extend(problems)
        return doc
    return parse(text, shown)


def parse(text: str, shown: str) -> Document:
    doc = Document(file=shown, text=text)
    loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        node = yaml.compose(text, Loader=loader_cls)
    except yaml.MarkedYAMLError as exc:
        doc.problems.append(_syntax_problem(exc, shown, text))
        return doc
    except yaml.YAMLError as exc:  # an unmarked reader error
        doc.problems.append(Problem(shown, 0, 0, f"YAML syntax: {exc}"))
        return doc
    except RecursionError:
        doc.problems.append(
            Problem(shown, 0, 0, "YAML is nested too deeply", "flatten the document")
        )
        return doc
    if node is None:
        doc.problems.append(Problem(shown, 0, 0, "file is empty", "run `kfops init`"))
        return doc
    builder = _Builder(doc)
    try:
        doc.data = builder.build(node, ())
    except _TooLarge as exc:
        doc.data = None
        doc.problems.append(
            Problem(
                shown,
                exc.mark.line,
                exc.mark.column,
                f"aliases expand to more than {MAX_NODES:,} values",
                "this looks like an alias bomb; write the values out or use fewer aliases",
            )
        )
    except RecursionError:
        doc.data = None
        doc.problems.append(Problem(shown, 0, 0, "YAML is nested too deeply", "flatten it"))
    return doc


def _syntax_problem(exc: yaml.MarkedYAMLError, shown: str, text: str) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    problem = (exc.problem or "").strip()
    context = exc.context or ""
    context_mark = exc.context_mark
    if "could not find expected ':'" in problem and context_mark is not None:
        # PyYAML notices at the next line; the key without `:` is where the scan began.
        mark = context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
    message = f"YAML syntax: {problem}" if problem else "YAML syntax error"
    opened = context_mark.line + 1 if context_mark is not None else 0
    if context and context_mark is not None and opened != line:
        message += f" ({context} at line {opened})"
    lines = text.splitlines()
    bad_char = lines[line - 1][column - 1 : column] if 0 < line <= len(lines) else ""
    hint = ""
    if bad_char == "\t" or "\\t" in problem:
        hint = "YAML does not allow tabs for indentation; indent with spaces"
    elif "expected a single document" in context + problem:
        message = "YAML syntax: more than one document in the file"
        hint = "remove the second `---` and what follows, or merge the documents"
    elif "flow mapping" in context or "flow sequence" in context:
        bracket = "{" if "mapping" in context else "["
        hint = f"close the `{bracket}` opened at line {opened}"
    elif "quoted scalar" in context:
        hint = f"close the quote opened at line {opened}"
    elif "mapping values are not allowed" in problem:
        hint = (
            "check this line's indentation against the line above; quote a value that contains `: `"
        )
    elif "could not find expected ':'" in problem:
        hint = "every key needs a `:` after it"
    elif "found undefined alias" in problem:
        hint = "define the anchor (`&name`) before using the alias (`*name`)"
    elif "block" in context or "indentation" in problem:
        hint = "check this line's indentation against the lines above"
    return Problem(shown, line, column, message, hint)


class _TooLarge(Exception):
    def __init__(self, mark: Mark) -> None:
        self.mark = mark


class _Builder:
    """Turns composed nodes into plain data, recording positions and problems."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.count = 0
        self.active: set[int] = set()

    def build(self, node: yaml.Node, path: JsonPath) -> Any:
        self.count += 1
        mark = _mark(node.start_mark)
        if self.count > MAX_NODES:
            raise _TooLarge(mark)
        self.doc.values.setdefault(path, mark)
        if id(node) in self.active:
            self.doc.problems.append(
                self.doc.problem(path, "recursive alias: a value contains itself")
            )
            return None
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                self._check_tag(node, "seq", path)
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            assert isinstance(node, yaml.MappingNode)
            self._check_tag(node, "map", path)
            return self._mapping(node, path)
        finally:
            self.active.discard(id(node))

    def _check_tag(self, node: yaml.Node, kind: str, path: JsonPath) -> None:
        if node.tag != _STANDARD_TAG + kind:
            self.doc.problems.append(
                self.doc.problem(
                    path, f"unsupported YAML tag `{_short_tag(node.tag)}`", "remove the tag"
                )
            )

    def _pairs(
        self, node: yaml.MappingNode, path: JsonPath
    ) -> Iterator[tuple[yaml.Node, yaml.Node]]:
        """The mapping's own pairs, then those merged in with `<<`, own keys first."""
        merged: list[tuple[yaml.Node, yaml.Node]] = []
        for key, value in node.value:
            if key.tag == _STANDARD_TAG + "merge":
                sources = value.value if isinstance(value, yaml.SequenceNode) else [value]
                for source in sources:
                    if not isinstance(source, yaml.MappingNode):
                        self.doc.problems.append(
                            Problem(
                                self.doc.file,
                                *_mark_tuple(value),
                                "`<<` merges only mappings",
                                path=format_path(path),
                            )
                        )
                        continue
                    merged.extend(self._pairs(source, path))
            else:
                yield key, value
        yield from merged

    def _mapping(self, node: yaml.MappingNode, path: JsonPath) -> dict[str, Any]:
        out: dict[str, Any] = {}
        explicit: dict[str, Mark] = {}
        own = {id(k) for k, _ in node.value}
        for key_node, value_node in self._pairs(node, path):
            if not isinstance(key_node, yaml.ScalarNode):
                self.doc.problems.append(
                    Problem(
                        self.doc.file,
                        *_mark_tuple(key_node),
                        "a key must be a plain string, not a list or mapping",
                        path=format_path(path),
                    )
                )
                continue
            key = str(key_node.value)
            key_mark = _mark(key_node.start_mark)
            if key in out:
                if id(key_node) in own and key in explicit:
                    first = explicit[key]
                    self.doc.problems.append(
                        Problem(
                            self.doc.file,
                            key_mark.line,
                            key_mark.column,
                            f"duplicate key `{key}` (first defined at line {first.line})",
                            "remove one of them; YAML keeps only the last, silently",
                            format_path((*path, key)),
                        )
                    )
                continue  # merged keys never override explicit ones
            if id(key_node) in own:
                explicit[key] = key_mark
            key_path: JsonPath = (*path, key)
            self.doc.keys[key_path] = key_mark
            out[key] = self.build(value_node, key_path)
        return out

    def _scalar(self, node: yaml.ScalarNode, path: JsonPath) -> Any:
        value: str = node.value
        tag: str = node.tag
        if tag not in _SCALAR_TAGS:
            self.doc.problems.append(
                self.doc.problem(
                    path, f"unsupported YAML tag `{_short_tag(tag)}`", "remove the tag"
                )
            )
            return value
        if node.style:  # quoted or block scalars are always strings (plain: None or "")
            return value
        if tag == _STANDARD_TAG + "str" and _implicit_tag(value) != tag:
            return value  # an explicit `!!str 4`: PyYAML alone would have called it an int
        return resolve_plain(value)


_RESOLVER = yaml.resolver.Resolver()


def _implicit_tag(value: str) -> str:
    """The tag PyYAML's resolver gives a plain scalar with no explicit tag."""
    resolve: Callable[..., str] = _RESOLVER.resolve  # untyped in PyYAML's stubs
    return resolve(yaml.ScalarNode, value, (True, False))


def _short_tag(tag: str) -> str:
    return "!!" + tag.removeprefix(_STANDARD_TAG) if tag.startswith(_STANDARD_TAG) else tag


def _mark_tuple(node: yaml.Node) -> tuple[int, int]:
    mark = _mark(node.start_mark)
    return mark.line, mark.column


def resolve_plain(value: str) -> Any:
    """Resolve a plain scalar by the YAML 1.2 core schema."""
    if _NULL.match(value):
        return None
    if _TRUE.match(value):
        return True
    if _FALSE.match(value):
        return False
    if _INT.match(value):
        return int(value)
    if _OCT.match(value):
        return int(value[2:], 8)
    if _HEX.match(value):
        return int(value[2:], 16)
    if _FLOAT.match(value) and any(c.isdigit() for c in value):
        return float(value)
    if _INF.match(value):
        return -math.inf if value.startswith("-") else math.inf
    if _NAN.match(value):
        return math.nan
    return value


def looks_like_yaml11_bool(value: Any) -> bool:
    """``yes``/``no``/``on``/``off``: booleans to YAML 1.1 readers, strings to us."""
    return isinstance(value, str) and value.lower() in _YAML_1_1_BOOLS
