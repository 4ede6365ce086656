"""One error hierarchy for kfops. Errors are raised in the core and rendered only in the CLI."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

# Exit codes are part of the CLI contract (see README).
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BUG = 3
EXIT_INTERRUPTED = 130


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with the user's input, with where it is and how to fix it.

    Attributes:
        file: the file the problem is in, as the user named it (relative when possible).
        line: 1-based line, 0 when the problem concerns the whole file.
        column: 1-based column, 0 when unknown.
        message: what is wrong, one sentence.
        hint: how to fix it, or "".
        path: the JSON path inside the document (``pipeline.steps.train``), or "".
        severity: "error" or "warning".
    """

    file: str
    line: int
    column: int
    message: str
    hint: str = ""
    path: str = ""
    severity: str = "error"

    def location(self) -> str:
        if self.line <= 0:
            return self.file
        return f"{self.file}:{self.line}:{max(self.column, 1)}"

    def render(self) -> str:
        text = f"{self.location()}: {self.severity}: {self.message}"
        if self.path:
            text += f" (at {self.path})"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


@dataclass
class KfopsError(Exception):
    """An error the user can fix; the CLI prints it and exits with ``exit_code``."""

    message: str
    hint: str = ""
    exit_code: int = EXIT_FAILED

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


@dataclass
class InvalidProject(KfopsError):
    """The project has one or more problems, each with its position."""

    problems: list[Problem] = field(default_factory=list)

    @classmethod
    def of(cls, problems: list[Problem]) -> InvalidProject:
        count = len([p for p in problems if p.severity == "error"])
        noun = "problem" if count == 1 else "problems"
        return cls(message=f"{count} {noun} found", problems=sorted(problems))


@dataclass
class UserCodeError(KfopsError):
    """An exception raised inside the user's pipeline code (not a kfops bug)."""

    file: str = ""
    line: int = 0
    traceback: str = ""


def did_you_mean(name: str, known: Iterable[str], listing: str, otherwise: str) -> str:
    """A hint for ``name``, which is not among ``known``: the closest name, else all of
    them after ``listing`` (e.g. "images defined: "), else ``otherwise`` (how to add one)."""
    import difflib

    names = list(known)
    close = difflib.get_close_matches(name, names, n=1)
    if close:
        return f"did you mean `{close[0]}`?"
    if names:
        return listing + ", ".join(f"`{n}`" for n in names)
    return otherwise


def display_path(path: Path) -> str:
    """A path as a user would type it: relative to the working directory when below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
