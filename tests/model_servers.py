"""Real KServe model servers for iris on loopback (``tests/data/serving/model_server.py``):
``good`` answers correctly, ``wrong`` loads fine but answers wrongly, ``slow`` answers
correctly 150 ms later (seeded). The fake KServe
controller (``tests/kserve_controller.py``) writes their URLs into InferenceService
statuses, so a release is probed and smoke-tested against a real model server."""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, str]]:
    """Real KServe model servers for iris: ``good``, ``wrong`` and ``slow``, by URL."""
    started: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    for behaviour in ("good", "wrong", "slow"):
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, str(SERVER), "--port", str(port), "--behaviour", behaviour],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started[behaviour] = (process, f"http://127.0.0.1:{port}")
    try:
        import httpx

        for _, url in started.values():
            deadline = time.monotonic() + 60
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
