"""Jupyter notebooks with Kale cell tags (both generations) -> steps, parameters, metrics.

Reads the notebook as JSON, never runs it. Every problem names the cell (its number
and first line) and where the cell starts in the .ipynb file, so an editor or a pull
request can point at it. The tag language is in the README (Notebooks).
"""

from __future__ import annotations

import ast
import difflib
import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kfops.errors import Problem

STEP_NAME = re.compile(r"^[_a-z][_a-z0-9]*$")
# Each tag form, as (name, pattern, how it is written).
_TAGS: list[tuple[str, re.Pattern[str], str]] = [
    ("imports", re.compile(r"^imports$"), "imports"),
    ("functions", re.compile(r"^functions$"), "functions"),
    ("parameters", re.compile(r"^pipeline-parameters$"), "pipeline-parameters"),
    ("metrics", re.compile(r"^pipeline-metrics$"), "pipeline-metrics"),
    ("skip", re.compile(r"^skip$"), "skip"),
    ("step", re.compile(r"^(?:step|block):(.*)$"), "step:NAME (or block:NAME)"),
    ("prev", re.compile(r"^prev:(.*)$"), "prev:NAME"),
    ("limit", re.compile(r"^limit:([a-zA-Z0-9./-]+):([^:\s]+)$"), "limit:RESOURCE:VALUE"),
    ("annotation", re.compile(r"^annotation:([a-zA-Z0-9./_-]+):(.*)$"), "annotation:KEY:VALUE"),
    ("label", re.compile(r"^label:([a-zA-Z0-9./_-]+):(.*)$"), "label:KEY:VALUE"),
    ("image", re.compile(r"^image:(\S+)$"), "image:IMAGE"),
    ("cache", re.compile(r"^cache:(enabled|disabled)$"), "cache:enabled|disabled"),
    (
        "secret",
        re.compile(r"^secret:([a-z0-9.-]+):([-._a-zA-Z0-9]+):([A-Za-z_][A-Za-z0-9_]*)$"),
        "secret:SECRET:KEY:ENV_VAR",
    ),
    ("report", re.compile(r"^report:(enabled|disabled)$"), "report:enabled|disabled"),
    ("notebook", re.compile(r"^notebook:(.*)$"), "notebook:NAME"),
]
VALID_FORMS = ", ".join(form for _, _, form in _TAGS)
_BLOCK_KINDS = {"imports", "functions", "parameters", "metrics", "skip", "step", "notebook"}
# The tags that decide their cell on their own (Kale ignores a cell's other tags then).
_SPECIAL_KINDS = {"imports", "functions", "parameters", "metrics", "skip"}
_KNOWN_METADATA = {
    "pipeline_name",
    "pipeline_description",
    "experiment_name",
    "experiment",
    "base_image",
    "docker_image",
    "enable_caching",
    "volumes",
    "steps_defaults",
    "katib_run",
    "katib_metadata",
    "snapshot_volumes",
    "autosnapshot",
    # the rest of Kale 2.3's PipelineConfig and NotebookConfig: where Kale runs, and
    # cluster details that a local run does not need
    "notebook_path",
    "abs_working_dir",
    "marshal_path",
    "kfp_host",
    "storage_class_name",
    "volume_access_mode",
    "timeout",
    "security_context",
    "output_path",
}
# Cell magics whose body is still Python: only the magic line goes.
_PYTHON_CELL_MAGICS = {"time", "timeit", "capture", "prun", "debug"}
_SHELL_ASSIGN = re.compile(r"^\s*[A-Za-z_][A-Za-z0-9_]*\s*=\s*[!%]")
_PIP_INSTALL = re.compile(r"^\s*[!%]\s*pip3?\s+install\s+(.*)$")


@dataclass(frozen=True)
class Cell:
    """A code cell: ``number`` counts all cells from 1, as a user counts them."""

    number: int
    line: int  # where the cell starts in the .ipynb file (1-based), 0 if unknown
    source: str
    tags: tuple[str, ...]
    notebook_path: str | None = None  # a `notebook:NAME` cell's sub-pipeline
    file: str = ""  # the notebook it comes from, when inlined from a sub-pipeline
    source_line: int = 0  # the .ipynb line of the cell's first source line, 0 if unknown

    def label(self) -> str:
        first = next((ln.strip() for ln in self.source.splitlines() if ln.strip()), "")
        if len(first) > 40:
            first = first[:37] + "..."
        return f'cell {self.number} ("{first}")' if first else f"cell {self.number}"


