"""The container engine: BuildKit builds and pushes through the ``docker`` command.

``docker buildx build`` when buildx is installed, else the engine's built-in BuildKit
(``DOCKER_BUILDKIT=1 docker build``); docker-py cannot build with BuildKit
(docker/docker-py#2230). ``KFOPS_DOCKER`` names another client; ``DOCKER_HOST`` points
at another engine, as for docker itself.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kfops.errors import KfopsError
from kfops.images.recipe import PIP_CERT_SECRET, PIP_CONF_SECRET, BuildSpec

_STEP = re.compile(r"^#(\d+) ")
TAIL_LINES = 25


@dataclass(frozen=True)
class PipSettings:
    """The user's package-index set-up, passed to builds as BuildKit secrets."""

    conf: str  # pip.conf text ("" when there is nothing to pass)
    cert: Path | None = None

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> PipSettings:
        """pip's index URLs, trusted hosts and CA bundle: PIP_* variables over pip.conf."""
        import configparser

        env = dict(os.environ if environ is None else environ)
        parser = configparser.ConfigParser(interpolation=None)
        files = [Path("/etc/pip.conf"), Path.home() / ".config/pip/pip.conf"]
        files += [Path.home() / ".pip/pip.conf"]
        if env.get("PIP_CONFIG_FILE"):
            files.append(Path(env["PIP_CONFIG_FILE"]))
        parser.read([str(f) for f in files if f.is_file()])
        found: dict[str, str] = {}
        for section in ("global", "install"):
            if parser.has_section(section):
                for key in ("index-url", "extra-index-url", "trusted-host", "cert", "timeout"):
                    if parser.has_option(section, key):
                        found[key] = parser.get(section, key)
        for key in ("index-url", "extra-index-url", "trusted-host", "cert", "default-timeout"):
            value = env.get("PIP_" + key.upper().replace("-", "_"))
            if value:
                found["timeout" if key == "default-timeout" else key] = value
        cert = Path(found.pop("cert")) if "cert" in found else None
        conf = ""
        if found:
            conf = "[global]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(found.items()))
        return cls(conf=conf, cert=cert if cert and cert.is_file() else None)


