"""Run the GitHub API test server by hand, for the README's "Watch a model" walkthrough.

    .venv/bin/python -m tests.serve_github --repo acme/iris --env-file github.env

It serves one repository whose default branch holds the files of the git checkout
(those under --seed), with the retrain workflow kfops dispatches, and writes the
variables kfops reads (GITHUB_API_URL, GITHUB_REPOSITORY, GITHUB_TOKEN) to --env-file for
`source`. Every request is checked against GitHub's OpenAPI description, as in the
tests. It runs until Ctrl-C, then prints the issues, dispatches and pull requests it
holds; `GET /repos/OWNER/NAME/issues` (and `/pulls`, and `/actions/...`) shows them
while it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

from tests.github_api import GitHubTestServer, SpecMissingError

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.serve_github", description=__doc__)
    parser.add_argument("--repo", default="acme/iris", help="OWNER/NAME [acme/iris]")
    parser.add_argument(
        "--seed",
        default="pipelines",
        help="the checkout's files under this folder go on the default branch [pipelines]",
    )
    parser.add_argument("--workflow", default="kfops-retrain.yml", help="the retrain workflow")
    parser.add_argument("--env-file", type=Path, help="write the export lines here")
    args = parser.parse_args(argv)
    owner, _, name = args.repo.partition("/")
    try:
        server = GitHubTestServer().start()
    except SpecMissingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print("  hint: npm ci --prefix tests/npm (bash scripts/test.sh does it)", file=sys.stderr)
        return 1
    server.add_repo(owner, name)
    server.add_workflow(
        owner,
        name,
        args.workflow,
        inputs={"key": True, "environment": True, "project": False, "issue": False},
    )
    tracked = subprocess.run(
        ["git", "ls-files", "--", args.seed],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for path in tracked:
        text = (ROOT / path).read_text(encoding="utf-8", errors="replace")
        server.add_file(owner, name, "main", path, text)
    exports = (
        f"export GITHUB_API_URL={server.url}\n"
        f"export GITHUB_REPOSITORY={owner}/{name}\n"
        f"export GITHUB_TOKEN={server.token}\n"
    )
    if args.env_file:
        args.env_file.write_text(exports)
    print(f"GitHub API test server for {owner}/{name} at {server.url}", flush=True)
    print(exports, end="", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    held = {
        "issues": [
            {k: i[k] for k in ("number", "title", "state", "html_url")}
            for i in server.issues(owner, name)
        ],
        "dispatches": server.dispatches(owner, name),
        "pulls": [
            {k: p[k] for k in ("number", "title", "state", "html_url")}
            for p in server.pulls(owner, name)
        ],
    }
    print(json.dumps(held, indent=2), flush=True)
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
