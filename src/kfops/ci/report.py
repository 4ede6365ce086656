"""Problems rendered for people (text), tools (json) and GitHub workflow annotations."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import click

from kfops.errors import Problem

if TYPE_CHECKING:
    from kfops.ci.event import CiResult


def print_problems(problems: list[Problem], output_format: str, *, err: bool = False) -> None:
    """Print every problem in ``output_format``: text, json or github (to stderr if err)."""
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
        click.echo(_printable(problem.render()), err=err)
    if errors:
        noun = "problem" if len(errors) == 1 else "problems"
        click.secho(f"{len(errors)} {noun} found", fg="red", err=True)
    else:
        click.secho("valid", fg="green", err=True)


def _printable(text: str) -> str:
    """Text that any terminal encoding can take (a notebook may hold lone surrogates)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


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
    return _printable(f"::{problem.severity} {','.join(props)}::{_escape_data(message)}")


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


# --- the pull-request report -------------------------------------------------------------

COMMENT_LIMIT = 65_536  # GitHub rejects longer comment bodies
SUMMARY_LIMIT = 1_000_000  # a job summary may hold up to 1 MiB
MAX_PROBLEMS = 50
_MARKDOWN_SPECIAL = set("\\`*_{}[]()#+-.!|~>")


def escape(text: object) -> str:
    """User-controlled text made inert in Markdown: no links, HTML, tables or markers."""
    out = []
    for char in str(text).replace("\r", " ").replace("\n", " "):
        if char == "@":
            out.append("&#64;")  # no @mentions from user text
        elif char == "<":
            out.append("&lt;")
        elif char == ">":
            out.append("&gt;")
        elif char == "&":
            out.append("&amp;")
        elif char in _MARKDOWN_SPECIAL:
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def markdown(result: CiResult, marker: str, limit: int = COMMENT_LIMIT) -> str:
    """The report as Markdown, starting with ``marker``; summarised to fit ``limit``."""
    first = MAX_PROBLEMS if limit <= COMMENT_LIMIT else 10_000
    for max_problems, max_rows in ((first, 200), (MAX_PROBLEMS, 200), (10, 30), (3, 5), (0, 0)):
        text = _render(result, marker, max_problems, max_rows)
        if len(text) <= limit:
            return text
    return text[: limit - 40] + "\n\n… (report cut to fit)\n"


def _render(result: CiResult, marker: str, max_problems: int, max_rows: int) -> str:
    errors = [p for p in result.problems if p.severity == "error"]
    warnings = [p for p in result.problems if p.severity != "error"]
    title = escape(result.name or result.project)
    lines = [marker, f"### kfops · {title}", "", _status(result, errors), ""]
    if result.environment:
        lines[1] += f" ({escape(result.environment)})"
    if result.decision is not None and not result.decision.kind:
        lines += [f"Nothing to do: {escape(result.decision.reason)}.", ""]
    if result.problems:
        counts = f"{_count(len(errors), 'error')}, {_count(len(warnings), 'warning')}"
        lines += [f"#### Problems ({counts})", ""]
        lines += ["| where | problem | how to fix |", "|---|---|---|"]
        for problem in sorted(result.problems)[:max_problems]:
            icon = "❌" if problem.severity == "error" else "⚠️"
            lines.append(
                f"| {escape(problem.location())} | {icon} {escape(problem.message)}"
                f" | {escape(problem.hint)} |"
            )
        hidden = len(result.problems) - min(len(result.problems), max_problems)
        if hidden:
            lines.append(f"\n… and {hidden} more: run `kfops validate` or see the job summary.")
        lines.append("")
    if result.compile_error:
        lines += ["#### Compile failed", "", escape(result.compile_error), ""]
    if result.image_error:
        fence = "`" * 3
        error = result.image_error.replace(fence, "'")
        lines += ["#### Images failed", "", fence, error, fence, ""]
    if result.images:
        lines += _image_lines(result, max_rows)
    if result.delivery_error:
        fence = "`" * 3
        lines += [
            "#### Delivery failed",
            "",
            fence,
            result.delivery_error.replace(fence, "'"),
            fence,
            "",
        ]
    if result.delivery:
        lines += _delivery_lines(result)
    if result.release or result.release_error:
        lines += _release_lines(result, max_rows)
    if result.plan is not None or result.plan_note:
        lines += _plan_lines(result, max_rows)
    if result.metrics or result.base_metrics:
        lines += _metric_lines(result, max_rows)
    for notice in result.notices:
        lines += [f"> {escape(notice)}", ""]
    footer = []
    if result.compiled:
        footer.append(f"compiled: `{result.compiled.replace('`', '')}`")
    if result.sha:
        footer.append(f"commit {escape(result.sha[:7])}")
    if result.run_url:
        footer.append(f"[workflow run]({result.run_url})")
    if footer:
        lines.append("<sub>" + " · ".join(footer) + "</sub>")
    return "\n".join(lines) + "\n"


