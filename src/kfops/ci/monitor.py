"""The monitor's side of GitHub: one sticky issue per project and environment, and the
dispatch of the retraining workflow.

The issue is found by a hidden marker at the start of its body (and only among issues
kfops wrote: see ``Repository.sticky_issue``); its body ends with the monitor's state as
a hidden JSON comment, so a scheduled run on a fresh runner picks up where the last one
stopped. Breaching runs update the same issue in place; ``close_after`` clean runs close
it; the next breach reopens it. A dispatch carries the breach's idempotency key, so
however many runs breach, one breach dispatches one retraining.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from kfops.ci.event import GitHubContext
from kfops.errors import KfopsError
from kfops.monitor import trigger

LABEL = "kfops-monitor"
_STATE = re.compile(r"<!-- kfops-monitor-state (\{.*?\}) -->", re.DOTALL)


def marker(project_key: str, environment: str) -> str:
    """The hidden marker of the issue for one project (its folder, relative to the
    repository) in one environment."""
    key = hashlib.sha256(f"{project_key}\0{environment}".encode()).hexdigest()[:16]
    return f"<!-- kfops-monitor {key} -->"


def project_key(root: Path) -> str:
    """The project's folder relative to its repository (its own path outside one)."""
    from kfops.ci.event import repo_root

    folder = root.resolve()
    top = repo_root(folder)
    return folder.relative_to(top).as_posix() if top and folder.is_relative_to(top) else str(folder)


def context(env: Mapping[str, str]) -> GitHubContext | None:
    """The repository to report to: GITHUB_REPOSITORY and a token (the action's
    `github-token` input, else GITHUB_TOKEN), or None to report locally only."""
    repository = env.get("GITHUB_REPOSITORY")
    token = env.get("KFOPS_GITHUB_TOKEN") or env.get("GITHUB_TOKEN")
    if not repository or not token:
        return None
    server = env.get("GITHUB_SERVER_URL") or "https://github.com"
    return GitHubContext(
        event_name=env.get("GITHUB_EVENT_NAME", ""),
        event={},
        ref=env.get("GITHUB_REF", ""),
        sha=env.get("GITHUB_SHA", ""),
        repository=repository,
        api_url=env.get("GITHUB_API_URL") or "https://api.github.com",
        server_url=server,
        run_id=env.get("GITHUB_RUN_ID", ""),
        summary=Path(env["GITHUB_STEP_SUMMARY"]) if env.get("GITHUB_STEP_SUMMARY") else None,
        output=None,
        token=token,
    )


def read_state(body: str) -> trigger.State | None:
    """The state kept at the end of an issue's body, if it holds one."""
    found = _STATE.search(body or "")
    if found is None:
        return None
    try:
        return trigger.State.from_json(json.loads(found.group(1)))
    except json.JSONDecodeError:
        return None