@dataclass
class Step:
    name: str
    cells: list[Cell] = field(default_factory=list)
    code: list[tuple[Cell, str]] = field(default_factory=list)  # cleaned code per cell
    prev: list[tuple[str, Cell]] = field(default_factory=list)
    limits: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    image: str | None = None
    cache: bool | None = None
    secrets: list[tuple[str, str, str]] = field(default_factory=list)
    report: bool | None = None
    # Set for steps inlined from a sub-pipeline notebook: its own imports and functions
    # cells, and its folder relative to the main notebook's (the step's working directory).
    imports: list[tuple[Cell, str]] | None = None
    functions: list[tuple[Cell, str]] | None = None
    workdir: str = ""

    @property
    def first(self) -> Cell:
        return self.cells[0]


@dataclass(frozen=True)
class Parameter:
    name: str
    value: Any
    kind: str  # int, float, str, bool, list, dict


@dataclass
class Notebook:
    """What a tagged notebook declares, before data-flow analysis."""

    path: Path
    shown: str
    name: str | None = None
    description: str | None = None
    experiment: str | None = None
    base_image: str | None = None
    enable_caching: bool | None = None
    volumes: list[dict[str, Any]] = field(default_factory=list)
    imports: list[tuple[Cell, str]] = field(default_factory=list)
    functions: list[tuple[Cell, str]] = field(default_factory=list)
    parameters: dict[str, Parameter] = field(default_factory=dict)
    metrics: dict[str, Cell] = field(default_factory=dict)
    steps: dict[str, Step] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    subpipelines: list[tuple[str, Cell, list[str]]] = field(default_factory=list)

    def syntax_problem(self, cell: Cell, exc: SyntaxError | ValueError) -> None:
        at = exc.lineno or 1 if isinstance(exc, SyntaxError) else 0
        self.problem(cell, syntax_message(exc), at=at)

    def problem(
        self,
        cell: Cell | None,
        message: str,
        hint: str = "",
        warn: bool = False,
        *,
        at: int = 0,
    ) -> None:
        """Record a problem in ``cell`` (at its line ``at``, when known)."""
        where = f"{cell.label()}: " if cell is not None else ""
        line = cell.line if cell is not None else 0
        if cell is not None and at > 0 and cell.source_line:
            line = cell.source_line + at - 1
        self.problems.append(
            Problem(
                cell.file if cell is not None and cell.file else self.shown,
                line,
                1 if cell is not None and cell.line else 0,
                where + message,
                hint,
                severity="warning" if warn else "error",
            )
        )


MAX_SUBPIPELINE_DEPTH = 4


def read(path: Path, shown: str, _within: tuple[Path, ...] = ()) -> Notebook:
    """Parse the notebook at ``path``; problems are collected, never raised.

    ``notebook:NAME`` cells are inlined: the other notebook's steps become steps
    ``NAME_STEP`` here, after the cell's ``prev:`` steps, and a ``prev:NAME`` waits for
    all of its last steps.
    """
    nb = Notebook(path=path, shown=shown)
    raw = _load_json(path, nb)
    if raw is None:
        return nb
    metadata = raw.get("metadata") or {}
    kale = metadata.get("kubeflow_notebook") if isinstance(metadata, dict) else None
    defaults: list[str] = []
    if isinstance(kale, dict):
        defaults = _read_metadata(kale, nb)
    elif kale is not None:
        nb.problem(None, "`kubeflow_notebook` metadata should be a mapping; ignored", warn=True)
    cells = _cells(raw, path, nb)
    _assign(cells, defaults, nb)
    for name, cell, prevs in nb.subpipelines:
        _inline(nb, name, cell, prevs, (*_within, path.resolve()))
    return nb