class Engine:
    """A Docker engine reached through its command-line client."""

    def __init__(self, client: str | None = None) -> None:
        found = client or os.environ.get("KFOPS_DOCKER") or shutil.which("docker")
        if not found:
            raise KfopsError(
                "no `docker` command on PATH: kfops builds step images with a Docker engine",
                "install Docker (Debian: `apt-get install docker.io`), or set KFOPS_DOCKER"
                " to the docker client to use",
            )
        self.client = found
        self._buildx: bool | None = None

    def check(self) -> str:
        """The engine's version.

        Raises:
            KfopsError: the engine is not running or cannot be reached.
        """
        answer = self._run(["version", "--format", "{{.Server.Version}}"], check=False)
        if answer.returncode != 0 or not answer.stdout.strip():
            where = os.environ.get("DOCKER_HOST") or "the default socket (/var/run/docker.sock)"
            reason = (answer.stderr.strip().splitlines() or ["no answer"])[-1]
            raise KfopsError(
                f"the Docker engine at {where} is not running or cannot be reached: {reason}",
                "start it (`sudo systemctl start docker`, or `dockerd &`), or point DOCKER_HOST"
                " at a running engine, e.g. DOCKER_HOST=unix:///run/user/1000/docker.sock",
            )
        return answer.stdout.strip()

    def has_image(self, ref: str) -> bool:
        return (
            self._run(["image", "inspect", "--format", "{{.Id}}", ref], check=False).returncode == 0
        )

    def build(
        self,
        spec: BuildSpec,
        *,
        labels: dict[str, str],
        network: str | None,
        pip: PipSettings,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        """Build ``spec`` as ``spec.ref`` into the engine.

        Raises:
            KfopsError: the build failed; the message carries the failing step's log tail.
        """
        with tempfile.TemporaryDirectory(prefix="kfops-build-") as tmp:
            work = Path(tmp)
            dockerfile = work / "Dockerfile"
            dockerfile.write_text(spec.dockerfile, encoding="utf-8")
            context = spec.context or work / "context"
            if spec.context is None:
                context.mkdir()
                for name, source in spec.files:
                    (context / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, context / name)
            args = ["build", "--progress", "plain", "-f", str(dockerfile), "-t", spec.ref]
            if self.buildx:
                args = ["buildx", *args, "--load"]
            for key, value in sorted(labels.items()):
                args += ["--label", f"{key}={value}"]
            for key, value in spec.build_args:
                args += ["--build-arg", f"{key}={value}"]
            if network:
                args += ["--network", network]
            if pip.conf:
                # It may hold an index's password: readable by this user only.
                conf_file = work / "pip.conf"
                conf_file.touch(mode=0o600)
                conf_file.write_text(pip.conf, encoding="utf-8")
                args += ["--secret", f"id={PIP_CONF_SECRET},src={work / 'pip.conf'}"]
            if pip.cert is not None:
                args += ["--secret", f"id={PIP_CERT_SECRET},src={pip.cert}"]
            lines = self._stream([*args, str(context)], on_line)
        if lines is not None:
            raise KfopsError(
                f"building image `{spec.name}` ({spec.source}) failed:\n" + _failed_step(lines),
                _build_hint(lines, network),
            )

    def kfp_version(self, ref: str) -> str | None:
        """The kfp installed in image ``ref`` (None when it has none or no python3)."""
        answer = self._run(
            [
                "run",
                "--rm",
                "--network",
                "none",
                "--entrypoint",
                "python3",
                ref,
                "-c",
                "import importlib.metadata as m; print(m.version('kfp'))",
            ],
            check=False,
        )
        return answer.stdout.strip() or None if answer.returncode == 0 else None

    def push(self, ref: str) -> None:
        """Push ``ref``.

        Raises:
            KfopsError: the registry refused the push or cannot be reached.
        """
        answer = self._run(["push", ref], check=False)
        if answer.returncode != 0:
            host = ref.split("/", 1)[0]
            reason = (answer.stderr.strip().splitlines() or ["no reason given"])[-1]
            denied = any(w in reason.lower() for w in ("denied", "unauthorized", "401", "403"))
            raise KfopsError(
                f"pushing {ref} failed: {reason}",
                f"log in with `docker login {host}`; the image was built but not pushed"
                if denied
                else f"check that registry {host} is up; the image was built but not pushed",
            )

    @property
    def buildx(self) -> bool:
        if self._buildx is None:
            self._buildx = self._run(["buildx", "version"], check=False).returncode == 0
        return self._buildx

    def _run(self, args: list[str], *, check: bool) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [self.client, *args],
                capture_output=True,
                text=True,
                check=check,
                env={**os.environ, "DOCKER_BUILDKIT": "1"},
            )
        except OSError as exc:
            raise KfopsError(
                f"cannot run {self.client}: {exc.strerror}",
                "install Docker's client, or set KFOPS_DOCKER to the docker command to use",
            ) from None

    def _stream(self, args: list[str], on_line: Callable[[str], None] | None) -> list[str] | None:
        """Run a build, passing each output line on; its lines when it failed, else None."""
        lines: list[str] = []
        with subprocess.Popen(
            [self.client, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env={**os.environ, "DOCKER_BUILDKIT": "1"},
        ) as process:
            assert process.stdout is not None
            for raw in process.stdout:
                line = raw.rstrip("\n")
                lines.append(line)
                if on_line is not None:
                    on_line(line)
        return lines if process.returncode != 0 else None


def _failed_step(lines: list[str]) -> str:
    """The failing BuildKit step's header and the tail of its log."""
    failed = None
    for line in lines:
        match = _STEP.match(line)
        if match and " ERROR" in line:
            failed = match.group(1)
    if failed is None:
        return "\n".join(lines[-TAIL_LINES:])
    mine = [line for line in lines if line.startswith(f"#{failed} ")]
    header = next((line for line in mine if "[" in line and "]" in line), mine[0])
    body = [line for line in mine if line != header and not re.match(r"^#\d+ sha256:", line)]
    return "\n".join([header, *body[-TAIL_LINES:]])


def _build_hint(lines: list[str], network: str | None) -> str:
    text = "\n".join(lines[-60:])
    if "network bridge not found" in text or ("bridge" in text and "not found" in text):
        return "the engine has no bridge network: build with `--network host` (or `none`)"
    if "failed to resolve source metadata" in text or "not found: manifest unknown" in text:
        return "the base image cannot be pulled: check its name and the registry's login"
    if "pip" in text and ("No matching distribution" in text or "Could not find" in text):
        return (
            "pip could not find a package: check its name and version; a private index is"
            " passed from PIP_INDEX_URL, PIP_EXTRA_INDEX_URL or pip.conf"
            + ("" if network else "; the build may need `--network host`")
        )
    return "fix the failing step above; nothing was pushed"
