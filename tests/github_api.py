"""A stateful GitHub REST API test server, checked against GitHub's own OpenAPI description.

The server keeps repositories, issues (and their labels), pull requests, issue comments,
deployments and their statuses, branches with commits of files, and workflows with the
dispatches they received, and answers the endpoints kfops uses (see ``OPERATIONS``).
Every request it receives and every response it sends is validated with openapi-core
against GitHub's ``api.github.com.json`` from the npm package ``@octokit/openapi``
(``tests/npm``, installed by ``npm ci --prefix tests/npm``):

- a request that does not validate is answered 422 (as GitHub answers a bad request body),
- a response that does not validate is replaced by a 500,

and both are recorded in ``server.validation_errors``, which the ``github_api`` fixture
asserts to be empty at teardown, so neither can pass unnoticed.

Knobs for tests: ``read_only`` (a pull request from a fork: comment and deployment writes
answer 403), ``deployments_denied`` (a token without ``deployments: write``),
``token_permissions`` (the job's ``permissions:``, e.g. ``{"issues": "read"}``: anything
not granted answers 403 as GitHub does for the workflow's token),
``actions_may_open_pulls`` (the repository setting that lets the workflow's token open
pull requests), ``add_token`` (a
personal token of a user), ``fail_next`` (inject 5xx or rate-limit answers),
``requests`` (what was asked and answered), ``comments``, ``issues``, ``pulls``,
``deployments``, ``dispatches``, ``file_at`` and ``commits`` (what is stored),
``add_comment``, ``add_issue``, ``add_pull_request``, ``close_pull``, ``add_file`` and
``add_workflow`` (state written by people).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import itertools
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import pytest
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from werkzeug.datastructures import Headers, ImmutableMultiDict

SPEC_PATH = (
    Path(__file__).resolve().parent
    / "npm"
    / "node_modules"
    / "@octokit"
    / "openapi"
    / "generated"
    / "api.github.com.json"
)
INSTALL_HINT = "npm ci --prefix tests/npm"

# (method, path template in GitHub's description) -> handler method name. The spec the
# server validates against is cut from the real file down to exactly these operations.
OPERATIONS: dict[tuple[str, str], str] = {
    ("GET", "/repos/{owner}/{repo}"): "_get_repo",
    ("GET", "/repos/{owner}/{repo}/pulls"): "_list_pulls",
    ("POST", "/repos/{owner}/{repo}/pulls"): "_create_pull",
    ("GET", "/repos/{owner}/{repo}/pulls/{pull_number}"): "_get_pull",
    ("GET", "/repos/{owner}/{repo}/issues"): "_list_issues",
    ("POST", "/repos/{owner}/{repo}/issues"): "_create_issue",
    ("GET", "/repos/{owner}/{repo}/issues/{issue_number}"): "_get_issue",
    ("PATCH", "/repos/{owner}/{repo}/issues/{issue_number}"): "_edit_issue",
    ("GET", "/repos/{owner}/{repo}/issues/{issue_number}/comments"): "_list_comments",
    ("POST", "/repos/{owner}/{repo}/issues/{issue_number}/comments"): "_create_comment",
    ("GET", "/repos/{owner}/{repo}/issues/comments/{comment_id}"): "_get_comment",
    ("PATCH", "/repos/{owner}/{repo}/issues/comments/{comment_id}"): "_edit_comment",
    ("GET", "/repos/{owner}/{repo}/deployments"): "_list_deployments",
    ("POST", "/repos/{owner}/{repo}/deployments"): "_create_deployment",
    ("GET", "/repos/{owner}/{repo}/deployments/{deployment_id}"): "_get_deployment",
    ("GET", "/repos/{owner}/{repo}/deployments/{deployment_id}/statuses"): "_list_statuses",
    ("POST", "/repos/{owner}/{repo}/deployments/{deployment_id}/statuses"): "_create_status",
    (
        "POST",
        "/repos/{owner}/{repo}/actions/workflows/{workflow_id}/dispatches",
    ): "_dispatch_workflow",
    ("GET", "/repos/{owner}/{repo}/git/ref/{ref}"): "_get_ref",
    ("POST", "/repos/{owner}/{repo}/git/refs"): "_create_ref",
    ("GET", "/repos/{owner}/{repo}/contents/{path}"): "_get_contents",
    ("PUT", "/repos/{owner}/{repo}/contents/{path}"): "_put_contents",
    ("GET", "/rate_limit"): "_rate_limit",
    ("GET", "/user"): "_get_user",
}

# Statuses GitHub may send from any endpoint, whether or not the description lists them
# for that operation; their bodies are checked against the description's `basic-error`.
ANY_ENDPOINT_STATUSES = frozenset({401, 403, 404, 422, 429, 500, 502, 503, 504})

DOCS = "https://docs.github.com/rest"
RATE_LIMIT = 5000

# The identity of the token the server accepts: what GITHUB_TOKEN is in a workflow.
BOT_LOGIN = "github-actions[bot]"
BOT_ID = 41898282
BOT_NODE_ID = "MDM6Qm90NDE4OTgyODI="


class SpecMissingError(FileNotFoundError):
    """GitHub's OpenAPI description is not installed."""


# ---------------------------------------------------------------------------------------
# The description: loaded once per test session, cut down to OPERATIONS.


@dataclass(frozen=True)
class GitHubSpec:
    document: dict[str, Any]  # the cut-down OpenAPI 3.0 document (servers not yet set)
    source: Path
    load_seconds: float  # reading 13 MB of JSON, cutting it, checking the cut


_SPECS: dict[Path, GitHubSpec] = {}
_SPECS_LOCK = threading.Lock()


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def extract_operations(
    full: Mapping[str, Any], operations: Iterator[tuple[str, str]] | list[tuple[str, str]]
) -> dict[str, Any]:
    """The part of ``full`` that ``operations`` need: their paths and every component they
    reference, directly or through other components."""
    paths: dict[str, dict[str, Any]] = {}
    for method, template in operations:
        path_item = full["paths"][template]
        paths.setdefault(template, {})[method.lower()] = path_item[method.lower()]
        if "parameters" in path_item:
            paths[template]["parameters"] = path_item["parameters"]
    components: dict[str, dict[str, Any]] = {}
    todo = list(_refs(paths))
    seen: set[str] = set()
    while todo:
        ref = todo.pop()
        if ref in seen:
            continue
        seen.add(ref)
        _, _, kind, name = ref.split("/", 3)  # "#/components/<kind>/<name>"
        node = full["components"][kind][name]
        components.setdefault(kind, {})[name] = node
        todo.extend(_refs(node))
    return {
        "openapi": full["openapi"],
        "info": full["info"],
        "servers": full["servers"],
        "paths": paths,
        "components": components,
    }


def _fix_description(document: dict[str, Any]) -> None:
    """Where no answer GitHub sends could satisfy GitHub's description, say what it means.

    PUT contents answers a 409 that is ``oneOf`` basic-error or
    repository-rule-violation-error: two schemas without required properties, so every
    error body matches both and ``oneOf`` fails. ``anyOf`` is what is meant."""
    put = document["paths"]["/repos/{owner}/{repo}/contents/{path}"]["put"]
    schema = put["responses"]["409"]["content"]["application/json"]["schema"]
    if "oneOf" in schema:
        schema["anyOf"] = schema.pop("oneOf")


def load_github_spec(path: Path = SPEC_PATH) -> GitHubSpec:
    """Read GitHub's description once per session, cut to ``OPERATIONS`` and checked."""
    with _SPECS_LOCK:
        if path in _SPECS:
            return _SPECS[path]
        if not path.is_file():
            raise SpecMissingError(
                f"GitHub's OpenAPI description is missing: {path} does not exist; "
                f"run `{INSTALL_HINT}` to install it"
            )
        started = time.perf_counter()
        with path.open("rb") as handle:
            full = json.load(handle)
        if not str(full.get("openapi", "")).startswith("3.0"):
            raise ValueError(f"{path}: expected an OpenAPI 3.0 document, got {full.get('openapi')}")
        document = extract_operations(full, list(OPERATIONS))
        _fix_description(document)
        # The whole description takes openapi-core about 40 s to check; the cut, well
        # under a second. Checking it catches a dangling reference left by the cut.
        OpenAPI.from_dict(document)
        spec = GitHubSpec(document, path, time.perf_counter() - started)
        _SPECS[path] = spec
        return spec


def _multi_segment(document: Mapping[str, Any], method: str, template: str) -> frozenset[str]:
    """The path parameters of an operation that GitHub marks ``x-multi-segment`` (a file
    path, a ref such as ``heads/kfops/retrain``): they may hold slashes."""
    names = set()
    for parameter in document["paths"][template][method.lower()].get("parameters", []):
        if "$ref" in parameter:
            parameter = document["components"]["parameters"][parameter["$ref"].split("/")[-1]]
        if parameter["in"] == "path" and parameter.get("x-multi-segment"):
            names.add(parameter["name"])
    return frozenset(names)


def _route_pattern(template: str, multi: frozenset[str]) -> tuple[re.Pattern[str], frozenset[str]]:
    def group(match: re.Match[str]) -> str:
        return f"(?P<{match[1]}>{'.+' if match[1] in multi else '[^/]+'})"

    return re.compile("^" + re.sub(r"\{(\w+)\}", group, template) + "$"), multi