def _inline(
    nb: Notebook, name: str, cell: Cell, prevs: list[str], within: tuple[Path, ...]
) -> None:
    if not cell.notebook_path:
        nb.problem(
            cell,
            f"`notebook:{name}` has no `notebook_path` in the cell's metadata",
            'add "notebook_path": "OTHER.ipynb" to the cell metadata',
        )
        return
    target = (nb.path.parent / cell.notebook_path).resolve()
    if not target.is_file():
        nb.problem(cell, f"sub-pipeline notebook `{cell.notebook_path}` not found")
        return
    if target in within or len(within) > MAX_SUBPIPELINE_DEPTH:
        nb.problem(cell, f"sub-pipeline `{cell.notebook_path}` includes itself")
        return
    from kfops.errors import display_path

    child = read(target, display_path(target), within)
    nb.problems.extend(child.problems)
    if any(p.severity == "error" for p in child.problems):
        return
    if not child.steps:
        nb.problem(cell, f"sub-pipeline `{cell.notebook_path}` has no steps")
        return
    waited_on = {p for step in child.steps.values() for p, _ in step.prev}
    leaves = [f"{name}_{s}" for s in child.steps if s not in waited_on]
    workdir = os.path.relpath(target.parent, nb.path.parent.resolve())
    for step in child.steps.values():
        inlined = replace(
            step,
            name=f"{name}_{step.name}",
            cells=[replace(c, file=c.file or child.shown) for c in step.cells],
            code=[(replace(c, file=c.file or child.shown), code) for c, code in step.code],
            prev=[(f"{name}_{p}", c) for p, c in step.prev] or [(p, cell) for p in prevs],
            imports=step.imports if step.imports is not None else child.imports,
            functions=step.functions if step.functions is not None else child.functions,
            workdir="" if workdir == "." else workdir,
            image=step.image or child.base_image,
        )
        if inlined.name in nb.steps:
            nb.problem(cell, f"sub-pipeline step `{inlined.name}` clashes with a step here")
            return
        nb.steps[inlined.name] = inlined
    for param in child.parameters.values():
        mine = nb.parameters.get(param.name)
        if mine is not None and mine != param:
            nb.problem(
                cell,
                f"parameter `{param.name}` is {mine.value!r} here and {param.value!r} in"
                f" `{cell.notebook_path}`",
                "give them the same value, or rename one",
            )
        nb.parameters.setdefault(param.name, param)
    for metric, metric_cell in child.metrics.items():
        nb.metrics.setdefault(metric, replace(metric_cell, file=child.shown))
    for step in nb.steps.values():
        if any(p == name for p, _ in step.prev):
            step.prev = [
                item
                for p, c in step.prev
                for item in ([(leaf, c) for leaf in leaves] if p == name else [(p, c)])
            ]


def _load_json(path: Path, nb: Notebook) -> dict[str, Any] | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        nb.problem(None, "file not found")
        return None
    except OSError as exc:
        nb.problem(None, f"cannot read the notebook: {exc.strerror}")
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        nb.problem(None, f"not valid UTF-8 (byte {exc.start})", "save the notebook as UTF-8")
        return None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        nb.problems.append(
            Problem(
                nb.shown,
                exc.lineno,
                exc.colno,
                f"not a valid notebook: malformed JSON ({exc.msg})",
                "open and save it in Jupyter, or fix the JSON at this position",
            )
        )
        return None
    if not isinstance(raw, dict) or ("cells" not in raw and "worksheets" not in raw):
        nb.problem(None, "not a Jupyter notebook (no `cells`)", "pass a .ipynb file")
        return None
    version = raw.get("nbformat", 4)
    if not isinstance(version, int) or isinstance(version, bool):
        nb.problem(
            None,
            f"`nbformat` must be a whole number, found {json.dumps(version)}",
            "open and save the notebook in Jupyter",
        )
        return None
    if version < 4:
        import nbformat

        reads: Any = nbformat.reads  # untyped
        try:
            upgraded: dict[str, Any] = dict(reads(text, as_version=4))
        except Exception as exc:
            nb.problem(None, f"cannot read this old notebook format: {exc}")
            return None
        return upgraded
    if not isinstance(raw.get("cells"), list):
        nb.problem(None, "not a Jupyter notebook (`cells` is not a list)")
        return None
    return raw


