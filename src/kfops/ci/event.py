"""``kfops ci``: what the GitHub Action runs. Reads the GitHub Actions environment, does
what ``on:`` asks for the event, and reports in one place (comment, summary, outputs)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfops.errors import EXIT_USAGE, KfopsError, Problem, display_path
from kfops.pipeline.diff import Plan
from kfops.project.model import Project, Trigger

REQUIRED_ENV = (
    "GITHUB_EVENT_NAME",
    "GITHUB_EVENT_PATH",
    "GITHUB_REF",
    "GITHUB_SHA",
    "GITHUB_REPOSITORY",
)


@dataclass(frozen=True)
class GitHubContext:
    """The parts of the GitHub Actions environment kfops uses."""

    event_name: str
    event: dict[str, Any]
    ref: str
    sha: str
    repository: str
    api_url: str
    server_url: str
    run_id: str
    summary: Path | None
    output: Path | None
    token: str | None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GitHubContext:
        """Read the context, or explain what is missing.

        Raises:
            KfopsError: (exit 2) not inside GitHub Actions, or the event file is unreadable.
        """
        missing = [name for name in REQUIRED_ENV if not env.get(name)]
        if missing:
            raise KfopsError(
                "kfops ci runs inside GitHub Actions; these variables are not set: "
                + ", ".join(missing),
                "use the kfops action in a workflow (see `kfops init --github`), or run"
                " `kfops validate`, `kfops compile` and `kfops run` locally",
                exit_code=EXIT_USAGE,
            )
        event_path = Path(env["GITHUB_EVENT_PATH"])
        try:
            event = json.loads(event_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise KfopsError(
                f"cannot read the event file {event_path}: {exc}", exit_code=EXIT_USAGE
            ) from None
        return cls(
            event_name=env["GITHUB_EVENT_NAME"],
            event=event if isinstance(event, dict) else {},
            ref=env["GITHUB_REF"],
            sha=env["GITHUB_SHA"],
            repository=env["GITHUB_REPOSITORY"],
            api_url=env.get("GITHUB_API_URL", "https://api.github.com"),
            server_url=env.get("GITHUB_SERVER_URL", "https://github.com"),
            run_id=env.get("GITHUB_RUN_ID", ""),
            summary=Path(env["GITHUB_STEP_SUMMARY"]) if env.get("GITHUB_STEP_SUMMARY") else None,
            output=Path(env["GITHUB_OUTPUT"]) if env.get("GITHUB_OUTPUT") else None,
            token=env.get("KFOPS_GITHUB_TOKEN") or env.get("GITHUB_TOKEN") or None,
        )

    @property
    def _pull(self) -> dict[str, Any]:
        pull = self.event.get("pull_request")
        return pull if isinstance(pull, dict) else {}

    @property
    def _base(self) -> dict[str, Any]:
        base = self._pull.get("base")
        return base if isinstance(base, dict) else {}

    @property
    def pull_number(self) -> int | None:
        number = self._pull.get("number")
        return number if isinstance(number, int) else None

    @property
    def base_sha(self) -> str | None:
        sha = self._base.get("sha")
        return sha if isinstance(sha, str) else None

    @property
    def base_branch(self) -> str:
        ref = self._base.get("ref")
        return ref if isinstance(ref, str) else ""

    @property
    def run_url(self) -> str:
        if not self.run_id:
            return ""
        return f"{self.server_url}/{self.repository}/actions/runs/{self.run_id}"


@dataclass(frozen=True)
class Decision:
    """What to do for this event: the kind of event ("" when nothing), and whether to run."""

    kind: str
    run: bool
    reason: str
    environment: str | None = None  # whose images to build
    push: bool = False  # push them (never for pull requests)
    apply: bool = False  # apply to the environment's Kubeflow Pipelines
    deploy: bool = False  # release the model to the environment's KServe (tags only)


def decide(project: Project, ctx: GitHubContext) -> Decision:
    """Match the event against the project's ``on:`` section."""
    triggers = project.triggers
    source = "mlops.yaml `on:`" if triggers.declared else "the default (no `on:` section)"
    if ctx.event_name == "pull_request_target":
        return Decision(
            "",
            False,
            "`pull_request_target` runs with a write token, and kfops would run the pull"
            " request's code; use `pull_request` (see the README for forks)",
        )
    if ctx.event_name == "pull_request":
        return _match("pull_request", triggers.pull_request, ctx.base_branch, source)
    if ctx.event_name == "push" and ctx.ref.startswith("refs/tags/"):
        tag = ctx.ref.removeprefix("refs/tags/")
        trigger = triggers.tag
        if trigger is None and not triggers.declared:
            trigger = Trigger()
        if trigger is None:
            return Decision("", False, f"tag `{tag}`: {source} has no `tag` entry")
        if trigger.pattern and not glob_match(tag, trigger.pattern):
            return Decision("", False, f"tag `{tag}` does not match `{trigger.pattern}`")
        return Decision(
            "tag",
            trigger.run,
            f"tag `{tag}` ({source})",
            trigger.environment,
            push=trigger.environment is not None,
            apply=trigger.apply,
            deploy=trigger.deploy and trigger.environment is not None,
        )
    if ctx.event_name == "push":
        return _match("push", triggers.push, ctx.ref.removeprefix("refs/heads/"), source)
    return Decision("", False, f"kfops ci does nothing for `{ctx.event_name}` events")