# ---------------------------------------------------------------------------------------
# openapi-core's request and response protocols.


@dataclass
class _OpenAPIRequest:
    host_url: str
    path: str
    method: str
    parameters: RequestParameters
    content_type: str
    body: bytes | None


@dataclass
class _OpenAPIResponse:
    status_code: int
    headers: Headers
    content_type: str
    data: bytes | None


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _describe(error: BaseException) -> str:
    """An openapi-core error, with the schema errors it hides in its causes."""
    parts: list[str] = []

    def walk(exc: BaseException) -> None:
        chain: BaseException | None = exc
        while chain is not None:
            schema_errors = getattr(chain, "schema_errors", None)
            nested = [
                *(getattr(chain, "context", None) or ()),
                *(getattr(chain, "errors", None) or ()),
            ]
            if schema_errors:
                for schema_error in schema_errors:
                    where = "/".join(map(str, schema_error.absolute_path)) or "(root)"
                    parts.append(f"at {where}: {_short(schema_error.message)}")
            elif nested:
                for inner in nested:
                    walk(inner)
            elif chain.__cause__ is None:
                parts.append(f"{type(chain).__name__}: {_short(str(chain))}")
            chain = chain.__cause__

    walk(error)
    return f"{type(error).__name__}: " + "; ".join(dict.fromkeys(parts))


# ---------------------------------------------------------------------------------------
# State.


@dataclass
class _User:
    login: str
    id: int
    type: str  # "User", "Bot" or "Organization"


@dataclass
class _Comment:
    id: int
    body: str
    user: _User
    created_at: str
    updated_at: str
    author_association: str


@dataclass
class _Issue:
    id: int
    number: int
    title: str
    body: str | None
    user: _User
    created_at: str
    is_pull: bool
    head_ref: str = ""
    base_ref: str = ""
    head_owner: str = ""  # the fork's owner, or the repository's for a same-repo branch
    comments: list[_Comment] = field(default_factory=list)
    state: str = "open"
    state_reason: str | None = None
    closed_at: str | None = None
    merged: bool = False
    labels: list[_Label] = field(default_factory=list)
    updated_at: str = ""
    touched: int = 0  # orders updates within one second (timestamps have seconds only)


@dataclass
class _Label:
    id: int
    name: str
    color: str = "ededed"
    description: str | None = None


@dataclass
class _Commit:
    sha: str
    parent: str | None
    files: dict[str, str]  # path -> text: the whole tree at this commit
    message: str
    author: _User
    date: str


@dataclass
class _Workflow:
    id: int
    path: str  # .github/workflows/<file name>
    dispatchable: bool  # has an `on: workflow_dispatch` trigger
    inputs: dict[str, bool]  # declared input -> required


@dataclass
class _DeploymentStatus:
    id: int
    state: str
    description: str
    environment: str
    environment_url: str
    log_url: str
    creator: _User
    created_at: str


@dataclass
class _Deployment:
    id: int
    sha: str
    ref: str
    task: str
    payload: dict[str, Any] | str
    environment: str
    description: str | None
    transient_environment: bool
    production_environment: bool
    creator: _User
    created_at: str
    statuses: list[_DeploymentStatus] = field(default_factory=list)


@dataclass
class _Repo:
    id: int
    owner: _User
    name: str
    private: bool
    default_branch: str
    created_at: str
    issues: dict[int, _Issue] = field(default_factory=dict)
    deployments: dict[int, _Deployment] = field(default_factory=dict)
    labels: dict[str, _Label] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)  # name -> head commit sha
    commits: dict[str, _Commit] = field(default_factory=dict)
    workflows: dict[str, _Workflow] = field(default_factory=dict)  # by file name
    dispatches: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Failure:
    method: str
    path: re.Pattern[str]
    status: int
    remaining: int
    headers: dict[str, str]
    message: str | None
    commit: bool


@dataclass
class _Reply:
    status: int
    payload: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class _GitHubError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        documentation_url: str = DOCS,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.reply = _Reply(
            status,
            {"message": message, "documentation_url": documentation_url, "status": str(status)},
            dict(headers or {}),
        )


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sha(*parts: object) -> str:
    return hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()


def _blob_sha(text: str) -> str:
    """Git's object name of a blob holding ``text``, as GitHub reports a file's ``sha``."""
    data = text.encode("utf-8")
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _base64_lines(text: str) -> str:
    """Base64 as the Contents API sends it: a line break every 60 characters."""
    encoded = base64.b64encode(text.encode("utf-8")).decode("ascii")
    return "".join(encoded[i : i + 60] + "\n" for i in range(0, len(encoded), 60))


