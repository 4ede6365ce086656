"""The GitHub REST API (PyGithub): the one sticky pull-request comment per project, and the
deployment that records a model release.

The comment is found by a hidden marker at the very start of its body, and only among
comments written by a bot (the workflow token's identity), so a person who pastes the
marker into their own comment cannot make kfops edit or hide it.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

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
    from github import Auth, Github, GithubRetry

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