def glob_match(name: str, pattern: str) -> bool:
    """GitHub's branch and tag patterns: `*` stops at `/`, `**` does not."""
    regex = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.fullmatch(regex, name) is not None


def _match(kind: str, trigger: Trigger | None, branch: str, source: str) -> Decision:
    if trigger is None:
        return Decision("", False, f"{kind}: {source} has no `{kind}` entry")
    if trigger.branches and not any(glob_match(branch, b) for b in trigger.branches):
        return Decision("", False, f"branch `{branch}` is not in `on.{kind}.branches`")
    if kind == "pull_request":
        # A pull request never pushes images (a fork's must not, and none needs to).
        environment = trigger.environment if trigger.build else None
        return Decision(kind, trigger.run, f"{kind} on `{branch}` ({source})", environment)
    return Decision(
        kind,
        trigger.run,
        f"{kind} on `{branch}` ({source})",
        trigger.environment,
        push=trigger.environment is not None,
        apply=trigger.apply,
    )


@dataclass
class CiResult:
    """Everything the report shows."""

    project: str  # the project path as given
    name: str = ""
    event: str = ""
    decision: Decision | None = None
    problems: list[Problem] = field(default_factory=list)
    compiled: str = ""  # path of the compiled IR
    compile_error: str = ""
    plan: Plan | None = None
    plan_note: str = ""
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    base_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    run_status: str = ""  # "", "succeeded", "failed"
    run_url: str = ""
    sha: str = ""
    environment: str = ""
    notices: list[str] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)  # ImageResult.to_json()
    image_error: str = ""
    delivery: dict[str, Any] = field(default_factory=dict)  # what apply did, or would do
    delivery_error: str = ""
    kfp_run: dict[str, Any] = field(default_factory=dict)  # a run on Kubeflow Pipelines
    release: dict[str, Any] = field(default_factory=dict)  # rollout.Outcome.to_json()
    release_error: str = ""  # why the release did not go through (or could not start)
    deployment: dict[str, Any] = field(default_factory=dict)  # github.Deployment.to_json()

    @property
    def failed(self) -> bool:
        return (
            any(p.severity == "error" for p in self.problems)
            or bool(self.compile_error)
            or bool(self.image_error)
            or bool(self.delivery_error)
            or self.run_status == "failed"
            or bool(self.release_error)
            or (bool(self.release) and not self.release.get("ok"))
        )


def merge_base_tree(repo_root: Path, base_sha: str, into: Path) -> str:
    """Write the files at the merge base of HEAD and ``base_sha`` into ``into``, without
    touching the work tree; returns the merge base commit.

    Raises:
        KfopsError: git cannot find the merge base (e.g. a shallow clone).
    """

    def git(*args: str) -> bytes:
        done = subprocess.run(
            ["git", *args], cwd=repo_root, capture_output=True, check=False, timeout=120
        )
        if done.returncode != 0:
            raise KfopsError(
                f"git {' '.join(args)} failed: {done.stderr.decode(errors='replace').strip()}",
                "check out with `fetch-depth: 0` (actions/checkout) so the base branch's"
                " history is available",
            )
        return done.stdout

    merge_base = git("merge-base", "HEAD", base_sha).decode().strip()
    archive = git("archive", "--format=tar", merge_base)
    with tempfile.TemporaryFile() as buffer:
        buffer.write(archive)
        buffer.seek(0)
        with tarfile.open(fileobj=buffer) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(into, filter=_safe_member)
            else:
                # Python before 3.10.12 and 3.11.4 has no extraction filters: keep only
                # plain files and folders whose names stay inside the target.
                tar.extractall(into, members=[m for m in tar.getmembers() if _plain(m)])
    return merge_base


