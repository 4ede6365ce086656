"""Step images: kfops' content-addressed builds against the usual workflow, which tags
images by git SHA and so builds and pushes every image on every push.

Runs a real Docker engine and registry on 127.0.0.1 (tests/docker_env.py) and prints
figures; it asserts nothing. Three images, both sides with BuildKit's cache warm
(warm against warm):

1. a push with nothing changed: `kfops build` (registry HEADs only) against
   `docker build` + `docker push` of the same three Dockerfiles under a new SHA tag;
2. a push that changes one step's code: images rebuilt by each;
3. a step's start: a kfops image (nothing installed) against KFP's lightweight
   component on the base image (its runtime `pip install` of kfp and the packages).

Usage: .venv/bin/python benchmarks/bench_images.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.docker_env import DOCKER, running  # noqa: E402

PIPELINE = """\
from kfp import dsl

BASE = "{base}"


@dsl.component(base_image=BASE)
def a(n: int) -> int:
    return n + 1


@dsl.component(base_image=BASE)
def b(n: int) -> int:
    import six

    return n + len(six.__version__)


@dsl.component(base_image=BASE)
def c(n: int) -> int:
    return n * {factor}


@dsl.pipeline(name="bench")
def bench(n: int = 1):
    c(n=b(n=a(n=n).output).output)
"""

MLOPS = """\
version: 1
name: bench
images:
  one: {{base: "{base}", packages: ["six==1.16.0"]}}
  two: {{base: "{base}", packages: ["six==1.16.0", "packaging==24.1"]}}
  three: {{base: "{base}", packages: ["six==1.17.0"]}}
pipeline:
  python: pipeline.py:bench
  steps:
    a: {{image: one}}
    b: {{image: two}}
    c: {{image: three}}
environments:
  dev: {{registry: "{registry}/bench"}}
