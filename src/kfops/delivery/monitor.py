"""One run of ``kfops monitor``: probes and gates against the served model, drift of the
served inputs against the reference, one verdict, and what the verdict sets off.

It composes ``monitor/`` (probes, drift, the breach state machine) with ``ci/monitor``
(the sticky issue and the dispatch of retraining), the only part that talks to GitHub.
The state between runs is a small JSON file (in CI, kept by the workflow's cache) and,
once there is one, the issue's own body.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from kfops.errors import KfopsError, display_path
from kfops.monitor import trigger
from kfops.project.model import Drift, Project

OK, BREACH, INSUFFICIENT = trigger.OK, trigger.BREACH, trigger.INSUFFICIENT
EXIT_CODES = {OK: 0, BREACH: 1, INSUFFICIENT: 4}


@dataclass(frozen=True)
class Watch:
    """What one monitor run looks at."""

    project: Project
    environment: str  # the environment watched ("local" for --local and --url)
    base_url: str | None  # the served model, for the probes; None: no probes
    model_name: str
    protocol: str
    samples: Callable[[], Any]  # reads the served inputs (monitor.samples.Samples)
    state_file: str | Path  # a file, or s3://bucket/key
    dry_run: bool = False
    timeout: float = 30.0


@dataclass(frozen=True)
class Result:
    document: dict[str, Any]  # report.json
    drift: Any  # monitor.report.Report
    probes: Any  # monitor.probes.ProbeRun | None
    verdict: str
    reasons: tuple[str, ...]
    decision: trigger.Decision
    done: tuple[str, ...]
    notice: str
    issue_url: str
    reference: Any = None  # monitor.profile.Profile the inputs were scored against
    samples: Any = None  # monitor.samples.Samples: the served inputs scored

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]


def run_once(
    watch: Watch, *, now: datetime, env: Mapping[str, str], repository: Any = None
) -> Result:
    """Probe, measure, decide, and carry the decision out (nothing with ``dry_run``).

    Raises:
        KfopsError: the inputs, the reference or the model could not be read, or GitHub
            refused a call; the run is recorded as an error in the state first.
    """
    from kfops.ci import monitor as github_side
    from kfops.monitor import probes as probing
    from kfops.monitor import profile, report

    project = watch.project
    monitoring = project.monitoring
    assert monitoring is not None and monitoring.drift is not None
    drift: Drift = monitoring.drift
    ctx = github_side.context(env)
    mark = github_side.marker(github_side.project_key(project.root), watch.environment)
    state = github_side.load_state(watch.state_file)
    if ctx is not None:
        _, kept = github_side.state_from_issue(ctx, mark, repository)
        if kept is not None and _newer(kept, state):
            state = kept
    try:
        shown = display_path(drift.reference)
        reference = profile.load(drift.reference)
        served = watch.samples()
        found = report.evaluate(project.name, drift, reference, shown, served, now=now)
        probed = None
        if watch.base_url is not None and (monitoring.requests or monitoring.sets):
            probed = probing.run(
                monitoring, watch.base_url, watch.model_name, watch.protocol, timeout=watch.timeout
            )
    except KfopsError:
        if not watch.dry_run:
            failed = trigger.step(
                state,
                trigger.ERROR,
                now,
                monitoring.on_breach,
                project=project.name,
                environment=watch.environment,
            )
            _save(watch.state_file, failed.state)
        raise
    verdict, reasons = _verdict(found, probed)
    decision = trigger.step(
        state,
        verdict,
        now,
        monitoring.on_breach,
        project=project.name,
        environment=watch.environment,
    )
    document = found.to_json()
    document.update(
        verdict=verdict,
        reasons=list(reasons),
        environment=watch.environment,
        probes=probed.to_json() if probed is not None else None,
    )
    summary = markdown(document, found, probed)
    done: tuple[str, ...] = ()
    notice = ""
    issue_url = ""
    final = decision.state
    if watch.dry_run:
        wanted = ", ".join(
            github_side.describe(a, monitoring.on_breach.workflow) for a in decision.actions
        )
        notice = "dry run: " + (f"kfops would have {wanted}" if wanted else "nothing to do")
    else:
        outcome = github_side.carry_out(
            decision,
            ctx=ctx,
            mark=mark,
            title=f"kfops monitor: {project.name} in {watch.environment} needs attention",
            report_markdown=summary,
            links=_links(env),
            workflow=monitoring.on_breach.workflow,
            ref=_ref(env),
            inputs={
                "environment": watch.environment,
                "project": github_side.project_key(project.root),
            },
            now=now,
            repository=repository,
        )
        final, done, notice, issue_url = (
            outcome.state,
            outcome.done,
            outcome.notice,
            outcome.issue_url,
        )
        _save(watch.state_file, final)
    document["cycle"] = {
        "state": final.to_json(),
        "actions": [a.kind for a in decision.actions],
        "notes": list(decision.notes),
        "done": list(done),
        "notice": notice,
        "issue": issue_url or None,
    }
    return Result(
        document,
        found,
        probed,
        verdict,
        reasons,
        replace(decision, state=final),
        done,
        notice,
        issue_url,
        reference,
        served,
    )


def _verdict(found: Any, probed: Any) -> tuple[str, tuple[str, ...]]:
    """Drift's verdict, made a breach by any failed probe or gate."""
    reasons = list(found.reasons)
    failed = []
    if probed is not None:
        failed += [f"probe `{r.name}` failed: {r.detail}" for r in probed.results if not r.passed]
        failed += [f"gate `{g.name}` failed: {g.detail}" for g in probed.gates if not g.passed]
    if failed:
        return BREACH, tuple(failed + reasons)
    return found.verdict, tuple(reasons)


