"""kfops.ci.github.Repository against the GitHub API test server, with the real PyGithub:
the sticky monitoring issue, workflow dispatches, and the retrain pull request.

Every request and response is validated against GitHub's OpenAPI description (the
``github_api`` fixture fails a test whose traffic did not validate).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import subprocess
import sys
from typing import Any

import pytest

from kfops.ci.event import GitHubContext
from kfops.ci.github import Issue, Pull, Repository
from kfops.errors import KfopsError
from tests.github_api import BOT_LOGIN, GitHubTestServer

MARK = "<!-- kfops-monitor 0123456789abcdef -->"
BRANCH = "kfops/retrain/prod-ab12"
FILES = {"deploy/prod.yaml": "model: v2\n", "deploy/metrics.json": '{"f1": 0.93}\n'}


def _ctx(server: GitHubTestServer, **changes: Any) -> GitHubContext:
    ctx = GitHubContext(
        event_name="schedule",
        event={},
        ref="refs/heads/main",
        sha="0" * 40,
        repository="acme/ml",
        api_url=server.url,
        server_url=server.url,
        run_id="42",
        summary=None,
        output=None,
        token=server.token,
    )
    return dataclasses.replace(ctx, **changes)


def _repository(server: GitHubTestServer, **changes: Any) -> Repository:
    return Repository(_ctx(server, **changes), backoff=0)


@pytest.fixture
def repo(github_api: GitHubTestServer) -> Repository:
    github_api.add_repo("acme", "ml")
    return _repository(github_api)


def _writes(server: GitHubTestServer) -> list[tuple[str, str, int]]:
    return [(m, p.split("?")[0], s) for m, p, s in server.requests if m not in ("GET",)]


# -- the sticky issue -------------------------------------------------------------------------


def test_the_sticky_issue_is_found_only_when_we_wrote_it(
    github_api: GitHubTestServer, repo: Repository
) -> None:
    # a person quoting the marker, in a labelled issue, must not be taken for ours
    github_api.add_issue(
        "acme", "ml", title="copy", body=f"{MARK}\nI copied this", labels=("kfops-monitor",)
    )
    # GitHub lists pull requests among issues: a bot's pull request is not the issue either
    pull = github_api.add_pull_request("acme", "ml", author=BOT_LOGIN)
    assert [p["number"] for p in github_api.pulls("acme", "ml")] == [pull]
    assert repo.sticky_issue(MARK) is None

    opened = repo.open_issue(MARK, "iris: drift in production", "| feature | psi |")
    assert opened == Issue(
        number=opened.number,
        url=f"{github_api.url}/acme/ml/issues/{opened.number}",
        state="open",
        title="iris: drift in production",
        body=f"{MARK}\n| feature | psi |",
    )
    assert repo.sticky_issue(MARK) == opened
    assert repo.sticky_issue("<!-- kfops-monitor other -->") is None  # another project
    stored = github_api.issues("acme", "ml")[-1]
    assert stored["user"]["login"] == BOT_LOGIN
    assert [label["name"] for label in stored["labels"]] == ["kfops-monitor"]


def test_update_close_and_reopen(github_api: GitHubTestServer, repo: Repository) -> None:
    opened = repo.open_issue(MARK, "breach", "window 1")
    updated = repo.update_issue(opened.number, MARK, title="breach (2 windows)", body="window 2")
    assert (updated.title, updated.body) == ("breach (2 windows)", f"{MARK}\nwindow 2")
    # a body that starts with the marker keeps it once
    again = repo.update_issue(opened.number, MARK, body=f"{MARK}\nwindow 3")
    assert again.body == f"{MARK}\nwindow 3"

    closed = repo.update_issue(opened.number, MARK, body="clean for 3 windows", state="closed")
    assert closed.state == "closed"
    stored = github_api.issues("acme", "ml")[-1]
    assert (stored["state"], stored["state_reason"]) == ("closed", "completed")
    assert repo.sticky_issue(MARK) == closed  # no open one: the closed one

    reopened = repo.update_issue(opened.number, MARK, state="open")
    assert reopened.state == "open"
    assert reopened.body == f"{MARK}\nclean for 3 windows"  # no body given: unchanged
    assert github_api.issues("acme", "ml")[-1]["state_reason"] == "reopened"
    assert [(m, s) for m, _, s in _writes(github_api)] == [("POST", 201)] + [("PATCH", 200)] * 4


def test_open_issues_first_then_the_most_recently_updated_closed_one(
    github_api: GitHubTestServer, repo: Repository
) -> None:
    bot = {"author": BOT_LOGIN, "author_type": "Bot", "labels": ("kfops-monitor",)}
    first = github_api.add_issue("acme", "ml", body=f"{MARK}\nfirst", state="closed", **bot)
    second = github_api.add_issue("acme", "ml", body=f"{MARK}\nsecond", state="closed", **bot)
    found = repo.sticky_issue(MARK)
    assert found is not None and found.number == second
    github_api.add_comment("acme", "ml", first, "what happened here?")  # updates `first`
    found = repo.sticky_issue(MARK)
    assert found is not None and found.number == first
    third = github_api.add_issue("acme", "ml", body=f"{MARK}\nthird", **bot)
    github_api.add_comment("acme", "ml", second, "and here?")
    found = repo.sticky_issue(MARK)
    assert found is not None and (found.number, found.state) == (third, "open")


def test_only_labelled_issues_are_searched(github_api: GitHubTestServer, repo: Repository) -> None:
    github_api.add_issue("acme", "ml", body=f"{MARK}\nx", author=BOT_LOGIN, author_type="Bot")
    assert repo.sticky_issue(MARK) is None
    found = repo.sticky_issue(MARK, label="")
    assert found is not None and found.body == f"{MARK}\nx"


def test_a_personal_token_finds_its_own_issues(
    github_api: GitHubTestServer, repo: Repository
) -> None:
    github_api.add_token("ghp_aliceToken0000000000000000000000000000", "alice")
    labels = ("kfops-monitor",)
    github_api.add_issue(
        "acme", "ml", body=f"{MARK}\nbot", author=BOT_LOGIN, author_type="Bot", labels=labels
    )
    mine = github_api.add_issue("acme", "ml", body=f"{MARK}\nalice", author="alice", labels=labels)
    as_alice = _repository(github_api, token="ghp_aliceToken0000000000000000000000000000")
    found = as_alice.sticky_issue(MARK)
    assert found is not None and found.number == mine
    created = as_alice.open_issue(MARK, "t", "b")
    assert github_api.issues("acme", "ml")[-1]["user"]["login"] == "alice"
    assert created.number == mine + 1


def test_a_create_retried_after_a_502_makes_one_issue(
    github_api: GitHubTestServer, repo: Repository
) -> None:
    # GitHub stored the issue, then the gateway failed: looking again finds it
    github_api.fail_next("POST", r"/repos/acme/ml/issues", 502, commit=True)
    opened = repo.open_issue(MARK, "breach", "window 1")
    assert [i["number"] for i in github_api.issues("acme", "ml")] == [opened.number]
    assert [(m, s) for m, _, s in _writes(github_api)] == [("POST", 502)]

    # nothing stored: it is posted a second time
    github_api.fail_next("POST", r"/repos/acme/ml/issues", 502)
    other = "<!-- kfops-monitor other -->"
    repo.open_issue(other, "breach", "window 1")
    assert [i["body"].split("\n")[0] for i in github_api.issues("acme", "ml")] == [MARK, other]
    assert [(m, s) for m, _, s in _writes(github_api)][1:] == [("POST", 502), ("POST", 201)]


def test_a_rate_limited_create_is_sent_again(
    github_api: GitHubTestServer, repo: Repository
) -> None:
    github_api.fail_next("POST", r"/repos/acme/ml/issues", 403, headers={"Retry-After": "0"})
    repo.open_issue(MARK, "breach", "window 1")
    assert len(github_api.issues("acme", "ml")) == 1
    assert [(m, s) for m, _, s in _writes(github_api)] == [("POST", 403), ("POST", 201)]


def test_comments_are_posted_once(github_api: GitHubTestServer, repo: Repository) -> None:
    opened = repo.open_issue(MARK, "breach", "window 1")
    url = repo.comment(opened.number, "window 2 breached too")
    [stored] = github_api.comments("acme", "ml", opened.number)
    assert (
        url
        == stored["html_url"]
        == f"{github_api.url}/acme/ml/issues/{opened.number}#issuecomment-{stored['id']}"
    )

    github_api.fail_next(
        "POST", rf"/repos/acme/ml/issues/{opened.number}/comments", 502, commit=True
    )
    second = repo.comment(opened.number, "window 3 breached too")
    bodies = [c["body"] for c in github_api.comments("acme", "ml", opened.number)]
    assert bodies == ["window 2 breached too", "window 3 breached too"]
    assert second == github_api.comments("acme", "ml", opened.number)[-1]["html_url"]


def test_a_comment_lost_before_it_was_stored_is_posted_again(
    github_api: GitHubTestServer, repo: Repository
) -> None:
    opened = repo.open_issue(MARK, "breach", "window 1")
    repo.comment(opened.number, "window 2 breached too")
    github_api.fail_next("POST", rf"/repos/acme/ml/issues/{opened.number}/comments", 502)
    repo.comment(opened.number, "window 2 breached too")  # the same text, a new window
    bodies = [c["body"] for c in github_api.comments("acme", "ml", opened.number)]
    assert bodies == ["window 2 breached too"] * 2


def test_an_issues_read_token_cannot_open_the_issue(
    github_api: GitHubTestServer, repo: Repository
) -> None:
    github_api.token_permissions = {"issues": "read", "contents": "read"}
    assert repo.sticky_issue(MARK) is None  # reading is allowed
    with pytest.raises(KfopsError) as raised:
        repo.open_issue(MARK, "breach", "window 1")
    assert raised.value.message == (
        f"could not open the monitoring issue: the GitHub API at {github_api.url} refused the"
        " token from the `github-token` input (GITHUB_TOKEN by default) (403 Resource not"
        " accessible by integration): it needs `issues: write`; nothing was changed"
    )
    assert "add `issues: write` to the `permissions:`" in raised.value.hint
    assert github_api.issues("acme", "ml") == []


# -- dispatch ---------------------------------------------------------------------------------


def test_dispatch_starts_the_workflow(github_api: GitHubTestServer, repo: Repository) -> None:
    github_api.add_workflow("acme", "ml", "kfops-retrain.yml", inputs={"env": True, "key": False})
    repo.dispatch("kfops-retrain.yml", "main", {"env": "prod", "key": "prod-ab12"})
    assert github_api.dispatches("acme", "ml") == [
        {
            "workflow": "kfops-retrain.yml",
            "ref": "main",
            "inputs": {"env": "prod", "key": "prod-ab12"},
            "actor": BOT_LOGIN,
        }
    ]
    assert [(m, s) for m, _, s in _writes(github_api)] == [("POST", 204)]


def test_dispatch_by_workflow_id(github_api: GitHubTestServer, repo: Repository) -> None:
    workflow = github_api.add_workflow("acme", "ml", "kfops-retrain.yml")
    repo.dispatch(str(workflow), "main", {})
    assert [d["workflow"] for d in github_api.dispatches("acme", "ml")] == ["kfops-retrain.yml"]


@pytest.mark.parametrize(
    ("setup", "inputs", "message", "hint"),
    [
        (
            {},
            {},
            "knows no workflow `kfops-retrain.yml` in acme/ml (404 Not Found); no run was started",
            "commit .github/workflows/kfops-retrain.yml to the default branch",
        ),
        (
            {"dispatchable": False},
            {},
            "refused the dispatch (422 Workflow does not have 'workflow_dispatch' trigger);"
            " no run was started",
            "add a `workflow_dispatch:` trigger",
        ),
        (
            {"dispatchable": True},
            {"envv": "prod"},
            'refused the dispatch (422 Unexpected inputs provided: ["envv"]); no run was started',
            "declare each input under `on: workflow_dispatch: inputs:`",
        ),
    ],
    ids=["unknown-workflow", "no-trigger", "unknown-input"],
)
def test_dispatch_refused(
    github_api: GitHubTestServer,
    repo: Repository,
    setup: dict[str, Any],
    inputs: dict[str, str],
    message: str,
    hint: str,
) -> None:
    if setup:
        github_api.add_workflow("acme", "ml", "kfops-retrain.yml", **setup)
    with pytest.raises(KfopsError) as raised:
        repo.dispatch("kfops-retrain.yml", "main", inputs)
    assert raised.value.message == (
        f"could not start the workflow kfops-retrain.yml on main: the GitHub API at"
        f" {github_api.url} {message}"
    )
    assert hint in raised.value.hint
    assert github_api.dispatches("acme", "ml") == []


def test_dispatch_without_actions_write(github_api: GitHubTestServer, repo: Repository) -> None:
    github_api.add_workflow("acme", "ml", "kfops-retrain.yml")
    github_api.token_permissions = {"actions": "read", "issues": "write"}
    with pytest.raises(KfopsError) as raised:
        repo.dispatch("kfops-retrain.yml", "main", {})
    assert raised.value.message == (
        f"could not start the workflow kfops-retrain.yml on main: the GitHub API at"
        f" {github_api.url} refused the token from the `github-token` input (GITHUB_TOKEN by"
        " default) (403 Resource not accessible by integration): it needs `actions: write`;"
        " no run was started"
    )
    assert "`actions: write`" in raised.value.hint
    assert github_api.dispatches("acme", "ml") == []


def test_a_dispatch_whose_answer_was_lost_is_not_sent_again(
    github_api: GitHubTestServer, repo: Repository
) -> None:
    github_api.add_workflow("acme", "ml", "kfops-retrain.yml")
    github_api.fail_next(
        "POST", r"/repos/acme/ml/actions/workflows/[^/]+/dispatches", 502, commit=True
    )
    with pytest.raises(KfopsError) as raised:
        repo.dispatch("kfops-retrain.yml", "main", {})
    assert (
        "answered 502 (Bad Gateway); GitHub may or may not have started a run"
        in raised.value.message
    )
    assert len(github_api.dispatches("acme", "ml")) == 1
    assert [(m, s) for m, _, s in _writes(github_api)] == [("POST", 502)]


def test_a_rate_limited_dispatch_is_sent_again(
    github_api: GitHubTestServer, repo: Repository
) -> None:
    github_api.add_workflow("acme", "ml", "kfops-retrain.yml")
    github_api.fail_next(
        "POST",
        r"/repos/acme/ml/actions/workflows/[^/]+/dispatches",
        429,
        headers={"Retry-After": "1"},
    )
    repo.dispatch("kfops-retrain.yml", "main", {})
    assert len(github_api.dispatches("acme", "ml")) == 1
    assert [(m, s) for m, _, s in _writes(github_api)] == [("POST", 429), ("POST", 204)]


# -- the pull request -------------------------------------------------------------------------


def _open(repo: Repository, files: dict[str, str] = FILES) -> Pull:
    return repo.open_pull(
        base="main",
        branch=BRANCH,
        title="iris: retrained model for prod",
        body="metrics: f1 0.93 (serving: 0.88)",
        files=files,
        message="kfops: retrained model for prod",
    )


def test_open_pull_end_to_end_and_again(github_api: GitHubTestServer, repo: Repository) -> None:
    github_api.add_file("acme", "ml", "main", "deploy/prod.yaml", "model: v1\n")
    pull = _open(repo)
    assert pull == Pull(
        number=pull.number,
        url=f"{github_api.url}/acme/ml/pull/{pull.number}",
        branch=BRANCH,
        state="open",
    )
    for path, text in FILES.items():
        assert github_api.file_at("acme", "ml", BRANCH, path) == text
    assert github_api.file_at("acme", "ml", "main", "deploy/prod.yaml") == "model: v1\n"
    commits = github_api.commits("acme", "ml", BRANCH)
    assert commits == ["kfops: retrained model for prod"] * 2 + [
        "Add deploy/prod.yaml",
        "Initial commit",
    ]
    [stored] = github_api.pulls("acme", "ml")
    assert (stored["head"]["ref"], stored["base"]["ref"], stored["user"]["login"]) == (
        BRANCH,
        "main",
        BOT_LOGIN,
    )
    assert stored["body"] == "metrics: f1 0.93 (serving: 0.88)"
    writes = [(m, p) for m, p, _ in _writes(github_api)]
    assert writes == [
        ("POST", "/repos/acme/ml/git/refs"),
        ("PUT", "/repos/acme/ml/contents/deploy/prod.yaml"),
        ("PUT", "/repos/acme/ml/contents/deploy/metrics.json"),
        ("POST", "/repos/acme/ml/pulls"),
    ]

    again = _open(repo)
    assert again == pull
    assert github_api.commits("acme", "ml", BRANCH) == commits
    assert len(github_api.pulls("acme", "ml")) == 1
    assert [(m, p) for m, p, _ in _writes(github_api)] == writes  # nothing written


def test_only_changed_files_are_committed(github_api: GitHubTestServer, repo: Repository) -> None:
    pull = _open(repo)
    before = github_api.commits("acme", "ml", BRANCH)
    changed = {**FILES, "deploy/metrics.json": '{"f1": 0.94}\n'}
    assert _open(repo, changed) == pull
    assert github_api.commits("acme", "ml", BRANCH) == [before[0], *before]
    puts = [p for m, p, _ in _writes(github_api) if m == "PUT"]
    assert puts[2:] == ["/repos/acme/ml/contents/deploy/metrics.json"]
    assert github_api.file_at("acme", "ml", BRANCH, "deploy/metrics.json") == '{"f1": 0.94}\n'


def test_files_equal_to_the_base_make_no_commit_and_no_pull(
    github_api: GitHubTestServer, repo: Repository
) -> None:
    github_api.add_file("acme", "ml", "main", "deploy/prod.yaml", "model: v2\n")
    with pytest.raises(KfopsError) as raised:
        _open(repo, {"deploy/prod.yaml": "model: v2\n"})
    assert raised.value.message == (
        f"could not open the pull request from {BRANCH}: the GitHub API at {github_api.url}"
        f" answered 422 (Validation Failed: No commits between main and {BRANCH}); branch"
        f" {BRANCH} was created from main and already holds these files; no pull request"
        " was opened"
    )
    assert github_api.commits("acme", "ml", BRANCH) == github_api.commits("acme", "ml", "main")
    assert github_api.pulls("acme", "ml") == []


def test_a_closed_pull_request_is_found_and_a_new_one_opened(
    github_api: GitHubTestServer, repo: Repository
) -> None:
    first = _open(repo)
    github_api.close_pull("acme", "ml", first.number, merged=True)
    assert repo.find_pull(BRANCH) == dataclasses.replace(first, state="closed")
    assert repo.find_pull(BRANCH, state="open") is None
    assert repo.find_pull("kfops/retrain/other") is None
    second = _open(repo, {"deploy/prod.yaml": "model: v3\n"})
    assert second.number != first.number and second.state == "open"
    assert repo.find_pull(BRANCH) == second  # the open one first


def test_no_pull_requests_write_leaves_the_branch(
    github_api: GitHubTestServer, repo: Repository
) -> None:
    github_api.token_permissions = {"contents": "write"}
    with pytest.raises(KfopsError) as raised:
        _open(repo, {"deploy/prod.yaml": "model: v2\n"})
    assert raised.value.message == (
        f"could not open the pull request from {BRANCH}: the GitHub API at {github_api.url}"
        " refused the token from the `github-token` input (GITHUB_TOKEN by default) (403"
        " Resource not accessible by integration): it needs `pull-requests: write`; branch"
        f" {BRANCH} was created from main and holds the commit of deploy/prod.yaml; no pull"
        " request was opened"
    )
    assert "add `pull-requests: write` to the `permissions:`" in raised.value.hint
    assert github_api.file_at("acme", "ml", BRANCH, "deploy/prod.yaml") == "model: v2\n"

    # given the permission, the same call finishes the job without a second commit
    github_api.token_permissions = {"contents": "write", "pull-requests": "write"}
    commits = github_api.commits("acme", "ml", BRANCH)
    assert _open(repo, {"deploy/prod.yaml": "model: v2\n"}).state == "open"
    assert github_api.commits("acme", "ml", BRANCH) == commits


def test_a_repository_that_forbids_actions_to_open_pull_requests(
    github_api: GitHubTestServer, repo: Repository
) -> None:
    github_api.actions_may_open_pulls = False
    with pytest.raises(KfopsError) as raised:
        _open(repo, {"deploy/prod.yaml": "model: v2\n"})
    assert raised.value.message == (
        f"could not open the pull request from {BRANCH}: the GitHub API at {github_api.url}"
        " does not let GitHub Actions open pull requests (403 GitHub Actions is not permitted"
        f" to create or approve pull requests.); branch {BRANCH} was created from main and"
        " holds the commit of deploy/prod.yaml; no pull request was opened"
    )
    assert "Allow GitHub Actions to create and approve pull requests" in raised.value.hint
    assert github_api.pulls("acme", "ml") == []


def test_no_contents_write_changes_nothing(github_api: GitHubTestServer, repo: Repository) -> None:
    github_api.token_permissions = {"contents": "read", "pull-requests": "write"}
    with pytest.raises(KfopsError) as raised:
        _open(repo)
    assert raised.value.message.endswith(
        "(403 Resource not accessible by integration): it needs `contents: write`; nothing"
        " was changed"
    )
    assert raised.value.message.startswith(f"could not create the branch {BRANCH}: ")
    assert github_api.commits("acme", "ml", BRANCH) == []


def test_a_commit_whose_answer_was_lost_is_not_repeated(
    github_api: GitHubTestServer, repo: Repository
) -> None:
    github_api.add_file("acme", "ml", "main", "deploy/prod.yaml", "model: v1\n")
    github_api.fail_next("PUT", r"/repos/acme/ml/contents/deploy/prod\.yaml", 502, commit=True)
    github_api.fail_next("POST", r"/repos/acme/ml/git/refs", 502, commit=True)
    _open(repo, {"deploy/prod.yaml": "model: v2\n"})
    assert github_api.commits("acme", "ml", BRANCH)[:2] == [
        "kfops: retrained model for prod",
        "Add deploy/prod.yaml",
    ]
    assert [(m, s) for m, _, s in _writes(github_api)] == [
        ("POST", 502),
        ("PUT", 502),
        ("POST", 201),
    ]


def test_a_pull_request_whose_answer_was_lost_is_not_opened_twice(
    github_api: GitHubTestServer, repo: Repository
) -> None:
    github_api.fail_next("POST", r"/repos/acme/ml/pulls", 502, commit=True)
    pull = _open(repo)
    assert [p["number"] for p in github_api.pulls("acme", "ml")] == [pull.number]
    assert [s for m, p, s in _writes(github_api) if p.endswith("/pulls")] == [502]


def test_a_failed_commit_says_what_was_done(github_api: GitHubTestServer, repo: Repository) -> None:
    github_api.fail_next("PUT", r"/repos/acme/ml/contents/deploy/metrics\.json", 502, times=2)
    with pytest.raises(KfopsError) as raised:
        _open(repo)
    assert raised.value.message == (
        f"could not commit deploy/metrics.json to {BRANCH}: the GitHub API at {github_api.url}"
        f" answered 502 (Bad Gateway) after retries; branch {BRANCH} was created from main and"
        " holds the commit of deploy/prod.yaml; deploy/metrics.json was not committed; no"
        " pull request was opened"
    )
    # the second attempt (nothing was stored by the first) was sent, and failed too
    assert [s for m, p, s in _writes(github_api) if p.endswith("metrics.json")] == [502, 502]


def test_a_branch_made_meanwhile_is_reused(github_api: GitHubTestServer, repo: Repository) -> None:
    # the first look misses the branch another run is creating; creating it then finds it
    github_api.add_file("acme", "ml", BRANCH, "deploy/prod.yaml", "model: v2\n")
    github_api.fail_next("GET", rf"/repos/acme/ml/git/ref/heads/{BRANCH}", 404, message="Not Found")
    pull = _open(repo, {"deploy/prod.yaml": "model: v2\n"})
    assert pull.branch == BRANCH
    assert ("POST", "/repos/acme/ml/git/refs", 422) in _writes(github_api)
    assert not [m for m, _, _ in _writes(github_api) if m == "PUT"]


def test_a_missing_base_branch(github_api: GitHubTestServer, repo: Repository) -> None:
    with pytest.raises(KfopsError) as raised:
        repo.open_pull(base="release", branch=BRANCH, title="t", body="b", files=FILES, message="m")
    assert raised.value.message == (
        f"could not propose {BRANCH}: there is no branch release in acme/ml at"
        f" {github_api.url}; nothing was changed"
    )


# -- credentials, reachability, secrecy ------------------------------------------------------


def test_a_bad_token_is_401(github_api: GitHubTestServer, repo: Repository) -> None:
    bad = _repository(github_api, token="ghs_wrongToken123")
    with pytest.raises(KfopsError) as raised:
        bad.sticky_issue(MARK)
    assert raised.value.message == (
        f"could not look for the monitoring issue: the GitHub API at {github_api.url}"
        " rejected the token from the `github-token` input (GITHUB_TOKEN by default) (401"
        " Bad credentials); nothing was changed"
    )
    assert "ghs_wrongToken123" not in raised.value.message + raised.value.hint


def test_no_token(github_api: GitHubTestServer) -> None:
    with pytest.raises(KfopsError) as raised:
        _repository(github_api, token=None).dispatch("kfops-retrain.yml", "main", {})
    assert (
        raised.value.message
        == "could not start the workflow kfops-retrain.yml on main: no GitHub token"
    )
    assert "`permissions: actions: write`" in raised.value.hint
    assert github_api.requests == []


def test_an_unreachable_server(github_api: GitHubTestServer) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(KfopsError) as raised:
        _repository(github_api, api_url=url).open_issue(MARK, "t", "b")
    assert raised.value.message == (
        f"could not open the monitoring issue: the GitHub API at {url} did not answer"
        " (ConnectionError); nothing was changed"
    )
    assert "GITHUB_API_URL" in raised.value.hint


def test_nothing_but_kfops_writes_to_stderr(github_api: GitHubTestServer) -> None:
    # PyGithub logs every 403 to stderr by default, the workflow token's expected one on
    # GET /user included; a fresh interpreter shows what a CI log would.
    github_api.add_repo("acme", "ml")
    github_api.token_permissions = {"issues": "read"}
    script = (
        "import sys\n"
        "from kfops.ci.event import GitHubContext\n"
        "from kfops.ci.github import Repository\n"
        "from kfops.errors import KfopsError\n"
        f"ctx = GitHubContext('schedule', {{}}, '', '', 'acme/ml', {github_api.url!r}, '', '',"
        f" None, None, {github_api.token!r})\n"
        "repo = Repository(ctx, backoff=0)\n"
        f"print(repo.sticky_issue({MARK!r}))\n"
        "try:\n"
        f"    repo.open_issue({MARK!r}, 't', 'b')\n"
        "except KfopsError as exc:\n"
        "    print(exc.message)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("None\ncould not open the monitoring issue: ")
    assert done.stderr == ""
    assert ("GET", "/user", 403) in github_api.requests


def test_the_token_never_appears(
    github_api: GitHubTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    token = "ghs_SECRETkfopsMonitor0123456789abcdefXYZ"
    github_api.token = token
    github_api.add_repo("acme", "ml")
    github_api.add_workflow("acme", "ml", "kfops-retrain.yml", dispatchable=False)
    repo = _repository(github_api, token=token)
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="github")
    texts: list[str] = []

    def expect_error(call: Any) -> None:
        with pytest.raises(KfopsError) as raised:
            call()
        texts.extend([raised.value.message, raised.value.hint])

    repo.open_issue(MARK, "t", "b")  # succeeds, logging its requests at debug level
    expect_error(lambda: repo.dispatch("kfops-retrain.yml", "main", {}))  # 422
    expect_error(lambda: repo.dispatch("missing.yml", "main", {}))  # 404
    github_api.fail_next("PATCH", r"/repos/acme/ml/issues/\d+", 503, times=5)
    expect_error(lambda: repo.update_issue(1, MARK, body="x"))  # 5xx after retries
    github_api.token_permissions = {}
    expect_error(lambda: _open(repo))  # 403
    expect_error(lambda: _repository(github_api, token=token + "x").sticky_issue(MARK))  # 401
    assert len(texts) == 10
    assert any("Authorization" in r.getMessage() for r in caplog.records)  # it did log headers
    for text in [*texts, caplog.text]:
        assert token not in text
        assert token[4:20] not in text