def _image_lines(result: CiResult, max_rows: int) -> list[str]:
    lines = ["#### Images", "", "| image | status | digest | seconds |", "|---|---|---|---|"]
    shown = {"unchanged": "unchanged", "built": "rebuilt (not pushed)", "pushed": "rebuilt, pushed"}
    for image in result.images[:max_rows]:
        digest = image["digest"] or "(not pushed)"
        lines.append(
            f"| {escape(image['name'])} | {shown.get(image['status'], image['status'])}"
            f" | `{_code(digest)}` | {image['seconds']:.1f} |"
        )
    return [*lines, ""]


def _delivery_lines(result: CiResult) -> list[str]:
    done = result.delivery
    title = "Kubeflow Pipelines" + (
        f" · {escape(done['environment'])}" if done.get("environment") else ""
    )
    lines = [f"#### {title}", ""]
    version = f"`{_code(done['version'])}`"
    if done.get("url"):
        version = f"[{version}]({done['url']})"
    uploads = [a for a in done["actions"] if a["kind"] == "upload-version"]
    if uploads:
        verb = "uploaded" if done.get("applied") else "will upload"
        lines.append(f"- pipeline `{_code(done['pipeline'])}`: {verb} version {version}")
    else:
        lines.append(f"- pipeline `{_code(done['pipeline'])}`: version {version} is there already")
    monitor = done.get("monitor") or {}
    if any(a["kind"] == "upload-version" for a in monitor.get("actions", [])):
        verb = "uploaded" if done.get("applied") else "will upload"
        lines.append(
            f"- pipeline `{_code(monitor['pipeline'])}`: {verb} version"
            f" `{_code(monitor['version'])}` (the monitor)"
        )
    done_verbs = {
        "create": "created",
        "replace": "replaced",
        "enable": "enabled",
        "disable": "disabled",
        "delete": "deleted",
    }
    for action in done.get("schedules", []):
        verb = done_verbs[action["kind"]]
        said = verb if done.get("applied") else f"will be {verb}"
        detail = f" (`{_code(action['detail'])}`)" if action["detail"] else ""
        lines.append(f"- schedule `{_code(action['name'])}`: {said}{detail}")
    if result.kfp_run:
        run = result.kfp_run
        lines.append(
            f"- run [`{_code(run['run_id'])}`]({run['url']}): **{run['state'].lower()}**"
            f" in {run['seconds']}s"
        )
        for task, error in run["failed_tasks"]:
            lines.append(f"  - ❌ `{_code(task)}`: {escape(error)}")
    return [*lines, ""]


_STAGES = {
    "promoted": "✅ promoted",
    "unchanged": "✅ unchanged (already serving)",
    "canary": "⏸️ canary, waiting for a promotion",
    "rolled-back": "↩️ rolled back",
    "failed": "❌ failed",
    "planned": "planned",
}


