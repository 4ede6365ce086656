"""The GitHub API test server, driven by the real PyGithub client.

Every request and response here is validated against GitHub's own OpenAPI description
(see tests/github_api.py); the ``github_api`` fixture fails a test whose traffic did not
validate. These tests pin down the server and the PyGithub configuration kfops uses.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.parse import parse_qs, urlsplit

import pytest
from github import Auth, Github, GithubException, GithubRetry
from github.GithubException import (
    BadCredentialsException,
    RateLimitExceededExceedsMaxWait,
    UnknownObjectException,
)
from urllib3.util.retry import Retry

from tests.github_api import (
    BOT_LOGIN,
    INSTALL_HINT,
    OPERATIONS,
    SPEC_PATH,
    GitHubTestServer,
    SpecMissingError,
    github_api,
    load_github_spec,
)

__all__ = ["github_api"]  # the fixture, imported for pytest

MARKER = "<!-- kfops:sticky project=demo -->"

# What kfops should use: GithubRetry's defaults leave PATCH out (urllib3's default methods
# plus GET and POST), so editing the sticky comment would not be retried; no backoff here
# (tests), a bounded wait for rate limits (a CI job should not sleep an hour).
RETRY = GithubRetry(
    total=3,
    backoff_factor=0,
    secondary_rate_wait=0,
    max_rate_limit_wait=60,
    allowed_methods=frozenset({"GET", "POST", "PATCH"}),
)
COMMENTS = r"/repos/acme/models/issues/\d+/comments"


def client(
    server: GitHubTestServer,
    *,
    token: str | None = None,
    retry: int | Retry | None = Github.default_retry,
    per_page: int = 100,
) -> Github:
    """PyGithub as kfops configures it: no client-side throttling sleeps, and retries."""
    return Github(
        auth=Auth.Token(token or server.token),
        base_url=server.url,
        per_page=per_page,
        seconds_between_requests=0,
        seconds_between_writes=0,
        retry=retry,
    )


def call(
    server: GitHubTestServer,
    method: str,
    path: str,
    payload: Any = None,
    *,
    token: str | None = None,
) -> tuple[int, dict[str, str], Any]:
    """A raw request, for what PyGithub would never send."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(f"{server.url}{path}", data=data, method=method)
    request.add_header("Authorization", f"Bearer {token or server.token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read() or "null")
    except HTTPError as error:
        with error:
            return error.code, dict(error.headers), json.loads(error.read() or "null")


@pytest.fixture
def pull(github_api: GitHubTestServer) -> int:
    return github_api.add_pull_request("acme", "models", 7, author="alice")


# -- the description itself --------------------------------------------------------------


def test_spec_is_cut_from_githubs_description() -> None:
    spec = load_github_spec()
    assert spec.source == SPEC_PATH
    assert spec.document["openapi"].startswith("3.0")
    assert spec.document["info"]["title"].startswith("GitHub's official OpenAPI spec")
    operations = {
        (method.upper(), template)
        for template, item in spec.document["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert operations == set(OPERATIONS)
    assert "issue-comment" in spec.document["components"]["schemas"]
    assert load_github_spec() is spec  # read once per session


def test_missing_spec_names_the_path_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "api.github.com.json"
    with pytest.raises(SpecMissingError) as raised:
        GitHubTestServer(spec_path=missing)
    assert str(missing) in str(raised.value)
    assert INSTALL_HINT in str(raised.value)


# -- the sticky-comment flow --------------------------------------------------------------


def test_create_list_and_edit_a_comment(github_api: GitHubTestServer, pull: int) -> None:
    human = github_api.add_comment("acme", "models", pull, f"quoting {MARKER} here", author="alice")
    with client(github_api) as gh:
        pr = gh.get_repo("acme/models").get_pull(pull)
        created = pr.create_issue_comment(f"{MARKER}\nfirst run")
        assert created.user.login == BOT_LOGIN
        assert created.user.type == "Bot"

        listed = list(pr.get_issue_comments())
        assert [(c.user.login, c.user.type) for c in listed] == [
            ("alice", "User"),
            (BOT_LOGIN, "Bot"),
        ]
        mine = [c for c in listed if c.user.type == "Bot" and c.body.startswith(MARKER)]
        assert [c.id for c in mine] == [created.id]

        mine[0].edit(f"{MARKER}\nsecond run")
        assert mine[0].body == f"{MARKER}\nsecond run"

    stored = github_api.comments("acme", "models", pull)
    assert [c["id"] for c in stored] == [human["id"], created.id]
    assert human["id"] < created.id  # ids only grow
    assert stored[0]["body"] == f"quoting {MARKER} here"
    assert stored[1]["body"] == f"{MARKER}\nsecond run"
    assert [(m, p.split("?")[0], s) for m, p, s in github_api.requests] == [
        ("GET", "/repos/acme/models", 200),
        ("GET", f"/repos/acme/models/pulls/{pull}", 200),
        ("POST", f"/repos/acme/models/issues/{pull}/comments", 201),
        ("GET", f"/repos/acme/models/issues/{pull}/comments", 200),
        ("PATCH", f"/repos/acme/models/issues/comments/{created.id}", 200),
    ]


def test_lists_150_comments_in_pages_of_100(github_api: GitHubTestServer, pull: int) -> None:
    for i in range(150):
        github_api.add_comment("acme", "models", pull, f"comment {i}")
    with client(github_api, per_page=100) as gh:
        comments = gh.get_repo("acme/models").get_pull(pull).get_issue_comments()
        bodies = [c.body for c in comments]
    assert bodies == [f"comment {i}" for i in range(150)]
    pages = [
        (urlsplit(p).path, parse_qs(urlsplit(p).query))
        for m, p, _ in github_api.requests
        if "/comments" in p
    ]
    assert pages == [
        (f"/repos/acme/models/issues/{pull}/comments", {"per_page": ["100"]}),
        (f"/repos/acme/models/issues/{pull}/comments", {"per_page": ["100"], "page": ["2"]}),
    ]


def test_link_header_is_githubs(github_api: GitHubTestServer, pull: int) -> None:
    for i in range(5):
        github_api.add_comment("acme", "models", pull, f"comment {i}")
    base = f"{github_api.url}/repos/acme/models/issues/{pull}/comments"
    path = f"/repos/acme/models/issues/{pull}/comments"

    status, headers, body = call(github_api, "GET", f"{path}?per_page=2&page=2")
    assert status == 200
    assert [c["body"] for c in body] == ["comment 2", "comment 3"]
    assert headers["Link"] == (
        f'<{base}?per_page=2&page=1>; rel="prev", <{base}?per_page=2&page=3>; rel="next", '
        f'<{base}?per_page=2&page=3>; rel="last", <{base}?per_page=2&page=1>; rel="first"'
    )
    _, headers, body = call(github_api, "GET", f"{path}?per_page=100")
    assert len(body) == 5
    assert "Link" not in headers


# -- errors as GitHub answers them ---------------------------------------------------------


def test_bad_token_is_401(github_api: GitHubTestServer, pull: int) -> None:
    with (
        client(github_api, token="ghs_wrong") as gh,
        pytest.raises(BadCredentialsException) as raised,
    ):
        gh.get_repo("acme/models")
    assert raised.value.status == 401
    assert raised.value.data["message"] == "Bad credentials"

    anonymous = Github(base_url=github_api.url, seconds_between_requests=0)
    with anonymous, pytest.raises(GithubException) as raised:
        anonymous.get_repo("acme/models").get_pull(pull)
    assert raised.value.status == 401
    assert raised.value.data["message"] == "Requires authentication"


def test_read_only_token_gets_403_and_is_not_retried(github_api: GitHubTestServer) -> None:
    # A pull request from a fork: its workflow's GITHUB_TOKEN cannot write.
    pull = github_api.add_pull_request("acme", "models", author="mallory", fork_owner="mallory")
    existing = github_api.add_comment(
        "acme", "models", pull, f"{MARKER}\nold", author=BOT_LOGIN, author_type="Bot"
    )
    github_api.read_only = True
    with client(github_api) as gh:
        pr = gh.get_repo("acme/models").get_pull(pull)
        assert pr.head.repo.fork
        assert pr.head.repo.full_name == "mallory/models"
        with pytest.raises(GithubException) as created:
            pr.create_issue_comment("hello")
        comment = pr.get_issue_comments()[0]
        with pytest.raises(GithubException) as edited:
            comment.edit("new")
    for raised in (created, edited):
        assert raised.value.status == 403
        assert raised.value.data["message"] == "Resource not accessible by integration"
    assert github_api.comments("acme", "models", pull) == [existing]
    writes = [(m, s) for m, _, s in github_api.requests if m in ("POST", "PATCH")]
    assert writes == [("POST", 403), ("PATCH", 403)]


def test_missing_pull_request_is_404(github_api: GitHubTestServer, pull: int) -> None:
    with client(github_api) as gh, pytest.raises(UnknownObjectException):
        gh.get_repo("acme/models").get_pull(pull + 1)


def test_installation_token_has_no_user(github_api: GitHubTestServer) -> None:
    with client(github_api) as gh, pytest.raises(GithubException) as raised:
        _ = gh.get_user().login
    assert raised.value.status == 403


# -- validation against the description -----------------------------------------------------


@pytest.mark.parametrize(
    ("method", "suffix", "payload", "expected"),
    [
        ("POST", "/issues/7/comments", {"text": "hi"}, "'body' is a required property"),
        ("POST", "/issues/7/comments", {"body": 42}, "42 is not of type 'string'"),
        ("POST", "/issues/7/comments", None, "MissingRequiredRequestBody"),
        ("GET", "/issues/7/comments?per_page=many", None, "per_page"),
    ],
)
def test_invalid_request_is_caught(
    github_api: GitHubTestServer,
    pull: int,
    method: str,
    suffix: str,
    payload: Any,
    expected: str,
) -> None:
    status, _, body = call(github_api, method, f"/repos/acme/models{suffix}", payload)
    assert status == 422
    assert body["message"].startswith("Invalid request.")
    assert len(github_api.validation_errors) == 1
    assert expected in github_api.validation_errors[0]
    assert github_api.comments("acme", "models", pull) == []
    github_api.validation_errors.clear()  # seen: let the fixture's teardown pass


def test_invalid_response_is_caught(github_api: GitHubTestServer, pull: int) -> None:
    github_api.add_comment("acme", "models", pull, "hi", created_at="yesterday")
    status, _, body = call(github_api, "GET", f"/repos/acme/models/issues/{pull}/comments")
    assert status == 500
    assert "created_at" in body["message"]
    assert github_api.validation_errors == [
        f"response 200 to GET /repos/acme/models/issues/{pull}/comments: "
        "InvalidData: at 0/created_at: 'yesterday' is not a 'date-time'; "
        "at 0/updated_at: 'yesterday' is not a 'date-time'"
    ]
    github_api.validation_errors.clear()


def test_unimplemented_endpoint_is_recorded(github_api: GitHubTestServer, pull: int) -> None:
    status, _, _ = call(github_api, "DELETE", "/repos/acme/models/issues/comments/1")
    assert status == 404
    assert github_api.validation_errors == [
        "DELETE /repos/acme/models/issues/comments/1: not an endpoint this test server implements"
    ]
    github_api.validation_errors.clear()


# -- retries --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "retry",
    [
        Github.default_retry,  # GithubRetry(): 10 tries, no backoff, GET and POST included
        GithubRetry(total=3, backoff_factor=0),
    ],
    ids=["default", "github-retry"],
)
def test_502_then_success_is_retried(github_api: GitHubTestServer, pull: int, retry: Retry) -> None:
    github_api.fail_next("POST", COMMENTS, 502)
    with client(github_api, retry=retry) as gh:
        gh.get_repo("acme/models").get_pull(pull).create_issue_comment("hello")
    assert [s for m, _, s in github_api.requests if m == "POST"] == [502, 201]
    assert len(github_api.comments("acme", "models", pull)) == 1


def test_urllib3_retry_retries_get_only(github_api: GitHubTestServer, pull: int) -> None:
    retry = Retry(total=3, status_forcelist=[502, 503, 504], backoff_factor=0)
    github_api.fail_next("GET", COMMENTS, 503, times=2)
    github_api.fail_next("POST", COMMENTS, 502)
    with client(github_api, retry=retry) as gh:
        pr = gh.get_repo("acme/models").get_pull(pull)
        assert list(pr.get_issue_comments()) == []
        with pytest.raises(GithubException) as raised:  # POST is not in its allowed_methods
            pr.create_issue_comment("hello")
    assert raised.value.status == 502
    assert [s for m, p, s in github_api.requests if "comments" in p] == [503, 503, 200, 502]


def test_default_retry_does_not_retry_patch(github_api: GitHubTestServer, pull: int) -> None:
    comment = github_api.add_comment(
        "acme", "models", pull, "old", author=BOT_LOGIN, author_type="Bot"
    )
    github_api.fail_next("PATCH", r"/repos/acme/models/issues/comments/\d+", 502)
    with client(github_api) as gh:
        pr = gh.get_repo("acme/models").get_pull(pull)
        with pytest.raises(GithubException) as raised:
            pr.get_issue_comments()[0].edit("new")
    assert raised.value.status == 502
    assert github_api.comments("acme", "models", pull) == [comment]

    github_api.fail_next("PATCH", r"/repos/acme/models/issues/comments/\d+", 502)
    with client(github_api, retry=RETRY) as gh:
        gh.get_repo("acme/models").get_pull(pull).get_issue_comments()[0].edit("new")
    assert [s for m, _, s in github_api.requests if m == "PATCH"] == [502, 502, 200]


def test_without_retry_a_502_raises(github_api: GitHubTestServer, pull: int) -> None:
    github_api.fail_next("POST", COMMENTS, 502)
    with client(github_api, retry=None) as gh:
        pr = gh.get_repo("acme/models").get_pull(pull)
        with pytest.raises(GithubException) as raised:
            pr.create_issue_comment("hello")
    assert raised.value.status == 502
    assert github_api.comments("acme", "models", pull) == []


def test_retrying_a_post_that_did_write_duplicates_the_comment(
    github_api: GitHubTestServer, pull: int
) -> None:
    # A gateway error after GitHub stored the comment: PyGithub's default retry posts again.
    github_api.fail_next("POST", COMMENTS, 502, commit=True)
    with client(github_api) as gh:
        gh.get_repo("acme/models").get_pull(pull).create_issue_comment(f"{MARKER}\nrun")
    assert [c["body"] for c in github_api.comments("acme", "models", pull)] == [
        f"{MARKER}\nrun",
        f"{MARKER}\nrun",
    ]


def test_rate_limits_are_retried(github_api: GitHubTestServer, pull: int) -> None:
    # primary: 403 with X-RateLimit-Remaining 0, waited out until X-RateLimit-Reset (past here)
    github_api.fail_next(
        "GET",
        COMMENTS,
        403,
        headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(time.time()) - 5)},
    )
    # secondary: 429 (and 403) with Retry-After
    github_api.fail_next("POST", COMMENTS, 429, headers={"Retry-After": "0"})
    github_api.fail_next(
        "PATCH", r"/repos/acme/models/issues/comments/\d+", 403, headers={"Retry-After": "0"}
    )
    with client(github_api, retry=RETRY) as gh:
        pr = gh.get_repo("acme/models").get_pull(pull)
        assert list(pr.get_issue_comments()) == []
        pr.create_issue_comment("hello").edit("bye")
    statuses = [(m, s) for m, p, s in github_api.requests if "comments" in p]
    assert statuses == [
        ("GET", 403),
        ("GET", 200),
        ("POST", 429),
        ("POST", 201),
        ("PATCH", 403),
        ("PATCH", 200),
    ]
    assert [c["body"] for c in github_api.comments("acme", "models", pull)] == ["bye"]


def test_rate_limit_reset_beyond_max_wait_raises(github_api: GitHubTestServer, pull: int) -> None:
    reset = str(int(time.time()) + 3600)
    github_api.fail_next(
        "GET", COMMENTS, 403, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
    )
    retry = GithubRetry(total=3, backoff_factor=0, max_rate_limit_wait=60)
    with client(github_api, retry=retry) as gh:
        pr = gh.get_repo("acme/models").get_pull(pull)
        with pytest.raises(RateLimitExceededExceedsMaxWait) as raised:
            list(pr.get_issue_comments())
    assert raised.value.status == 403
    assert raised.value.wait > 3500