def _read_metadata(kale: dict[str, Any], nb: Notebook) -> list[str]:
    for key in sorted(set(kale) - _KNOWN_METADATA):
        nb.problem(None, f"unknown kubeflow_notebook metadata key `{key}` ignored", warn=True)
    for key in ("pipeline_name", "pipeline_description", "base_image", "docker_image"):
        if key in kale and not isinstance(kale[key], str):
            nb.problem(None, f"`{key}` should be a string; ignored", warn=True)
    if "enable_caching" in kale and not isinstance(kale["enable_caching"], bool):
        nb.problem(None, "`enable_caching` should be true or false; ignored", warn=True)
    name = kale.get("pipeline_name")
    nb.name = name if isinstance(name, str) and name else None
    description = kale.get("pipeline_description")
    nb.description = description if isinstance(description, str) and description else None
    old_experiment = kale.get("experiment")
    if isinstance(old_experiment, dict):
        old_experiment = old_experiment.get("name")
    experiment = kale.get("experiment_name") or old_experiment
    nb.experiment = experiment if isinstance(experiment, str) else None
    image = kale.get("base_image") or kale.get("docker_image")
    nb.base_image = image if isinstance(image, str) and image else None
    caching = kale.get("enable_caching")
    nb.enable_caching = caching if isinstance(caching, bool) else None
    volumes = kale.get("volumes") or []
    nb.volumes = [v for v in volumes if isinstance(v, dict)] if isinstance(volumes, list) else []
    for key in ("katib_run", "snapshot_volumes", "autosnapshot", "timeout", "security_context"):
        if kale.get(key):
            nb.problem(None, f"`{key}` is not supported by kfops and is ignored", warn=True)
    defaults = kale.get("steps_defaults") or []
    if not isinstance(defaults, list) or not all(isinstance(t, str) for t in defaults):
        nb.problem(None, "`steps_defaults` must be a list of tags", 'e.g. ["label:team:ml"]')
        return []
    allowed = []
    for tag in defaults:
        parsed = _parse_tag(tag, None, nb)
        if parsed is None:
            continue
        if parsed[0] in _BLOCK_KINDS or parsed[0] == "prev":
            nb.problem(
                None,
                f"`steps_defaults` cannot hold `{tag}`",
                "it holds settings for every step: limit:, annotation:, label:, image:, cache:,"
                " secret:, report:",
            )
            continue
        allowed.append(tag)
    return allowed


def _cells(raw: dict[str, Any], path: Path, nb: Notebook) -> list[Cell]:
    text = path.read_text(encoding="utf-8-sig")
    raw_cells = raw.get("cells") or []
    starts, source_lines = _cell_positions(text, len(raw_cells))
    cells = []
    for number, (raw_cell, line) in enumerate(zip(raw_cells, starts, strict=True), start=1):
        if not isinstance(raw_cell, dict) or raw_cell.get("cell_type") != "code":
            continue
        source = raw_cell.get("source", "")
        if isinstance(source, list):
            source = "".join(str(s) for s in source)
        meta = raw_cell.get("metadata") or {}
        tags = meta.get("tags") if isinstance(meta, dict) else None
        made = Cell(number, line, str(source), ())
        if tags is not None and (
            not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)
        ):
            nb.problem(
                made,
                "`metadata.tags` must be a list of strings",
                'write e.g. "tags": ["step:train"]',
            )
            continue
        path_meta = meta.get("notebook_path") if isinstance(meta, dict) else None
        cells.append(
            Cell(
                number,
                line,
                str(source),
                tuple(tags or ()),
                path_meta if isinstance(path_meta, str) else None,
                source_line=source_lines[number - 1],
            )
        )
    return cells


