"""Which values flow between notebook steps, found by static analysis (the AST).

A step's inputs are the names it uses before (or without) defining them, that an
upstream step has; they come from the upstream step that ran last in notebook order,
as in Jupyter. Names from the imports and functions cells, the pipeline parameters and
Python's builtins are available in every step and never handed over.
"""

from __future__ import annotations

import ast
import builtins
import difflib
import keyword
from dataclasses import dataclass, field
from itertools import pairwise

from kfops.notebook.tags import Cell, Notebook, Step

# Names IPython provides in a notebook that a step should not look for upstream.
_IPYTHON_NAMES = {"display", "get_ipython", "In", "Out", "exit", "quit", "__name__", "__file__"}


@dataclass
class Flow:
    """The pipeline a notebook becomes: steps in run order, and what each hands over."""

    order: list[str]
    upstream: dict[str, list[str]]  # step -> direct prev steps
    inputs: dict[str, dict[str, str]] = field(default_factory=dict)  # step -> {name: producer}
    outputs: dict[str, list[str]] = field(default_factory=dict)  # step -> names it hands over
    parameters: dict[str, list[str]] = field(default_factory=dict)  # step -> params it uses
    metrics: dict[str, list[str]] = field(default_factory=dict)  # step -> metrics it logs
    # step -> definitions from upstream steps that it runs again, in notebook order
    carried: dict[str, list[Carried]] = field(default_factory=dict)


def function_name(step: str) -> str:
    """The component function for a step; its KFP task name is this with '-' for '_'."""
    reserved = keyword.iskeyword(step) or step in {"dsl", "kubernetes", "pipeline", "tasks"}
    return f"{step}_step" if reserved or step.startswith("_") else step


def names_in(code: str, deferred: list[str] | None = None) -> tuple[list[str], set[str]]:
    """(names used before being defined, in order of first use; names defined) at the
    top level of ``code``. Function and class bodies count their free names as used;
    with ``deferred``, a function body's names go there instead, since they are read
    only when it is called (often after the code below has defined them).

    Raises:
        SyntaxError: ``code`` is not valid Python.
    """
    defined: set[str] = set()
    used: list[str] = []
    _scan(ast.parse(code).body, defined, used, deferred)
    return used, defined


def _scan(
    statements: list[ast.stmt],
    defined: set[str],
    used: list[str],
    deferred: list[str] | None = None,
) -> None:
    """Walk statements in execution order; compound statements bind before their body,
    and the branches of an `if` or `try` each start from what was defined before it."""

    def use(node: ast.AST | None) -> None:
        if node is not None:
            used.extend(n for n in _loads(node) if n not in defined and n not in used)
            defined.update(_stores_in_expression(node))

    def branches(*bodies: list[ast.stmt]) -> None:
        before = set(defined)
        for body in bodies:
            branch = set(before)
            _scan(body, branch, used, deferred)
            defined.update(branch)

    for statement in statements:
        if isinstance(statement, ast.For | ast.AsyncFor):
            use(statement.iter)
            defined.update(_stores_in_expression(statement.target))
            branches(statement.body, statement.orelse)
        elif isinstance(statement, ast.With | ast.AsyncWith):
            for item in statement.items:
                use(item.context_expr)
                if item.optional_vars is not None:
                    defined.update(_stores_in_expression(item.optional_vars))
            _scan(statement.body, defined, used, deferred)
        elif isinstance(statement, ast.If | ast.While):
            use(statement.test)
            branches(statement.body, statement.orelse)
        elif isinstance(statement, ast.Try):
            handlers = [
                [*([ast.Expr(h.type)] if h.type else []), *h.body] for h in statement.handlers
            ]
            for handler in statement.handlers:
                if handler.name:
                    defined.add(handler.name)
            branches(statement.body + statement.orelse, *handlers)
            _scan(statement.finalbody, defined, used, deferred)
        elif deferred is not None and isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
            arguments = statement.args
            for node in [*statement.decorator_list, *arguments.defaults, *arguments.kw_defaults]:
                use(node)  # evaluated where the function is defined
            deferred.extend(n for n in _loads(statement) if n not in deferred)
            defined.add(statement.name)
        else:
            target = statement.target if isinstance(statement, ast.AugAssign) else None
            if isinstance(target, ast.Name) and target.id not in defined and target.id not in used:
                used.append(target.id)  # `n += 1` reads n first
            use_statement = [n for n in _loads(statement) if n not in defined and n not in used]
            used.extend(use_statement)
            defined.update(_stores(statement))


