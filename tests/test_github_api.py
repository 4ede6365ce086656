"""The GitHub API test server, driven by the real PyGithub client.

Every request and response here is validated against GitHub's own OpenAPI description
(see tests/github_api.py); the ``github_api`` fixture fails a test whose traffic did not
validate. These tests pin down the server and the PyGithub configuration kfops uses.
"""

from __future__ import annotations

import base64
import json
import subprocess
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
    DOCS,
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


# -- issues -----------------------------------------------------------------------------------


def _numbers(body: Any) -> list[int]:
    return [item["number"] for item in body]


def test_the_issue_list_holds_pull_requests_and_filters(github_api: GitHubTestServer) -> None:
    bug = github_api.add_issue("acme", "models", title="a bug", labels=("bug",))
    pull = github_api.add_pull_request("acme", "models", author="alice")
    done = github_api.add_issue(
        "acme",
        "models",
        body=f"{MARKER}\nbreach",
        author=BOT_LOGIN,
        author_type="Bot",
        labels=("kfops-monitor", "bug"),
        state="closed",
    )
    path = "/repos/acme/models/issues"
    status, _, body = call(github_api, "GET", path)
    assert status == 200
    assert _numbers(body) == [pull, bug]  # open ones, newest first
    assert "pull_request" in body[0] and "pull_request" not in body[1]
    assert body[0]["pull_request"]["url"] == f"{github_api.url}/repos/acme/models/pulls/{pull}"

    def numbers(query: str) -> list[int]:
        status, _, body = call(github_api, "GET", f"{path}?{query}")
        assert status == 200, body
        return _numbers(body)

    assert numbers("state=closed") == [done]
    assert numbers("state=all&labels=kfops-monitor") == [done]
    assert numbers("state=all&labels=bug") == [done, bug]
    assert numbers("state=all&labels=bug,kfops-monitor") == [done]
    assert numbers("state=all&labels=KFOPS-MONITOR") == [done]  # names match in any case
    assert numbers(f"state=all&creator={BOT_LOGIN}") == [done]
    assert numbers("state=all&direction=asc") == [bug, pull, done]
    github_api.add_comment("acme", "models", bug, "bump")
    assert numbers("state=all&sort=updated") == [bug, done, pull]
    assert numbers("state=all&sort=comments&direction=desc")[0] == bug

    base = f"{github_api.url}{path}"
    status, headers, body = call(github_api, "GET", f"{path}?state=all&per_page=2")
    assert len(body) == 2
    assert headers["Link"] == (
        f'<{base}?state=all&per_page=2&page=2>; rel="next", '
        f'<{base}?state=all&per_page=2&page=2>; rel="last"'
    )
    with client(github_api, per_page=2) as gh:
        listed = list(gh.get_repo("acme/models").get_issues(state="all", direction="asc"))
    assert [(i.number, i.pull_request is not None) for i in listed] == [
        (bug, False),
        (pull, True),
        (done, False),
    ]
    assert [label.name for label in listed[2].labels] == ["kfops-monitor", "bug"]


def test_create_close_and_reopen_an_issue(github_api: GitHubTestServer) -> None:
    github_api.add_repo("acme", "models")
    with client(github_api) as gh:
        repo = gh.get_repo("acme/models")
        issue = repo.create_issue(
            title="drift", body=f"{MARKER}\npsi 0.3", labels=["kfops-monitor", "drift"]
        )
        assert (issue.number, issue.state, issue.user.type) == (1, "open", "Bot")
        assert [label.name for label in issue.labels] == ["kfops-monitor", "drift"]
        assert issue.closed_at is None
        label_id = issue.labels[0].id

        issue.edit(state="closed", state_reason="completed")
        assert (issue.state, issue.state_reason) == ("closed", "completed")
        assert issue.closed_at is not None
        issue.edit(state="open")
        assert (issue.state, issue.state_reason, issue.closed_at) == ("open", "reopened", None)
        issue.edit(state="closed", state_reason="not_planned", labels=[], title="stale")
        assert (issue.state_reason, issue.labels, issue.title) == ("not_planned", [], "stale")
        issue.edit(state_reason="completed")  # ignored unless the state changes
        assert issue.state_reason == "not_planned"

        # a second issue reuses the labels created on the fly
        again = repo.create_issue(title="drift again", labels=["KFOPS-monitor"])
        assert [label.name for label in again.labels] == ["kfops-monitor"]
        assert again.labels[0].id == label_id
        comment = again.create_comment("more")  # issue comments work on issues too
        assert comment.html_url.endswith(f"/acme/models/issues/2#issuecomment-{comment.id}")
    writes = [(m, p, s) for m, p, s in github_api.requests if m != "GET"]
    assert writes[0] == ("POST", "/repos/acme/models/issues", 201)
    assert [s for _, _, s in writes] == [201, 200, 200, 200, 200, 201, 201]