def _plain(member: tarfile.TarInfo) -> bool:
    name = Path(member.name)
    return (member.isfile() or member.isdir()) and not name.is_absolute() and ".." not in name.parts


def _safe_member(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
    """tarfile's "data" filter, skipping (not failing on) what it refuses, such as a
    symlink to an absolute path somewhere in the repository."""
    try:
        return tarfile.data_filter(member, path)
    except tarfile.FilterError:
        return None


def repo_root(path: Path) -> Path | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"],
            cwd=path if path.is_dir() else path.parent,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:  # no git (a slim image, e.g. the monitor's pod): no repository to find
        return None
    return Path(done.stdout.strip()) if done.returncode == 0 else None


def write_outputs(output: Path, values: dict[str, str]) -> None:
    """Append step outputs to $GITHUB_OUTPUT, multi-line safe."""
    with output.open("a", encoding="utf-8") as f:
        for name, value in values.items():
            delimiter = f"kfops_{os.urandom(8).hex()}"
            f.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")


def shown(path: Path) -> str:
    return display_path(path)


def execute(path: Path, ctx: GitHubContext, console: Any) -> CiResult:
    """Validate, compile, plan and (when asked) run the project at ``path`` for ``ctx``."""
    from kfops.errors import InvalidProject
    from kfops.pipeline import compiler
    from kfops.project import config

    result = CiResult(project=shown(path), event=ctx.event_name, run_url=ctx.run_url, sha=ctx.sha)
    try:
        project, result.problems = config.check(path)
    except KfopsError as exc:
        result.problems = [Problem(shown(path), 0, 0, exc.message, exc.hint)]
        return result
    if project is None:
        return result
    result.name = project.name
    result.decision = decision = decide(project, ctx)
    if not decision.kind:
        return result
    try:
        compiled = compiler.compile_project(project)
    except InvalidProject as exc:
        result.problems += exc.problems
        return result
    except KfopsError as exc:
        result.compile_error = exc.message + (f" ({exc.hint})" if exc.hint else "")
        return result
    _pipeline(project, compiled, decision, ctx, result, console)
    # Only a tag releases (decide() sets `deploy` for nothing else): a pull request,
    # from a fork or not, never reaches a cluster.
    if decision.deploy and decision.kind == "tag" and decision.environment is not None:
        if result.failed:
            result.notices.append("the model was not released: an earlier stage failed")
        else:
            release(project, decision.environment, ctx, result, console)
    return result


# How a deployment's state follows from the release's stage.
DEPLOYMENT_STATES = {
    "promoted": "success",
    "unchanged": "success",
    "canary": "in_progress",  # waits for `kfops deploy --promote`
    "rolled-back": "failure",
    "failed": "failure",
}


def release(
    project: Project, environment: str, ctx: GitHubContext, result: CiResult, console: Any
) -> None:
    """Release the model to ``environment``'s KServe for this tag (``kfops deploy``), and
    record it as a GitHub deployment of the tagged commit. The release's result goes on
    ``result`` whatever GitHub says; a deployment GitHub refuses is a warning."""
    from kfops.ci import github, report
    from kfops.serving import release as releases
    from kfops.serving.kube import Kube
    from kfops.serving.rollout import Failed, Rollout

    env = os.environ
    try:
        target = project.environment(environment)
        if target.kubernetes is None:
            raise KfopsError(
                f"environment `{environment}` has no `kubernetes:`, so nothing serves the"
                " model there",
                f"add `kubernetes: {{namespace: NAME}}` under environments.{environment}",
            )
        metrics_file = env.get("KFOPS_METRICS")
        metrics = releases.read_metrics(Path(metrics_file)) if metrics_file else None
        kfp = None
        if project.serving is not None and project.serving.from_step and target.kfp:
            from kfops.kubeflow.client import connect

            kfp = connect(target)
        made = releases.resolve(
            project,
            target,
            model_uri=env.get("KFOPS_MODEL_URI") or None,
            metrics=metrics,
            env={"GITHUB_SHA": ctx.sha, "GITHUB_REF": ctx.ref},
            kfp=kfp,
        )
    except KfopsError as exc:
        result.release_error = exc.message + (f" ({exc.hint})" if exc.hint else "")
        return
    console.print(
        f"releasing {made.name} of {project.name} to {environment}: {made.model_uri}"
        f" ({made.source})",
        highlight=False,
    )
    deployment = github.Deployment(ctx)
    deployment.create(
        environment,
        ctx.sha,
        {
            "project": project.name,
            "model_uri": made.model_uri,
            "release": made.name,
            "tag": made.tag,
            "commit": made.commit,
        },
        f"{project.name} {made.name} to {environment}",
    )
    try:
        poll = float(env.get("KFOPS_POLL_SECONDS") or 2)
        outcome = Rollout(project, target, Kube(target), console, poll_seconds=poll).deploy(made)
    except Failed as exc:
        outcome = exc.outcome
        result.release_error = exc.message + (f" ({exc.hint})" if exc.hint else "")
    except KfopsError as exc:  # before anything changed: bad input, an unreachable cluster
        result.release_error = exc.message + (f" ({exc.hint})" if exc.hint else "")
        deployment.status("error", f"not released: {exc.message}")
        outcome = None
    except BaseException:  # a bug or ^C: the deployment must not stay `in_progress`
        deployment.status("error", "kfops stopped unexpectedly: see the workflow run")
        raise
    if outcome is not None:
        result.release = outcome.to_json()
        deployment.status(
            DEPLOYMENT_STATES.get(outcome.stage, "error"),
            report.release_description(result.release),
            outcome.url if outcome.ok else "",
        )
    result.deployment = deployment.to_json()
    if deployment.notice:
        result.problems.append(
            Problem(
                shown(project.config_file),
                0,
                0,
                deployment.notice,
                deployment.hint,
                severity="warning",
            )
        )


def _pipeline(
    project: Project,
    compiled: Any,
    decision: Decision,
    ctx: GitHubContext,
    result: CiResult,
    console: Any,
) -> None:
    """Images, apply, plan and runs, as ``decision`` asks; what happened goes on ``result``."""
    from kfops.pipeline import local
    from kfops.pipeline.diff import compare

    ir_text = compiled.ir_text
    if decision.environment is not None:
        ir_text = _images(project, compiled, decision, result, console)
        if result.image_error:
            return
    target = project.root / ".kfops" / f"{project.name}.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(ir_text, encoding="utf-8")
    result.compiled = shown(target)
    if decision.apply and decision.environment is not None:
        _deliver(project, ir_text, decision.environment, ctx, result, run=decision.run)
        if result.delivery_error or decision.run:
            return  # the run, if asked, happened on Kubeflow
    elif decision.kind == "pull_request":
        deployed = _deployed_by(project, ctx.base_branch)
        if deployed is not None:
            _deliver(project, ir_text, deployed, ctx, result, plan_only=True)
    base_project: Project | None = None
    with tempfile.TemporaryDirectory(prefix="kfops-base-") as tmp:
        if decision.kind == "pull_request" and ctx.base_sha:
            base_project = _plan(project, compiled.ir, ctx.base_sha, Path(tmp), result, compare)
        elif decision.kind == "pull_request":
            result.plan_note = "no plan: the event names no base commit"
        if decision.run and not decision.apply:
            try:
                run = local.run(project, console=console)
            except KfopsError as exc:
                result.run_status = "failed"
                result.notices.append(f"the local run did not start: {exc.message}")
                return
            result.metrics = run.metrics()
            result.run_status = "succeeded" if run.succeeded else "failed"
            failed = [s.name for s in run.steps.values() if s.status != "SUCCESS"]
            if failed:
                result.notices.append(
                    "failed steps: " + ", ".join(failed) + f" (logs in {shown(run.run_dir)})"
                )
            if base_project is not None:
                try:
                    base_run = local.run(base_project, console=console)
                    result.base_metrics = base_run.metrics()
                except KfopsError as exc:
                    result.notices.append(f"the base branch's pipeline did not run: {exc}")


def _deployed_by(project: Project, branch: str) -> str | None:
    """The environment a push to ``branch`` applies to (what this pull request will change)."""
    push = project.triggers.push
    if push is None or not push.apply or push.environment is None:
        return None
    if push.branches and not any(glob_match(branch, b) for b in push.branches):
        return None
    return push.environment


def _deliver(
    project: Project,
    ir_text: str,
    environment: str,
    ctx: GitHubContext,
    result: CiResult,
    *,
    run: bool = False,
    plan_only: bool = False,
) -> None:
    """Apply to (or, for a pull request, plan against) the environment's Kubeflow Pipelines;
    with ``run``, run this commit's version there and wait for it."""
    from kfops.delivery import pipeline as delivery
    from kfops.kubeflow import runs
    from kfops.kubeflow.client import connect

    origin = delivery.Origin(
        commit=ctx.sha, ref=ctx.ref, repository=ctx.repository, run_url=ctx.run_url
    )
    try:
        kfp = connect(project.environment(environment))
    except KfopsError as exc:
        if plan_only:  # e.g. a fork's pull request gets no secrets: the offline plan stays
            result.notices.append(f"no plan against `{environment}`: {exc.message}")
        else:
            result.delivery_error = exc.message + (f" ({exc.hint})" if exc.hint else "")
        return
    try:
        if plan_only:
            planned = delivery.plan(project, ir_text, kfp, origin)
        else:
            planned = delivery.apply(project, ir_text, kfp, origin)
        result.delivery = {**planned.to_json(), "applied": not plan_only}
        if planned.pipeline_id:
            result.delivery["url"] = kfp.pipeline_url(planned.pipeline_id, planned.version_id)
        if run and planned.pipeline_id and planned.version_id:
            experiment = delivery.experiment_name(project, kfp)
            run_id = runs.start(
                kfp,
                pipeline_id=planned.pipeline_id,
                version_id=planned.version_id,
                experiment=experiment,
                parameters={},
                display_name=f"{project.name} {planned.version}",
                description=planned.description,
            )
            interval = float(os.environ.get("KFOPS_POLL_SECONDS") or 5)
            status = runs.wait(kfp, run_id, timeout=3600, interval=interval)
            result.kfp_run = {
                "run_id": run_id,
                "state": status.state,
                "url": status.url,
                "seconds": round(status.seconds, 1),
                "failed_tasks": status.failed_tasks,
            }
            result.run_status = "succeeded" if status.succeeded else "failed"
    except KfopsError as exc:
        result.delivery_error = exc.message + (f" ({exc.hint})" if exc.hint else "")


def _images(
    project: Project, compiled: Any, decision: Decision, result: CiResult, console: Any
) -> str:
    """Build (and on pushes and tags, push) the environment's step images; the IR pinned
    to their digests once pushed."""
    from kfops.images import build as images

    assert decision.environment is not None
    registry = project.environment(decision.environment).registry
    if registry is None:
        return str(compiled.ir_text)  # no registry: the steps keep their own images
    network = os.environ.get("KFOPS_BUILD_NETWORK") or None
    try:
        built, prepared = images.build(
            project, compiled.ir, registry, push=decision.push, network=network, console=console
        )
        result.images = [image.to_json() for image in built]
        result.problems += prepared.warnings
        if decision.push:
            text, _ = images.pinned(
                project,
                compiled.ir_text,
                compiled.ir,
                registry,
                environment=decision.environment,
                built=(prepared, built),
            )
            return text
    except KfopsError as exc:
        result.image_error = exc.message + (f" ({exc.hint})" if exc.hint else "")
    return str(compiled.ir_text)


def _plan(
    project: Project,
    head_ir: dict[str, Any],
    base_sha: str,
    tmp: Path,
    result: CiResult,
    compare: Any,
) -> Project | None:
    from kfops.pipeline import compiler
    from kfops.project import config

    root = repo_root(project.root)
    if root is None:
        result.plan_note = "not a git checkout: no plan against the base branch"
        return None
    try:
        merge_base = merge_base_tree(root, base_sha, tmp)
    except KfopsError as exc:
        result.plan_note = f"no plan: {exc.message}" + (f"; {exc.hint}" if exc.hint else "")
        return None
    base_config = tmp / project.config_file.relative_to(root)
    if not base_config.exists():
        result.plan = compare(None, head_ir)
        return None
    try:
        base_project = config.load(base_config)
        base_ir = compiler.compile_project(base_project).ir
    except KfopsError as exc:
        result.plan_note = f"the base branch ({merge_base[:7]}) does not compile: {exc.message}"
        return None
    result.plan = compare(base_ir, head_ir)
    result.plan_note = f"compared with the merge base {merge_base[:7]}"
    return base_project