def _stores_in_expression(node: ast.AST) -> set[str]:
    names = {
        n.id for n in _walk_scope(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
    }
    # `:=` binds in the enclosing scope, even inside a comprehension
    return names | {n.target.id for n in ast.walk(node) if isinstance(n, ast.NamedExpr)}


_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _loads(node: ast.AST) -> list[str]:
    """Names read by ``node`` that it does not bind itself (in order of first read)."""
    found: list[str] = []
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
        inner = _local_names(node)
        for child in ast.walk(node):
            if (
                isinstance(child, ast.Name)
                and isinstance(child.ctx, ast.Load)
                and child.id not in inner
                and child.id not in found
            ):
                found.append(child.id)
        return found

    def visit(current: ast.AST, bound: frozenset[str]) -> None:
        if isinstance(current, _COMPREHENSIONS):
            inner = set(bound)
            for generator in current.generators:
                visit(generator.iter, frozenset(inner))
                inner |= {n.id for n in ast.walk(generator.target) if isinstance(n, ast.Name)}
                for condition in generator.ifs:
                    visit(condition, frozenset(inner))
            parts = (
                [current.key, current.value] if isinstance(current, ast.DictComp) else [current.elt]
            )
            for part in parts:
                visit(part, frozenset(inner))
            return
        if isinstance(current, ast.Lambda):
            for name in _loads(current):
                if name not in bound and name not in found:
                    found.append(name)
            return
        if (
            isinstance(current, ast.Name)
            and isinstance(current.ctx, ast.Load)
            and current.id not in bound
            and current.id not in found
        ):
            found.append(current.id)
        for child in ast.iter_child_nodes(current):
            visit(child, bound)

    visit(node, frozenset())
    return found


def _local_names(node: ast.AST) -> set[str]:
    names: set[str] = set()
    for child in ast.walk(node):
        if isinstance(child, ast.arg):
            names.add(child.arg)
        elif isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store | ast.Del):
            names.add(child.id)
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if child is not node:
                names.add(child.name)
        elif isinstance(child, ast.alias):
            names.add((child.asname or child.name).split(".")[0])
    return names


def _stores(statement: ast.stmt) -> set[str]:
    if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {statement.name}
    if isinstance(statement, ast.Import | ast.ImportFrom):
        return {(a.asname or a.name).split(".")[0] for a in statement.names if a.name != "*"}
    names: set[str] = set()
    for child in _walk_scope(statement):
        if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store):
            names.add(child.id)
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(child.name)
        elif isinstance(child, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in child.names if a.name != "*"}
    return names | _stores_in_expression(statement)


_OWN_SCOPES = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.Lambda)


def _walk_scope(node: ast.AST) -> list[ast.AST]:
    """Like ast.walk, without entering comprehensions and lambdas (their names are theirs)."""
    found: list[ast.AST] = []
    stack = [node]
    while stack:
        current = stack.pop()
        found.append(current)
        if current is not node and isinstance(current, _OWN_SCOPES):
            continue
        stack.extend(ast.iter_child_nodes(current))
    return found


def analyse(nb: Notebook, *, structure_only: bool = False) -> Flow | None:
    """The data flow of ``nb``; problems are added to ``nb.problems`` (None when fatal).

    With ``structure_only`` (the notebook already has errors), only the `prev:` graph
    is checked, so its problems are reported too without guessing at the data flow.
    """
    steps = nb.steps
    if not steps:
        nb.problem(
            None,
            "no steps: tag at least one code cell `step:NAME`",
            "the tags are listed in the README, section Notebooks",
        )
        return None
    ok = True
    for step in steps.values():
        for prev, cell in step.prev:
            if prev not in steps:
                close = difflib.get_close_matches(prev, list(steps), n=1)
                hint = f"did you mean `prev:{close[0]}`?" if close else "steps: " + ", ".join(steps)
                nb.problem(cell, f"`prev:{prev}` names a step that does not exist", hint)
                ok = False
            elif prev == step.name:
                nb.problem(
                    cell,
                    f"step `{step.name}` lists itself as `prev:`",
                    f"remove the tag `prev:{prev}`",
                )
                ok = False
    if not ok:
        return None
    functions: dict[str, str] = {}
    for name, step in steps.items():
        generated = function_name(name)
        if generated in functions or generated in nb.parameters or generated.startswith("_kfops"):
            other = functions.get(generated, "a pipeline parameter")
            nb.problem(
                step.first,
                f"step `{name}` would be generated as `{generated}`, which {other} is too",
                "rename the step",
            )
            ok = False
        functions[generated] = f"step `{name}`"
    if not ok:
        return None
    upstream = {name: [p for p, _ in step.prev] for name, step in steps.items()}
    order = _topological(upstream, nb)
    if order is None or structure_only:
        return None
    shared: dict[str, set[str]] = {}
    preamble_uses: dict[str, list[str]] = {}
    for name, step in steps.items():
        preamble = (step.imports if step.imports is not None else nb.imports) + (
            step.functions if step.functions is not None else nb.functions
        )
        shared[name] = set(dir(builtins)) | _IPYTHON_NAMES
        preamble_uses[name] = []
        for cell, code in preamble:
            try:
                cell_used, cell_defined = names_in(code)
                preamble_uses[name] += [
                    n for n in cell_used if n not in shared[name] and n not in preamble_uses[name]
                ]
                shared[name] |= cell_defined
            except (SyntaxError, ValueError) as exc:
                if step.imports is None:  # the main notebook's cells: report once
                    nb.syntax_problem(cell, exc)
                ok = False
    if not ok and any(p.severity == "error" for p in nb.problems):
        return None
    uses: dict[str, list[str]] = {}
    defines: dict[str, set[str]] = {}
    for name in order:
        step = steps[name]
        code = "\n".join(c for _, c in step.code)
        if not _has_code(code):
            nb.problem(step.first, f"step `{name}` has no code", "add code, or remove the tag")
            ok = False
            continue
        used, defined = _step_names(step, nb)
        if used is None or defined is None:
            ok = False
            continue
        # what the imports and functions cells read (parameters, upstream values) too
        uses[name] = [*[n for n in preamble_uses[name] if n not in used], *used]
        defines[name] = defined
    if not ok:
        return None
    return _connect(nb, order, upstream, uses, defines, shared)


