"""Image recipes -> build inputs and their content hash.

An image holds dependencies, not code, and is named by the hash of what goes into it:
the Dockerfile kfops writes (base image pinned by digest, packages, kfp's version, this
recipe format's version) and the files it copies, or for a Dockerfile image the
Dockerfile, its build arguments and the context's files (``.dockerignore`` honoured).
The same inputs give the same tag on every machine; step code never enters the hash,
so a change to a step's code rebuilds nothing.

Pure functions: nothing here touches the network or an engine.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from kfops.errors import KfopsError, display_path
from kfops.project.model import ImageRecipe

# Bump when the Dockerfile template changes: every recipe image is then rebuilt.
RECIPE_VERSION = 1
# Where a recipe's requirements file is copied inside the build context.
_REQUIREMENTS = "kfops-requirements.txt"
# Secrets the build mounts; their values never enter a layer or the hash.
PIP_CONF_SECRET = "kfops-pip.conf"
PIP_CERT_SECRET = "kfops-pip-cert"


@dataclass(frozen=True)
class BuildSpec:
    """Everything one image build needs, and the tag that names its content.

    Attributes:
        name: the image's name in mlops.yaml (or the component's, for an implicit recipe).
        repository: REGISTRY/PROJECT-NAME.
        content_hash: sha256 of every input; the tag is its first 32 hex digits.
        dockerfile: the Dockerfile's text.
        context: the build context folder, or None for a recipe (kfops writes one).
        files: for a recipe, files to put beside the Dockerfile: {name: source path}.
        build_args: ``--build-arg`` pairs.
        packages: what the image installs with pip (for the step-start check).
    """

    name: str
    repository: str
    content_hash: str
    dockerfile: str
    context: Path | None = None
    files: tuple[tuple[str, Path], ...] = ()
    build_args: tuple[tuple[str, str], ...] = ()
    packages: tuple[str, ...] = ()
    source: str = ""  # where the recipe is, for messages: mlops.yaml:LINE or the component

    @property
    def tag(self) -> str:
        return self.content_hash[:32]

    @property
    def ref(self) -> str:
        """REGISTRY/PROJECT-NAME:HASH, the content-addressed tag."""
        return f"{self.repository}:{self.tag}"


@dataclass(frozen=True)
class Inputs:
    """What resolving a recipe needs from outside: the base image's digest and kfp's version."""

    kfp_version: str
    base_digests: dict[str, str] = field(default_factory=dict)  # base ref -> sha256:...


def repository(registry: str, project: str, image: str) -> str:
    return f"{registry.rstrip('/')}/{project}-{image}"


def pinned_base(base: str, digest: str) -> str:
    """``base`` pinned to ``digest``: ``repo@sha256:...`` (a tag, if any, dropped)."""
    name = base.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    return f"{name}@{digest}"


def recipe_dockerfile(recipe: ImageRecipe, base: str, kfp_version: str) -> str:
    """The Dockerfile kfops writes for a recipe; ``base`` is already pinned by digest.

    Package indexes and CA bundles reach pip through BuildKit secrets, so they never
    land in a layer (or change the hash).
    """
    lines = [
        f"# kfops image recipe v{RECIPE_VERSION}: {recipe.name}",
        f"FROM {base}",
    ]
    if recipe.system_packages:
        lines.append(
            "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y"
            " --no-install-recommends "
            + " ".join(recipe.system_packages)
            + " && rm -rf /var/lib/apt/lists/*"
        )
    installs = []
    if recipe.requirements is not None:
        lines.append(f"COPY {_REQUIREMENTS} /kfops/requirements.txt")
        installs.append("-r /kfops/requirements.txt")
    installs += [shlex.quote(p) for p in recipe.packages]
    pip = (
        "PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore"
        " python3 -m pip install --no-cache-dir --quiet"
    )
    # kfp itself without its dependencies, as KFP's own lightweight command installs it:
    # the executor needs no more, and the steps then install nothing when they start.
    commands = [f"{pip} --no-deps {shlex.quote(f'kfp=={kfp_version}')}"]
    if installs:
        commands.insert(0, f"{pip} {' '.join(installs)}")
    lines.append(
        f"RUN --mount=type=secret,id={PIP_CONF_SECRET}"
        f" --mount=type=secret,id={PIP_CERT_SECRET} \\\n"
        f"    if [ -f /run/secrets/{PIP_CONF_SECRET} ]; then"
        f" export PIP_CONFIG_FILE=/run/secrets/{PIP_CONF_SECRET}; fi; \\\n"
        f"    if [ -f /run/secrets/{PIP_CERT_SECRET} ]; then"
        f" export PIP_CERT=/run/secrets/{PIP_CERT_SECRET}; fi; \\\n"
        "    " + " && \\\n    ".join(commands)
    )
    return "\n".join(lines) + "\n"


def spec_for(recipe: ImageRecipe, repo: str, inputs: Inputs) -> BuildSpec:
    """The build of ``recipe`` into ``repo``, named by the hash of its inputs.

    Raises:
        KfopsError: a file the recipe names cannot be read.
    """
    digest = hashlib.sha256()
    digest.update(f"kfops-image/{RECIPE_VERSION}\n".encode())
    if recipe.dockerfile is not None:
        context = recipe.context or recipe.dockerfile.parent
        text = _read(recipe.dockerfile, recipe).decode("utf-8", errors="replace")
        digest.update(b"dockerfile\0" + text.encode())
        digest.update(b"args\0" + json.dumps(recipe.build_args).encode())
        for relative, file_digest in context_digests(context, recipe.dockerfile):
            digest.update(f"file\0{relative}\0{file_digest}\n".encode())
        return BuildSpec(
            name=recipe.name,
            repository=repo,
            content_hash=digest.hexdigest(),
            dockerfile=text,
            context=context,
            build_args=recipe.build_args,
            source=_source(recipe),
        )
    assert recipe.base is not None
    base = recipe.base
    if "@sha256:" not in base:
        base = pinned_base(base, inputs.base_digests[base])
    text = recipe_dockerfile(recipe, base, inputs.kfp_version)
    digest.update(b"dockerfile\0" + text.encode())
    files: tuple[tuple[str, Path], ...] = ()
    if recipe.requirements is not None:
        digest.update(b"requirements\0" + _read(recipe.requirements, recipe))
        files = ((_REQUIREMENTS, recipe.requirements),)
    return BuildSpec(
        name=recipe.name,
        repository=repo,
        content_hash=digest.hexdigest(),
        dockerfile=text,
        files=files,
        packages=(*recipe.packages, *_requirement_lines(recipe)),
        source=_source(recipe),
    )


def context_digests(context: Path, dockerfile: Path) -> list[tuple[str, str]]:
    """Each file the engine would send as the build context, with its sha256, sorted.

    ``.dockerignore`` is read as the engine reads it (docker's own matcher), except
    that the Dockerfile and ``.dockerignore`` are always kept, as the engine does.
    """
    from docker.utils.build import exclude_paths

    ignore = context / ".dockerignore"
    patterns: list[str] = []
    if ignore.is_file():
        patterns = [
            line.strip()
            for line in ignore.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
    try:
        dockerfile_in_context = str(dockerfile.resolve().relative_to(context.resolve()))
    except ValueError:
        dockerfile_in_context = None
    found = []
    for relative in sorted(exclude_paths(str(context), patterns, dockerfile=dockerfile_in_context)):
        if relative.split("/", 1)[0] == ".kfops":
            # kfops' own runs and records change with every command; they are never an
            # image's content (README: add `.kfops/` to .dockerignore so the engine agrees).
            continue
        path = context / relative
        if path.is_file() and not path.is_symlink():
            found.append((relative, hashlib.sha256(path.read_bytes()).hexdigest()))
        elif path.is_symlink():
            found.append((relative, "link:" + str(path.readlink())))
    return found


def _requirement_lines(recipe: ImageRecipe) -> tuple[str, ...]:
    if recipe.requirements is None:
        return ()
    lines = _read(recipe.requirements, recipe).decode("utf-8", errors="replace").splitlines()
    return tuple(
        line.split("#", 1)[0].strip()
        for line in lines
        if line.split("#", 1)[0].strip() and not line.lstrip().startswith("-")
    )


def _read(path: Path, recipe: ImageRecipe) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KfopsError(
            f"image `{recipe.name}`: cannot read {display_path(path)}: {exc.strerror}",
            "check the path in mlops.yaml (relative to mlops.yaml)",
        ) from None


def _source(recipe: ImageRecipe) -> str:
    if recipe.implicit:
        return f"component `{recipe.name}`"
    return f"images.{recipe.name}"