_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def _cell_positions(text: str, count: int) -> tuple[list[int], list[int]]:
    """For each cell, the .ipynb line where it starts (its `"cell_type"` key) and the line
    of its first source line (a source written as a list of lines, as Jupyter writes it,
    has one line of code per line of JSON); 0s when the file is not laid out as expected.

    Only the top-level `cells` array is read, so keys named like a cell's elsewhere (PyCharm
    writes `"cell_type"` into the notebook's metadata) do not shift the positions.
    """
    unknown = [0] * count, [0] * count
    try:
        cells = dict(_members(text, len(text) - len(text.lstrip())))
        if "cells" not in cells:
            return unknown
        starts, source_lines = [], []
        for cell_at in _elements(text, cells["cells"][0]):
            keys = dict(_members(text, cell_at)) if text[cell_at] == "{" else {}
            type_at = keys.get("cell_type", (cell_at, cell_at))[1]
            starts.append(text.count("\n", 0, type_at) + 1)
            source = keys.get("source")
            line = text.count("\n", 0, source[0]) + 1 if source else 0
            if source and text[source[0]] == "[":
                first = _WHITESPACE.match(text, source[0] + 1)
                if first is not None and "\n" in first.group(0):
                    line += 1
            source_lines.append(line)
    except (ValueError, IndexError):
        return unknown
    return (starts, source_lines) if len(starts) == count else unknown


def _members(text: str, at: int) -> list[tuple[str, tuple[int, int]]]:
    """The keys of the JSON object at ``at``: (key, (where its value starts, where the key
    starts))."""
    if text[at] != "{":
        raise ValueError("not an object")
    found = []
    at = _skip(text, at + 1)
    while text[at] != "}":
        key_at = at
        key, at = _DECODER.raw_decode(text, at)
        at = _skip(text, at)
        if text[at] != ":":
            raise ValueError("no colon")
        at = _skip(text, at + 1)
        found.append((str(key), (at, key_at)))
        _, at = _DECODER.raw_decode(text, at)
        at = _skip(text, at)
        if text[at] == ",":
            at = _skip(text, at + 1)
    return found


def _elements(text: str, at: int) -> list[int]:
    """Where each element of the JSON array at ``at`` starts."""
    if text[at] != "[":
        raise ValueError("not an array")
    found = []
    at = _skip(text, at + 1)
    while text[at] != "]":
        found.append(at)
        _, at = _DECODER.raw_decode(text, at)
        at = _skip(text, at)
        if text[at] == ",":
            at = _skip(text, at + 1)
    return found


def _skip(text: str, at: int) -> int:
    match = _WHITESPACE.match(text, at)
    return match.end() if match is not None else at


def _assign(cells: list[Cell], defaults: list[str], nb: Notebook) -> None:
    """Give every code cell to a block, following the tags (and untagged continuation).

    Where Kale 2.3 is lenient, so is kfops, with a warning: a special tag (`imports`,
    `skip`, ...) decides its cell and Kale ignores the cell's other tags; an empty
    `step:` continues the step above; untagged cells before the first tag are dropped.
    """
    current: tuple[str, str] | None = None  # (kind, step name)
    for cell in cells:
        parsed = [(_parse_tag(tag, cell, nb), tag) for tag in cell.tags]
        known = [(p, t) for p, t in parsed if p is not None]
        special = [(p, t) for p, t in known if p[0] in _SPECIAL_KINDS]
        if special:
            (kind, _), tag = special[0]
            ignored = [t for _, t in known if t != tag]
            if ignored:
                written = _WRITTEN.get(kind, kind)
                nb.problem(
                    cell,
                    f"{_listed(ignored)} ignored on {_an(written)} `{written}` cell, as Kale does",
                    f"remove {'it' if len(ignored) == 1 else 'them'}, or move"
                    f" {'it' if len(ignored) == 1 else 'them'} to a cell tagged step:NAME",
                    warn=True,
                )
            if kind == "skip":
                continue
            current = (kind, "")
            _add(cell, current, [], defaults, nb)
            continue
        kinds = [(p, t) for p, t in known if p[0] in _BLOCK_KINDS]
        if len(kinds) > 1:
            names = ", ".join(f"`{t}`" for _, t in kinds)
            nb.problem(cell, f"has more than one block tag ({names})", "keep one per cell")
            continue
        step_tags = [p for p, _ in known if p[0] not in _BLOCK_KINDS]
        if kinds and kinds[0][0][0] == "step" and not kinds[0][0][1][0]:
            # Kale's tag pattern admits `step:` with no name: the cell continues the
            # step above, and Kale drops the cell's other tags.
            ignored = [t for p, t in known if p[0] != "step"]
            if ignored and current is not None:
                nb.problem(
                    cell,
                    f"`{kinds[0][1]}` has no name, so the cell continues the step above;"
                    f" {_listed(ignored)} ignored, as Kale does",
                    "name the step (step:NAME) to make it a step of its own",
                    warn=True,
                )
            kinds, step_tags = [], []
        if kinds:
            kind, args = kinds[0][0]
            current = (kind, args[0] if args else "")
        elif current is None:
            if cell.source.strip() and not any(p is None for p, _ in parsed):
                nb.problem(
                    cell,
                    "has no tag and no tagged cell above it, so it is left out of the"
                    " pipeline, as Kale does",
                    "tag it `imports`, `step:NAME` or `skip`",
                    warn=True,
                )
            continue
        _add(cell, current, step_tags, defaults, nb)
    reports = sorted(name for name, step in nb.steps.items() if step.report)
    if reports:
        nb.problem(
            None,
            "HTML reports (`report:enabled`) are not produced yet; each step's printed output"
            " is kept with the run instead (steps: " + ", ".join(reports) + ")",
            warn=True,
        )


