"""Model release: `kfops deploy` against a real kube-apiserver with KServe's CRDs
(tests/kube_env.py) and a scripted controller that makes each InferenceService ready at
once (tests/kserve_controller.py), its URL a real KServe model server on loopback.

Prints figures; asserts nothing. The goal is that the waits, not kfops, dominate: the
figures split a release into kfops's own work (reads, gate, render, dry run, apply,
record) and waiting (for readiness, the data-plane probe and the smoke requests). The
alternative a user would script is a server-side apply of a hand-written
InferenceService and a poll until `Ready` (what `kubectl apply --server-side` and
`kubectl wait --for=condition=Ready` do): timed against the same server and controller,
warm against warm (both after one release).

Usage: .venv/bin/python benchmarks/bench_deploy.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.kserve_controller import KServeController, Timeline  # noqa: E402
from tests.kube_env import running  # noqa: E402

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _model_server() -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = _free_port()
    script = REPO / "tests" / "data" / "serving" / "model_server.py"
    process = subprocess.Popen(
        [sys.executable, str(script), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v2/models/iris/ready", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the model server did not start")


def _kfops_release(folder: Path, version: int) -> tuple[float, dict[str, Any]]:
    from click.testing import CliRunner

    from kfops.cli import cli

    started = time.perf_counter()
    result = CliRunner().invoke(
        cli,
        [
            "deploy",
            str(folder),
            "--env",
            "bench",
            "--model-uri",
            f"s3://models/iris/v{version}",
            "--metrics",
            str(folder / "metrics.json"),
            "--format",
            "json",
        ],
    )
    seconds = time.perf_counter() - started
    if result.exit_code != 0:
        raise RuntimeError(result.output)
    outcome: dict[str, Any] = json.loads(result.stdout)
    return seconds, outcome


def _plain_release(api: Any, namespace: str, version: int) -> float:
    """A hand-written release: server-side apply, then poll until Ready is True."""
    from kubernetes import client

    objects = client.CustomObjectsApi(api)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {"name": "plain"},
        "spec": {
            "predictor": {
                "model": {
                    "modelFormat": {"name": "sklearn"},
                    "storageUri": f"s3://models/iris/v{version}",
                    "protocolVersion": "v2",
                }
            }
        },
    }
    started = time.perf_counter()
    api.call_api(
        f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/plain",
        "PATCH",
        query_params=[("fieldManager", "script")],
        header_params={"Content-Type": "application/apply-patch+yaml"},
        body=body,
        response_type="object",
        auth_settings=["BearerToken"],
    )
    while True:
        live = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "plain")
        status = live.get("status") or {}
        predictor = (status.get("components") or {}).get("predictor") or {}
        conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
        fresh = predictor.get("latestReadyRevision", "").endswith(f"{version:05d}")
        if conditions.get("Ready") == "True" and fresh:
            return time.perf_counter() - started
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ["KFOPS_POLL_SECONDS"] = "0.05"
    server, url = _model_server()
    try:
        with running() as env, tempfile.TemporaryDirectory() as tmp:
            namespace = env.namespace("bench")
            folder = Path(tmp) / "iris"
            shutil.copytree(
                REPO / "pipelines" / "iris", folder, ignore=shutil.ignore_patterns(".kfops")
            )
            with (folder / "mlops.yaml").open("a") as f:
                f.write(f"\nenvironments:\n  bench:\n    kubernetes: {{namespace: {namespace}}}\n")
            (folder / "metrics.json").write_text(json.dumps({"accuracy": 0.95}))
            os.environ["KUBECONFIG"] = str(env.kubeconfig)
            api = env.api_client()
            timeline = Timeline.canary(url=url, canary_url=url)
            with KServeController(api, namespace, timeline):
                first, _ = _kfops_release(folder, 1)  # the first release: no canary
                _plain_release(api, namespace, 1)
                kfops_total, waits, own, plain = [], [], [], []
                for index in range(args.rounds):
                    seconds, outcome = _kfops_release(folder, index + 2)
                    steps = outcome["steps"]
                    waiting = sum(
                        s["seconds"] for s in steps if s["what"] in ("ready", "probe", "smoke")
                    )
                    kfops_total.append(seconds)
                    waits.append(waiting)
                    own.append(seconds - waiting)
                    plain.append(_plain_release(api, namespace, index + 2))
    finally:
        server.terminate()
        server.wait(timeout=10)

    def median(values: list[float]) -> float:
        return statistics.median(values)

    print(f"first release (no canary): {first:.2f} s")
    print(
        f"release with a 10% canary, smoke test (3 requests) and promotion,"
        f" median of {args.rounds}:"
    )
    print(f"  kfops deploy        {median(kfops_total):6.2f} s")
    print(f"    waiting           {median(waits):6.2f} s  (ready x2, probe x2, smoke)")
    print(f"    kfops's own work  {median(own):6.2f} s  (reads, gate, dry runs, applies, record)")
    print(f"  apply + poll Ready  {median(plain):6.2f} s  (no canary, probe or smoke test)")
    print(f"  ratio kfops/plain   {median(kfops_total) / median(plain):6.1f}x")
    print(f"  share waiting       {median(waits) / median(kfops_total):6.0%}")


if __name__ == "__main__":
    main()
