"""Problems rendered for people (text), tools (json) and GitHub workflow annotations."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from kfops.errors import Problem


def print_problems(problems: list[Problem], output_format: str) -> None:
    """Print every problem in ``output_format``: text, json or github."""
    problems = sorted(problems)
    errors = [p for p in problems if p.severity == "error"]
    if output_format == "json":
        click.echo(
            json.dumps(
                {"valid": not errors, "problems": [asdict(p) for p in problems]},
                indent=2,
                sort_keys=True,
            )
        )
        return
    if output_format == "github":
        for problem in problems:
            click.echo(github_annotation(problem))
        return
    for problem in problems:
        click.echo(problem.render())
    if errors:
        noun = "problem" if len(errors) == 1 else "problems"
        click.secho(f"{len(errors)} {noun} found", fg="red", err=True)
    else:
        click.secho("valid", fg="green", err=True)


def github_annotation(problem: Problem) -> str:
    """A ``::error file=...,line=...,col=...::message`` workflow command."""
    props = [f"file={_escape_property(problem.file)}"]
    if problem.line > 0:
        props.append(f"line={problem.line}")
        props.append(f"col={max(problem.column, 1)}")
    props.append("title=kfops")
    message = problem.message + (f" (at {problem.path})" if problem.path else "")
    if problem.hint:
        message += f"\nhint: {problem.hint}"
    return f"::{problem.severity} {','.join(props)}::{_escape_data(message)}"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")