@pytest.mark.parametrize(
    ("method", "suffix", "payload", "expected"),
    [
        ("PATCH", "/issues/1", {"state": "shut"}, "'shut' is not one of ['open', 'closed']"),
        ("POST", "/issues", {"body": "no title"}, "'title' is a required property"),
        ("GET", "/issues?state=any", None, "state"),
        ("PUT", "/contents/a/b.txt", {"message": "m"}, "'content' is a required property"),
        ("POST", "/git/refs", {"ref": "refs/heads/x"}, "'sha' is a required property"),
        ("POST", "/actions/workflows/ci.yml/dispatches", {"inputs": {}}, "'ref' is a required"),
    ],
)
def test_invalid_requests_to_new_routes_are_caught(
    github_api: GitHubTestServer, method: str, suffix: str, payload: Any, expected: str
) -> None:
    github_api.add_issue("acme", "models")
    status, _, body = call(github_api, method, f"/repos/acme/models{suffix}", payload)
    assert status == 422
    assert body["message"].startswith("Invalid request.")
    assert len(github_api.validation_errors) == 1
    assert expected in github_api.validation_errors[0]
    github_api.validation_errors.clear()


# -- workflow dispatches ----------------------------------------------------------------------

DISPATCH = "/repos/acme/models/actions/workflows/{}/dispatches"


def test_workflow_dispatch(github_api: GitHubTestServer) -> None:
    workflow = github_api.add_workflow(
        "acme", "models", "kfops-retrain.yml", inputs={"env": True, "key": False}
    )
    github_api.add_workflow("acme", "models", "ci.yml", dispatchable=False)

    def dispatch(name: object, payload: dict[str, Any]) -> tuple[int, Any]:
        status, _, body = call(github_api, "POST", DISPATCH.format(name), payload)
        return status, body

    assert dispatch("kfops-retrain.yml", {"ref": "main", "inputs": {"env": "prod"}}) == (
        204,
        None,
    )
    assert (
        dispatch(workflow, {"ref": "refs/heads/main", "inputs": {"env": "a", "key": "k"}})[0] == 204
    )
    status, body = dispatch(
        "kfops-retrain.yml", {"ref": "main", "inputs": {"env": "b"}, "return_run_details": True}
    )
    assert status == 200
    assert (
        body["html_url"] == f"{github_api.url}/acme/models/actions/runs/{body['workflow_run_id']}"
    )
    assert github_api.dispatches("acme", "models") == [
        {
            "workflow": "kfops-retrain.yml",
            "ref": "main",
            "inputs": {"env": "prod"},
            "actor": BOT_LOGIN,
        },
        {
            "workflow": "kfops-retrain.yml",
            "ref": "main",
            "inputs": {"env": "a", "key": "k"},
            "actor": BOT_LOGIN,
        },
        {
            "workflow": "kfops-retrain.yml",
            "ref": "main",
            "inputs": {"env": "b"},
            "actor": BOT_LOGIN,
        },
    ]

    refusals = [
        ("missing.yml", {"ref": "main"}, 404, "Not Found"),
        ("ci.yml", {"ref": "main"}, 422, "Workflow does not have 'workflow_dispatch' trigger"),
        (
            "kfops-retrain.yml",
            {"ref": "nope", "inputs": {"env": "x"}},
            422,
            "No ref found for: nope",
        ),
        (
            "kfops-retrain.yml",
            {"ref": "main", "inputs": {"env": "x", "other": "y"}},
            422,
            'Unexpected inputs provided: ["other"]',
        ),
        (
            "kfops-retrain.yml",
            {"ref": "main", "inputs": {}},
            422,
            "Required input 'env' not provided",
        ),
    ]
    for name, payload, expected_status, message in refusals:
        assert dispatch(name, payload)[0] == expected_status
        assert dispatch(name, payload)[1]["message"] == message
    assert len(github_api.dispatches("acme", "models")) == 3


# -- git refs and contents --------------------------------------------------------------------


def _git_blob_sha(text: str) -> str:
    done = subprocess.run(
        ["git", "hash-object", "--stdin"], input=text.encode(), capture_output=True, check=True
    )
    return done.stdout.decode().strip()


