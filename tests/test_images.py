"""Step images against a real Docker engine and real OCI registries (tests/docker_env.py):
content-addressed builds, pushes, digests in the IR, steps that install nothing, and
each fault with its message."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from click.testing import CliRunner

from kfops.cli import cli
from kfops.images.registry import MANIFEST_TYPES
from tests.docker_env import PASSWORD, USER, DockerEnv
from tests.test_ci import context

pytestmark = [pytest.mark.slow, pytest.mark.docker]

PIPELINE = """\
from kfp import dsl

BASE = "{base}"


@dsl.component(base_image=BASE)
def prepare(n: int) -> int:
    return n * 2


@dsl.component(base_image=BASE)
def train(n: int) -> str:
    import six

    return f"trained {{n}} with six {{six.__version__}}"


@dsl.component(base_image=BASE)
def report(message: str) -> str:
    return message.upper()


@dsl.pipeline(name="imgs")
def imgs(n: int = 3):
    prepared = prepare(n=n)
    trained = train(n=prepared.output)
    report(message=trained.output)
"""

MLOPS = """\
version: 1
name: imgs
images:
  default: {{base: "{base}", packages: ["six==1.16.0"]}}
  trainer: {{base: "{base}", requirements: requirements.txt}}
pipeline:
  python: pipeline.py:imgs
  image: default
  steps:
    train: {{image: trainer}}
environments:
  dev: {{registry: "{registry}/kfops"}}
  locked: {{registry: "{auth_registry}/kfops"}}
  down: {{registry: "127.0.0.1:9/kfops"}}
