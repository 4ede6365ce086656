"""The one sticky pull-request comment per project, through the GitHub REST API (PyGithub).

The comment is found by a hidden marker at the very start of its body, and only among
comments written by a bot (the workflow token's identity), so a person who pastes the
marker into their own comment cannot make kfops edit or hide it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from kfops.ci import GitHubContext
from kfops.errors import KfopsError

FORK_NOTICE = (
    "kfops could not comment: this workflow's token is read-only (a pull request from a"
    " fork gets no write access). The report is in the job summary. To comment on pull"
    " requests from forks, upload the report as an artifact and post it from a second"
    " workflow triggered by `workflow_run`, which runs with the base repository's token."
)


def marker(project: str) -> str:
    """The hidden marker for one project path."""
    key = hashlib.sha256(project.encode("utf-8")).hexdigest()[:16]
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
    from github import Auth, Github, GithubException, GithubRetry

    if not ctx.token:
        return Published(
            notice="no GitHub token, so no pull-request comment: pass `github-token` to the"
            " action (the default is the workflow's token)"
        )
    retry = GithubRetry(
        total=4,
        backoff_factor=backoff,
        # PATCH is idempotent; POST is not (a retried POST may post twice): see _create.
        allowed_methods=frozenset({"GET", "PATCH"}),
    )
    with Github(
        auth=Auth.Token(ctx.token),
        base_url=ctx.api_url.rstrip("/"),
        timeout=30,
        per_page=100,
        retry=retry,
        seconds_between_requests=0,
        seconds_between_writes=0,
    ) as client:
        try:
            issue = client.get_repo(ctx.repository, lazy=True).get_issue(number)
            existing = _find(issue, mark)
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


def _find(issue: Any, mark: str) -> Any:
    for comment in issue.get_comments():
        if comment.user.type == "Bot" and comment.body.startswith(mark):
            return comment
    return None


def _create(issue: Any, body: str, mark: str, error: type[Exception]) -> str:
    """Post the comment; after a server error, look again before posting a second time
    (GitHub may have stored the first one)."""
    try:
        url: str = issue.create_comment(body).html_url
        return url
    except error as exc:
        if getattr(exc, "status", 0) < 500:
            raise
    existing = _find(issue, mark)
    if existing is not None:
        existing.edit(body)
        found: str = existing.html_url
        return found
    created: str = issue.create_comment(body).html_url
    return created