def markdown(document: dict[str, Any], found: Any, probed: Any) -> str:
    """The run as Markdown (job summary, issue): the verdict, the probes, the drift table."""
    from kfops.monitor import report

    verdict = {OK: "ok", BREACH: "BREACH", INSUFFICIENT: "insufficient data"}[document["verdict"]]
    lines = [
        f"### kfops monitor: {document['project']} in {document['environment']}: {verdict}",
        "",
    ]
    if document["reasons"]:
        lines += [*(f"- {reason}" for reason in document["reasons"]), ""]
    if probed is not None:
        lines += ["| probe | kind | result | detail |", "|---|---|---|---|"]
        for r in probed.results:
            lines.append(f"| {r.name} | {r.kind} | {'pass' if r.passed else 'FAIL'} | {r.detail} |")
        for g in probed.gates:
            lines.append(f"| {g.name} | gate | {'pass' if g.passed else 'FAIL'} | {g.detail} |")
        lines.append("")
    drift_table = report.markdown(found).split("\n", 2)[2]  # without its own heading
    lines.append(drift_table.rstrip())
    return "\n".join(lines) + "\n"


def _links(env: Mapping[str, str]) -> str:
    server, repository, run = (
        env.get("GITHUB_SERVER_URL") or "https://github.com",
        env.get("GITHUB_REPOSITORY"),
        env.get("GITHUB_RUN_ID"),
    )
    if repository and run:
        return f"The run: {server}/{repository}/actions/runs/{run}"
    return ""


def _ref(env: Mapping[str, str]) -> str:
    """The branch the retraining workflow runs on: this run's, else main."""
    name = env.get("GITHUB_REF_NAME")
    if name:
        return name
    ref = env.get("GITHUB_REF", "")
    return ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else "main"


def _newer(kept: trigger.State, local: trigger.State) -> bool:
    last_kept, last_local = kept.last_verdict, local.last_verdict
    # On a tie (the same second) the file wins: it is written last, after the issue.
    return last_local is None or (last_kept is not None and last_kept[0] > last_local[0])


def _save(where: str | Path, state: trigger.State) -> None:
    text = json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n"
    if str(where).startswith("s3://"):
        from kfops.monitor.sink import write_object

        write_object(str(where), text.encode("utf-8"))
        return
    from kfops.pipeline.local import _ignore_in_git

    path = Path(where)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.parent.name == "monitor":
        _ignore_in_git(path.parent.parent)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    partial.replace(path)


def default_state_file(project: Project, environment: str) -> Path:
    """Where the state is kept unless --state says: .kfops/monitor/ENV.json in the project."""
    return project.root / ".kfops" / "monitor" / f"{environment}.json"