_CPU = re.compile(r"^([0-9]+m|[0-9]+(\.[0-9]{1,3})?)$")
_MEMORY = re.compile(r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$")


def _limit_problem(resource: str, value: str) -> tuple[str, str] | None:
    """What is wrong with a `limit:` tag, as (message, hint), or None."""
    if resource == "cpu":
        if not _CPU.match(value) or float(value.rstrip("m") or 0) == 0:
            return "cpu is more than 0 cores or millicores", "e.g. limit:cpu:2 or limit:cpu:500m"
    elif resource == "memory":
        if not _MEMORY.match(value) or int(re.sub(r"[A-Za-z]", "", value)) == 0:
            return (
                "memory is a whole number with a unit",
                "e.g. limit:memory:4Gi or limit:memory:512Mi",
            )
    elif "gpu" in resource or "/" in resource:
        if not value.isdigit() or int(value) == 0:
            return "an accelerator limit is a whole number", f"e.g. limit:{resource}:1"
    else:
        return (
            f"kfops does not know the resource `{resource}`",
            "limits are cpu, memory, or an accelerator such as nvidia.com/gpu",
        )
    return None


def _parse_tag(tag: str, cell: Cell | None, nb: Notebook) -> tuple[str, tuple[str, ...]] | None:
    for kind, pattern, _ in _TAGS:
        match = pattern.match(tag)
        if match is None:
            continue
        args = match.groups()
        if kind in ("prev", "notebook") and not args[0]:
            nb.problem(cell, f"`{tag}` has no step name", f"write it as {tag}NAME")
            return None
        if kind in ("step", "prev", "notebook") and args[0] and not STEP_NAME.match(args[0]):
            nb.problem(
                cell,
                f"invalid step name `{args[0]}` in tag `{tag}`",
                "step names are lowercase letters, digits and '_', not starting with a digit",
            )
            return None
        if kind == "limit":
            problem = _limit_problem(args[0], args[1])
            if problem:
                nb.problem(cell, f"`{tag}`: {problem[0]}", problem[1])
                return None
        return kind, args
    prefix = tag.split(":", 1)[0]
    stems = {form.split(":", 1)[0].split(" ", 1)[0]: form for _, _, form in _TAGS}
    stems["block"] = stems["step"]
    if prefix in stems:
        nb.problem(cell, f"malformed tag `{tag}`", f"write it as {stems[prefix]}")
    else:
        close = difflib.get_close_matches(prefix, list(stems), n=1, cutoff=0.6)
        if close:
            rest = tag.split(":", 1)[1] if ":" in tag else ""
            guess = f"{close[0]}:{rest}" if rest else stems[close[0]]
            nb.problem(cell, f"unknown tag `{tag}`", f"did you mean `{guess}`?")
        else:
            nb.problem(cell, f"unknown tag `{tag}`", f"valid tags: {VALID_FORMS}")
    return None


def _add(
    cell: Cell,
    block: tuple[str, str],
    step_tags: list[tuple[str, tuple[str, ...]]],
    defaults: list[str],
    nb: Notebook,
) -> None:
    kind, name = block
    code = clean_code(cell, nb)
    if kind == "imports":
        nb.imports.append((cell, code))
    elif kind == "functions":
        nb.functions.append((cell, code))
    elif kind == "parameters":
        _read_parameters(cell, code, nb)
    elif kind == "metrics":
        _read_metrics(cell, code, nb)
    elif kind == "notebook":
        prevs = [args[0] for tag_kind, args in step_tags if tag_kind == "prev"]
        if name in nb.steps or any(name == n for n, _, _ in nb.subpipelines):
            nb.problem(cell, f"`notebook:{name}` reuses the name of another step")
        else:
            nb.subpipelines.append((name, cell, prevs))
    else:
        step = nb.steps.get(name)
        if step is None:
            step = nb.steps[name] = Step(name)
            for tag in defaults:
                parsed = _parse_tag(tag, cell, nb)
                if parsed is not None and parsed[0] not in _BLOCK_KINDS:
                    _apply_tag(step, parsed, cell)
        step.cells.append(cell)
        step.code.append((cell, code))
    if step_tags and kind not in ("step", "notebook"):
        written = _WRITTEN.get(kind, kind)
        nb.problem(
            cell,
            "step settings (" + ", ".join(t for t, _ in step_tags) + f") on {_an(written)}"
            f" `{written}` cell",
            "move them to a cell tagged step:NAME",
        )
        return
    if kind == "notebook":
        return
    for parsed in step_tags:
        _apply_tag(nb.steps[name], parsed, cell)


_WRITTEN = {"parameters": "pipeline-parameters", "metrics": "pipeline-metrics"}


def _listed(tags: list[str]) -> str:
    quoted = ", ".join(f"`{t}`" for t in tags)
    return f"tag {quoted} is" if len(tags) == 1 else f"tags {quoted} are"


def _an(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _apply_tag(step: Step, parsed: tuple[str, tuple[str, ...]], cell: Cell) -> None:
    kind, args = parsed
    if kind == "prev":
        if args[0] not in [p for p, _ in step.prev]:
            step.prev.append((args[0], cell))
    elif kind == "limit":
        step.limits[args[0]] = args[1]
    elif kind == "annotation":
        step.annotations[args[0]] = args[1]
    elif kind == "label":
        step.labels[args[0]] = args[1]
    elif kind == "image":
        step.image = args[0]
    elif kind == "cache":
        step.cache = args[0] == "enabled"
    elif kind == "secret":
        step.secrets.append((args[0], args[1], args[2]))
    elif kind == "report":
        step.report = args[0] == "enabled"


def clean_code(cell: Cell, nb: Notebook) -> str:
    """The cell's code as plain Python: IPython magics and shell escapes removed, with a
    warning naming the cell. Line numbers are kept, so tracebacks match the notebook."""
    source = cell.source
    if _parses(source):
        return source
    lines = source.split("\n")
    first = lines[0].strip() if lines else ""
    if first.startswith("%%"):
        magic = first[2:].split(None, 1)[0] if len(first) > 2 else ""
        if magic not in _PYTHON_CELL_MAGICS:
            nb.problem(
                cell,
                f"`%%{magic}` cell is not Python; it is left out of the pipeline",
                "do its work in Python, or tag the cell `skip`",
                warn=True,
            )
            return ""
        lines[0] = ""
    starts = _logical_line_starts(lines)
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        is_magic = stripped.startswith("%") or (
            stripped.startswith("!") and not stripped.startswith("!=")
        )
        if i not in starts or (not is_magic and not _SHELL_ASSIGN.match(line)):
            continue
        indent = line[: len(line) - len(stripped)]
        lines[i] = f"{indent}pass  # kfops: removed `{stripped[:60]}`"
        pip = _PIP_INSTALL.match(line)
        if pip:
            packages = pip.group(1).strip()
            nb.problem(
                cell,
                f"line {i + 1}: `{stripped}` removed (a step cannot install packages)",
                f"add {packages} to the requirements of the step image",
                warn=True,
                at=i + 1,
            )
        else:
            nb.problem(
                cell,
                f"line {i + 1}: IPython magic or shell command `{stripped}` removed",
                "a pipeline step runs plain Python; do this in Python or outside the notebook",
                warn=True,
                at=i + 1,
            )
    return "\n".join(lines)


def _logical_line_starts(lines: list[str]) -> set[int]:
    """Indexes of the lines that begin a statement: not inside brackets, a string, or
    after a backslash continuation. A rough scan, enough to tell a `%magic` line from
    `% 42` continuing an expression."""
    starts: set[int] = set()
    depth = 0
    quote = ""  # the open string's quote: ', ", \'\'\' or \"\"\"
    continued = False
    for index, line in enumerate(lines):
        if depth == 0 and not quote and not continued:
            starts.add(index)
        i = 0
        while i < len(line):
            char = line[i]
            if quote:
                if char == "\\":
                    i += 2
                    continue
                if line.startswith(quote, i):
                    i += len(quote)
                    quote = ""
                    continue
            elif char == "#":
                break
            elif char in "\"'":
                triple = line[i : i + 3]
                quote = triple if triple in ('"""', "'''") else char
                i += len(quote)
                continue
            elif char in "([{":
                depth += 1
            elif char in ")]}":
                depth = max(depth - 1, 0)
            i += 1
        if quote in ('"', "'"):
            quote = ""  # a one-line string cannot span lines
        continued = line.rstrip().endswith("\\") and not quote
    return starts


def syntax_message(exc: SyntaxError | ValueError) -> str:
    """A syntax error in a cell, as a message naming the line."""
    if isinstance(exc, SyntaxError):
        return f"line {exc.lineno or 1}: Python syntax: {exc.msg}"
    if isinstance(exc, UnicodeError):
        return "the cell contains an invalid Unicode character (a lone surrogate)"
    return "Python syntax: the cell contains a NUL byte"


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except SyntaxError:
        return False
    except ValueError:  # NUL bytes
        return False
    return True


_KINDS = {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict"}


def _parse(cell: Cell, code: str, nb: Notebook) -> ast.Module | None:
    """The cell's code as an AST, or None after reporting its syntax error."""
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError) as exc:
        nb.syntax_problem(cell, exc)
        return None


def _read_parameters(cell: Cell, code: str, nb: Notebook) -> None:
    tree = _parse(cell, code, nb)
    if tree is None:
        return
    for node in tree.body:
        target = (
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
        )
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            target = node.target
        value_node = getattr(node, "value", None)
        if not isinstance(target, ast.Name) or value_node is None:
            nb.problem(
                cell,
                f"line {node.lineno}: a pipeline-parameters cell holds only `NAME = literal`",
                "move other code to an imports, functions or step cell",
                at=node.lineno,
            )
            continue
        try:
            value = ast.literal_eval(value_node)
        except (ValueError, SyntaxError):
            nb.problem(
                cell,
                f"line {node.lineno}: `{target.id}` is not a literal value",
                "parameters must be literals (numbers, strings, booleans, lists, dicts)",
                at=node.lineno,
            )
            continue
        kind = _KINDS.get(type(value))
        if kind is None:
            nb.problem(
                cell,
                f"line {node.lineno}: `{target.id}` is a {type(value).__name__}",
                "parameters are numbers, strings, booleans, lists or dicts",
                at=node.lineno,
            )
            continue
        nb.parameters[target.id] = Parameter(target.id, value, kind)


def _read_metrics(cell: Cell, code: str, nb: Notebook) -> None:
    tree = _parse(cell, code, nb)
    if tree is None:
        return
    for statement in tree.body:
        value = statement.value if isinstance(statement, ast.Expr) else None
        names: list[ast.AST]
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
            names = list(value.args) if value.func.id in ("print", "display") else [value]
        else:
            names = [value] if value is not None else [statement]
        for node in names:
            if isinstance(node, ast.Name):
                nb.metrics.setdefault(node.id, cell)
            else:
                nb.problem(
                    cell,
                    f"line {getattr(node, 'lineno', statement.lineno)}: a pipeline-metrics cell"
                    " holds only variable names",
                    "write each metric's name on its own line (e.g. `accuracy`), or"
                    " `print(accuracy)`; compute values in a step",
                )