"""


@pytest.fixture
def project(tmp_path: Path, docker_env: DockerEnv, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key, value in docker_env.environ().items():
        monkeypatch.setenv(key, value)
    # No login unless a test writes one.
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    root = tmp_path / "imgs"
    root.mkdir()
    (root / "pipeline.py").write_text(PIPELINE.format(base=docker_env.base))
    (root / "requirements.txt").write_text("six==1.16.0\n")
    (root / "mlops.yaml").write_text(
        MLOPS.format(
            base=docker_env.base,
            registry=docker_env.registry,
            auth_registry=docker_env.auth_registry,
        )
    )
    return root


def _kfops(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def _build(project: Path, *extra: str) -> dict[str, dict[str, Any]]:
    code, out, err = _kfops(
        "build", str(project), "--env", "dev", "--network", "host", "--format", "json", *extra
    )
    assert code == 0, err
    return {image["name"]: image for image in json.loads(out)}


def _compile(project: Path) -> dict[str, Any]:
    code, out, err = _kfops("compile", str(project), "--env", "dev", "-o", "-")
    assert code == 0, err
    loaded: dict[str, Any] = yaml.safe_load(out)
    return loaded


def _registry_digest(ref: str) -> str:
    """The digest the registry itself reports (not through kfops' client)."""
    name, tag = ref.rsplit(":", 1)
    host, repository = name.split("/", 1)
    answer = requests.head(
        f"http://{host}/v2/{repository}/manifests/{tag}",
        headers={"Accept": MANIFEST_TYPES},
        timeout=10,
    )
    assert answer.status_code == 200, answer.status_code
    return answer.headers["Docker-Content-Digest"]


def _executors(ir: dict[str, Any]) -> dict[str, Any]:
    executors: dict[str, Any] = ir["deploymentSpec"]["executors"]
    return {label: spec["container"] for label, spec in executors.items()}


def test_build_push_pin_then_nothing_to_do(project: Path, docker_env: DockerEnv) -> None:
    planned = _build(project, "--dry-run")
    assert {n: i["status"] for n, i in planned.items()} == {
        "default": "missing",
        "trainer": "missing",
    }
    name, tag = planned["trainer"]["ref"].rsplit(":", 1)
    host, repository = name.split("/", 1)
    answer = requests.head(f"http://{host}/v2/{repository}/manifests/{tag}", timeout=10)
    assert answer.status_code == 404  # a dry run pushes nothing
    first = _build(project)
    assert {n: i["status"] for n, i in first.items()} == {"default": "pushed", "trainer": "pushed"}
    for image in first.values():
        assert image["ref"].startswith(f"{docker_env.registry}/kfops/imgs-")
        assert image["digest"] == _registry_digest(image["ref"])

    ir = _compile(project)
    containers = _executors(ir)
    assert containers["exec-train"]["image"] == first["trainer"]["pinned"]
    assert containers["exec-prepare"]["image"] == first["default"]["pinned"]
    assert containers["exec-report"]["image"] == first["default"]["pinned"]
    for container in containers.values():
        assert "@sha256:" in container["image"]
        assert "pip install" not in json.dumps(container["command"])
        assert container["command"][:2] == ["sh", "-ec"]

    second = _build(project)
    assert {n: i["status"] for n, i in second.items()} == {
        "default": "unchanged",
        "trainer": "unchanged",
    }
    assert {n: i["digest"] for n, i in second.items()} == {n: i["digest"] for n, i in first.items()}


def test_code_change_rebuilds_nothing_and_changes_one_task(project: Path) -> None:
    _build(project)
    before = _executors(_compile(project))
    source = project / "pipeline.py"
    source.write_text(
        source.read_text().replace("return message.upper()", "return message.lower()")
    )

    assert {i["status"] for i in _build(project).values()} == {"unchanged"}
    after = _executors(_compile(project))
    changed = sorted(label for label in before if before[label] != after[label])
    assert changed == ["exec-report"]
    assert after["exec-report"]["image"] == before["exec-report"]["image"]


def test_requirements_change_rebuilds_exactly_one_image(project: Path) -> None:
    first = _build(project)
    (project / "requirements.txt").write_text("six==1.17.0\n")
    second = _build(project)
    assert {n: i["status"] for n, i in second.items()} == {
        "default": "unchanged",
        "trainer": "pushed",
    }
    assert second["trainer"]["ref"] != first["trainer"]["ref"]
    assert second["default"]["ref"] == first["default"]["ref"]


def test_pushed_image_runs_a_step_with_no_install(project: Path, docker_env: DockerEnv) -> None:
    images = _build(project)
    pinned = images["trainer"]["pinned"]
    out = docker_env.docker(
        "run",
        "--rm",
        "--network",
        "none",
        "--env",
        "_KFP_RUNTIME=true",
        pinned,
        "python3",
        "-c",
        # What KFP's executor imports at step start (_KFP_RUNTIME: the runtime subset).
        "from importlib.metadata import version; import kfp.dsl.executor_main, six;"
        " print(version('kfp'), six.__version__)",
    )
    import kfp

    assert out.split() == [kfp.__version__, "1.16.0"]

    # kfp.local's DockerRunner runs every step in its image, offline, with no pip.
    code, out, err = _kfops(
        "run", str(project), "--docker", "--network", "none", "--build-network", "host"
    )
    assert code == 0, out + err
    assert "TRAINED 6 WITH SIX 1.16.0" in out
    run_dirs = sorted((project / ".kfops" / "runs").iterdir())
    ran = (run_dirs[-1] / "pipeline.yaml").read_text()
    assert "pip install" not in ran
    assert "kfops.local/imgs-trainer:" in ran


def test_dockerfile_image_honours_dockerignore(project: Path, docker_env: DockerEnv) -> None:

    (project / "images").mkdir()
    (project / "images" / "Dockerfile").write_text(
        f"FROM {docker_env.base}\n"
        "ARG GREETING\n"
        # The user's own Dockerfile gets the same pip set-up secrets as a recipe.
        "ARG KFOPS_KFP_VERSION\n"
        "RUN --mount=type=secret,id=kfops-pip-cert PIP_CERT=/run/secrets/kfops-pip-cert"
        " PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --no-deps"
        " kfp==$KFOPS_KFP_VERSION\n"
        "COPY images/greeting.txt /greeting.txt\n"
    )
    (project / "images" / "greeting.txt").write_text("hello\n")
    (project / ".dockerignore").write_text("ignored/\n")
    (project / "ignored").mkdir()
    (project / "ignored" / "big.bin").write_text("x")
    text = (project / "mlops.yaml").read_text()
    text = text.replace(
        "  trainer:",
        '  custom: {dockerfile: images/Dockerfile, context: ., build_args: {GREETING: "hi"}}\n'
        "  trainer:",
    ).replace(
        "    train: {image: trainer}", "    train: {image: trainer}\n    prepare: {image: custom}"
    )
    (project / "mlops.yaml").write_text(text)
    first = _build(project)
    assert first["custom"]["status"] == "pushed"
    (project / "ignored" / "big.bin").write_text("changed, but ignored")
    assert _build(project)["custom"]["status"] == "unchanged"
    (project / "images" / "greeting.txt").write_text("changed\n")
    assert _build(project)["custom"]["status"] == "pushed"


def test_no_push_builds_into_the_engine_only(project: Path, docker_env: DockerEnv) -> None:
    (project / "requirements.txt").write_text("six==1.16.0\n# no-push\n")
    images = _build(project, "--no-push")
    assert images["trainer"]["status"] == "built"
    assert images["trainer"]["digest"] is None
    docker_env.docker("image", "inspect", images["trainer"]["ref"])
    name, tag = images["trainer"]["ref"].rsplit(":", 1)
    host, repository = name.split("/", 1)
    answer = requests.head(f"http://{host}/v2/{repository}/manifests/{tag}", timeout=10)
    assert answer.status_code == 404
    code, _, err = _kfops("compile", str(project), "--env", "dev", "-o", "-")
    assert code == 1
    assert "image `trainer` (images.trainer) is not built yet" in err
    assert "kfops build --env" in err


# Faults: each with the message a user sees.


def test_failing_run_shows_that_steps_log(project: Path) -> None:
    text = (
        (project / "mlops.yaml")
        .read_text()
        .replace('"six==1.16.0"', '"kfops-no-such-package==0.0.1"')
    )
    (project / "mlops.yaml").write_text(text)
    code, _, err = _kfops("build", str(project), "--env", "dev", "--network", "host")
    assert code == 1
    assert "error: building image `default` (images.default) failed:" in err
    assert "No matching distribution found for kfops-no-such-package==0.0.1" in err
    assert "[2/2] RUN" in err
    assert "Traceback" not in err


def test_base_image_that_cannot_be_pulled(project: Path, docker_env: DockerEnv) -> None:
    text = (
        (project / "mlops.yaml")
        .read_text()
        .replace(
            f'base: "{docker_env.base}", packages',
            f'base: "{docker_env.registry}/base/nope:1", packages',
        )
    )
    (project / "mlops.yaml").write_text(text)
    code, _, err = _kfops("build", str(project), "--env", "dev")
    assert code == 1
    assert (
        f"error: base image {docker_env.registry}/base/nope:1 of image `default`"
        f" ({project / 'mlops.yaml'}:4) cannot be pulled: {docker_env.registry} has no such tag"
    ) in err


def test_unreachable_registry(project: Path) -> None:
    code, _, err = _kfops("build", str(project), "--env", "down")
    assert code == 1
    assert (
        "error: cannot reach registry 127.0.0.1:9 (http://127.0.0.1:9): connection refused" in err
    )
    assert "nothing was built or pushed" in err


def test_registry_that_refuses_credentials(
    project: Path, docker_env: DockerEnv, tmp_path: Path
) -> None:
    # The base image lives in the open registry; the environment's registry wants a login.
    code, _, err = _kfops("build", str(project), "--env", "locked")
    assert code == 1
    assert f"error: registry {docker_env.auth_registry} needs a login for kfops/imgs-" in err
    assert "(HTTP 401); credentials: none (anonymous)" in err
    assert f"docker login {docker_env.auth_registry}" in err

    # Without a push (a fork's pull request has no login), the images are built to check them.
    code, _, err = _kfops(
        "build", str(project), "--env", "locked", "--no-push", "--network", "host"
    )
    assert code == 0, err
    assert "needs a login" in err and "building it here (no push)" in err

    import base64

    config = tmp_path / "docker-config"
    config.mkdir(exist_ok=True)
    wrong = base64.b64encode(f"{USER}:wrong-password".encode()).decode()
    (config / "config.json").write_text(
        json.dumps({"auths": {docker_env.auth_registry: {"auth": wrong}}})
    )
    code, _, err = _kfops("build", str(project), "--env", "locked")
    assert code == 1
    assert f"credentials: {config / 'config.json'} (auths.{docker_env.auth_registry})" in err
    assert "wrong-password" not in err and wrong not in err

    right = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (config / "config.json").write_text(
        json.dumps({"auths": {docker_env.auth_registry: {"auth": right}}})
    )
    code, _, err = _kfops(
        "build", str(project), "--env", "locked", "--no-push", "--network", "host"
    )
    assert code == 0, err
    assert PASSWORD not in err and right not in err


def test_engine_not_running(project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    text = (project / "requirements.txt").read_text() + "# needs a build\n"
    (project / "requirements.txt").write_text(text)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing.sock")
    code, _, err = _kfops("build", str(project), "--env", "dev")
    assert code == 1
    assert f"error: the Docker engine at unix://{tmp_path}/nothing.sock is not running" in err
    assert "point DOCKER_HOST at a running engine" in err


def test_unknown_environment(project: Path) -> None:
    code, _, err = _kfops("build", str(project), "--env", "deb")
    assert code == 2
    assert f"error: --env deb: {project / 'mlops.yaml'} has no environment `deb`" in err
    assert "did you mean `dev`?" in err


def test_ci_push_builds_pushes_and_reports_each_image(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    monkeypatch.setenv("KFOPS_BUILD_NETWORK", "host")  # the action's build-network input
    from kfops.ci import event, report

    text = (project / "mlops.yaml").read_text()
    (project / "mlops.yaml").write_text(
        text + "on:\n  push: {branches: [main], environment: dev}\n"
        "  pull_request: {environment: dev, build: true}\n"
    )
    (project / "requirements.txt").write_text("six==1.16.0\n# ci\n")
    console = Console(stderr=True, highlight=False)
    pull = {"pull_request": {"number": 1, "base": {"ref": "main"}}}
    pr = event.execute(project, context("pull_request", "refs/pull/1/merge", pull), console)
    assert not pr.failed, pr.image_error
    assert {i["name"]: i["status"] for i in pr.images}["trainer"] == "built"
    assert all(i["digest"] is None or i["status"] == "unchanged" for i in pr.images)

    pushed = event.execute(project, context("push", "refs/heads/main"), console)
    assert not pushed.failed, pushed.image_error
    statuses = {i["name"]: i["status"] for i in pushed.images}
    assert statuses["trainer"] == "pushed"
    ir = yaml.safe_load((project / ".kfops" / "imgs.yaml").read_text())
    trainer = next(i for i in pushed.images if i["name"] == "trainer")
    assert _executors(ir)["exec-train"]["image"] == trainer["pinned"]
    body = report.markdown(pushed, "<!-- kfops -->")
    assert "#### Images" in body
    assert f"| trainer | rebuilt, pushed | `{trainer['digest']}` |" in body
    assert report.to_json(pushed)["images"] == pushed.images


def test_ci_reports_a_failed_build(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    monkeypatch.setenv("KFOPS_BUILD_NETWORK", "host")
    from kfops.ci import event, report

    text = (
        (project / "mlops.yaml")
        .read_text()
        .replace('"six==1.16.0"', '"kfops-no-such-package==0.0.1"')
    )
    (project / "mlops.yaml").write_text(text + "on:\n  push: {environment: dev}\n")
    result = event.execute(project, context("push", "refs/heads/main"), Console(stderr=True))
    assert result.failed
    assert "building image `default` (images.default) failed" in result.image_error
    body = report.markdown(result, "<!-- kfops -->")
    assert "❌ **A step image did not build or push.**" in body
    assert "No matching distribution found for kfops-no-such-package" in body


@pytest.mark.parametrize("example", ["iris", "wine-notebook"])
def test_examples_run_in_their_images(
    example: str, docker_env: DockerEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from tests.conftest import ROOT

    for key, value in docker_env.environ().items():
        monkeypatch.setenv(key, value)
    project = tmp_path / example
    shutil.copytree(ROOT / "pipelines" / example, project, ignore=shutil.ignore_patterns(".kfops"))
    # python:3.11-slim cannot be pulled here: the same Debian Python from the registry.
    for name in ("pipeline.py", "train.ipynb", "mlops.yaml"):
        path = project / name
        if path.exists():
            path.write_text(path.read_text().replace("python:3.11-slim", docker_env.base))
    code, out, err = _kfops(
        "run", str(project), "--docker", "--network", "none", "--build-network", "host"
    )
    assert code == 0, out + err
    assert "succeeded" in out
    assert "accuracy" in out
    ran = sorted((project / ".kfops" / "runs").iterdir())[-1] / "pipeline.yaml"
    assert "pip install" not in ran.read_text()


ACTION_WORKFLOW = """\
name: kfops
on: [push]
permissions: {}
jobs:
  kfops:
    runs-on: ubuntu-latest
    permissions:
      contents: read
      packages: write
    steps:
      - uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2
      - id: kfops
        uses: ./action
        with:
          path: imgs
          registry: ${{ vars.REGISTRY }}
          registry-username: ${{ vars.REGISTRY_USER }}
          registry-password: ${{ secrets.REGISTRY_PASSWORD }}
          build-network: host
      - name: outputs
        env:
          REPORT: ${{ steps.kfops.outputs.report }}
        run: echo "kfops-report $REPORT"
"""


def test_action_logs_in_builds_and_pushes_on_push(
    project: Path, docker_env: DockerEnv, tmp_path: Path, github_api: Any
) -> None:
    """The composite action under act: registry login from inputs (the password through
    env and stdin only), then `kfops ci` builds and pushes the push's environment."""
    from tests.test_action import act, action_repo

    on = "on:\n  push: {branches: [main], environment: locked}\n"
    repo = action_repo(tmp_path, ACTION_WORKFLOW, project, "imgs", on)
    done = act(
        repo,
        "push",
        {"ref": "refs/heads/main"},
        github_api,
        (
            "--var",
            f"REGISTRY={docker_env.auth_registry}",
            "--var",
            f"REGISTRY_USER={USER}",
            "-s",
            f"REGISTRY_PASSWORD={PASSWORD}",
            "--env",
            f"DOCKER_HOST={docker_env.host}",
            "--env",
            "KFOPS_DOCKER=/usr/bin/docker",
            "--env",
            f"DOCKER_CONFIG={tmp_path / 'docker-config'}",
        ),
    )
    assert done.returncode == 0, done.stdout[-4000:]
    assert "Login Succeeded" in done.stdout
    assert PASSWORD not in done.stdout
    report = json.loads(done.stdout.rsplit("kfops-report ", 1)[1].splitlines()[0])
    statuses = {image["name"]: image["status"] for image in report["images"]}
    assert statuses == {"default": "pushed", "trainer": "pushed"}
    for image in report["images"]:
        assert image["ref"].startswith(f"{docker_env.auth_registry}/kfops/imgs-")
        assert image["digest"].startswith("sha256:")


def test_dockerfile_image_without_kfp_is_refused(project: Path, docker_env: DockerEnv) -> None:
    (project / "Dockerfile").write_text(f"FROM {docker_env.base}\nRUN true\n")
    (project / ".dockerignore").write_text(".kfops\n")
    text = (
        (project / "mlops.yaml")
        .read_text()
        .replace("  trainer:", "  bare: {dockerfile: Dockerfile}\n  trainer:")
        .replace("    train: {image: trainer}", "    train: {image: bare}")
    )
    (project / "mlops.yaml").write_text(text)
    code, _, err = _kfops("build", str(project), "--env", "dev", "--network", "host")
    assert code == 1
    assert "error: image `bare` (images.bare) was built, but it has no kfp" in err
    assert "nothing was pushed" in err
    assert "ARG KFOPS_KFP_VERSION" in err
    assert "the pipeline's code (pipeline.py)" in err  # the context holds the code


def test_compile_env_warns_about_packages_the_image_lacks(project: Path) -> None:
    source = project / "pipeline.py"
    source.write_text(
        source.read_text().replace(
            "@dsl.component(base_image=BASE)\ndef report",
            "@dsl.component(base_image=BASE, packages_to_install=['attrs'])\ndef report",
        )
    )
    _build(project)
    code, _, err = _kfops("compile", str(project), "--env", "dev", "-o", "-")
    assert code == 0, err
    assert "warning: step report asks for attrs (packages_to_install)" in err
    assert "image `default` does not list" in err


def test_credential_helper_login(
    project: Path, docker_env: DockerEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A credHelpers entry is asked the way the engine asks it (`get`, host on stdin)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-kfopstest"
    helper.write_text(
        "#!/bin/sh\n"
        "read host\n"
        f'[ "$host" = "{docker_env.auth_registry}" ] || exit 1\n'
        f'echo \'{{"Username": "{USER}", "Secret": "{PASSWORD}"}}\'\n'
    )
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    config = tmp_path / "docker-config"
    config.mkdir(exist_ok=True)
    (config / "config.json").write_text(
        json.dumps({"credHelpers": {docker_env.auth_registry: "kfopstest"}})
    )
    # A requirement no other test uses: the image cannot be in the registry yet.
    (project / "requirements.txt").write_text("six==1.16.0\n# credential helper\n")
    code, out, err = _kfops(
        "build", str(project), "--env", "locked", "--dry-run", "--format", "json"
    )
    assert code == 0, err
    assert {i["name"]: i["status"] for i in json.loads(out)}["trainer"] == "missing"
    assert "needs a login" not in err and PASSWORD not in err + out
