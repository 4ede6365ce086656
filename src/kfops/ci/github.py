"""The GitHub REST API (PyGithub): the one sticky pull-request comment per project, the
deployment that records a model release, and ``Repository``: the monitoring issue, workflow
dispatches and pull requests.

The comment is found by a hidden marker at the very start of its body, and only among
comments written by a bot (the workflow token's identity), so a person who pastes the
marker into their own comment cannot make kfops edit or hide it.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from kfops.ci.event import GitHubContext
from kfops.errors import KfopsError

FORK_NOTICE = (
    "kfops could not comment: this workflow's token is read-only (a pull request from a"
    " fork gets no write access). The report is in the job summary. To comment on pull"
    " requests from forks, upload the report as an artifact and post it from a second"
    " workflow triggered by `workflow_run`, which runs with the base repository's token."
)


def marker(project: str) -> str:
    """The hidden marker for one project: its path relative to the repository, so
    `pipelines/iris` and `pipelines/iris/mlops.yaml` share one comment."""
    from pathlib import Path

    from kfops.ci.event import repo_root

    path = Path(project).resolve()
    folder = path.parent if path.suffix in (".yaml", ".yml") else path
    root = repo_root(folder)
    key_text = (
        folder.relative_to(root).as_posix() if root and folder.is_relative_to(root) else project
    )
    key = hashlib.sha256(key_text.encode("utf-8")).hexdigest()[:16]
    return f"<!-- kfops-report {key} -->"


@dataclass(frozen=True)
class Published:
    url: str = ""
    notice: str = ""  # why there is no comment, when there is none


def publish(
    ctx: GitHubContext, number: int, body: str, mark: str, *, backoff: float = 1.0
) -> Published:
    """Create or update the project's comment on pull request ``number``.

    Raises:
        KfopsError: the token was rejected (401), a message that says so once.
    """
    import requests
    import urllib3
    from github import GithubException

    if not ctx.token:
        return Published(
            notice="no GitHub token, so no pull-request comment: pass `github-token` to the"
            " action (the default is the workflow's token)"
        )
    # PATCH is idempotent; POST is not (a retried POST may post twice): see _create.
    with _client(ctx.token, ctx.api_url, backoff, {"GET", "PATCH"}) as client:
        try:
            issue = client.get_repo(ctx.repository, lazy=True).get_issue(number)
            existing = _find(issue, mark, _own_login(client))
            if existing is not None:
                existing.edit(body)
                return Published(url=existing.html_url)
            return Published(url=_create(issue, body, mark, GithubException))
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            return Published(
                notice=f"could not reach the GitHub API at {ctx.api_url}"
                f" ({type(exc).__name__}); the report is in the job summary only"
            )
        except GithubException as exc:
            if exc.status == 401:
                raise KfopsError(
                    "GitHub rejected the token (401 Bad credentials)",
                    "check the `github-token` input; the default, the workflow's own token,"
                    " works with `permissions: pull-requests: write`",
                ) from None
            if exc.status == 403 and "rate limit" not in str(exc.data).lower():
                return Published(notice=FORK_NOTICE)
            return Published(
                notice=f"the GitHub API answered {exc.status} after retries; the report is"
                " in the job summary only"
            )


def _client(token: str, api_url: str, backoff: float, methods: set[str]) -> Any:
    import logging

    from github import Auth, Github, GithubRetry

    # PyGithub logs to stderr at INFO on import (a line per 403, such as the workflow
    # token's expected one on GET /user): kfops reports failures itself. A level someone
    # chose on purpose is left alone.
    logger = logging.getLogger("github")
    if logger.level == logging.INFO:
        logger.setLevel(logging.WARNING)

    retry = GithubRetry(total=4, backoff_factor=backoff, allowed_methods=frozenset(methods))
    return Github(
        auth=Auth.Token(token),
        base_url=api_url.rstrip("/"),
        timeout=30,
        per_page=100,
        retry=retry,
        seconds_between_requests=0,
        seconds_between_writes=0,
    )


def _own_login(client: Any) -> str | None:
    """The token's own login, for a personal token; None for the workflow's token, which
    has no user behind it (GitHub answers 403)."""
    from github import GithubException

    try:
        login: str = client.get_user().login
        return login
    except GithubException:
        return None


def _find(issue: Any, mark: str, login: str | None = None) -> Any:
    """Our comment: it starts with the marker and was written by this token's identity
    (a bot for the workflow's token), never by someone else quoting the marker."""
    for comment in issue.get_comments():
        ours = comment.user.login == login if login else comment.user.type == "Bot"
        if ours and comment.body.startswith(mark):
            return comment
    return None


def _create(issue: Any, body: str, mark: str, error: type[Exception]) -> str:
    """Post the comment; after a server error, look again before posting a second time
    (GitHub may have stored the first one)."""
    for attempt in range(3):
        try:
            url: str = issue.create_comment(body).html_url
            return url
        except error as exc:
            status = getattr(exc, "status", 0)
            limited = status == 429 or (status == 403 and "rate limit" in str(exc).lower())
            if limited and attempt < 2:
                time.sleep(2**attempt)  # a rate-limited request was not carried out
                continue
            if status < 500:
                raise
            break
    existing = _find(issue, mark)
    if existing is not None:
        existing.edit(body)
        found: str = existing.html_url
        return found
    created: str = issue.create_comment(body).html_url
    return created


# --- deployments ---------------------------------------------------------------------------

DEPLOYMENTS_HINT = (
    "add `deployments: write` to the `permissions:` of the job that runs kfops on tags"
    " (`kfops init --github --force` writes such a workflow)"
)
DESCRIPTION_LIMIT = 140  # GitHub rejects longer deployment status descriptions


class Deployment:
    """A GitHub deployment of one release to one environment, and its statuses.

    Every call degrades to a ``notice`` (and does nothing more) when GitHub refuses or
    cannot be reached: the release itself is what matters, and its result is reported
    elsewhere whatever happens here.
    """

    def __init__(self, ctx: GitHubContext, *, backoff: float = 1.0) -> None:
        self.ctx = ctx
        self.backoff = backoff
        self.id = 0
        self.url = ""
        self.statuses: list[str] = []
        self.notice = ""  # why the deployment is not (fully) recorded, when it is not
        self.hint = ""  # how to fix that

    def create(self, environment: str, sha: str, payload: dict[str, Any], description: str) -> None:
        """POST /repos/{o}/{r}/deployments for ``sha``, then its ``in_progress`` status."""
        if not self.ctx.token:
            self.notice = (
                "no GitHub token, so no GitHub deployment: pass `github-token` to the action"
                " (the default is the workflow's token)"
            )
            return

        def create(client: Any) -> None:
            repo = client.get_repo(self.ctx.repository, lazy=True)
            deployment = repo.create_deployment(
                sha,
                task="deploy",
                auto_merge=False,  # a release deploys the tagged commit, nothing merged in
                required_contexts=[],  # the workflow run asking is itself a pending check
                payload=payload,
                environment=environment,
                description=_short(description),
                production_environment=environment == "production",
            )
            self.id, self.url = deployment.id, deployment.url

        if self._call("create a GitHub deployment", create):
            self.status("in_progress", "releasing " + description)

    def status(self, state: str, description: str, environment_url: str = "") -> None:
        """POST a deployment status: ``in_progress``, ``success``, ``failure`` or ``error``."""
        if not self.url:
            return
        body = {
            "state": state,
            "description": _short(description),
            "log_url": self.ctx.run_url,
            "auto_inactive": state == "success",
        }
        if environment_url:
            body["environment_url"] = environment_url

        def post(client: Any) -> None:
            # PyGithub's Deployment.create_status has no `log_url` (GitHub's replacement
            # for `target_url`): post through its requester, with its auth and retries.
            client.requester.requestJsonAndCheck("POST", f"{self.url}/statuses", input=body)
            self.statuses.append(state)

        self._call(f"set the GitHub deployment's status to `{state}`", post)

    def _call(self, what: str, action: Any) -> bool:
        import requests
        import urllib3
        from github import GithubException

        assert self.ctx.token
        # POST only, and a POST is not retried: a lost answer must not record twice.
        with _client(self.ctx.token, self.ctx.api_url, self.backoff, {"GET"}) as client:
            try:
                action(client)
                return True
            except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
                self.notice = (
                    f"could not {what}: the GitHub API at {self.ctx.api_url} did not answer"
                    f" ({type(exc).__name__})"
                )
            except GithubException as exc:
                message = (exc.data or {}).get("message") if isinstance(exc.data, dict) else ""
                self.notice = f"could not {what}: GitHub answered {exc.status}" + (
                    f" ({message})" if message else ""
                )
                if exc.status == 403 and "rate limit" not in str(exc.data).lower():
                    self.hint = DEPLOYMENTS_HINT
            return False

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "statuses": self.statuses,
            "notice": self.notice,
            "hint": self.hint,
        }


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= DESCRIPTION_LIMIT else text[: DESCRIPTION_LIMIT - 1] + "…"


