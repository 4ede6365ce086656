"""A real Kubernetes API server on 127.0.0.1 with KServe's CRDs, for the serving tests.

The session fixture starts etcd and kube-apiserver, both built from their Go modules by
``scripts/kube-build.sh`` (once per machine, cached in ``~/.cache/kfops-tests/kube``),
on free loopback ports, installs the InferenceService and ServingRuntime CRDs from
``../shared/specs/kserve/`` and stops everything at the end of the session. The API
server validates, prunes and defaults custom objects as a cluster does and enforces
RBAC; nothing else of a cluster runs: no controller-manager (namespaces never finish
terminating, so each test takes a fresh one from ``namespace()``), no scheduler, no
KServe controller (``tests/kserve_controller.py`` writes InferenceService status).

Users come from a static token file: ``admin`` (group ``system:masters``) and
``deployer-limited``, ``deployer`` and ``viewer``, who can do nothing until a test grants
them a Role with ``grant()``.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("KFOPS_SHARED") or ROOT.parent / "shared")
KSERVE_CRDS = SHARED / "specs" / "kserve"
ADMIN = "admin"
LIMITED = "deployer-limited"
USERS = (LIMITED, "deployer", "viewer")  # no RBAC grants until a test gives them some
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SERVICE_RANGE = "10.96.0.0/16"  # bookkeeping only: nothing connects to a cluster IP


@dataclass
class KubeEnv:
    """A running API server: where it is, who may call it, and helpers for tests."""

    server: str  # https://127.0.0.1:PORT
    kubeconfig: Path  # the admin's
    ca_file: Path  # the API server's self-signed serving certificate and its CA
    tokens: dict[str, str]  # user name -> bearer token
    folder: Path  # the session's temporary folder
    started_in: float  # seconds from launching etcd to a ready API server
    _names: Iterator[int] = field(default_factory=itertools.count)

    @property
    def admin_token(self) -> str:
        return self.tokens[ADMIN]

    @property
    def limited_token(self) -> str:
        """The token of ``deployer-limited``, who has no RBAC grants (403s)."""
        return self.tokens[LIMITED]

    def environ(self, token: str | None = None) -> dict[str, str]:
        """Environment for a process (the kfops CLI) that should use this API server."""
        path = self.kubeconfig if token is None else self.kubeconfig_for(token)
        return {"KUBECONFIG": str(path)}

    def kubeconfig_for(self, token: str, namespace: str | None = None) -> Path:
        """A kubeconfig file that calls the API server with ``token``."""
        user = next((name for name, value in self.tokens.items() if value == token), "user")
        path = self.folder / f"kubeconfig-{user}-{next(self._names)}.yaml"
        _write_kubeconfig(path, self.server, self.ca_file, user, token, namespace)
        return path

    def api_client(self, token: str | None = None) -> Any:
        """A ``kubernetes.client.ApiClient`` for ``token`` (the admin's by default)."""
        from kubernetes import client, config

        configuration = client.Configuration()
        path = self.kubeconfig if token is None else self.kubeconfig_for(token)
        config.load_kube_config(config_file=str(path), client_configuration=configuration)
        return client.ApiClient(configuration)

    def namespace(self, prefix: str = "t") -> str:
        """Create a namespace with a name no other test uses, and return the name."""
        from kubernetes import client

        name = f"{prefix}-{next(self._names)}-{secrets.token_hex(3)}"
        with self.api_client() as api:
            client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
        return name

    def grant(
        self,
        namespace: str,
        user: str,
        verbs: Sequence[str],
        resources: Sequence[str] = ("inferenceservices",),
        api_groups: Sequence[str] = ("serving.kserve.io",),
    ) -> str:
        """Give ``user`` a Role in ``namespace`` allowing ``verbs`` on ``resources``.

        Returns when the authorizer answers yes (RBAC reads roles from a cache that
        lags the write by a moment). Returns the Role's name.
        """
        from kubernetes import client

        name = f"{user}-{next(self._names)}"
        rule = {"apiGroups": list(api_groups), "resources": list(resources), "verbs": list(verbs)}
        with self.api_client() as api:
            rbac = client.RbacAuthorizationV1Api(api)
            rbac.create_namespaced_role(namespace, {"metadata": {"name": name}, "rules": [rule]})
            rbac.create_namespaced_role_binding(
                namespace,
                {
                    "metadata": {"name": name},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Role",
                        "name": name,
                    },
                    "subjects": [
                        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}
                    ],
                },
            )
            authz = client.AuthorizationV1Api(api)
            review = {
                "spec": {
                    "user": user,
                    "resourceAttributes": {
                        "namespace": namespace,
                        "group": api_groups[0],
                        "resource": resources[0],
                        "verb": verbs[0],
                    },
                }
            }
            _wait(
                lambda: authz.create_subject_access_review(review).status.allowed,
                f"the grant of {verbs[0]} {resources[0]} to {user}",
            )
        return name


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait(check: Callable[[], object], what: str, seconds: float = 60.0) -> None:
    """Poll ``check`` until it is true; a RuntimeError from it (a process that died)
    ends the wait at once, other errors (not listening yet) are retried."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except RuntimeError:
            raise
        except Exception:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready within {seconds:.0f}s")


def binaries() -> Path:
    """The folder holding ``kube-apiserver`` and ``etcd``, built on first use."""
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "kube-build.sh")],
        capture_output=True,
        text=True,
        check=False,
    )
    folder = Path(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else None
    if done.returncode != 0 or folder is None or not (folder / "kube-apiserver").is_file():
        tail = "\n".join(done.stderr.splitlines()[-30:])
        pytest.fail(
            "could not build kube-apiserver and etcd with scripts/kube-build.sh "
            f"(exit {done.returncode}); it needs Go and the Go module proxy. "
            f"Its last output:\n{tail}",
            pytrace=False,
        )
    return folder


def _write_kubeconfig(
    path: Path, server: str, ca_file: Path, user: str, token: str, namespace: str | None
) -> None:
    context: dict[str, str] = {"cluster": "kfops-test", "user": user}
    if namespace is not None:
        context["namespace"] = namespace
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "kfops-test",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "kfops-test", "context": context}],
        "current-context": "kfops-test",
    }
    path.write_text(yaml.safe_dump(document, sort_keys=True), encoding="utf-8")


def _service_account_key(folder: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private, public = folder / "sa.key", folder / "sa.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the thread that started it ends (the
    session fixture's is the main thread), so no server outlives a killed pytest. Not
    SIGTERM: kube-apiserver takes that as the start of a graceful shutdown."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _stop(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    # The API server first, then etcd: it would retry a vanished etcd until killed.
    for process in processes:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _check_alive(process: subprocess.Popen[bytes], name: str, log: Path) -> None:
    if process.poll() is not None:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"{name} exited with {process.returncode}; {log}:\n{tail}")


def _etcd(folder: Path, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    client_url = f"http://127.0.0.1:{_free_port()}"
    peer_url = f"http://127.0.0.1:{_free_port()}"
    log = tmp / "etcd.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(folder / "etcd"),
                "--name=kfops-test",
                f"--data-dir={tmp / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=kfops-test={peer_url}",
                "--log-level=warn",
                # A throwaway store: losing it on a crash costs nothing, fsync costs seconds.
                "--unsafe-no-fsync",
            ],
            stdout=out,
            stderr=out,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def healthy() -> bool:
        _check_alive(process, "etcd", log)
        with urllib.request.urlopen(f"{client_url}/health", timeout=1) as answer:
            return bool(json.load(answer).get("health") == "true")

    try:
        _wait(healthy, "etcd")
    except BaseException:
        _stop([process])
        raise
    return process, client_url


def _apiserver(
    folder: Path, tmp: Path, etcd_url: str, tokens: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = _free_port()
    token_file = tmp / "tokens.csv"
    lines = [f'{tokens[ADMIN]},{ADMIN},uid-{ADMIN},"system:masters"']
    lines += [f"{tokens[user]},{user},uid-{user}" for user in USERS]
    token_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    token_file.chmod(0o600)
    private, public = _service_account_key(tmp)
    cert_dir = tmp / "certs"
    log = tmp / "kube-apiserver.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(folder / "kube-apiserver"),
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={cert_dir}",  # it writes a self-signed pair there
                f"--etcd-servers={etcd_url}",
                f"--token-auth-file={token_file}",
                "--authorization-mode=RBAC",
                "--anonymous-auth=false",
                f"--service-account-key-file={public}",
                f"--service-account-signing-key-file={private}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_RANGE}",
                # The default reconciler writes the `kubernetes` Endpoints with the
                # advertise address, and validation refuses loopback addresses.
                "--endpoint-reconciler-type=none",
                # Pods are never created here; without a controller-manager there are no
                # default ServiceAccounts for this plugin to find.
                "--disable-admission-plugins=ServiceAccount",
                "--profiling=false",
                "--v=0",
            ],
            stdout=out,
            stderr=out,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    server = f"https://127.0.0.1:{port}"
    ca_file = cert_dir / "apiserver.crt"

    def ready() -> bool:
        _check_alive(process, "kube-apiserver", log)
        context = ssl.create_default_context(cafile=str(ca_file))
        request = urllib.request.Request(
            f"{server}/readyz", headers={"Authorization": f"Bearer {tokens[ADMIN]}"}
        )
        with urllib.request.urlopen(request, timeout=2, context=context) as answer:
            return bool(answer.status == 200)

    try:
        _wait(ready, "kube-apiserver", seconds=120)
    except BaseException:
        _stop([process])
        raise
    return process, server, ca_file


def install_crds(api_client: Any, folder: Path = KSERVE_CRDS) -> list[str]:
    """Create every CRD in ``folder`` and wait until each is Established; their names."""
    from kubernetes import client

    files = sorted(folder.glob("*.yaml"))
    if not files:
        pytest.fail(f"KServe's CRDs are missing: no *.yaml in {folder}", pytrace=False)
    extensions = client.ApiextensionsV1Api(api_client)
    names = []
    for path in files:
        # libyaml's loader: the pure-Python one takes 6 s over the 2 MB InferenceService CRD.
        body = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)
        # Not deserialised into the client's models: the schema is megabytes of nesting.
        extensions.create_custom_resource_definition(body, _preload_content=False)
        names.append(body["metadata"]["name"])

    def established(name: str) -> bool:
        answer = extensions.read_custom_resource_definition(name, _preload_content=False)
        conditions = json.loads(answer.data).get("status", {}).get("conditions", [])
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    for name in names:
        _wait(functools.partial(established, name), f"CRD {name} Established")
    return names


@contextlib.contextmanager
def running() -> Iterator[KubeEnv]:
    """etcd, kube-apiserver and KServe's CRDs, up for the ``with`` block."""
    folder = binaries()
    tokens = {user: secrets.token_urlsafe(24) for user in (ADMIN, *USERS)}
    with tempfile.TemporaryDirectory(prefix="kfops-kube-") as tmp_name:
        tmp = Path(tmp_name)
        started = time.monotonic()
        etcd, etcd_url = _etcd(folder, tmp)
        processes = [etcd]
        try:
            apiserver, server, ca_file = _apiserver(folder, tmp, etcd_url, tokens)
            processes.insert(0, apiserver)
            kubeconfig = tmp / "kubeconfig.yaml"
            _write_kubeconfig(kubeconfig, server, ca_file, ADMIN, tokens[ADMIN], None)
            env = KubeEnv(server, kubeconfig, ca_file, tokens, tmp, time.monotonic() - started)
            with env.api_client() as api:
                install_crds(api)
            yield env
        finally:
            _stop(processes)


@pytest.fixture(scope="session")
def kube_env() -> Iterator[KubeEnv]:
    if not KSERVE_CRDS.is_dir():
        pytest.fail(
            f"KServe's CRDs are missing: {KSERVE_CRDS} does not exist "
            "(CI has ../shared beside the checkout; or set KFOPS_SHARED)",
            pytrace=False,
        )
    with running() as env:
        yield env