"""


def _kfops(project: Path, env: dict[str, str], *args: str) -> tuple[float, list[dict[str, object]]]:
    started = time.perf_counter()
    done = subprocess.run(
        [str(REPO / ".venv/bin/kfops"), *args, str(project)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    seconds = time.perf_counter() - started
    return seconds, json.loads(done.stdout) if done.stdout.strip().startswith("[") else []


def _sha_workflow(project: Path, env: dict[str, str], registry: str, sha: str) -> float:
    """What a home-made workflow does per push: build and push every image as :SHA."""
    started = time.perf_counter()
    for spec in sorted((project / ".kfops" / "dockerfiles").glob("*.Dockerfile")):
        ref = f"{registry}/sha/{spec.stem}:{sha}"
        subprocess.run(
            [
                DOCKER,
                "build",
                "-q",
                "--network",
                "host",
                "-f",
                str(spec),
                "-t",
                ref,
                str(spec.parent),
            ],
            env={**env, "DOCKER_BUILDKIT": "1"},
            capture_output=True,
            check=True,
        )
        subprocess.run([DOCKER, "push", "-q", ref], env=env, capture_output=True, check=True)
    return time.perf_counter() - started


def main() -> None:
    with running() as docker, tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, **docker.environ(), "KFOPS_BUILD_NETWORK": "host"}
        project = Path(tmp) / "bench"
        project.mkdir()
        (project / "pipeline.py").write_text(PIPELINE.format(base=docker.base, factor=2))
        (project / "mlops.yaml").write_text(
            MLOPS.format(base=docker.base, registry=docker.registry)
        )

        cold, images = _kfops(project, env, "build", "--env", "dev", "--format", "json")
        print(f"first build (3 images, BuildKit cache may be warm): {cold:.2f}s")

        # The same three Dockerfiles, for the SHA-tagged workflow.
        sys.path.insert(0, str(REPO / "src"))
        from kfops.images import build as image_build
        from kfops.images.registry import Registry
        from kfops.pipeline import compiler
        from kfops.project import config

        os.environ.update(docker.environ())
        loaded = config.load(project)
        registry = Registry()
        prepared = image_build.prepare(
            loaded, compiler.compile_project(loaded).ir, f"{docker.registry}/bench", registry
        )
        folder = project / ".kfops" / "dockerfiles"
        folder.mkdir(parents=True, exist_ok=True)
        for name, spec in prepared.specs.items():
            (folder / f"{name}.Dockerfile").write_text(spec.dockerfile)
        _sha_workflow(project, env, docker.registry, "warmup")  # warm BuildKit's cache too

        print("\n1. a push with nothing changed (warm vs warm)")
        kfops_s, again = _kfops(project, env, "build", "--env", "dev", "--format", "json")
        before = registry.requests
        started = time.perf_counter()
        image_build.build(
            loaded,
            compiler.compile_project(loaded).ir,
            f"{docker.registry}/bench",
            push=True,
            network="host",
            registry=registry,
        )
        in_process = time.perf_counter() - started
        lookups = registry.requests - before
        sha_s = _sha_workflow(project, env, docker.registry, "c0ffee1")
        rebuilt = sum(i["status"] != "unchanged" for i in again)
        print(
            f"   kfops build:               {kfops_s:.2f}s  ({rebuilt} rebuilt,"
            f" {lookups} registry requests for 3 images; includes CLI start and compile)"
        )
        print(f"   SHA-tag docker build+push: {sha_s:.2f}s  (3 rebuilt from cache, 3 pushed)")
        print(
            f"   kfops' image work alone:   {in_process:.2f}s  (lookups, in-process, after compile)"
        )
        print(
            f"   ratio kfops/SHA-tag:       {kfops_s / sha_s:.2f}x (whole command),"
            f" {in_process / sha_s:.2f}x (image work alone)"
        )

        print("\n2. a push that changes one step's code")
        (project / "pipeline.py").write_text(PIPELINE.format(base=docker.base, factor=3))
        kfops_s, after = _kfops(project, env, "build", "--env", "dev", "--format", "json")
        rebuilt = sum(i["status"] != "unchanged" for i in after)
        print(
            f"   kfops: {rebuilt} images rebuilt in {kfops_s:.2f}s;"
            " SHA-tag workflow: 3 images rebuilt and pushed, 3 new image references"
        )

        print("\n3. a step's start (docker run, --network host for the pip side)")
        pinned = next(i for i in images if i["name"] == "two")["pinned"]
        import kfp

        steps = {
            "kfops image (no install)": [
                "run",
                "--rm",
                "--network",
                "none",
                "-e",
                "_KFP_RUNTIME=true",
                str(pinned),
                "python3",
                "-c",
                "import kfp.dsl.executor_main, six",
            ],
            "lightweight component (runtime pip install)": [
                "run",
                "--rm",
                "--network",
                "host",
                "-e",
                "_KFP_RUNTIME=true",
                "-v",
                "/etc/ssl/certs/ca-certificates.crt:/ca.crt:ro",
                "-e",
                "PIP_CERT=/ca.crt",
                docker.base,
                "sh",
                "-c",
                "PIP_DISABLE_PIP_VERSION_CHECK=1 python3 -m pip install --quiet"
                " --no-warn-script-location six==1.16.0 packaging==24.1 && python3 -m pip install"
                f" --quiet --no-warn-script-location kfp=={kfp.__version__} --no-deps"
                " && python3 -c 'import kfp.dsl.executor_main, six'",
            ],
        }
        timings = {}
        for label, args in steps.items():
            started = time.perf_counter()
            subprocess.run([DOCKER, *args], env=env, capture_output=True, check=True)
            timings[label] = time.perf_counter() - started
            print(f"   {label}: {timings[label]:.2f}s")
        first, second = timings.values()
        print(f"   ratio: {first / second:.2f}x (0 installs against 2 pip installs)")


if __name__ == "__main__":
    main()