# --- the repository: the monitoring issue, workflow dispatches, pull requests -------------

CREDENTIAL = "the token from the `github-token` input (GITHUB_TOKEN by default)"
_T = TypeVar("_T")


@dataclass(frozen=True)
class Issue:
    number: int
    url: str  # html_url
    state: str  # "open" | "closed"
    title: str
    body: str


@dataclass(frozen=True)
class Pull:
    number: int
    url: str  # html_url
    branch: str  # head ref
    state: str  # "open" | "closed" (merged counts as closed)


class Repository:
    """One repository through the REST API, with the workflow's token.

    Every failure is a ``KfopsError`` that names the server, where the token came from,
    the permission the call needs when GitHub refused it, and what was left done. Reads
    and edits (GET, PATCH) are retried by the client; a POST or PUT is not, since a lost
    answer may hide a write: after a server error each call looks for what the first
    attempt made before trying a second time.
    """

    def __init__(self, ctx: GitHubContext, *, backoff: float = 1.0) -> None:
        self.ctx = ctx
        self.backoff = backoff
        self._identity: tuple[str | None] | None = None  # (login,) once looked up

    # -- issues -----------------------------------------------------------------------

    def sticky_issue(self, mark: str, label: str = "kfops-monitor") -> Issue | None:
        """The issue whose body starts with the hidden marker `mark`, written by our own
        identity (a Bot for the workflow token; the token's login for a personal token),
        open ones first, else the most recently updated closed one. Someone pasting the
        marker into their own issue never matches.

        Only issues labelled ``label`` are searched (all issues when it is empty)."""
        with self._session("look for the monitoring issue", "issues: read") as (client, repo):
            found = self._sticky(client, repo, mark, label)
            return _issue(found) if found is not None else None

    def open_issue(
        self, mark: str, title: str, body: str, labels: tuple[str, ...] = ("kfops-monitor",)
    ) -> Issue:
        """Create the issue, its body the marker, a line break, then ``body``.

        A server error on the POST may hide an issue GitHub did create: the issue is
        looked for again before it is posted a second time."""
        text = mark + "\n" + body
        label = labels[0] if labels else ""
        with self._session("open the monitoring issue", "issues: write") as (client, repo):

            def lookup() -> Any:
                found = self._sticky(client, repo, mark, label)
                return found if found is not None and found.state == "open" else None

            created = self._post(
                lambda: repo.create_issue(title=title, body=text, labels=list(labels)), lookup
            )
            return _issue(created)

    def update_issue(
        self,
        number: int,
        mark: str,
        *,
        title: str | None = None,
        body: str | None = None,
        state: str | None = None,
        state_reason: str | None = None,
    ) -> Issue:
        """Edit issue ``number`` (PATCH); ``body`` gets the marker at its start unless it
        has it already. ``state="closed"`` closes it (``state_reason`` "completed" unless
        given), ``state="open"`` reopens it."""
        changes: dict[str, str] = {}
        if title is not None:
            changes["title"] = title
        if body is not None:
            changes["body"] = body if body.startswith(mark) else mark + "\n" + body
        if state is not None:
            changes["state"] = state
        if state == "closed":
            changes["state_reason"] = state_reason or "completed"
        elif state_reason is not None:
            changes["state_reason"] = state_reason
        doing = f"update issue #{number}"
        with self._session(doing, "issues: write") as (_, repo):
            issue = repo.get_issue(number)  # lazy: no GET before the PATCH
            issue.edit(**changes)
            return _issue(issue)

    def comment(self, number: int, body: str) -> str:
        """Comment on issue (or pull request) ``number``; returns the comment's html_url.

        After a server error, the comment is taken as stored when the issue has gained
        comments since and the newest is ours with this very body."""
        with self._session(f"comment on issue #{number}", "issues: write") as (client, repo):
            issue = repo.get_issue(number)
            before = issue.comments  # completes the lazy issue: one GET
            login = self._login(client)

            def lookup() -> Any:
                if repo.get_issue(number).comments <= before:
                    return None
                comments = list(issue.get_comments())
                last = comments[-1] if comments else None
                if last is not None and _ours(last.user, login) and last.body == body:
                    return last
                return None

            url: str = self._post(lambda: issue.create_comment(body), lookup).html_url
            return url

    def _sticky(self, client: Any, repo: Any, mark: str, label: str) -> Any:
        from github.GithubObject import NotSet

        login = self._login(client)
        closed = None
        for issue in repo.get_issues(
            state="all", labels=[label] if label else NotSet, sort="updated", direction="desc"
        ):
            if issue.pull_request is not None:  # GitHub lists pull requests as issues too
                continue
            if not (issue.body or "").startswith(mark) or not _ours(issue.user, login):
                continue
            if issue.state == "open":
                return issue
            closed = closed or issue
        return closed

    # -- workflows --------------------------------------------------------------------

    def dispatch(self, workflow: str, ref: str, inputs: dict[str, str]) -> None:
        """Start ``workflow`` (a file name such as kfops-retrain.yml, or its id) on ``ref``
        with ``inputs``: POST .../actions/workflows/{workflow}/dispatches, 204 on success.

        Never sent twice: after a server error nobody can tell whether a run started, and
        the error says so (the caller's idempotency input lets the run find out)."""
        from urllib.parse import quote

        from github import GithubException

        doing = f"start the workflow {workflow} on {ref}"
        with self._session(doing, "actions: write", "no run was started") as (_, repo):
            url = f"{repo.url}/actions/workflows/{quote(workflow, safe='')}/dispatches"
            payload = {"ref": ref, "inputs": inputs}
            try:
                self._post(
                    lambda: repo.requester.requestJsonAndCheck("POST", url, input=payload), None
                )
            except GithubException as exc:
                raise self._dispatch_error(exc, workflow, doing) from None

    def _dispatch_error(self, exc: Any, workflow: str, doing: str) -> Exception:
        message = _message(exc.data)
        where = f"the GitHub API at {self.ctx.api_url}"
        if exc.status == 404:
            return KfopsError(
                f"could not {doing}: {where} knows no workflow `{workflow}` in"
                f" {self.ctx.repository} (404 {message}); no run was started",
                f"commit .github/workflows/{workflow} to the default branch (`kfops init"
                " --github` writes it); GitHub dispatches only workflows it has seen there",
            )
        if exc.status == 422:
            trigger = "workflow_dispatch" in message
            return KfopsError(
                f"could not {doing}: {where} refused the dispatch (422 {message});"
                " no run was started",
                "add a `workflow_dispatch:` trigger to the workflow's `on:`"
                if trigger
                else "declare each input under `on: workflow_dispatch: inputs:` in the"
                " workflow, and check that the ref is a branch or tag that exists",
            )
        if exc.status >= 500:
            return KfopsError(
                f"could not {doing}: {where} answered {exc.status} ({message}); GitHub may"
                " or may not have started a run, and the dispatch was not sent again",
                "look at the workflow's runs on GitHub; the run's idempotency input lets a"
                " second dispatch find the first",
            )
        return self._error(exc, doing, "actions: write", "no run was started")

    # -- pull requests ----------------------------------------------------------------

    def find_pull(self, branch: str, state: str = "all") -> Pull | None:
        """The pull request from ``branch`` of this repository (head owner:branch): the open
        one if there is one, else the most recent."""
        doing = f"look for the pull request from {branch}"
        with self._session(doing, "pull-requests: read") as (_, repo):
            found = self._find_pull(repo, branch, state)
            return _pull(found) if found is not None else None

    def open_pull(
        self,
        *,
        base: str,
        branch: str,
        title: str,
        body: str,
        files: dict[str, str],
        message: str,
    ) -> Pull:
        """Propose ``files`` (path -> new text) as a pull request from ``branch`` into
        ``base``, idempotently: the branch is created at the head of ``base`` unless it
        exists, each file is committed with the Contents API unless it already holds that
        text, and the pull request is opened unless one is open for the branch already.
        Re-running with the same arguments makes no second branch, commit or pull request.
        """
        from github import GithubException

        with self._session(f"propose {branch} for {base}", "contents: write") as (_, repo):
            left = "nothing was changed"
            with self._errors(f"read the branch {base}", "contents: read", left):
                try:
                    base_sha = repo.get_git_ref(f"heads/{base}").object.sha
                except GithubException as exc:
                    if exc.status != 404:
                        raise
                    raise KfopsError(
                        f"could not propose {branch}: there is no branch {base} in"
                        f" {self.ctx.repository} at {self.ctx.api_url}; nothing was changed",
                        "check the base branch's name (the environment's branch)",
                    ) from None
            with self._errors(f"create the branch {branch}", "contents: write", left):
                created = self._branch(repo, branch, base_sha)
            made = f"branch {branch} " + (f"was created from {base}" if created else "exists")
            committed: list[str] = []
            for path, text in files.items():
                state = made + (
                    f" and holds the commit of {_names(committed)}" if committed else ""
                )
                left = f"{state}; {path} was not committed; no pull request was opened"
                with self._errors(f"commit {path} to {branch}", "contents: write", left):
                    if self._put_file(repo, branch, path, text, message):
                        committed.append(path)
            if committed:
                left = f"{made} and holds the commit of {_names(committed)}"
            else:
                left = f"{made} and already holds these files"
            left += "; no pull request was opened"
            with self._errors(f"open the pull request from {branch}", "pull-requests: write", left):
                found = self._find_pull(repo, branch, "open")
                if found is not None:
                    return _pull(found)
                try:
                    pull = self._post(
                        lambda: repo.create_pull(base=base, head=branch, title=title, body=body),
                        lambda: self._find_pull(repo, branch, "open"),
                    )
                except GithubException as exc:
                    if exc.status != 422 or "already exists" not in _message(exc.data):
                        raise
                    pull = self._find_pull(repo, branch, "open")  # opened meanwhile
                    if pull is None:
                        raise
                return _pull(pull)

    def _find_pull(self, repo: Any, branch: str, state: str) -> Any:
        owner = self.ctx.repository.split("/", 1)[0]
        latest = None
        for pull in repo.get_pulls(
            state=state, head=f"{owner}:{branch}", sort="created", direction="desc"
        ):
            if pull.state == "open":
                return pull
            latest = latest or pull
        return latest

    def _branch(self, repo: Any, branch: str, sha: str) -> bool:
        """Make ``branch`` at ``sha`` unless it exists; True if this call created it."""
        from github import GithubException

        def exists() -> Any:
            try:
                # lazy: reading an attribute sends the GET
                return repo.get_git_ref(f"heads/{branch}").object.sha
            except GithubException as exc:
                if exc.status == 404:
                    return None
                raise

        if exists() is not None:
            return False
        try:
            self._post(lambda: repo.create_git_ref(f"refs/heads/{branch}", sha), exists)
        except GithubException as exc:
            # made meanwhile (a concurrent run): reuse it as if it had been there
            if exc.status != 422 or "already exists" not in _message(exc.data):
                raise
            return False
        return True

    def _put_file(self, repo: Any, branch: str, path: str, text: str, message: str) -> bool:
        """Commit ``text`` at ``path`` on ``branch`` unless it holds that text already;
        True if a commit was made. A PUT whose answer was lost is checked by reading the
        file again, never blindly repeated."""
        from github import GithubException

        def current() -> Any:
            try:
                found = repo.get_contents(path, ref=branch)
            except GithubException as exc:
                if exc.status == 404:
                    return None
                raise
            if isinstance(found, list):
                raise KfopsError(
                    f"could not commit {path} to {branch}: it is a directory there",
                    "give the path of a file",
                )
            return found

        def holds(found: Any) -> bool:
            return found is not None and bytes(found.decoded_content) == text.encode("utf-8")

        found = current()
        if holds(found):
            return False
        for attempt in range(2):
            try:
                if found is None:
                    repo.create_file(path, message, text, branch=branch)
                else:
                    repo.update_file(path, message, text, found.sha, branch=branch)
                return True
            except GithubException as exc:
                # 5xx: perhaps written; 409/422: the file changed under us (or was written
                # by the lost attempt). Read it again to know which.
                if exc.status < 500 and exc.status not in (409, 422):
                    raise
                found = current()
                if holds(found):
                    return True
                if attempt == 1 or exc.status < 500:
                    raise
        raise AssertionError("unreachable")

    # -- plumbing ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _session(
        self, doing: str, permission: str, left: str = "nothing was changed"
    ) -> Iterator[tuple[Any, Any]]:
        """A client and the repository (lazy: no request yet), with every failure turned
        into a ``KfopsError``."""
        if not self.ctx.token:
            raise KfopsError(
                f"could not {doing}: no GitHub token",
                "pass `github-token` to the action (the default is the workflow's token),"
                f" with `permissions: {permission}` on the job",
            )
        # PATCH is idempotent; POST and PUT are not: see _post and _put_file.
        with (
            _client(self.ctx.token, self.ctx.api_url, self.backoff, {"GET", "PATCH"}) as client,
            self._errors(doing, permission, left),
        ):
            yield client, client.get_repo(self.ctx.repository, lazy=True)

    @contextlib.contextmanager
    def _errors(self, doing: str, permission: str, left: str) -> Iterator[None]:
        import requests
        import urllib3
        from github import GithubException

        try:
            yield
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise KfopsError(
                f"could not {doing}: the GitHub API at {self.ctx.api_url} did not answer"
                f" ({type(exc).__name__}); {left}",
                "check GITHUB_API_URL and that the runner can reach it",
            ) from None
        except GithubException as exc:
            raise self._error(exc, doing, permission, left) from None

    def _error(self, exc: Any, doing: str, permission: str, left: str) -> KfopsError:
        status: int = exc.status
        message = _message(exc.data)
        where = f"the GitHub API at {self.ctx.api_url}"
        if status == 401:
            return KfopsError(
                f"could not {doing}: {where} rejected {CREDENTIAL} (401 Bad credentials); {left}",
                "pass a valid token as `github-token`, or leave the input out to use the"
                f" workflow's own token with `permissions: {permission}`",
            )
        if _rate_limited(exc):
            return KfopsError(
                f"could not {doing}: {where} rate-limited {CREDENTIAL} ({status} {message});"
                f" {left}",
                "run again after the limit resets, or less often",
            )
        if status == 403 and "not permitted to create or approve pull requests" in message:
            return KfopsError(
                f"could not {doing}: {where} does not let GitHub Actions open pull requests"
                f" (403 {message}); {left}",
                "allow it in the repository's Settings > Actions > General > Workflow"
                " permissions (`Allow GitHub Actions to create and approve pull requests`), or"
                " pass a personal token with `pull-requests: write` as `github-token`",
            )
        if status == 403:
            return KfopsError(
                f"could not {doing}: {where} refused {CREDENTIAL} (403 {message}): it needs"
                f" `{permission}`; {left}",
                f"add `{permission}` to the `permissions:` of the job that runs kfops (a"
                " personal token needs the same permission on the repository)",
            )
        if status == 404:
            return KfopsError(
                f"could not {doing}: {where} answered 404 ({message}) for"
                f" {self.ctx.repository}; {left}",
                f"check GITHUB_REPOSITORY and that {CREDENTIAL} can see the repository",
            )
        return KfopsError(
            f"could not {doing}: {where} answered {status} ({message})"
            + (" after retries" if status >= 500 else "")
            + f"; {left}",
            "run again; if it keeps failing, see https://www.githubstatus.com"
            if status >= 500
            else "",
        )

    def _login(self, client: Any) -> str | None:
        if self._identity is None:
            self._identity = (_own_login(client),)
        return self._identity[0]

    def _post(self, post: Callable[[], _T], lookup: Callable[[], _T | None] | None) -> _T:
        """A write that is not retried automatically: after a rate limit (nothing was
        done) wait and send it again; after a server error ask ``lookup`` for what the lost
        attempt may have made, and send it a second time only when nothing was."""
        from github import GithubException

        for attempt in range(3):
            try:
                return post()
            except GithubException as exc:
                if _rate_limited(exc) and attempt < 2:
                    retry_after = (exc.headers or {}).get("retry-after", "")
                    wait = float(retry_after) if retry_after.isdigit() else 2**attempt
                    time.sleep(min(wait, 60) * self.backoff)
                    continue
                if exc.status < 500 or lookup is None:
                    raise
                break
        assert lookup is not None
        found = lookup()
        return found if found is not None else post()


def _names(paths: list[str]) -> str:
    return ", ".join(paths)


def _ours(user: Any, login: str | None) -> bool:
    return bool(user.login == login if login else user.type == "Bot")


def _rate_limited(exc: Any) -> bool:
    return bool(
        exc.status == 429 or (exc.status == 403 and "rate limit" in _message(exc.data).lower())
    )


def _message(data: Any) -> str:
    """GitHub's error message, with the messages of its ``errors`` (a 422's details)."""
    if not isinstance(data, dict):
        return str(data or "")
    message = str(data.get("message", ""))
    details = [
        str(e.get("message") or f"{e.get('field', '')} {e.get('code', '')}".strip())
        for e in data.get("errors") or []
        if isinstance(e, dict)
    ]
    return ": ".join([message, "; ".join(details)]) if details else message


def _issue(issue: Any) -> Issue:
    return Issue(issue.number, issue.html_url, issue.state, issue.title, issue.body or "")


def _pull(pull: Any) -> Pull:
    return Pull(pull.number, pull.html_url, pull.head.ref, pull.state)
