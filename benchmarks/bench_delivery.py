"""Pipeline delivery: `kfops apply` against the KFP API test server (tests/kfp_api.py,
on 127.0.0.1), and how plan and apply grow with the number of schedules.

Prints figures; asserts nothing. The alternative a user would script is the KFP SDK's
`upload_pipeline_version` on every push (a new version each time, named by the caller):
compared with kfops' apply when nothing changed (warm against warm: the same server, the
same compiled pipeline, both after one upload).

Usage: .venv/bin/python benchmarks/bench_delivery.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.kfp_api import KfpTestServer  # noqa: E402


def main() -> None:
    from kfops.delivery import pipeline as delivery
    from kfops.kubeflow.client import connect
    from kfops.pipeline import compiler
    from kfops.project import config

    server = KfpTestServer().start()
    os.environ["KFP_TOKEN"] = server.token
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "iris"
            shutil.copytree(
                REPO / "pipelines" / "iris", root, ignore=shutil.ignore_patterns(".kfops")
            )
            kfp_line = f"    kfp: {{host: '{server.url}', token_env: KFP_TOKEN}}\n"
            base = (root / "mlops.yaml").read_text() + "environments:\n  staging:\n" + kfp_line
            (root / "mlops.yaml").write_text(base)
            subprocess.run(["git", "init", "-q"], cwd=root, check=True)
            subprocess.run(
                [
                    "git",
                    "-c",
                    "user.name=b",
                    "-c",
                    "user.email=b@x",
                    "commit",
                    "-qm",
                    "b",
                    "--allow-empty",
                ],
                cwd=root,
                check=True,
            )
            project = config.load(root)
            ir_text = compiler.compile_project(project).ir_text
            origin = delivery.Origin.detect(root)
            kfp = connect(project.environment("staging"))
            delivery.apply(project, ir_text, kfp, origin)

            print("1. apply with nothing to do (warm, in-process, after compile)")
            before = len(server.requests)
            started = time.perf_counter()
            delivery.apply(project, ir_text, kfp, origin)
            kfops_s = time.perf_counter() - started
            calls = server.requests[before:]
            print(
                f"   kfops apply:            {kfops_s * 1000:.1f} ms, {len(calls)} requests,"
                f" {len([c for c in calls if c[0] != 'GET'])} mutating"
            )
            package = root / "p.yaml"
            package.write_text(ir_text)
            import kfp as kfp_sdk

            client = kfp_sdk.Client(host=server.url, existing_token=server.token)
            pipeline_id = next(iter(server.pipelines))
            started = time.perf_counter()
            client.upload_pipeline_version(
                str(package), pipeline_version_name=f"v{time.time_ns()}", pipeline_id=pipeline_id
            )
            sdk_s = time.perf_counter() - started
            print(
                f"   SDK upload_pipeline_version: {sdk_s * 1000:.1f} ms, 1 mutating request,"
                " and one more version per push"
            )
            print(f"   ratio kfops/SDK: {kfops_s / sdk_s:.2f}x")

            print("\n2. plan and apply as schedules grow (apply creates them, then a no-op apply)")
            for count in (1, 10, 100):
                lines = "".join(
                    f'  - {{name: s{i}, cron: "{i % 60} 3 * * *", environment: staging}}\n'
                    for i in range(count)
                )
                (root / "mlops.yaml").write_text(base + "schedules:\n" + lines)
                project = config.load(root)
                started = time.perf_counter()
                delivery.apply(project, ir_text, kfp, origin)
                create_s = time.perf_counter() - started
                before = len(server.requests)
                started = time.perf_counter()
                delivery.plan(project, ir_text, kfp, origin)
                plan_s = time.perf_counter() - started
                reads = len(server.requests) - before
                print(
                    f"   {count:>3} schedules: apply (creating) {create_s * 1000:7.1f} ms;"
                    f" plan {plan_s * 1000:6.1f} ms with {reads} requests"
                    f" ({plan_s * 1000 / count:.2f} ms per schedule)"
                )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
