"""Real KServe model servers for iris on loopback (``tests/data/serving/model_server.py``):
``good`` answers correctly, ``wrong`` loads fine but answers wrongly (the ``servers``
fixture); ``slow`` answers correctly 150 ms later (seeded; ``serving("slow")``). The fake KServe
controller (``tests/kserve_controller.py``) writes their URLs into InferenceService
statuses, so a release is probed and smoke-tested against a real model server."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SERVER = Path(__file__).resolve().parent / "data" / "serving" / "model_server.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def serving(*behaviours: str) -> Iterator[dict[str, str]]:
    """Real KServe model servers for iris, one per behaviour, by URL; stopped on exit."""
    started: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    for behaviour in behaviours:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, str(SERVER), "--port", str(port), "--behaviour", behaviour],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started[behaviour] = (process, f"http://127.0.0.1:{port}")
    try:
        import httpx

        # Started together, they share the start-up time; on a busy 2-core machine,
        # importing kserve and training the forest took up to a minute.
        deadline = time.monotonic() + 120
        for _, url in started.values():
            while True:
                try:
                    if httpx.get(f"{url}/v2/models/iris/ready", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the model server at {url} did not start")
                time.sleep(0.2)
        yield {name: url for name, (_, url) in started.items()}
    finally:
        for process, _ in started.values():
            process.terminate()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, str]]:
    """Real KServe model servers for iris: ``good`` and ``wrong``, by URL."""
    with serving("good", "wrong") as found:
        yield found