# ---------------------------------------------------------------------------------------
# The server.


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    app: GitHubTestServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as PyGithub's requests session expects
    server: _HTTPServer

    def _serve(self) -> None:
        self.server.app._serve(self)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

    def setup(self) -> None:
        super().setup()
        self.server.app._connections.add(self.connection)

    def finish(self) -> None:
        self.server.app._connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: ``server.requests`` records what was asked."""


class GitHubTestServer:
    """GitHub's REST API for issue comments on pull requests, on 127.0.0.1."""

    def __init__(
        self, token: str = "ghs_kfopsTestToken000000000000000000000", *, spec_path: Path = SPEC_PATH
    ) -> None:
        self.spec = load_github_spec(spec_path)
        self.token = token
        self.read_only = False
        self.deployments_denied = False
        # The job's `permissions:` (scope -> "read" | "write"; a scope left out is "none"),
        # or None for a token that may do everything these endpoints do.
        self.token_permissions: dict[str, str] | None = None
        # The repository setting "Allow GitHub Actions to create and approve pull requests"
        # (off by default on new repositories and organisations).
        self.actions_may_open_pulls = True
        self.requests: list[tuple[str, str, int]] = []  # (method, path with query, status)
        self.validation_errors: list[str] = []
        self._lock = threading.RLock()
        self._ids = itertools.count(1001)
        self._users: dict[str, _User] = {BOT_LOGIN: _User(BOT_LOGIN, BOT_ID, "Bot")}
        self._personal_tokens: dict[str, _User] = {}
        self._actor = self._users[BOT_LOGIN]  # who sent the request being answered
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._comment_index: dict[int, tuple[_Repo, _Issue, _Comment]] = {}
        self._failures: list[_Failure] = []
        self._rate_used = 0
        self._rate_reset = int(time.time()) + 3600
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[Any] = set()
        self._openapi: OpenAPI | None = None
        self._basic_error = OAS30Validator(
            self.spec.document["components"]["schemas"]["basic-error"],
            format_checker=oas30_format_checker,
        )
        self._routes = [
            (method, template, *_route_pattern(template, multi), getattr(self, handler))
            for (method, template), handler in OPERATIONS.items()
            for multi in [_multi_segment(self.spec.document, method, template)]
        ]

    # -- lifecycle --------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("GitHubTestServer is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> GitHubTestServer:
        if self._httpd is not None:
            raise RuntimeError("GitHubTestServer is already started")
        httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        httpd.app = self
        self._httpd = httpd
        document = dict(self.spec.document, servers=[{"url": self.url}])
        self._openapi = OpenAPI.from_dict(document, config=Config(spec_validator_cls=None))
        self._thread = threading.Thread(
            # shutdown() waits up to one poll interval: keep it short for quick teardowns
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="github-test-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        for connection in list(self._connections):  # idle keep-alive connections
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> GitHubTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- state for tests --------------------------------------------------------------

    def _user(self, login: str, user_type: str = "User") -> _User:
        if login not in self._users:
            self._users[login] = _User(login, next(self._ids), user_type)
        return self._users[login]

    def add_repo(self, owner: str, repo: str, *, private: bool = False) -> None:
        """Add a repository (if new) whose default branch `main` holds one empty commit."""
        with self._lock:
            if (owner, repo) not in self._repos:
                repository = _Repo(
                    next(self._ids), self._user(owner), repo, private, "main", _now()
                )
                self._repos[(owner, repo)] = repository
                self._commit(repository, "main", {}, "Initial commit", repository.owner)

    def add_token(self, token: str, login: str) -> None:
        """Accept ``token`` as a personal access token of the user ``login``."""
        with self._lock:
            self._personal_tokens[token] = self._user(login)

    def _add_issue(self, owner: str, repo: str, number: int | None, **fields: Any) -> int:
        with self._lock:
            self.add_repo(owner, repo)
            issues = self._repos[(owner, repo)].issues
            number = number if number is not None else max(issues, default=0) + 1
            if number in issues:
                raise ValueError(f"{owner}/{repo}#{number} already exists")
            stamp = fields.pop("created_at", None) or _now()
            issue = _Issue(id=next(self._ids), number=number, created_at=stamp, **fields)
            issue.updated_at = stamp
            self._touch(issue, stamp)
            issues[number] = issue
            return number

    def add_pull_request(
        self,
        owner: str,
        repo: str,
        number: int | None = None,
        *,
        title: str = "Change the pipeline",
        author: str = "octocat",
        head_ref: str = "feature",
        base_ref: str = "main",
        fork_owner: str | None = None,
    ) -> int:
        """Add an open pull request (and its repository if new); returns its number."""
        return self._add_issue(
            owner,
            repo,
            number,
            title=title,
            body=None,
            user=self._user(author),
            is_pull=True,
            head_ref=head_ref,
            base_ref=base_ref,
            head_owner=fork_owner or owner,
        )

    def add_issue(
        self,
        owner: str,
        repo: str,
        number: int | None = None,
        *,
        title: str = "An issue",
        body: str | None = None,
        author: str = "octocat",
        author_type: str = "User",
        labels: tuple[str, ...] = (),
        state: str = "open",
        created_at: str | None = None,
    ) -> int:
        """Add an issue as if someone (a person by default) had opened it; returns its number."""
        with self._lock:
            self.add_repo(owner, repo)
            repository = self._repos[(owner, repo)]
            number = self._add_issue(
                owner,
                repo,
                number,
                title=title,
                body=body,
                user=self._user(author, author_type),
                is_pull=False,
                labels=[self._label(repository, name) for name in labels],
                created_at=created_at,
            )
            if state == "closed":
                issue = repository.issues[number]
                issue.state, issue.state_reason = "closed", "completed"
                issue.closed_at = issue.updated_at
            return number

    def close_pull(self, owner: str, repo: str, number: int, *, merged: bool = False) -> None:
        """Close (or merge) a pull request, as a maintainer would."""
        with self._lock:
            _, issue = self._issue(owner, repo, number)
            issue.state, issue.merged, issue.closed_at = "closed", merged, _now()
            self._touch(issue)

    def issues(self, owner: str, repo: str) -> list[dict[str, Any]]:
        """The stored issues of a repository (pull requests left out), oldest first."""
        with self._lock:
            repository = self._repo(owner, repo)
            return [
                self._issue_json(repository, i) for i in repository.issues.values() if not i.is_pull
            ]

    def pulls(self, owner: str, repo: str) -> list[dict[str, Any]]:
        """The stored pull requests of a repository, oldest first."""
        with self._lock:
            repository = self._repo(owner, repo)
            return [self._pull_json(repository, i) for i in repository.issues.values() if i.is_pull]

    def add_workflow(
        self,
        owner: str,
        repo: str,
        file_name: str,
        dispatchable: bool = True,
        *,
        inputs: Mapping[str, bool] | None = None,
    ) -> int:
        """Add ``.github/workflows/<file_name>``, with an ``on: workflow_dispatch`` trigger
        when ``dispatchable``, declaring ``inputs`` (name -> required); returns its id."""
        with self._lock:
            self.add_repo(owner, repo)
            workflow = _Workflow(
                next(self._ids), f".github/workflows/{file_name}", dispatchable, dict(inputs or {})
            )
            self._repos[(owner, repo)].workflows[file_name] = workflow
            return workflow.id

    def dispatches(self, owner: str, repo: str) -> list[dict[str, Any]]:
        """The workflow dispatches received, oldest first: workflow (file name), ref,
        inputs, actor."""
        with self._lock:
            return [dict(d) for d in self._repo(owner, repo).dispatches]

    def add_file(self, owner: str, repo: str, branch: str, path: str, text: str) -> str:
        """Commit ``text`` at ``path`` on ``branch`` (made from the default branch if new),
        as a person pushing would; returns the commit's sha."""
        with self._lock:
            self.add_repo(owner, repo)
            repository = self._repos[(owner, repo)]
            if branch not in repository.branches:
                repository.branches[branch] = repository.branches[repository.default_branch]
            files = {**self._tree(repository, branch), path: text}
            return self._commit(repository, branch, files, f"Add {path}", repository.owner).sha

    def file_at(self, owner: str, repo: str, branch: str, path: str) -> str | None:
        """The text of ``path`` at the head of ``branch``, or None where there is none."""
        with self._lock:
            repository = self._repo(owner, repo)
            if branch not in repository.branches:
                return None
            return self._tree(repository, branch).get(path)

    def branch_head(self, owner: str, repo: str, branch: str) -> str | None:
        """The sha of the commit at the head of ``branch``, or None if there is no such branch."""
        with self._lock:
            return self._repo(owner, repo).branches.get(branch)

    def commits(self, owner: str, repo: str, branch: str) -> list[str]:
        """The messages of the commits on ``branch``, newest first ([] if no such branch)."""
        with self._lock:
            repository = self._repo(owner, repo)
            sha = repository.branches.get(branch)
            messages = []
            while sha is not None:
                commit = repository.commits[sha]
                messages.append(commit.message)
                sha = commit.parent
            return messages

    def add_comment(
        self,
        owner: str,
        repo: str,
        number: int,
        body: str,
        *,
        author: str = "octocat",
        author_type: str = "User",
        created_at: str | None = None,
    ) -> dict[str, Any]:
        """Store a comment as if someone (a person by default) had written it."""
        with self._lock:
            repository, issue = self._issue(owner, repo, number)
            user = self._user(author, author_type)
            association = "OWNER" if user is repository.owner else "CONTRIBUTOR"
            return self._comment_json(
                repository,
                issue,
                self._store_comment(repository, issue, body, user, association, created_at),
            )

    def comments(self, owner: str, repo: str, number: int) -> list[dict[str, Any]]:
        """The stored comments of an issue or pull request, as the API would show them."""
        with self._lock:
            repository, issue = self._issue(owner, repo, number)
            return [self._comment_json(repository, issue, c) for c in issue.comments]

    def deployments(self, owner: str, repo: str) -> list[dict[str, Any]]:
        """The stored deployments of a repository, oldest first, as the API shows them,
        each with its ``statuses`` (oldest first) added."""
        with self._lock:
            repository = self._repo(owner, repo)
            return [
                {
                    **self._deployment_json(repository, d),
                    "statuses": [self._status_json(repository, d, s) for s in d.statuses],
                }
                for d in repository.deployments.values()
            ]

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int,
        times: int = 1,
        headers: Mapping[str, str] | None = None,
        *,
        message: str | None = None,
        commit: bool = False,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status``.

        ``path_regex`` must match the whole path (without the query string). The body is
        GitHub's error shape; its message defaults by status and headers (a primary rate
        limit when ``X-RateLimit-Remaining`` is ``0``, a secondary one with
        ``Retry-After``). With ``commit=True`` the request is carried out first and its
        answer lost, as when a gateway times out after GitHub did the write.
        """
        with self._lock:
            self._failures.append(
                _Failure(
                    method.upper(),
                    re.compile(path_regex),
                    status,
                    times,
                    dict(headers or {}),
                    message,
                    commit,
                )
            )

    # -- HTTP -------------------------------------------------------------------------

    def _serve(self, handler: _Handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        with self._lock:
            reply = self._dispatch(handler.command, handler.path, handler.headers, body)
            self.requests.append((handler.command, handler.path, reply.status))
        data = b"" if reply.payload is None else json.dumps(reply.payload).encode()
        handler.send_response(reply.status)
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _rate_headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(RATE_LIMIT),
            "X-RateLimit-Remaining": str(max(RATE_LIMIT - self._rate_used, 0)),
            "X-RateLimit-Reset": str(self._rate_reset),
            "X-RateLimit-Used": str(self._rate_used),
            "X-RateLimit-Resource": "core",
        }

    def _dispatch(self, method: str, target: str, headers: Any, body: bytes) -> _Reply:
        split = urlsplit(target)
        query = ImmutableMultiDict(parse_qsl(split.query, keep_blank_values=True))
        route = self._route(method, split.path)
        if route is None:
            self.validation_errors.append(
                f"{method} {target}: not an endpoint this test server implements"
            )
            return _Reply(404, {"message": "Not Found", "documentation_url": DOCS, "status": "404"})
        template, handle, params, validated_path = route

        request = _OpenAPIRequest(
            host_url=self.url,
            path=validated_path,
            method=method.lower(),
            parameters=RequestParameters(query=query, header=Headers(list(headers.items()))),
            content_type=(headers.get("Content-Type") or "").lower(),
            body=body or None,
        )
        reply = self._authenticate(headers)
        if reply is None:
            reply = self._validate_request(method, target, request)
        if reply is None:
            reply = self._answer(method, split.path, handle, params, query, body)
        reply.headers = {**self._rate_headers(), **reply.headers}
        return self._validate_response(method, template, target, request, reply)

    def _route(
        self, method: str, path: str
    ) -> tuple[str, Callable[..., _Reply], dict[str, str], str] | None:
        """The operation, its handler, its path parameters (decoded), and the path to
        validate: openapi-core matches one segment per parameter, so the slashes of a
        multi-segment parameter are encoded for it."""
        for route_method, template, pattern, multi, handle in self._routes:
            match = pattern.match(path)
            if match and route_method == method:
                validated = path
                for name in sorted(multi, key=match.start, reverse=True):
                    start, end = match.span(name)
                    validated = validated[:start] + quote(match[name], safe="") + validated[end:]
                params = {k: unquote(v) for k, v in match.groupdict().items()}
                return template, handle, params, validated
        return None

    def _authenticate(self, headers: Any) -> _Reply | None:
        authorization = headers.get("Authorization")
        if authorization is None:
            return _GitHubError(401, "Requires authentication").reply
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        actor = self._users[BOT_LOGIN] if token == self.token else None
        actor = self._personal_tokens.get(token, actor)
        if scheme.lower() not in ("token", "bearer") or actor is None:
            return _GitHubError(401, "Bad credentials").reply
        self._actor = actor
        self._rate_used += 1
        return None

    def _validate_request(
        self, method: str, target: str, request: _OpenAPIRequest
    ) -> _Reply | None:
        assert self._openapi is not None
        errors = [_describe(e) for e in self._openapi.iter_request_errors(request)]
        if not errors:
            return None
        self.validation_errors.append(f"request {method} {target}: " + " | ".join(errors))
        return _Reply(
            422,
            {
                "message": "Invalid request.\n\n" + "\n".join(errors),
                "documentation_url": DOCS,
                "status": "422",
            },
        )

    def _answer(
        self,
        method: str,
        path: str,
        handle: Callable[..., _Reply],
        params: dict[str, str],
        query: ImmutableMultiDict[str, str],
        body: bytes,
    ) -> _Reply:
        failure = next(
            (
                f
                for f in self._failures
                if f.remaining > 0 and f.method == method and f.path.fullmatch(path)
            ),
            None,
        )
        if failure is not None:
            failure.remaining -= 1
            if failure.commit:
                self._call(handle, params, query, body)
            return self._failure_reply(failure)
        return self._call(handle, params, query, body)

    def _call(
        self,
        handle: Callable[..., _Reply],
        params: dict[str, str],
        query: ImmutableMultiDict[str, str],
        body: bytes,
    ) -> _Reply:
        try:
            return handle(query=query, body=json.loads(body) if body else None, **params)
        except _GitHubError as error:
            return error.reply

    @staticmethod
    def _failure_reply(failure: _Failure) -> _Reply:
        message = failure.message
        if message is None:
            if failure.headers.get("X-RateLimit-Remaining") == "0":
                message = "API rate limit exceeded for installation ID 1001."
            elif "Retry-After" in failure.headers:
                message = (
                    "You have exceeded a secondary rate limit. "
                    "Please wait a few minutes before you try again."
                )
            else:
                message = HTTPStatus(failure.status).phrase
        reply = _GitHubError(failure.status, message).reply
        reply.headers = dict(failure.headers)
        return reply

    def _validate_response(
        self, method: str, template: str, target: str, request: _OpenAPIRequest, reply: _Reply
    ) -> _Reply:
        assert self._openapi is not None
        data = b"" if reply.payload is None else json.dumps(reply.payload).encode()
        documented = self.spec.document["paths"][template][method.lower()]["responses"]
        if str(reply.status) in documented or "default" in documented:
            response = _OpenAPIResponse(
                reply.status, Headers(reply.headers), "application/json; charset=utf-8", data
            )
            errors = [_describe(e) for e in self._openapi.iter_response_errors(request, response)]
        elif reply.status in ANY_ENDPOINT_STATUSES:
            errors = [
                f"at {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                for e in self._basic_error.iter_errors(reply.payload)
            ]
        else:
            errors = [f"status {reply.status} is not documented for {method} {template}"]
        if not errors:
            return reply
        message = f"response {reply.status} to {method} {target}: " + " | ".join(errors)
        self.validation_errors.append(message)
        return _Reply(
            500,
            {"message": "test server: " + message, "documentation_url": DOCS, "status": "500"},
        )

    # -- JSON as GitHub shows it --------------------------------------------------------

    def _user_json(self, user: _User) -> dict[str, Any]:
        base = f"{self.url}/users/{quote(user.login)}"
        html = (
            f"{self.url}/apps/{user.login.removesuffix('[bot]')}"
            if user.type == "Bot"
            else f"{self.url}/{user.login}"
        )
        return {
            "login": user.login,
            "id": user.id,
            "node_id": BOT_NODE_ID if user.id == BOT_ID else f"U_test{user.id}",
            "avatar_url": f"{self.url}/avatars/u/{user.id}?v=4",
            "gravatar_id": "",
            "url": base,
            "html_url": html,
            "followers_url": f"{base}/followers",
            "following_url": f"{base}/following{{/other_user}}",
            "gists_url": f"{base}/gists{{/gist_id}}",
            "starred_url": f"{base}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{base}/subscriptions",
            "organizations_url": f"{base}/orgs",
            "repos_url": f"{base}/repos",
            "events_url": f"{base}/events{{/privacy}}",
            "received_events_url": f"{base}/received_events",
            "type": user.type,
            "user_view_type": "public",
            "site_admin": False,
        }

    def _repo_json(self, repo: _Repo, owner: _User | None = None) -> dict[str, Any]:
        """A repository, with what both `repository` and `full-repository` require."""
        owner = owner or repo.owner
        full_name = f"{owner.login}/{repo.name}"
        api = f"{self.url}/repos/{full_name}"
        html = f"{self.url}/{full_name}"
        fork = owner is not repo.owner
        return {
            "id": repo.id if not fork else repo.id + 500000,
            "node_id": f"R_test{repo.id}",
            "name": repo.name,
            "full_name": full_name,
            "owner": self._user_json(owner),
            "private": repo.private,
            "html_url": html,
            "description": None,
            "fork": fork,
            "url": api,
            "archive_url": f"{api}/{{archive_format}}{{/ref}}",
            "assignees_url": f"{api}/assignees{{/user}}",
            "blobs_url": f"{api}/git/blobs{{/sha}}",
            "branches_url": f"{api}/branches{{/branch}}",
            "collaborators_url": f"{api}/collaborators{{/collaborator}}",
            "comments_url": f"{api}/comments{{/number}}",
            "commits_url": f"{api}/commits{{/sha}}",
            "compare_url": f"{api}/compare/{{base}}...{{head}}",
            "contents_url": f"{api}/contents/{{+path}}",
            "contributors_url": f"{api}/contributors",
            "deployments_url": f"{api}/deployments",
            "downloads_url": f"{api}/downloads",
            "events_url": f"{api}/events",
            "forks_url": f"{api}/forks",
            "git_commits_url": f"{api}/git/commits{{/sha}}",
            "git_refs_url": f"{api}/git/refs{{/sha}}",
            "git_tags_url": f"{api}/git/tags{{/sha}}",
            "git_url": f"git://127.0.0.1/{full_name}.git",
            "issue_comment_url": f"{api}/issues/comments{{/number}}",
            "issue_events_url": f"{api}/issues/events{{/number}}",
            "issues_url": f"{api}/issues{{/number}}",
            "keys_url": f"{api}/keys{{/key_id}}",
            "labels_url": f"{api}/labels{{/name}}",
            "languages_url": f"{api}/languages",
            "merges_url": f"{api}/merges",
            "milestones_url": f"{api}/milestones{{/number}}",
            "notifications_url": f"{api}/notifications{{?since,all,participating}}",
            "pulls_url": f"{api}/pulls{{/number}}",
            "releases_url": f"{api}/releases{{/id}}",
            "ssh_url": f"git@127.0.0.1:{full_name}.git",
            "stargazers_url": f"{api}/stargazers",
            "statuses_url": f"{api}/statuses/{{sha}}",
            "subscribers_url": f"{api}/subscribers",
            "subscription_url": f"{api}/subscription",
            "tags_url": f"{api}/tags",
            "teams_url": f"{api}/teams",
            "trees_url": f"{api}/git/trees{{/sha}}",
            "clone_url": f"{html}.git",
            "mirror_url": None,
            "hooks_url": f"{api}/hooks",
            "svn_url": html,
            "homepage": None,
            "language": "Python",
            "forks_count": 0,
            "forks": 0,
            "stargazers_count": 0,
            "watchers_count": 0,
            "watchers": 0,
            "size": 0,
            "default_branch": repo.default_branch,
            "open_issues_count": len(repo.issues),
            "open_issues": len(repo.issues),
            "is_template": False,
            "topics": [],
            "has_issues": True,
            "has_projects": True,
            "has_wiki": True,
            "has_pages": False,
            "has_downloads": True,
            "has_discussions": False,
            "archived": False,
            "disabled": False,
            "visibility": "private" if repo.private else "public",
            "pushed_at": repo.created_at,
            "created_at": repo.created_at,
            "updated_at": repo.created_at,
            "license": None,
            "allow_forking": True,
            "web_commit_signoff_required": False,
            "network_count": 0,
            "subscribers_count": 0,
        }

    def _issue_urls(self, repo: _Repo, issue: _Issue) -> tuple[str, str]:
        full_name = f"{repo.owner.login}/{repo.name}"
        kind = "pull" if issue.is_pull else "issues"
        return (
            f"{self.url}/repos/{full_name}/issues/{issue.number}",
            f"{self.url}/{full_name}/{kind}/{issue.number}",
        )

    def _comment_json(self, repo: _Repo, issue: _Issue, comment: _Comment) -> dict[str, Any]:
        issue_url, issue_html = self._issue_urls(repo, issue)
        return {
            "id": comment.id,
            "node_id": f"IC_test{comment.id}",
            "url": f"{self.url}/repos/{repo.owner.login}/{repo.name}/issues/comments/{comment.id}",
            "html_url": f"{issue_html}#issuecomment-{comment.id}",
            "issue_url": issue_url,
            "body": comment.body,
            "user": self._user_json(comment.user),
            "created_at": comment.created_at,
            "updated_at": comment.updated_at,
            "author_association": comment.author_association,
            "performed_via_github_app": None,
        }

    def _issue_json(self, repo: _Repo, issue: _Issue) -> dict[str, Any]:
        issue_url, html = self._issue_urls(repo, issue)
        data: dict[str, Any] = {
            "id": issue.id,
            "node_id": f"I_test{issue.id}",
            "url": issue_url,
            "repository_url": f"{self.url}/repos/{repo.owner.login}/{repo.name}",
            "labels_url": f"{issue_url}/labels{{/name}}",
            "comments_url": f"{issue_url}/comments",
            "events_url": f"{issue_url}/events",
            "html_url": html,
            "number": issue.number,
            "state": issue.state,
            # Real GitHub sends "state_reason": null for an issue never closed, but the
            # description declares it an enum without null, so openapi-core rejects null:
            # leave it out then.
            "title": issue.title,
            "body": issue.body,
            "user": self._user_json(issue.user),
            "labels": [self._label_json(repo, label) for label in issue.labels],
            "assignee": None,
            "assignees": [],
            "milestone": None,
            "locked": False,
            "active_lock_reason": None,
            "comments": len(issue.comments),
            "closed_at": issue.closed_at,
            "created_at": issue.created_at,
            "updated_at": issue.updated_at,
            "author_association": "OWNER" if issue.user is repo.owner else "CONTRIBUTOR",
        }
        if issue.state_reason is not None:
            data["state_reason"] = issue.state_reason
        if issue.is_pull:
            pull_api = f"{self.url}/repos/{repo.owner.login}/{repo.name}/pulls/{issue.number}"
            data["pull_request"] = {
                "url": pull_api,
                "html_url": html,
                "diff_url": f"{html}.diff",
                "patch_url": f"{html}.patch",
                "merged_at": issue.closed_at if issue.merged else None,
            }
        return data

    def _label_json(self, repo: _Repo, label: _Label) -> dict[str, Any]:
        return {
            "id": label.id,
            "node_id": f"LA_test{label.id}",
            "url": f"{self.url}/repos/{repo.owner.login}/{repo.name}/labels/{quote(label.name)}",
            "name": label.name,
            "description": label.description,
            "color": label.color,
            "default": False,
        }

    def _ref_json(self, repo: _Repo, branch: str) -> dict[str, Any]:
        api = f"{self.url}/repos/{repo.owner.login}/{repo.name}"
        sha = repo.branches[branch]
        return {
            "ref": f"refs/heads/{branch}",
            "node_id": f"REF_test{_sha(repo.id, branch)[:12]}",
            "url": f"{api}/git/refs/heads/{quote(branch)}",
            "object": {"type": "commit", "sha": sha, "url": f"{api}/git/commits/{sha}"},
        }

    def _content_json(self, repo: _Repo, ref: str, path: str, text: str) -> dict[str, Any]:
        api = f"{self.url}/repos/{repo.owner.login}/{repo.name}"
        sha = _blob_sha(text)
        url = f"{api}/contents/{quote(path)}?ref={quote(ref, safe='')}"
        html = f"{self.url}/{repo.owner.login}/{repo.name}/blob/{quote(ref)}/{quote(path)}"
        raw = f"{self.url}/raw/{repo.owner.login}/{repo.name}/{quote(ref)}/{quote(path)}"
        return {
            "type": "file",
            "encoding": "base64",
            "size": len(text.encode("utf-8")),
            "name": path.rsplit("/", 1)[-1],
            "path": path,
            "content": _base64_lines(text),
            "sha": sha,
            "url": url,
            "git_url": f"{api}/git/blobs/{sha}",
            "html_url": html,
            "download_url": raw,
            "_links": {"self": url, "git": f"{api}/git/blobs/{sha}", "html": html},
        }

    def _commit_json(self, repo: _Repo, commit: _Commit) -> dict[str, Any]:
        api = f"{self.url}/repos/{repo.owner.login}/{repo.name}"
        html = f"{self.url}/{repo.owner.login}/{repo.name}/commit"
        person = {
            "name": commit.author.login,
            "email": f"{commit.author.id}+{commit.author.login}@users.noreply.github.com",
            "date": commit.date,
        }
        tree = _sha(commit.sha, "tree")
        return {
            "sha": commit.sha,
            "node_id": f"C_test{commit.sha[:12]}",
            "url": f"{api}/git/commits/{commit.sha}",
            "html_url": f"{html}/{commit.sha}",
            "author": person,
            "committer": person,
            "message": commit.message,
            "tree": {"url": f"{api}/git/trees/{tree}", "sha": tree},
            "parents": [
                {"url": f"{api}/git/commits/{p}", "html_url": f"{html}/{p}", "sha": p}
                for p in ([commit.parent] if commit.parent else [])
            ],
            "verification": {
                "verified": False,
                "reason": "unsigned",
                "signature": None,
                "payload": None,
                "verified_at": None,
            },
        }

    def _pull_json(self, repo: _Repo, issue: _Issue) -> dict[str, Any]:
        issue_json = self._issue_json(repo, issue)
        api = f"{self.url}/repos/{repo.owner.login}/{repo.name}"
        pull_api = f"{api}/pulls/{issue.number}"
        head_owner = self._user(issue.head_owner)
        same_repo = head_owner is repo.owner
        head_sha = (
            repo.branches[issue.head_ref]
            if same_repo and issue.head_ref in repo.branches
            else _sha(repo.id, issue.number, "head")
        )
        base_sha = repo.branches.get(issue.base_ref) or _sha(repo.id, issue.number, "base")

        def ref(owner: _User, name: str, sha: str) -> dict[str, Any]:
            return {
                "label": f"{owner.login}:{name}",
                "ref": name,
                "sha": sha,
                "user": self._user_json(owner),
                "repo": self._repo_json(repo, owner),
            }

        return {
            "id": issue.id + 1000000,
            "node_id": f"PR_test{issue.id}",
            "url": pull_api,
            "html_url": issue_json["html_url"],
            "diff_url": f"{issue_json['html_url']}.diff",
            "patch_url": f"{issue_json['html_url']}.patch",
            "issue_url": issue_json["url"],
            "commits_url": f"{pull_api}/commits",
            "review_comments_url": f"{pull_api}/comments",
            "review_comment_url": f"{api}/pulls/comments{{/number}}",
            "comments_url": issue_json["comments_url"],
            "statuses_url": f"{api}/statuses/{head_sha}",
            "number": issue.number,
            "state": issue.state,
            "locked": False,
            "title": issue.title,
            "user": issue_json["user"],
            "body": issue.body,
            "labels": issue_json["labels"],
            "milestone": None,
            "active_lock_reason": None,
            "created_at": issue.created_at,
            "updated_at": issue_json["updated_at"],
            "closed_at": issue.closed_at,
            "merged_at": issue.closed_at if issue.merged else None,
            "merge_commit_sha": None,
            "assignee": None,
            "assignees": [],
            "requested_reviewers": [],
            "requested_teams": [],
            "head": ref(head_owner, issue.head_ref, head_sha),
            "base": ref(repo.owner, issue.base_ref, base_sha),
            "_links": {
                "self": {"href": pull_api},
                "html": {"href": issue_json["html_url"]},
                "issue": {"href": issue_json["url"]},
                "comments": {"href": issue_json["comments_url"]},
                "review_comments": {"href": f"{pull_api}/comments"},
                "review_comment": {"href": f"{api}/pulls/comments{{/number}}"},
                "commits": {"href": f"{pull_api}/commits"},
                "statuses": {"href": f"{api}/statuses/{head_sha}"},
            },
            "author_association": issue_json["author_association"],
            "auto_merge": None,
            "draft": False,
            "merged": issue.merged,
            "mergeable": True,
            "rebaseable": True,
            "mergeable_state": "clean",
            "merged_by": None,
            "comments": len(issue.comments),
            "review_comments": 0,
            "maintainer_can_modify": head_owner is not repo.owner,
            "commits": 1,
            "additions": 1,
            "deletions": 0,
            "changed_files": 1,
        }

    def _deployment_json(self, repo: _Repo, deployment: _Deployment) -> dict[str, Any]:
        api = f"{self.url}/repos/{repo.owner.login}/{repo.name}"
        url = f"{api}/deployments/{deployment.id}"
        updated = deployment.statuses[-1].created_at if deployment.statuses else None
        return {
            "url": url,
            "id": deployment.id,
            "node_id": f"DE_test{deployment.id}",
            "sha": deployment.sha,
            "ref": deployment.ref,
            "task": deployment.task,
            "payload": deployment.payload,
            "original_environment": deployment.environment,
            "environment": deployment.environment,
            "description": deployment.description,
            "creator": self._user_json(deployment.creator),
            "created_at": deployment.created_at,
            "updated_at": updated or deployment.created_at,
            "statuses_url": f"{url}/statuses",
            "repository_url": api,
            "transient_environment": deployment.transient_environment,
            "production_environment": deployment.production_environment,
            "performed_via_github_app": None,
        }

    def _status_json(
        self, repo: _Repo, deployment: _Deployment, status: _DeploymentStatus
    ) -> dict[str, Any]:
        api = f"{self.url}/repos/{repo.owner.login}/{repo.name}"
        deployment_url = f"{api}/deployments/{deployment.id}"
        return {
            "url": f"{deployment_url}/statuses/{status.id}",
            "id": status.id,
            "node_id": f"DES_test{status.id}",
            "state": status.state,
            "creator": self._user_json(status.creator),
            "description": status.description,
            "environment": status.environment,
            "target_url": status.log_url,  # GitHub copies log_url here
            "created_at": status.created_at,
            "updated_at": status.created_at,
            "deployment_url": deployment_url,
            "repository_url": api,
            "environment_url": status.environment_url,
            "log_url": status.log_url,
            "performed_via_github_app": None,
        }

    # -- lookups and writes ---------------------------------------------------------------

    def _repo(self, owner: str, repo: str) -> _Repo:
        found = self._repos.get((owner, repo))
        if found is None:
            raise _GitHubError(404, "Not Found", f"{DOCS}/repos/repos#get-a-repository")
        return found

    def _issue(self, owner: str, repo: str, number: int | str) -> tuple[_Repo, _Issue]:
        repository = self._repo(owner, repo)
        issue = repository.issues.get(int(number))
        if issue is None:
            raise _GitHubError(404, "Not Found", f"{DOCS}/issues/issues#get-an-issue")
        return repository, issue

    def _comment(self, owner: str, repo: str, comment_id: str) -> tuple[_Repo, _Issue, _Comment]:
        repository = self._repo(owner, repo)
        found = self._comment_index.get(int(comment_id))
        if found is None or found[0] is not repository:
            raise _GitHubError(404, "Not Found", f"{DOCS}/issues/comments#get-an-issue-comment")
        return found

    def _store_comment(
        self,
        repo: _Repo,
        issue: _Issue,
        body: str,
        user: _User,
        association: str,
        created_at: str | None = None,
    ) -> _Comment:
        stamp = created_at or _now()
        comment = _Comment(next(self._ids), body, user, stamp, stamp, association)
        issue.comments.append(comment)
        self._touch(issue, stamp)
        self._comment_index[comment.id] = (repo, issue, comment)
        return comment

    def _touch(self, issue: _Issue, stamp: str | None = None) -> None:
        issue.updated_at = stamp or _now()
        issue.touched = next(self._ids)

    def _label(self, repo: _Repo, name: str) -> _Label:
        """The repository's label ``name``, created on the fly as GitHub does."""
        found = next((label for key, label in repo.labels.items() if key == name.lower()), None)
        if found is None:
            found = repo.labels[name.lower()] = _Label(next(self._ids), name)
        return found

    def _tree(self, repo: _Repo, branch: str) -> dict[str, str]:
        return dict(repo.commits[repo.branches[branch]].files)

    def _commit(
        self, repo: _Repo, branch: str, files: dict[str, str], message: str, author: _User
    ) -> _Commit:
        parent = repo.branches.get(branch)
        commit = _Commit(
            _sha(repo.id, parent, sorted(files.items()), message, next(self._ids)),
            parent,
            files,
            message,
            author,
            _now(),
        )
        repo.commits[commit.sha] = commit
        repo.branches[branch] = commit.sha
        return commit

    def _require(self, scope: str, level: str, docs: str, *alternatives: str) -> None:
        """403 unless the token's permissions grant ``level`` on ``scope`` (or on one of
        ``alternatives``), as GitHub answers the workflow's token."""
        if self.token_permissions is None or self._actor.type != "Bot":
            return
        for name in (scope, *alternatives):
            granted = self.token_permissions.get(name, "none")
            if granted == "write" or granted == level == "read":
                return
        accepted = "; ".join(f"{n.replace('-', '_')}={level}" for n in (scope, *alternatives))
        raise _GitHubError(
            403,
            "Resource not accessible by integration",
            docs,
            {"X-Accepted-GitHub-Permissions": accepted},
        )

    def _check_writable(self, docs: str) -> None:
        if self.read_only:
            raise _GitHubError(403, "Resource not accessible by integration", docs)

    def _deployment(self, owner: str, repo: str, deployment_id: str) -> tuple[_Repo, _Deployment]:
        repository = self._repo(owner, repo)
        found = repository.deployments.get(int(deployment_id))
        if found is None:
            raise _GitHubError(404, "Not Found", f"{DOCS}/deployments/deployments#get-a-deployment")
        return repository, found

    def _check_deployable(self, docs: str) -> None:
        self._check_writable(docs)
        if self.deployments_denied:  # the job's `permissions:` lack `deployments: write`
            raise _GitHubError(403, "Resource not accessible by integration", docs)

    @staticmethod
    def _invalid(resource: str, field_name: str, message: str, docs: str) -> _GitHubError:
        error = _GitHubError(422, "Validation Failed", docs)
        error.reply.payload = {
            "message": "Validation Failed",
            "errors": [
                {"resource": resource, "field": field_name, "code": "custom", "message": message}
            ],
            "documentation_url": docs,
        }
        return error

    # -- handlers (keyword arguments: path parameters, query, body) ----------------------

    def _get_repo(self, owner: str, repo: str, **_: Any) -> _Reply:
        return _Reply(200, self._repo_json(self._repo(owner, repo)))

    def _get_issue(self, owner: str, repo: str, issue_number: str, **_: Any) -> _Reply:
        repository, issue = self._issue(owner, repo, issue_number)
        self._require_issue_access(issue, "read", f"{DOCS}/issues/issues#get-an-issue")
        return _Reply(200, self._issue_json(repository, issue))

    def _list_issues(
        self, owner: str, repo: str, query: ImmutableMultiDict[str, str], **_: Any
    ) -> _Reply:
        repository = self._repo(owner, repo)
        self._require("issues", "read", f"{DOCS}/issues/issues#list-repository-issues")
        state = query.get("state", "open")
        wanted = {n.strip().lower() for n in query.get("labels", "").split(",") if n.strip()}
        creator = query.get("creator")
        since = query.get("since")
        found = [
            i
            for i in repository.issues.values()  # pull requests too, as GitHub lists them
            if state in ("all", i.state)
            and wanted <= {label.name.lower() for label in i.labels}
            and creator in (None, i.user.login)
            and (since is None or i.updated_at >= since)
        ]
        sort = query.get("sort", "created")
        keys: dict[str, Callable[[_Issue], Any]] = {
            "created": lambda i: (i.created_at, i.id),
            "updated": lambda i: (i.updated_at, i.touched),
            "comments": lambda i: (len(i.comments), i.id),
        }
        found.sort(key=keys[sort], reverse=query.get("direction", "desc") == "desc")
        items, headers = self._page(found, query, f"/repos/{owner}/{repo}/issues")
        return _Reply(200, [self._issue_json(repository, i) for i in items], headers)

    def _create_issue(self, owner: str, repo: str, body: dict[str, Any], **_: Any) -> _Reply:
        docs = f"{DOCS}/issues/issues#create-an-issue"
        repository = self._repo(owner, repo)
        self._check_writable(docs)
        self._require("issues", "write", docs)
        number = max(repository.issues, default=0) + 1
        stamp = _now()
        issue = _Issue(
            id=next(self._ids),
            number=number,
            title=str(body["title"]),
            body=body.get("body"),
            user=self._actor,
            created_at=stamp,
            is_pull=False,
            labels=self._labels_of(repository, body.get("labels") or []),
            updated_at=stamp,
        )
        self._touch(issue, stamp)
        repository.issues[number] = issue
        data = self._issue_json(repository, issue)
        return _Reply(201, data, {"Location": data["url"]})

    def _labels_of(self, repo: _Repo, labels: list[Any]) -> list[_Label]:
        names = [label if isinstance(label, str) else label.get("name", "") for label in labels]
        return [self._label(repo, name) for name in dict.fromkeys(names) if name]

    def _edit_issue(
        self, owner: str, repo: str, issue_number: str, body: dict[str, Any] | None, **_: Any
    ) -> _Reply:
        docs = f"{DOCS}/issues/issues#update-an-issue"
        repository, issue = self._issue(owner, repo, issue_number)
        self._check_writable(docs)
        self._require_issue_access(issue, "write", docs)
        body = body or {}
        if body.get("title") is not None:
            issue.title = str(body["title"])
        if "body" in body:
            issue.body = body["body"]
        if "labels" in body:
            issue.labels = self._labels_of(repository, body["labels"] or [])
        state = body.get("state")
        if state == "closed" and issue.state == "open":
            issue.state, issue.closed_at = "closed", _now()
            issue.state_reason = body.get("state_reason") or "completed"
        elif state == "open" and issue.state == "closed":
            if issue.is_pull and issue.merged:
                raise self._invalid("PullRequest", "state", "state cannot be changed.", docs)
            issue.state, issue.closed_at, issue.state_reason = "open", None, "reopened"
        self._touch(issue)
        return _Reply(200, self._issue_json(repository, issue))

    def _get_pull(self, owner: str, repo: str, pull_number: str, **_: Any) -> _Reply:
        repository, issue = self._issue(owner, repo, pull_number)
        if not issue.is_pull:
            raise _GitHubError(404, "Not Found", f"{DOCS}/pulls/pulls#get-a-pull-request")
        self._require("pull-requests", "read", f"{DOCS}/pulls/pulls#get-a-pull-request")
        return _Reply(200, self._pull_json(repository, issue))

    def _list_pulls(
        self, owner: str, repo: str, query: ImmutableMultiDict[str, str], **_: Any
    ) -> _Reply:
        repository = self._repo(owner, repo)
        self._require("pull-requests", "read", f"{DOCS}/pulls/pulls#list-pull-requests")
        state = query.get("state", "open")
        head = query.get("head")
        base = query.get("base")
        found = [
            i
            for i in repository.issues.values()
            if i.is_pull
            and state in ("all", i.state)
            # `head` must be user:ref-name; GitHub matches nothing by a bare branch name
            and (head is None or head == f"{i.head_owner}:{i.head_ref}")
            and base in (None, i.base_ref)
        ]
        sort = query.get("sort", "created")
        keys: dict[str, Callable[[_Issue], Any]] = {
            "created": lambda i: (i.created_at, i.id),
            "updated": lambda i: (i.updated_at, i.touched),
            "popularity": lambda i: (len(i.comments), i.id),
            "long-running": lambda i: (i.created_at, i.id),
        }
        descending = query.get("direction", "desc" if sort == "created" else "asc") == "desc"
        found.sort(key=keys[sort], reverse=descending)
        items, headers = self._page(found, query, f"/repos/{owner}/{repo}/pulls")
        return _Reply(200, [self._pull_json(repository, i) for i in items], headers)

    def _create_pull(self, owner: str, repo: str, body: dict[str, Any], **_: Any) -> _Reply:
        docs = f"{DOCS}/pulls/pulls#create-a-pull-request"
        repository = self._repo(owner, repo)
        self._check_writable(docs)
        self._require("pull-requests", "write", docs)
        if not self.actions_may_open_pulls and self._actor.type == "Bot":
            raise _GitHubError(
                403, "GitHub Actions is not permitted to create or approve pull requests.", docs
            )
        head_owner, _, branch = str(body.get("head", "")).rpartition(":")
        head_owner = head_owner or owner
        base = str(body.get("base", ""))
        if base not in repository.branches:
            raise self._missing_field("base", docs)
        if head_owner != owner or branch not in repository.branches:
            raise self._missing_field("head", docs)
        if any(
            i.is_pull and i.state == "open" and (i.head_owner, i.head_ref) == (owner, branch)
            for i in repository.issues.values()
        ):
            raise self._invalid(
                "PullRequest", "", f"A pull request already exists for {owner}:{branch}.", docs
            )
        if repository.branches[branch] == repository.branches[base] or self._tree(
            repository, branch
        ) == self._tree(repository, base):
            raise self._invalid("PullRequest", "", f"No commits between {base} and {branch}", docs)
        number = max(repository.issues, default=0) + 1
        stamp = _now()
        issue = _Issue(
            id=next(self._ids),
            number=number,
            title=str(body.get("title", "")),
            body=body.get("body"),
            user=self._actor,
            created_at=stamp,
            is_pull=True,
            head_ref=branch,
            base_ref=base,
            head_owner=owner,
            updated_at=stamp,
        )
        self._touch(issue, stamp)
        repository.issues[number] = issue
        data = self._pull_json(repository, issue)
        return _Reply(201, data, {"Location": data["url"]})

    @staticmethod
    def _missing_field(name: str, docs: str) -> _GitHubError:
        error = _GitHubError(422, "Validation Failed", docs)
        error.reply.payload = {
            "message": "Validation Failed",
            "errors": [{"resource": "PullRequest", "field": name, "code": "invalid"}],
            "documentation_url": docs,
            "status": "422",
        }
        return error

    def _dispatch_workflow(
        self, owner: str, repo: str, workflow_id: str, body: dict[str, Any], **_: Any
    ) -> _Reply:
        docs = f"{DOCS}/actions/workflows#create-a-workflow-dispatch-event"
        repository = self._repo(owner, repo)
        workflow = repository.workflows.get(workflow_id) or next(
            (w for w in repository.workflows.values() if str(w.id) == workflow_id), None
        )
        if workflow is None:
            raise _GitHubError(404, "Not Found", docs)
        self._check_writable(docs)
        self._require("actions", "write", docs)
        if not workflow.dispatchable:
            raise _GitHubError(422, "Workflow does not have 'workflow_dispatch' trigger", docs)
        ref = str(body["ref"]).removeprefix("refs/heads/")
        if ref not in repository.branches:
            raise _GitHubError(422, f"No ref found for: {body['ref']}", docs)
        inputs = body.get("inputs") or {}
        unexpected = [name for name in inputs if name not in workflow.inputs]
        if unexpected:
            raise _GitHubError(422, f"Unexpected inputs provided: {json.dumps(unexpected)}", docs)
        for name, required in workflow.inputs.items():
            if required and name not in inputs:
                raise _GitHubError(422, f"Required input '{name}' not provided", docs)
        repository.dispatches.append(
            {
                "workflow": workflow.path.rsplit("/", 1)[-1],
                "ref": ref,
                "inputs": dict(inputs),
                "actor": self._actor.login,
            }
        )
        if body.get("return_run_details"):
            run = next(self._ids)
            api = f"{self.url}/repos/{owner}/{repo}"
            return _Reply(
                200,
                {
                    "workflow_run_id": run,
                    "run_url": f"{api}/actions/runs/{run}",
                    "html_url": f"{self.url}/{owner}/{repo}/actions/runs/{run}",
                },
            )
        return _Reply(204)

    def _get_ref(self, owner: str, repo: str, ref: str, **_: Any) -> _Reply:
        docs = f"{DOCS}/git/refs#get-a-reference"
        repository = self._repo(owner, repo)
        self._require("contents", "read", docs)
        branch = ref.removeprefix("heads/")
        if not ref.startswith("heads/") or branch not in repository.branches:
            raise _GitHubError(404, "Not Found", docs)
        return _Reply(200, self._ref_json(repository, branch))

    def _create_ref(self, owner: str, repo: str, body: dict[str, Any], **_: Any) -> _Reply:
        docs = f"{DOCS}/git/refs#create-a-reference"
        repository = self._repo(owner, repo)
        self._check_writable(docs)
        self._require("contents", "write", docs)
        ref, sha = str(body["ref"]), str(body["sha"])
        if not ref.startswith("refs/") or ref.count("/") < 2:
            raise _GitHubError(422, f"{ref} is not a valid ref name.", docs)
        if not ref.startswith("refs/heads/"):
            self.validation_errors.append(f"POST git/refs {ref}: only branches are implemented")
            raise _GitHubError(422, "test server: only refs/heads/ is implemented", docs)
        if sha not in repository.commits:
            raise _GitHubError(422, "Object does not exist", docs)
        branch = ref.removeprefix("refs/heads/")
        if branch in repository.branches:
            raise _GitHubError(422, "Reference already exists", docs)
        repository.branches[branch] = sha
        data = self._ref_json(repository, branch)
        return _Reply(201, data, {"Location": data["url"]})

    def _resolve(self, repo: _Repo, ref: str) -> str | None:
        """A branch name (or refs/heads/ name) or a commit sha -> the commit's sha."""
        branch = ref.removeprefix("refs/heads/")
        if branch in repo.branches:
            return repo.branches[branch]
        return ref if ref in repo.commits else None

    def _get_contents(
        self, owner: str, repo: str, path: str, query: ImmutableMultiDict[str, str], **_: Any
    ) -> _Reply:
        docs = f"{DOCS}/repos/contents#get-repository-content"
        repository = self._repo(owner, repo)
        self._require("contents", "read", docs)
        ref = query.get("ref") or repository.default_branch
        sha = self._resolve(repository, ref)
        if sha is None:
            raise _GitHubError(404, f"No commit found for the ref {ref}", docs)
        files = repository.commits[sha].files
        path = path.strip("/")
        if path not in files:
            if any(name.startswith(path + "/") for name in files):
                self.validation_errors.append(f"GET contents/{path}: directories not implemented")
            raise _GitHubError(404, "Not Found", docs)
        return _Reply(200, self._content_json(repository, ref, path, files[path]))

    def _put_contents(
        self, owner: str, repo: str, path: str, body: dict[str, Any], **_: Any
    ) -> _Reply:
        docs = f"{DOCS}/repos/contents#create-or-update-file-contents"
        repository = self._repo(owner, repo)
        self._check_writable(docs)
        self._require("contents", "write", docs)
        branch = str(body.get("branch") or repository.default_branch).removeprefix("refs/heads/")
        if branch not in repository.branches:
            raise _GitHubError(404, f"Branch {branch} not found", docs)
        try:
            text = base64.b64decode(body["content"], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise _GitHubError(422, "content is not valid Base64", docs) from None
        path = path.strip("/")
        files = self._tree(repository, branch)
        current = files.get(path)
        given = body.get("sha")
        if current is not None and given is None:
            raise _GitHubError(422, 'Invalid request.\n\n"sha" wasn\'t supplied.', docs)
        if given is not None and (current is None or given != _blob_sha(current)):
            raise _GitHubError(409, f"{path} does not match {given}", docs)
        files[path] = text
        commit = self._commit(repository, branch, files, str(body["message"]), self._actor)
        return _Reply(
            201 if current is None else 200,
            {
                "content": {
                    k: v
                    for k, v in self._content_json(repository, branch, path, text).items()
                    if k not in ("content", "encoding")
                },
                "commit": self._commit_json(repository, commit),
            },
        )

    def _list_comments(
        self,
        owner: str,
        repo: str,
        issue_number: str,
        query: ImmutableMultiDict[str, str],
        **_: Any,
    ) -> _Reply:
        repository, issue = self._issue(owner, repo, issue_number)
        self._require_issue_access(issue, "read", f"{DOCS}/issues/comments")
        items, headers = self._page(
            issue.comments, query, f"/repos/{owner}/{repo}/issues/{issue.number}/comments"
        )
        return _Reply(200, [self._comment_json(repository, issue, c) for c in items], headers)

    def _page(
        self, items: list[Any], query: ImmutableMultiDict[str, str], path: str
    ) -> tuple[list[Any], dict[str, str]]:
        """One page of ``items`` (``per_page``, ``page``) and GitHub's ``Link`` header."""
        per_page = int(query.get("per_page", 30))
        per_page = 30 if per_page < 1 else min(per_page, 100)  # GitHub caps it at 100
        page = max(int(query.get("page", 1)), 1)
        last = max((len(items) + per_page - 1) // per_page, 1)
        headers: dict[str, str] = {}
        if last > 1:
            base = f"{self.url}{path}"
            others = [(k, v) for k, v in query.items(multi=True) if k not in ("page", "per_page")]

            def link(n: int, rel: str) -> str:
                params = urlencode([*others, ("per_page", per_page), ("page", n)])
                return f'<{base}?{params}>; rel="{rel}"'

            links = []
            if page > 1:
                links.append(link(min(page - 1, last), "prev"))
            if page < last:
                links += [link(page + 1, "next"), link(last, "last")]
            if page > 1:
                links.append(link(1, "first"))
            headers["Link"] = ", ".join(links)
        return items[(page - 1) * per_page : page * per_page], headers

    def _association(self, repo: _Repo) -> str:
        if self._actor is repo.owner:
            return "OWNER"
        return "NONE" if self._actor.type == "Bot" else "CONTRIBUTOR"

    def _require_issue_access(self, issue: _Issue, level: str, docs: str) -> None:
        # a pull request's conversation is reachable with either permission
        if issue.is_pull:
            self._require("pull-requests", level, docs, "issues")
        else:
            self._require("issues", level, docs)

    def _create_comment(
        self, owner: str, repo: str, issue_number: str, body: dict[str, Any], **_: Any
    ) -> _Reply:
        repository, issue = self._issue(owner, repo, issue_number)
        self._check_writable(f"{DOCS}/issues/comments#create-an-issue-comment")
        self._require_issue_access(issue, "write", f"{DOCS}/issues/comments")
        comment = self._store_comment(
            repository, issue, body["body"], self._actor, self._association(repository)
        )
        data = self._comment_json(repository, issue, comment)
        return _Reply(201, data, {"Location": data["url"]})

    def _get_comment(self, owner: str, repo: str, comment_id: str, **_: Any) -> _Reply:
        return _Reply(200, self._comment_json(*self._comment(owner, repo, comment_id)))

    def _edit_comment(
        self, owner: str, repo: str, comment_id: str, body: dict[str, Any], **_: Any
    ) -> _Reply:
        repository, issue, comment = self._comment(owner, repo, comment_id)
        self._check_writable(f"{DOCS}/issues/comments#update-an-issue-comment")
        self._require_issue_access(issue, "write", f"{DOCS}/issues/comments")
        comment.body = body["body"]
        comment.updated_at = _now()
        return _Reply(200, self._comment_json(repository, issue, comment))

    def _list_deployments(
        self, owner: str, repo: str, query: ImmutableMultiDict[str, str], **_: Any
    ) -> _Reply:
        repository = self._repo(owner, repo)
        found = [
            d
            for d in reversed(repository.deployments.values())  # newest first, as GitHub
            if query.get("environment") in (None, d.environment)
            and query.get("sha") in (None, d.sha)
            and query.get("ref") in (None, d.ref)
            and query.get("task") in (None, d.task)
        ]
        return _Reply(200, [self._deployment_json(repository, d) for d in found])

    def _create_deployment(self, owner: str, repo: str, body: dict[str, Any], **_: Any) -> _Reply:
        docs = f"{DOCS}/deployments/deployments#create-a-deployment"
        repository = self._repo(owner, repo)
        self._check_deployable(docs)
        ref = body["ref"]
        # The server has no git objects: it knows a commit only by its full SHA.
        if not re.fullmatch(r"[0-9a-f]{40}", ref):
            raise _GitHubError(422, f"No ref found for: {ref}", docs)
        if body.get("required_contexts") is None:
            # GitHub checks every status context of the commit, and the workflow run that
            # asks is one of them, still pending.
            raise _GitHubError(409, f"Conflict: Commit status checks failed for {ref}.", docs)
        deployment = _Deployment(
            id=next(self._ids),
            sha=ref,
            ref=ref,
            task=body.get("task", "deploy"),
            payload=body.get("payload", ""),
            environment=body.get("environment", "production"),
            description=body.get("description", ""),
            transient_environment=bool(body.get("transient_environment", False)),
            production_environment=bool(
                body.get("production_environment", body.get("environment") == "production")
            ),
            creator=self._actor,
            created_at=_now(),
        )
        repository.deployments[deployment.id] = deployment
        return _Reply(201, self._deployment_json(repository, deployment))

    def _get_deployment(self, owner: str, repo: str, deployment_id: str, **_: Any) -> _Reply:
        return _Reply(200, self._deployment_json(*self._deployment(owner, repo, deployment_id)))

    def _list_statuses(self, owner: str, repo: str, deployment_id: str, **_: Any) -> _Reply:
        repository, deployment = self._deployment(owner, repo, deployment_id)
        return _Reply(
            200,
            [self._status_json(repository, deployment, s) for s in reversed(deployment.statuses)],
        )

    def _create_status(
        self, owner: str, repo: str, deployment_id: str, body: dict[str, Any], **_: Any
    ) -> _Reply:
        docs = f"{DOCS}/deployments/statuses#create-a-deployment-status"
        repository, deployment = self._deployment(owner, repo, deployment_id)
        self._check_deployable(docs)
        description = body.get("description", "")
        if len(description) > 140:
            raise self._invalid(
                "DeploymentStatus",
                "description",
                "description is too long (maximum is 140 characters)",
                docs,
            )
        environment = body.get("environment") or deployment.environment
        status = _DeploymentStatus(
            id=next(self._ids),
            state=body["state"],
            description=description,
            environment=environment,
            environment_url=body.get("environment_url", ""),
            log_url=body.get("log_url") or body.get("target_url", ""),
            creator=self._actor,
            created_at=_now(),
        )
        deployment.statuses.append(status)
        return _Reply(201, self._status_json(repository, deployment, status))

    def _rate_limit(self, **_: Any) -> _Reply:
        core = {
            "limit": RATE_LIMIT,
            "used": self._rate_used,
            "remaining": max(RATE_LIMIT - self._rate_used, 0),
            "reset": self._rate_reset,
        }
        search = {"limit": 30, "used": 0, "remaining": 30, "reset": self._rate_reset}
        graphql = {
            "limit": RATE_LIMIT,
            "used": 0,
            "remaining": RATE_LIMIT,
            "reset": self._rate_reset,
        }
        return _Reply(
            200, {"resources": {"core": core, "search": search, "graphql": graphql}, "rate": core}
        )

    def _get_user(self, **_: Any) -> _Reply:
        if self._actor.type == "Bot":
            # GITHUB_TOKEN is an installation token: it has no user behind it.
            raise _GitHubError(
                403,
                "Resource not accessible by integration",
                f"{DOCS}/users/users#get-the-authenticated-user",
            )
        stamp = "2020-01-01T00:00:00Z"
        return _Reply(
            200,
            {
                **self._user_json(self._actor),
                "user_view_type": "private",
                "name": self._actor.login,
                "company": None,
                "blog": "",
                "location": None,
                "email": None,
                "hireable": None,
                "bio": None,
                "public_repos": 1,
                "public_gists": 0,
                "followers": 0,
                "following": 0,
                "created_at": stamp,
                "updated_at": stamp,
                "private_gists": 0,
                "total_private_repos": 0,
                "owned_private_repos": 0,
                "disk_usage": 0,
                "collaborators": 0,
                "two_factor_authentication": True,
            },
        )


@pytest.fixture
def github_api() -> Iterator[GitHubTestServer]:
    """A started GitHub API test server; at teardown, no request or response may have
    failed validation against GitHub's description."""
    missing = None
    try:
        server = GitHubTestServer()
    except SpecMissingError as error:
        missing = str(error)
    if missing is not None:  # outside the except: no chained traceback
        pytest.fail(missing, pytrace=False)
    with server:
        yield server
    assert not server.validation_errors, (
        "GitHub API test server saw invalid traffic:\n" + "\n".join(server.validation_errors)
    )