def _has_code(code: str) -> bool:
    try:
        return bool(ast.parse(code).body)
    except (SyntaxError, ValueError):
        return True  # reported with its line by _step_names


def _step_names(step: Step, nb: Notebook) -> tuple[list[str] | None, set[str] | None]:
    used: list[str] = []
    defined: set[str] = set()
    deferred: list[str] = []  # read by the step's functions, when called
    for cell, code in step.code:
        try:
            cell_used, cell_defined = names_in(code, deferred)
        except (SyntaxError, ValueError) as exc:
            nb.syntax_problem(cell, exc)
            return None, None
        used += [n for n in cell_used if n not in defined and n not in used]
        defined |= cell_defined
    used += [n for n in deferred if n not in defined and n not in used]
    return used, defined


@dataclass(frozen=True)
class Carried:
    """A definition (function, class or import) that a later step runs again, from its
    source, instead of receiving a pickled value: Kale hands functions over with dill;
    running the definition needs no pickling and works for imports too."""

    step: str  # where the definition is written
    cell: Cell
    code: str  # the statement, after as many blank lines as it had lines above it
    names: tuple[str, ...]  # what it binds
    free: tuple[str, ...]  # the names it reads from outside itself
    order: tuple[int, int]  # (cell number, line): where it is in the notebook


def _code_definitions(step: Step) -> dict[str, Carried]:
    """The names that a step binds to code rather than data, at its top level, when that
    is their last binding in the step: functions, classes, modules."""
    found: dict[str, Carried] = {}
    for cell, code in step.code:
        try:
            tree = ast.parse(code)
        except (SyntaxError, ValueError):
            continue
        lines = code.split("\n")
        for statement in tree.body:
            bound = _stores(statement)
            for name in bound:
                found.pop(name, None)
            if isinstance(statement, ast.ImportFrom) and any(
                a.name == "*" for a in statement.names
            ):
                continue
            if not isinstance(
                statement,
                ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Import | ast.ImportFrom,
            ):
                continue
            decorators = getattr(statement, "decorator_list", [])
            first = min([statement.lineno, *(d.lineno for d in decorators)])
            last = statement.end_lineno or statement.lineno
            text = "\n" * (first - 1) + "\n".join(lines[first - 1 : last])
            free = () if isinstance(statement, ast.Import | ast.ImportFrom) else _loads(statement)
            carried = Carried(
                step.name, cell, text, tuple(sorted(bound)), tuple(free), (cell.number, first)
            )
            for name in bound:
                found[name] = carried
    return found


def _star_import(cells: list[tuple[Cell, str]]) -> bool:
    """Whether the cells have `from x import *` (its names cannot be known statically)."""
    return any("import *" in code for _, code in cells)


