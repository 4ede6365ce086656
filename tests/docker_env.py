"""A real Docker engine and real OCI registries on 127.0.0.1, for the image tests.

The session fixture starts ``dockerd`` (no bridge, no iptables: builds and containers
use ``--network host`` or ``none``) and ``docker-registry`` on free ports, and stops
them at the end. The base image is Debian bookworm with python3 and pip, made once
with debootstrap and kept outside the repository (``~/.cache/kfops-tests``), then
pushed to the session's fresh registry, as a user's ``python:3.11-slim`` would be
there. ``scripts/test.sh`` installs the Debian packages; without them, the tests fail
with the command that installs them.
"""

from __future__ import annotations

import contextlib
import crypt
import ctypes
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("KFOPS_TEST_CACHE") or Path.home() / ".cache" / "kfops-tests")
DOCKER = "/usr/bin/docker"  # Debian's client: another one earlier on PATH may lack BuildKit
NEEDED = {
    "dockerd": "docker.io",
    "docker-registry": "docker-registry",
    "debootstrap": "debootstrap",
}
BASE_TAG = "base/python:3.11"
USER, PASSWORD = "kfops-test", "s3cret-never-printed"


@dataclass(frozen=True)
class DockerEnv:
    host: str  # DOCKER_HOST
    registry: str  # 127.0.0.1:PORT
    auth_registry: str  # 127.0.0.1:PORT, wanting USER/PASSWORD
    base: str  # REGISTRY/base/python:3.11

    def environ(self) -> dict[str, str]:
        return {"DOCKER_HOST": self.host, "KFOPS_DOCKER": DOCKER}

    def docker(self, *args: str) -> str:
        done = subprocess.run(
            [DOCKER, *args],
            env={**os.environ, **self.environ()},
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait(check: object, what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():  # type: ignore[operator]
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start within {seconds:.0f}s")


def _registry(tmp: Path, name: str, auth: bool) -> tuple[subprocess.Popen[bytes], str]:
    import requests

    port = _free_port()
    config = tmp / f"{name}.yml"
    lines = [
        "version: 0.1",
        "log: {level: error}",
        f"storage: {{filesystem: {{rootdirectory: {tmp / name}}}, delete: {{enabled: true}}}}",
        f"http: {{addr: '127.0.0.1:{port}'}}",
    ]
    if auth:
        htpasswd = tmp / f"{name}.htpasswd"
        hashed = crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH))
        htpasswd.write_text(f"{USER}:{hashed}\n")
        lines.append(f"auth: {{htpasswd: {{realm: kfops-test, path: {htpasswd}}}}}")
    config.write_text("\n".join(lines) + "\n")
    with (tmp / f"{name}.log").open("wb") as log:
        process = subprocess.Popen(
            ["docker-registry", "serve", str(config)],
            stdout=log,
            stderr=log,
            preexec_fn=_die_with_parent,
        )
    address = f"127.0.0.1:{port}"
    _wait(lambda: requests.get(f"http://{address}/v2/", timeout=1).status_code in (200, 401), name)
    return process, address


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM (dockerd shuts down cleanly on it) when the
    thread that started it ends, so no engine or registry outlives a killed pytest and
    holds the data root's lock against the next session."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _base_rootfs() -> Path:
    """Debian bookworm with python3 and pip, as a tarball, made once per machine."""
    tarball = CACHE / "base-bookworm-python3.tar"
    if tarball.is_file():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3-minimal,python3,python3-pip,ca-certificates",
                "bookworm",
                str(rootfs),
            ],
            check=True,
            capture_output=True,
        )
        # As in the official python images, pip may install into the system Python.
        for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
            marker.unlink()
        partial = tarball.with_suffix(".partial")
        with tarfile.open(partial, "w") as archive:
            archive.add(rootfs, arcname=".")
        partial.replace(tarball)
    return tarball


@pytest.fixture(scope="session")
def docker_env() -> Iterator[DockerEnv]:
    missing = [package for tool, package in NEEDED.items() if shutil.which(tool) is None]
    if missing or not Path(DOCKER).exists():
        pytest.fail(
            "the image tests need a Docker engine and an OCI registry: "
            f"apt-get install -y --no-install-recommends {' '.join(missing)} runc"
            " (scripts/test.sh does this)"
        )
    with running() as env:
        yield env


@contextlib.contextmanager
def running() -> Iterator[DockerEnv]:
    """The engine and registries, up for the ``with`` block (tests and benchmarks)."""
    # The engine's data (and BuildKit's cache) survive between runs and checkouts; a
    # second engine at the same time (another checkout's tests) gets a folder of its own.
    CACHE.mkdir(parents=True, exist_ok=True)
    lock = (CACHE / "docker.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        data_root = CACHE / "docker"
    except BlockingIOError:
        key = hashlib.sha256(str(ROOT).encode()).hexdigest()[:8]
        data_root = CACHE / f"docker-{key}"
    with tempfile.TemporaryDirectory(
        prefix="kfops-docker-", ignore_cleanup_errors=True
    ) as tmp_name:
        tmp = Path(tmp_name)
        socket_path = tmp / "docker.sock"
        with (tmp / "dockerd.log").open("wb") as log:
            engine = subprocess.Popen(
                [
                    "dockerd",
                    f"--host=unix://{socket_path}",
                    f"--data-root={data_root}",
                    f"--exec-root={tmp / 'exec'}",
                    f"--pidfile={tmp / 'docker.pid'}",
                    "--iptables=false",
                    "--ip6tables=false",
                    "--bridge=none",
                    "--storage-driver=overlay2",
                    "--exec-opt=native.cgroupdriver=cgroupfs",
                ],
                stdout=log,
                stderr=log,
                preexec_fn=_die_with_parent,
            )
        registries: list[subprocess.Popen[bytes]] = []
        try:
            registry_process, registry = _registry(tmp, "registry", auth=False)
            registries.append(registry_process)
            auth_process, auth_registry = _registry(tmp, "auth-registry", auth=True)
            registries.append(auth_process)
            env = DockerEnv(f"unix://{socket_path}", registry, auth_registry, "")
            _wait(
                lambda: (
                    subprocess.run(
                        [DOCKER, "version"],
                        env={**os.environ, **env.environ()},
                        capture_output=True,
                    ).returncode
                    == 0
                ),
                "dockerd",
            )
            base = f"{registry}/{BASE_TAG}"
            local_base = f"kfops-test/{BASE_TAG}"
            if (
                subprocess.run(
                    [DOCKER, "image", "inspect", local_base],
                    env={**os.environ, **env.environ()},
                    capture_output=True,
                ).returncode
                != 0
            ):
                with _base_rootfs().open("rb") as tarball:
                    subprocess.run(
                        [DOCKER, "import", "-", local_base],
                        stdin=tarball,
                        env={**os.environ, **env.environ()},
                        capture_output=True,
                        check=True,
                    )
            env.docker("tag", local_base, base)
            env.docker("push", base)
            yield DockerEnv(env.host, registry, auth_registry, base)
        finally:
            for process in [*registries, engine]:
                process.terminate()
            for process in [*registries, engine]:
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
            _unmount_below(tmp)
            lock.close()


def _unmount_below(folder: Path) -> None:
    """dockerd can leave its network namespace mounted in its exec root; unmount what is
    left below ``folder`` so that the folder can be removed."""
    with Path("/proc/mounts").open(encoding="utf-8") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(str(folder))]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
