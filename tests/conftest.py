from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker_env import docker_env  # noqa: F401  (the engine and registries fixture)
from tests.github_api import github_api  # noqa: F401  (the GitHub API test server fixture)
from tests.kfp_api import kfp_api  # noqa: F401  (the KFP API test server fixture)
from tests.kube_env import kube_env  # noqa: F401  (the Kubernetes API server fixture)

# A shell without job control starts a background command (`pytest &`) with SIGINT
# ignored, and every process it starts inherits that, so the Ctrl-C tests would fail for
# that reason alone. Start from Python's own handler, as a terminal gives it.
signal.signal(signal.SIGINT, signal.default_int_handler)

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
GOLDEN = Path(__file__).resolve().parent / "golden"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--regen-goldens",
        action="store_true",
        help="rewrite golden files from the current output instead of comparing",
    )


@pytest.fixture
def regen(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--regen-goldens"))


@pytest.fixture
def in_dir() -> Iterator[object]:
    """Change the working directory for the test, restoring it afterwards."""
    previous = Path.cwd()

    def change(path: Path) -> None:
        os.chdir(path)

    yield change
    os.chdir(previous)


def check_golden(path: Path, actual: str, regen: bool) -> None:
    """Compare ``actual`` with the golden file at ``path`` (or rewrite it with --regen-goldens)."""
    if regen or not path.exists():
        if not regen:
            pytest.fail(f"missing golden {path}; run pytest --regen-goldens to create it")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        return
    expected = path.read_text(encoding="utf-8")
    assert actual == expected, f"output differs from {path} (run pytest --regen-goldens)"


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` with a fixed identity; its stripped output."""
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def _dev_null_is_a_device() -> bool:
    import stat

    try:
        return stat.S_ISCHR(Path(os.devnull).stat().st_mode)
    except OSError:
        return False


def pytest_sessionstart(session: pytest.Session) -> None:
    if not _dev_null_is_a_device():
        pytest.exit(
            f"{os.devnull} is not a character device on this machine (something deleted it),"
            " so every process that reads it gets stale data: restore it with"
            " `rm -f /dev/null && mknod -m 666 /dev/null c 1 3`",
            returncode=3,
        )


@pytest.fixture(autouse=True)
def _dev_null_stays(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails the test that breaks /dev/null (as root, a stray `rm` of it is possible),
    instead of a later test that happens to read it."""
    yield
    if not _dev_null_is_a_device():
        pytest.fail(f"{request.node.nodeid} left {os.devnull} deleted or replaced by a file")