def _release_lines(result: CiResult, max_rows: int) -> list[str]:
    done = result.release
    title = "Release" + (f" · {escape(done['environment'])}" if done.get("environment") else "")
    lines = [f"#### {title}", ""]
    if done:
        where = f"`{_code(done['inference_service'])}` in namespace `{_code(done['namespace'])}`"
        lines += [
            f"- InferenceService: {where}",
            f"- stage: **{_STAGES.get(done['stage'], escape(done['stage']))}**",
        ]
        if done.get("url"):
            lines.append(f"- URL: `{_code(done['url'])}`")
        lines.append(f"- release: {_release_text(done.get('release'))}")
        lines.append(f"- previous release: {_release_text(done.get('previous'))}")
    deployment = result.deployment
    if deployment.get("url"):
        states = ", ".join(f"`{_code(s)}`" for s in deployment.get("statuses", []))
        lines.append(f"- GitHub deployment {deployment['id']}: {states or 'no status'}")
    lines.append("")
    if result.release_error:
        fence = "`" * 3
        lines += [fence, result.release_error.replace(fence, "'"), fence, ""]
    steps = done.get("steps", []) if done else []
    if steps:
        lines += ["| step | ok | detail | seconds |", "|---|---|---|---|"]
        for step in steps[:max_rows]:
            lines.append(
                f"| {escape(step['what'])} | {'✅' if step['ok'] else '❌'}"
                f" | {escape(step['detail'])} | {step['seconds']:.1f} |"
            )
        lines.append("")
    smoke = done.get("smoke", []) if done else []
    if smoke:
        lines += ["| smoke test | passed | detail |", "|---|---|---|"]
        for case in smoke[:max_rows]:
            lines.append(
                f"| `{_code(case['name'])}` | {'✅' if case['passed'] else '❌'}"
                f" | {escape(case['detail'])} |"
            )
        lines.append("")
    return lines


def _release_text(release: dict[str, Any] | None) -> str:
    if not release:
        return "none"
    parts = [f"**{escape(release['name'])}**"]
    if release.get("tag") and release["tag"] != release["name"]:
        parts.append(f"tag `{_code(release['tag'])}`")
    if release.get("commit"):
        parts.append(f"commit `{_code(release['commit'][:12])}`")
    parts.append(f"model `{_code(release['model_uri'])}`")
    return ", ".join(parts)


def release_description(release: dict[str, Any]) -> str:
    """What a release did, in a GitHub deployment status's 140 characters:
    ``rolled back: smoke test failed; v1.0.0 serving``."""
    name = (release.get("release") or {}).get("name", "")
    previous = (release.get("previous") or {}).get("name", "")
    stage = release.get("stage", "")
    if stage == "promoted":
        return f"promoted: {name} serving"
    if stage == "unchanged":
        return f"unchanged: {name} was already serving"
    if stage == "canary":
        return f"canary: {name} waits for `kfops deploy --promote`"
    failed = next((s for s in release.get("steps", []) if not s["ok"]), None)
    reasons = {
        "smoke": "smoke test failed",
        "ready": "not ready",
        "probe": "the model did not answer",
        "gate": "the metrics failed the gate",
    }
    reason = reasons.get(failed["what"], f"{failed['what']} failed") if failed else "failed"
    if stage == "rolled-back":
        tail = f"; {previous} serving" if previous else ""
        return _fit(f"rolled back: {reason}", tail)
    if failed is not None and failed["what"] == "check":
        return _fit("not released: ", failed["detail"])
    tail = "; nothing to return to (first release)" if not previous else ""
    return _fit(f"failed: {reason}", tail)


def _fit(head: str, tail: str, limit: int = 140) -> str:
    """``head + tail`` in ``limit`` characters, cutting ``head`` first when it is the longer."""
    text = head + tail
    if len(text) <= limit:
        return text
    if len(tail) < limit // 2:
        return head[: limit - len(tail) - 1] + "…" + tail
    return text[: limit - 1] + "…"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _status(result: CiResult, errors: list[Problem]) -> str:
    if errors:
        noun = "problem" if len(errors) == 1 else "problems"
        return f"❌ **{len(errors)} {noun}** in the project: nothing was compiled."
    if result.compile_error:
        return "❌ **The pipeline does not compile.**"
    if result.image_error:
        return "❌ **A step image did not build or push.**"
    if result.delivery_error:
        return "❌ **Delivery to Kubeflow Pipelines failed.**"
    if result.kfp_run and result.run_status == "failed":
        return "❌ **The run on Kubeflow Pipelines failed.**"
    if result.release.get("stage") == "rolled-back":
        return "↩️ **The release was rolled back.**"
    if result.release_error:
        return "❌ **The release did not go through.**"
    if result.run_status == "failed":
        return "❌ **The local run failed.**"
    if result.decision is not None and not result.decision.kind:
        return "⏭️ **Skipped.**"
    done = "validated and compiled"
    if result.delivery.get("applied"):
        done += ", delivered"
    if result.run_status == "succeeded":
        done += ", ran on Kubeflow Pipelines" if result.kfp_run else ", ran locally"
    if result.release.get("ok"):
        done += ", released" if result.release.get("stage") != "canary" else ", a canary"
    return f"✅ **{done[0].upper() + done[1:]}.**"