def issue_body(report_markdown: str, state: trigger.State, notes: list[str], links: str) -> str:
    """The issue's text: the latest report, what the monitor decided, recent verdicts,
    and the state (hidden)."""
    recent = " ".join(
        {"ok": "✅", "breach": "🔴", "insufficient_data": "⚪", "error": "⚠️"}.get(v, v)
        for _, v in state.history[-12:]
    )
    lines = [
        report_markdown.rstrip(),
        "",
        "#### What kfops did",
        *(f"- {note}" for note in notes),
        "",
        f"Recent runs, oldest first: {recent}",
    ]
    if links:
        lines += ["", links]
    lines += [
        "",
        "kfops updates this issue on every monitor run and closes it after"
        " `on_breach.close_after` clean runs; a new breach reopens it.",
        "",
        f"<!-- kfops-monitor-state {json.dumps(state.to_json(), sort_keys=True)} -->",
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class Outcome:
    state: trigger.State
    done: tuple[str, ...]  # what was carried out, one line each
    issue_url: str = ""
    notice: str = ""  # why something was not carried out


def carry_out(
    decision: trigger.Decision,
    *,
    ctx: GitHubContext | None,
    mark: str,
    title: str,
    report_markdown: str,
    links: str,
    workflow: str,
    ref: str,
    inputs: dict[str, str],
    now: datetime,
    repository: Any = None,
) -> Outcome:
    """Carry out the decision's actions on GitHub: open, update or close the issue, and
    dispatch the retraining; with no repository, report what would have been done.

    Raises:
        KfopsError: GitHub refused a call (the message names the server, the credential
            source and what was left done).
    """
    state = decision.state
    notes = list(decision.notes)
    if ctx is None:
        wanted = [describe(a, workflow) for a in decision.actions]
        if not wanted:
            return Outcome(state, ())
        return Outcome(
            state,
            (),
            notice="no GitHub repository to report to, so kfops would have: "
            + "; ".join(wanted)
            + ". Set GITHUB_REPOSITORY and GITHUB_TOKEN (the monitor workflow that"
            " `kfops init --github` writes does).",
        )
    if repository is None:
        from kfops.ci.github import Repository

        repository = Repository(ctx)
    done: list[str] = []
    kinds = {a.kind for a in decision.actions}
    issue: Any = None
    if kinds & {trigger.OPEN_ISSUE, trigger.UPDATE_ISSUE, trigger.CLOSE_ISSUE}:
        issue, state = _write_issue(
            repository, state, kinds, mark, title, report_markdown, notes, links, done
        )
    failure: KfopsError | None = None
    for action in decision.actions:
        if action.kind != trigger.DISPATCH or not action.key:
            continue
        try:
            repository.dispatch(
                workflow,
                ref,
                {**inputs, "key": action.key, "issue": str(state.issue or "")},
            )
        except KfopsError as exc:
            failure = exc
            notes.append(
                f"could not dispatch `{workflow}`: {exc.message}; the next breaching run"
                " tries again"
            )
        else:
            state = trigger.dispatched(state, action.key, now)
            done.append(f"dispatched {workflow} on {ref} for breach {action.key}")
            notes.append(f"dispatched the retraining workflow `{workflow}` (key {action.key})")
        if issue is not None:
            issue = repository.update_issue(
                issue.number, mark, body=issue_body(report_markdown, state, notes, links)
            )
    if failure is not None:
        left = f"; issue #{issue.number} says so" if issue is not None else ""
        raise KfopsError(
            f"{failure.message} (the breach is recorded{left})", failure.hint
        ) from None
    return Outcome(state, tuple(done), issue.url if issue is not None else "")


def _write_issue(
    repository: Any,
    state: trigger.State,
    kinds: set[str],
    mark: str,
    title: str,
    report_markdown: str,
    notes: list[str],
    links: str,
    done: list[str],
) -> tuple[Any, trigger.State]:
    """Open, update, reopen or close the sticky issue; the state names its number."""
    closing = trigger.CLOSE_ISSUE in kinds
    existing = repository.sticky_issue(mark, LABEL)
    state = replace(state, issue_open=not closing)
    if existing is None:
        if closing:
            return None, replace(state, issue_open=False)
        issue = repository.open_issue(
            mark, title, issue_body(report_markdown, state, notes, links), (LABEL,)
        )
        state = replace(state, issue=issue.number)
        # The hidden state names the issue's own number: write the body once more.
        issue = repository.update_issue(
            issue.number, mark, body=issue_body(report_markdown, state, notes, links)
        )
        done.append(f"opened issue #{issue.number}")
        return issue, state
    state = replace(state, issue=existing.number)
    body = issue_body(report_markdown, state, notes, links)
    if closing:
        issue = repository.update_issue(
            existing.number, mark, title=title, body=body, state="closed", state_reason="completed"
        )
        done.append(f"closed issue #{issue.number}")
        return issue, state
    reopen = existing.state != "open"
    issue = repository.update_issue(
        existing.number, mark, title=title, body=body, state="open" if reopen else None
    )
    done.append(f"{'reopened' if reopen else 'updated'} issue #{issue.number}")
    return issue, state


def describe(action: trigger.Action, workflow: str) -> str:
    return {
        trigger.OPEN_ISSUE: "opened an issue",
        trigger.UPDATE_ISSUE: "updated the issue",
        trigger.CLOSE_ISSUE: "closed the issue",
        trigger.DISPATCH: f"dispatched {workflow} (key {action.key})",
    }[action.kind]


def state_from_issue(ctx: GitHubContext, mark: str, repository: Any = None) -> Any:
    """The sticky issue (or None) and the state its body keeps (or None)."""
    if repository is None:
        from kfops.ci.github import Repository

        repository = Repository(ctx)
    issue = repository.sticky_issue(mark, LABEL)
    if issue is None:
        return None, None
    return issue, read_state(issue.body)


def load_state(where: str | Path) -> trigger.State:
    """The state kept at ``where`` (a file, or ``s3://bucket/key``), or a fresh state
    when there is none."""
    try:
        if str(where).startswith("s3://"):
            from kfops.monitor.sink import read_object

            data = read_object(str(where))
            if data is None:
                return trigger.State()
            text = data.decode("utf-8")
        else:
            text = Path(where).read_text(encoding="utf-8")
        return trigger.State.from_json(json.loads(text))
    except FileNotFoundError:
        return trigger.State()
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise KfopsError(
            f"the monitor's state {where} is unreadable ({type(exc).__name__})",
            "delete it to start counting afresh",
        ) from None