def test_refs(github_api: GitHubTestServer) -> None:
    github_api.add_repo("acme", "models")
    status, _, main = call(github_api, "GET", "/repos/acme/models/git/ref/heads/main")
    assert status == 200
    assert main["ref"] == "refs/heads/main" and main["object"]["type"] == "commit"
    sha = main["object"]["sha"]
    assert call(github_api, "GET", "/repos/acme/models/git/ref/heads/kfops/x")[0] == 404

    create = {"ref": "refs/heads/kfops/retrain/prod", "sha": sha}
    status, headers, made = call(github_api, "POST", "/repos/acme/models/git/refs", create)
    assert status == 201
    assert headers["Location"] == made["url"]
    status, _, got = call(github_api, "GET", "/repos/acme/models/git/ref/heads/kfops/retrain/prod")
    assert (status, got["object"]["sha"]) == (200, sha)
    for payload, message in [
        (create, "Reference already exists"),
        ({"ref": "refs/heads/other", "sha": "f" * 40}, "Object does not exist"),
        ({"ref": "other", "sha": sha}, "other is not a valid ref name."),
    ]:
        status, _, body = call(github_api, "POST", "/repos/acme/models/git/refs", payload)
        assert (status, body["message"]) == (422, message)

    with client(github_api) as gh:
        repo = gh.get_repo("acme/models")
        ref = repo.create_git_ref("refs/heads/feature", sha)
        assert ref.object.sha == sha
        assert repo.get_git_ref("heads/kfops/retrain/prod").object.sha == sha


def test_contents(github_api: GitHubTestServer) -> None:
    text = "model: v1\n" + "x" * 100 + "\n"
    commit = github_api.add_file("acme", "models", "main", "deploy/prod.yaml", text)
    path = "/repos/acme/models/contents/deploy/prod.yaml"
    status, _, got = call(github_api, "GET", path)
    assert status == 200
    assert got["sha"] == _git_blob_sha(text)  # git's own blob name
    assert got["content"].count("\n") == 3  # base64 in lines of 60, as GitHub sends it
    assert base64.b64decode(got["content"]).decode() == text
    assert call(github_api, "GET", f"{path}?ref={commit}")[2]["sha"] == got["sha"]
    assert (
        call(github_api, "GET", f"{path}?ref=nope")[2]["message"]
        == "No commit found for the ref nope"
    )
    assert call(github_api, "GET", "/repos/acme/models/contents/missing.yaml")[0] == 404

    def put(payload: dict[str, Any], target: str = path) -> tuple[int, Any]:
        status, _, body = call(github_api, "PUT", target, payload)
        return status, body

    new = base64.b64encode(b"model: v2\n").decode()
    assert put({"message": "m", "content": new}) == (
        422,
        {
            "message": 'Invalid request.\n\n"sha" wasn\'t supplied.',
            "documentation_url": f"{DOCS}/repos/contents#create-or-update-file-contents",
            "status": "422",
        },
    )
    status, body = put({"message": "m", "content": new, "sha": "0" * 40})
    assert (status, body["message"]) == (409, f"deploy/prod.yaml does not match {'0' * 40}")
    status, body = put({"message": "m", "content": new, "branch": "nope"})
    assert (status, body["message"]) == (404, "Branch nope not found")
    status, body = put({"message": "m", "content": "not base64!", "sha": got["sha"]})
    assert (status, body["message"]) == (422, "content is not valid Base64")
    status, body = put({"message": "bump", "content": new, "sha": got["sha"]})
    assert status == 200
    assert body["commit"]["parents"][0]["sha"] == commit
    assert body["content"]["sha"] == _git_blob_sha("model: v2\n")
    status, body = put(
        {"message": "add", "content": new}, "/repos/acme/models/contents/a/b%20c.txt"
    )
    assert status == 201
    assert body["content"]["path"] == "a/b c.txt"
    assert github_api.file_at("acme", "models", "main", "a/b c.txt") == "model: v2\n"
    assert github_api.commits("acme", "models", "main") == [
        "add",
        "bump",
        "Add deploy/prod.yaml",
        "Initial commit",
    ]

    with client(github_api) as gh:
        repo = gh.get_repo("acme/models")
        repo.create_git_ref("refs/heads/kfops/retrain", commit)
        file = repo.get_contents("deploy/prod.yaml", ref="kfops/retrain")
        assert not isinstance(file, list)
        assert file.decoded_content == text.encode()
        repo.update_file(
            "deploy/prod.yaml", "retrain", "model: v3\n", file.sha, branch="kfops/retrain"
        )
        repo.create_file("deploy/new.yaml", "new", "n: 1\n", branch="kfops/retrain")
    assert (
        github_api.file_at("acme", "models", "kfops/retrain", "deploy/prod.yaml") == "model: v3\n"
    )
    assert github_api.file_at("acme", "models", "main", "deploy/prod.yaml") == "model: v2\n"
    assert github_api.file_at("acme", "models", "main", "deploy/new.yaml") is None
    assert github_api.commits("acme", "models", "kfops/retrain")[:2] == ["new", "retrain"]


