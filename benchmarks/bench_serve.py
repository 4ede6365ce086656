"""How fast is `kfops serve`, against KServe's own model server on the same model?

Run from the repository root with the project's virtual environment:

    .venv/bin/python benchmarks/bench_serve.py [--rounds N] [--requests N]

One real local run of pipelines/iris (in a temp folder) provides the model. Then, warm
against warm, it prints figures only (no asserts):

1. time to ready: from starting the process to the first 200 of
   `GET /v2/models/iris/ready`, for `kfops serve` and for a plain script that loads
   the model with joblib and starts `kserve.ModelServer` with a minimal `kserve.Model`
   (the baseline), alternating, ``--rounds`` times each (median, min);
2. request latency: V1 `:predict` and V2 `/infer` of one iris row, ``--requests``
   times per server and protocol after 20 warm-up requests, the two servers asked in
   turn over keep-alive connections (median, p95), and the ratio kfops / baseline.

One run on the development machine (2 cores shared with other sessions, so absolute
figures move with their load; `--rounds 3 --requests 200`):

    ready  kfops 9.24 s (min 5.69) | kserve 8.52 s (min 5.97) | ratio 1.08
    v1     kfops 15.89 ms (p95 23.05) | kserve 15.62 ms (p95 23.57) | ratio 1.02
    v2     kfops 16.88 ms (p95 25.41) | kserve 16.90 ms (p95 24.70) | ratio 1.00

Most of a request is scikit-learn's RandomForest.predict (about 9 ms here for one
row); most of the start is importing kserve (FastAPI, pydantic) and scikit-learn, on
both sides. Before kfops gave the model arrays instead of DataFrames (to keep the
fitted feature names), a request cost about 2 ms more (ratio 1.15).

kfops adds, at start, loading mlops.yaml and the run's result.json; per request, one
log line.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
ROW = [5.1, 3.5, 1.4, 0.2]

BASELINE = textwrap.dedent(
    """
    import sys

    import joblib
    import kserve
    from kserve.utils.utils import get_predict_input, get_predict_response


    class Iris(kserve.Model):
        def __init__(self, path):
            super().__init__("iris")
            self.model = joblib.load(path)
            self.ready = True

        def predict(self, payload, headers=None, response_headers=None):
            result = self.model.predict(get_predict_input(payload))
            return get_predict_response(payload, result, self.name)


    path, port = sys.argv[1], int(sys.argv[2])
    sys.argv = sys.argv[:1]
    kserve.ModelServer(http_port=port, enable_grpc=False).start([Iris(path)])
    """
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        return int(probe.getsockname()[1])


def start(command: list[str], port: int) -> tuple[subprocess.Popen[bytes], float]:
    """Start a server; return it and the seconds until its model answers ready."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v2/models/iris/ready"
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return process, time.perf_counter() - started
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            sys.exit(f"the server exited: {' '.join(command)}")
        time.sleep(0.01)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    process.wait(timeout=30)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200)
    options = parser.parse_args()
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as temp:
        work = Path(temp)
        project, runs = work / "iris", work / "runs"
        shutil.copytree(ROOT / "pipelines" / "iris", project)
        subprocess.run(
            [python, "-m", "kfops", "run", str(project), "--runs-dir", str(runs)],
            check=True,
            capture_output=True,
        )
        model = next(runs.glob("*/artifacts/*/train-model/model"))
        script = work / "baseline.py"
        script.write_text(BASELINE, encoding="utf-8")

        def commands(port: int) -> dict[str, list[str]]:
            kfops = [python, "-m", "kfops", "serve", str(project), "--runs-dir", str(runs)]
            return {
                "kfops serve": [*kfops, "--port", str(port)],
                "baseline": [python, str(script), str(model), str(port)],
            }

        ready: dict[str, list[float]] = {"kfops serve": [], "baseline": []}
        for _ in range(options.rounds):
            for name in ready:
                port = free_port()
                process, seconds = start(commands(port)[name], port)
                ready[name].append(seconds)
                stop(process)

        ports = {name: free_port() for name in ready}
        processes = [start(commands(port)[name], port)[0] for name, port in ports.items()]
        latency: dict[tuple[str, str], list[float]] = {}
        bodies = {
            "v1": ("/v1/models/iris:predict", {"instances": [ROW]}),
            "v2": (
                "/v2/models/iris/infer",
                {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": ROW}]},
            ),
        }
        try:
            clients = {
                name: httpx.Client(base_url=f"http://127.0.0.1:{port}")
                for name, port in ports.items()
            }
            for protocol, (path, body) in bodies.items():
                for client in clients.values():
                    for _ in range(20):
                        client.post(path, json=body).raise_for_status()
                for _ in range(options.requests):
                    for name, client in clients.items():
                        began = time.perf_counter()
                        client.post(path, json=body).raise_for_status()
                        elapsed = (time.perf_counter() - began) * 1000
                        latency.setdefault((protocol, name), []).append(elapsed)
        finally:
            for process in processes:
                stop(process)

    cpus = os.cpu_count()
    print(f"bench_serve: {options.rounds} rounds, {options.requests} requests, {cpus} cores")
    kf, base = ready["kfops serve"], ready["baseline"]
    print(
        f"ready  kfops {statistics.median(kf):.2f} s (min {min(kf):.2f})"
        f" | kserve {statistics.median(base):.2f} s (min {min(base):.2f})"
        f" | ratio {statistics.median(kf) / statistics.median(base):.2f}"
    )
    for protocol in bodies:
        kf, base = latency[(protocol, "kfops serve")], latency[(protocol, "baseline")]
        print(
            f"{protocol}     kfops {statistics.median(kf):.2f} ms (p95 {percentile(kf, 0.95):.2f})"
            f" | kserve {statistics.median(base):.2f} ms (p95 {percentile(base, 0.95):.2f})"
            f" | ratio {statistics.median(kf) / statistics.median(base):.2f}"
        )


if __name__ == "__main__":
    main()
