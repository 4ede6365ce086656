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
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from kfops.errors import KfopsError, display_path
from kfops.project.model import ImageRecipe

# Bump when the Dockerfile template changes: every recipe image is then rebuilt.
RECIPE_VERSION = 1
# Where a recipe's requirements files are copied inside the build context.
_REQUIREMENTS = "kfops-requirements"
# The build argument that tells a Dockerfile image which kfp to install.
KFP_VERSION_ARG = "KFOPS_KFP_VERSION"
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
    source: str = ""  # where the recipe is, for messages: images.NAME or the component
    notes: tuple[str, ...] = ()  # warnings about the build context
    sent: tuple[str, ...] = ()  # a Dockerfile image's context files, as the engine sends them

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
        lines.append(f"COPY {_REQUIREMENTS}/ /kfops/requirements/")
        installs.append(f"-r /kfops/requirements/{shlex.quote(recipe.requirements.name)}")
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
        KfopsError: a file the recipe names cannot be read, or a requirements file
            asks for what an image built from a recipe cannot hold (a local path).
    """
    digest = hashlib.sha256()
    digest.update(f"kfops-image/{RECIPE_VERSION}\n".encode())
    if recipe.dockerfile is not None:
        context = recipe.context or recipe.dockerfile.parent
        text = _read(recipe.dockerfile, recipe).decode("utf-8", errors="replace")
        # The kfp version the pipeline is compiled with, for the Dockerfile to install.
        args = (*recipe.build_args, (KFP_VERSION_ARG, inputs.kfp_version))
        digest.update(b"dockerfile\0" + text.encode())
        digest.update(b"args\0" + json.dumps(sorted(args)).encode())
        files, notes = context_digests(context, recipe.dockerfile)
        for relative, file_digest in files:
            digest.update(f"file\0{relative}\0{file_digest}\n".encode())
        return BuildSpec(
            name=recipe.name,
            repository=repo,
            content_hash=digest.hexdigest(),
            dockerfile=text,
            context=context,
            build_args=tuple(sorted(args)),
            source=_source(recipe),
            notes=tuple(notes),
            sent=tuple(name for name, _ in files),
        )
    assert recipe.base is not None
    base = recipe.base
    if "@sha256:" not in base:
        base = pinned_base(base, inputs.base_digests[base])
    copied: tuple[tuple[str, Path], ...] = ()
    packages: tuple[str, ...] = recipe.packages
    if recipe.requirements is not None:
        copied, listed = requirement_files(recipe)
        packages = (*packages, *listed)
    text = recipe_dockerfile(recipe, base, inputs.kfp_version)
    digest.update(b"dockerfile\0" + text.encode())
    for name, source in copied:
        digest.update(f"file\0{name}\0".encode() + _read(source, recipe))
    return BuildSpec(
        name=recipe.name,
        repository=repo,
        content_hash=digest.hexdigest(),
        dockerfile=text,
        files=copied,
        packages=packages,
        source=_source(recipe),
    )


_NESTED = re.compile(r"^(-r|--requirement|-c|--constraint)(?:\s*=?\s*)(\S+)")
_LOCAL = re.compile(r"^(-e\b|--editable\b|\.|/|file:)")


def requirement_files(recipe: ImageRecipe) -> tuple[tuple[tuple[str, Path], ...], list[str]]:
    """The requirements file and those it names with ``-r``/``-c``, as (name in the
    build context, source), and the requirements they list.

    Raises:
        KfopsError: a nested file outside the requirements file's folder, or a local
            path (``-e .``, ``./pkg``): a recipe image holds packages from an index.
    """
    assert recipe.requirements is not None
    root = recipe.requirements.parent
    found: dict[Path, str] = {}
    listed: list[str] = []
    pending = [recipe.requirements]
    while pending:
        current = pending.pop()
        if current in found:
            continue
        try:
            relative = current.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            raise KfopsError(
                f"image `{recipe.name}`: {display_path(current)} is outside"
                f" {display_path(root)}, the folder of its requirements file",
                "keep the files that `-r` and `-c` name beside the requirements file, or below it",
            ) from None
        found[current] = f"{_REQUIREMENTS}/{relative}"
        lines = _read(current, recipe).decode("utf-8", errors="replace").splitlines()
        for number, raw in enumerate(lines, 1):
            line = raw.split(" #", 1)[0].strip()
            if not line or line.startswith("#"):
                continue
            nested = _NESTED.match(line)
            if nested:
                pending.append((current.parent / nested.group(2)).resolve())
            elif _LOCAL.match(line):
                raise KfopsError(
                    f"{display_path(current)}:{number}: `{line}` is a local path; image"
                    f" `{recipe.name}` is built from a recipe, which installs packages"
                    " from an index only",
                    "publish the package to your index, or use a Dockerfile image"
                    " (`dockerfile:`) that copies it",
                )
            elif not line.startswith("-"):
                listed.append(line)
    return tuple(sorted((name, path) for path, name in found.items())), listed


def context_digests(context: Path, dockerfile: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """Each file the engine would send as the build context, with a digest of its
    bytes and mode, sorted; and notes on what the context holds that it should not.

    ``.dockerignore`` is read as the engine reads it (docker's own matcher); the
    Dockerfile and ``.dockerignore`` are always kept, as the engine does. Git's folder
    and kfops' own ``.kfops/`` folders change with every commit and command and are
    never an image's content: they are left out of the hash, and a note says to put
    them in ``.dockerignore`` so that the engine leaves them out too.
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
    volatile: set[str] = set()
    for relative in sorted(exclude_paths(str(context), patterns, dockerfile=dockerfile_in_context)):
        parts = relative.split("/")
        if ".git" in parts or ".kfops" in parts:
            volatile.add(".git" if ".git" in parts else ".kfops")
            continue
        path = context / relative
        if path.is_symlink():
            found.append((relative, "link:" + str(path.readlink())))
        elif path.is_file():
            found.append((relative, _file_digest(path)))
    notes = [
        f"the build context {display_path(context)} sends `{name}/` to the engine: add"
        f" `{name}` to {display_path(ignore)} (kfops leaves it out of the image's hash)"
        for name in sorted(volatile)
    ]
    return found, notes


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256(f"{path.stat().st_mode & 0o777:o}\0".encode())
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