def test_a_failed_get_of_contents_is_retried(github_api: GitHubTestServer) -> None:
    github_api.add_file("acme", "models", "main", "deploy/prod.yaml", "a\n")
    github_api.fail_next("GET", r"/repos/acme/models/contents/.+", 503)
    with client(github_api, retry=RETRY) as gh:
        file = gh.get_repo("acme/models").get_contents("deploy/prod.yaml")
    assert not isinstance(file, list) and file.decoded_content == b"a\n"
    assert [s for _, p, s in github_api.requests if "/contents/" in p] == [503, 200]


# -- pull requests ----------------------------------------------------------------------------


def test_pull_requests(github_api: GitHubTestServer) -> None:
    github_api.add_file("acme", "models", "kfops/retrain/prod", "deploy/prod.yaml", "v2\n")
    with client(github_api) as gh:
        repo = gh.get_repo("acme/models")
        pull = repo.create_pull(base="main", head="kfops/retrain/prod", title="retrain", body="f1")
        assert (pull.number, pull.state, pull.head.ref, pull.base.ref) == (
            1,
            "open",
            "kfops/retrain/prod",
            "main",
        )
        assert pull.head.sha == github_api.branch_head("acme", "models", "kfops/retrain/prod")
        assert [p.number for p in repo.get_pulls(head="acme:kfops/retrain/prod")] == [1]
        assert list(repo.get_pulls(head="kfops/retrain/prod")) == []  # GitHub wants owner:
        assert list(repo.get_pulls(base="release")) == []
        with pytest.raises(GithubException) as raised:
            repo.create_pull(base="main", head="acme:kfops/retrain/prod", title="again")
        assert raised.value.status == 422
        assert raised.value.data["errors"][0]["message"] == (
            "A pull request already exists for acme:kfops/retrain/prod."
        )
        github_api.close_pull("acme", "models", 1, merged=True)
        assert list(repo.get_pulls()) == []
        [closed] = repo.get_pulls(state="closed")
        assert (closed.state, closed.merged) == ("closed", True)
        assert repo.get_pull(1).merged_at is not None
        again = repo.create_pull(base="main", head="kfops/retrain/prod", title="again")
        assert again.number == 2

    for payload, error in [
        ({"title": "t", "head": "kfops/retrain/prod", "base": "nope"}, {"field": "base"}),
        ({"title": "t", "head": "nope", "base": "main"}, {"field": "head"}),
        (
            {"title": "t", "head": "main", "base": "main"},
            {"message": "No commits between main and main"},
        ),
    ]:
        status, _, body = call(github_api, "POST", "/repos/acme/models/pulls", payload)
        assert status == 422 and body["message"] == "Validation Failed"
        assert error.items() <= body["errors"][0].items()
    assert [p["number"] for p in github_api.pulls("acme", "models")] == [1, 2]


# -- permissions and identities ---------------------------------------------------------------


def test_token_permissions_answer_403_as_github_does(
    github_api: GitHubTestServer, pull: int
) -> None:
    github_api.add_workflow("acme", "models", "retrain.yml")
    github_api.token_permissions = {"issues": "read", "pull-requests": "write"}
    status, _, _ = call(github_api, "GET", "/repos/acme/models/issues")
    assert status == 200
    status, headers, body = call(github_api, "POST", "/repos/acme/models/issues", {"title": "t"})
    assert (status, body["message"]) == (403, "Resource not accessible by integration")
    assert headers["X-Accepted-GitHub-Permissions"] == "issues=write"
    # a pull request's conversation takes either permission
    assert (
        call(github_api, "POST", f"/repos/acme/models/issues/{pull}/comments", {"body": "x"})[0]
        == 201
    )
    status, headers, _ = call(github_api, "POST", DISPATCH.format("retrain.yml"), {"ref": "main"})
    assert (status, headers["X-Accepted-GitHub-Permissions"]) == (403, "actions=write")
    status, headers, _ = call(github_api, "GET", "/repos/acme/models/contents/x")
    assert (status, headers["X-Accepted-GitHub-Permissions"]) == (403, "contents=read")
    github_api.token_permissions = {"contents": "read"}
    assert call(github_api, "GET", "/repos/acme/models/git/ref/heads/main")[0] == 200
    payload = {"ref": "refs/heads/x", "sha": "0" * 40}
    assert call(github_api, "POST", "/repos/acme/models/git/refs", payload)[0] == 403
    assert call(github_api, "GET", "/repos/acme/models/pulls")[0] == 403
    assert github_api.issues("acme", "models") == []


def test_a_personal_token_is_a_user(github_api: GitHubTestServer, pull: int) -> None:
    token = "ghp_aliceToken0000000000000000000000000000"
    github_api.add_token(token, "alice")
    github_api.token_permissions = {}  # the workflow token's permissions bind only it
    with client(github_api, token=token) as gh:
        assert gh.get_user().login == "alice"
        issue = gh.get_repo("acme/models").create_issue(title="by hand")
        assert (issue.user.login, issue.user.type) == ("alice", "User")