def _connect(
    nb: Notebook,
    order: list[str],
    upstream: dict[str, list[str]],
    uses: dict[str, list[str]],
    defines: dict[str, set[str]],
    shared: dict[str, set[str]],
) -> Flow | None:
    flow = Flow(order=order, upstream=upstream)
    ancestors = _ancestors(order, upstream)
    position = {name: i for i, name in enumerate(nb.steps)}  # notebook order
    holders: dict[str, list[str]] = {}  # name -> the steps so far that have it
    # a step's code definitions, and those it ran again from upstream: handed on as code
    code = {s: _code_definitions(nb.steps[s]) for s in order}
    star = {s: _star_import(nb.steps[s].code) for s in order}
    star_preamble = _star_import(nb.imports + nb.functions)
    ok = True
    for name in order:
        step = nb.steps[name]
        flow.inputs[name] = {}
        carried: list[Carried] = []
        wanted = list(uses[name])
        from_definitions: set[str] = set()
        for var in wanted:  # grows: a definition run again reads names of its own
            candidates = [a for a in holders.get(var, ()) if a in ancestors[name]]
            producer = max(candidates, key=lambda a: position[a]) if candidates else None
            definition = code[producer].get(var) if producer is not None else None
            if definition is not None:
                if definition not in carried:
                    carried.append(definition)
                for free in definition.free:
                    # what the step defines itself is there by the time it calls the function
                    if free not in wanted and free not in defines[name]:
                        wanted.append(free)
                        from_definitions.add(free)
                continue
            if var in shared[name] or var in nb.parameters:
                # a step may rebind a shared name (`accuracy = 0.9`): then it flows on
                if producer is not None:
                    flow.inputs[name][var] = producer
                continue
            if producer is not None:
                flow.inputs[name][var] = producer
                continue
            elsewhere = sorted(s for s in order if s != name and var in defines.get(s, set()))
            if elsewhere:
                nb.problem(
                    step.first,
                    f"step `{name}` uses `{var}`, which only step `{elsewhere[0]}` defines,"
                    " and that step is not upstream of it",
                    f"add `prev:{elsewhere[0]}` to step `{name}`",
                )
                ok = False
            elif var in from_definitions:
                continue  # a function may never read it; Python says so if it does
            elif not star_preamble and not any(star.get(a) for a in [*ancestors[name], name]):
                nb.problem(
                    step.first,
                    f"step `{name}` uses `{var}`, which nothing in the notebook defines",
                    "define it in a step upstream, or in the imports or functions cell",
                    warn=True,
                )
        flow.parameters[name] = [n for n in wanted if n in nb.parameters]
        flow.carried[name] = sorted(carried, key=lambda c: (position[c.step], c.order))
        mine = code[name]
        code[name] = {n: c for c in carried for n in c.names}
        code[name].update(mine)
        for var in defines[name]:
            if var not in mine:
                code[name].pop(var, None)  # rebound to data here
        for var in defines[name] | set(flow.inputs[name]) | set(code[name]):
            holders.setdefault(var, []).append(name)
    needed: dict[str, set[str]] = {name: set() for name in order}
    for consumer in order:
        for var, producer in flow.inputs[consumer].items():
            needed[producer].add(var)
    for name in order:
        flow.outputs[name] = sorted(needed[name])
        flow.metrics[name] = []
    for metric, cell in nb.metrics.items():
        producers = [s for s in order if metric in defines[s]]
        if not producers:
            # As Kale does: a parameter, or a name that steps only read, is logged by the
            # last step (in reverse topological order) whose code mentions it.
            readers = [s for s in order if metric in flow.inputs[s] or metric in uses[s]]
            if readers or metric in nb.parameters:
                last = readers[-1] if readers else order[-1]
                if metric in nb.parameters and metric not in flow.parameters[last]:
                    flow.parameters[last].append(metric)
                flow.metrics[last].append(metric)
                continue
            nb.problem(
                cell,
                f"metric `{metric}` is not defined by any step",
                f"assign it in a step, e.g. `{metric} = ...`",
            )
            ok = False
            continue
        flow.metrics[max(producers, key=lambda s: position[s])].append(metric)
    return flow if ok else None


def _ancestors(order: list[str], upstream: dict[str, list[str]]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for name in order:
        found[name] = set(upstream[name])
        for parent in upstream[name]:
            found[name] |= found[parent]
    return found


def _topological(upstream: dict[str, list[str]], nb: Notebook) -> list[str] | None:
    """Steps in an order where every step follows its prev steps (ties: notebook order)."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> bool:
        if state.get(name) == "done":
            return True
        if state.get(name) == "active":
            cycle = [*path[path.index(name) :], name]
            step = nb.steps[name]
            nb.problem(
                step.first,
                "the steps wait for each other in a cycle: "
                + ", ".join(f"`{a}` has `prev:{b}`" for a, b in pairwise(cycle)),
                "remove one of these `prev:` tags",
            )
            return False
        state[name] = "active"
        for parent in upstream[name]:
            if not visit(parent, [*path, name]):
                return False
        state[name] = "done"
        order.append(name)
        return True

    for name in upstream:
        if not visit(name, []):
            return None
    return order