def _plan_lines(result: CiResult, max_rows: int) -> list[str]:
    lines = ["#### Plan", ""]
    plan = result.plan
    if result.plan_note:
        lines += [f"_{escape(result.plan_note)}_", ""]
    if plan is None:
        return lines
    if plan.new_project:
        lines.append("New pipeline: it is not on the base branch.")
    elif plan.empty:
        lines += ["No change to the pipeline.", ""]
        return lines
    rows = [f"| 🆕 added | `{_code(s)}` |" for s in plan.steps_added]
    rows += [f"| 🗑️ removed | `{_code(s)}` |" for s in plan.steps_removed]
    rows += [
        f"| ✏️ changed | `{_code(c.step)}`: {', '.join(c.aspects)} |" for c in plan.steps_changed
    ]
    if rows:
        lines += ["| step | |", "|---|---|", *rows[:max_rows]]
        if len(rows) > max_rows:
            lines.append(f"| … | {len(rows) - max_rows} more |")
        lines.append("")
    if plan.parameters:
        lines += ["| parameter | before | after |", "|---|---|---|"]
        for change in plan.parameters[:max_rows]:
            lines.append(
                f"| `{_code(change.name)}` | {_value(change.before)} | {_value(change.after)} |"
            )
        lines.append("")
    if plan.images:
        lines += ["| image of step | before | after |", "|---|---|---|"]
        for image in plan.images[:max_rows]:
            lines.append(
                f"| `{_code(image.step)}` | `{_code(image.before)}` | `{_code(image.after)}` |"
            )
        lines.append("")
    return lines


def _metric_lines(result: CiResult, max_rows: int) -> list[str]:
    lines = ["#### Metrics", "", "| step | metric | value | change |", "|---|---|---|---|"]
    rows = []
    for step, values in sorted(result.metrics.items()):
        for name, value in sorted(values.items()):
            before = result.base_metrics.get(step, {}).get(name)
            change = ""
            if isinstance(value, int | float) and isinstance(before, int | float):
                delta = value - before
                change = "±0" if delta == 0 else f"{delta:+.4g} (was {before:.4g})"
            rows.append(f"| `{_code(step)}` | `{_code(name)}` | {_value(value)} | {change} |")
    lines += rows[:max_rows]
    if len(rows) > max_rows:
        lines.append(f"| … | {len(rows) - max_rows} more | | |")
    return [*lines, ""]


def _code(text: str) -> str:
    """Text inside inline code: backticks and pipes would end it or the table."""
    return str(text).replace("`", "'").replace("|", "/").replace("\n", " ")


def _value(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.6g}"
    return escape(json.dumps(value) if not isinstance(value, str) else value)


def to_json(result: CiResult, comment_url: str = "") -> dict[str, object]:
    return {
        "project": result.project,
        "name": result.name,
        "event": result.event,
        "action": result.decision.kind if result.decision else "",
        "status": "failed" if result.failed else "ok",
        "problems": [asdict(p) for p in sorted(result.problems)],
        "compiled": result.compiled,
        "compile_error": result.compile_error,
        "images": result.images,
        "image_error": result.image_error,
        "delivery": result.delivery,
        "delivery_error": result.delivery_error,
        "kfp_run": result.kfp_run,
        "release": result.release,
        "release_error": result.release_error,
        "deployment": result.deployment,
        "plan": result.plan.to_json() if result.plan else None,
        "metrics": result.metrics,
        "base_metrics": result.base_metrics,
        "run": result.run_status,
        "comment_url": comment_url,
    }
