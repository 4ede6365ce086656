"""The monitor as a Kubeflow Pipelines recurring run, for clusters GitHub cannot reach.

With ``monitoring.schedule: {cron, runner: kfp, environment: ENV, image: IMAGE}``,
``kfops apply --env ENV`` keeps a pipeline ``NAME-monitor`` beside the project's own,
compiled here with the KFP SDK: one container task, from ``IMAGE`` (which has kfops
installed), that runs ``kfops monitor --once --env ENV``. The pod needs no checkout: the
command carries the project's mlops.yaml and the files it names (the reference profile,
probe bodies and sets, the pipeline source that validation reads, ...), which a short
Python preamble writes first, each at its place in the repository (the monitor's issue
is found by the project's path in its repository). The report is the task's output
artifact ``report`` (report.json). A breach or too little data is the monitor's answer,
not a failure of the run: the task succeeds when report.json holds the verdict the exit
code gave, and fails on any other exit (an error).

The served inputs must come from KServe's payload logger through a bucket
(``drift.source: logger``, ``drift.logs: s3://...``): a pod has no ``--inputs`` file and
none of this machine's folders (``check``). The task never hits KFP's cache (each
trigger must look again), and takes ``SECRET_KEYS`` (GitHub's token and repository, the
bucket's credentials) from the Kubernetes Secret ``NAME-monitor`` in the run's namespace
through kfp-kubernetes. The Secret is optional: without it the monitor still checks and
reports, and opens no issue.

``delivery.pipeline`` uploads the compiled spec as a version named by the commit and
keeps the recurring run pinned to it (``kubeflow.schedules``).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from kfops.errors import KfopsError, display_path
from kfops.project.model import NotebookRef, Project

# Everything the command carries, in bytes: the spec travels through KFP's
# database and the Argo Workflow (an etcd object of at most 1.5 MB).
MAX_EMBEDDED_BYTES = 512 * 1024
TASK = "kfops-monitor"
# What the pod takes from the Secret NAME-monitor when it has them: GitHub for the issue
# and the dispatch, and the bucket that holds KServe's payload logs (drift.logs).
SECRET_KEYS = (
    "GITHUB_TOKEN",
    "GITHUB_REPOSITORY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
)

# Runs in the image before kfops: writes the files, runs `kfops monitor`, and turns its
# answer (0 ok, 1 breach, 4 insufficient data) into a successful task when report.json
# says the same; anything else (an error, 2 usage, 3 a bug) fails the task.
_PREAMBLE = """\
import base64, json, os, shutil, subprocess, sys, tempfile
files, project, report = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
# The files keep their places in the repository, and the folder is a repository when git
# is there: kfops finds the monitor's issue by the project's path in its repository.
root = os.path.join(tempfile.gettempdir(), "kfops-monitor")
shutil.rmtree(root, ignore_errors=True)
os.makedirs(root)
if shutil.which("git"):
    subprocess.call(["git", "init", "-q", root])
for name, data in sorted(files.items()):
    path = os.path.join(root, *name.split("/"))
    os.makedirs(path if data is None else os.path.dirname(path), exist_ok=True)
    if data is not None:
        kind, content = data
        with open(path, "wb") as out:
            out.write(content.encode() if kind == "text" else base64.b64decode(content))
os.makedirs(os.path.dirname(report) or ".", exist_ok=True)
if os.path.exists(report):
    os.remove(report)
command = [sys.executable, "-m", "kfops", "monitor", os.path.join(root, *project.split("/"))]
code = subprocess.call([*command, "--report", report, *sys.argv[4:]])
shutil.rmtree(root, ignore_errors=True)
try:
    with open(report, encoding="utf-8") as f:
        verdict = json.load(f).get("verdict")
except (OSError, ValueError, AttributeError):
    verdict = None
answers = {0: "ok", 1: "breach", 4: "insufficient_data"}
if code in answers and verdict == answers[code]:
    print("kfops monitor: " + verdict.replace("_", " ") + "; report.json is the task's output")
    sys.exit(0)
sys.exit(code or 1)
"""


def pipeline_name(project: Project) -> str:
    return f"{project.name}-monitor"


def secret_name(project: Project) -> str:
    """The Kubernetes Secret the monitor's pod reads ``SECRET_KEYS`` from."""
    return f"{project.name}-monitor"


def description(project: Project) -> str:
    """How a monitor pipeline starts its description: how kfops knows it is its own."""
    return f"kfops monitor of project {project.name}"


def wanted_in(project: Project, environment: str) -> bool:
    """Whether ``environment``'s Kubeflow Pipelines should run the monitor."""
    monitoring = project.monitoring
    return (
        monitoring is not None
        and monitoring.schedule is not None
        and monitoring.runner == "kfp"
        and monitoring.schedule_environment == environment
    )


def files(project: Project) -> tuple[dict[str, tuple[str, str] | None], str]:
    """What the pod writes before it runs kfops, and the project's folder among them:
    ``{relative path: ("text", TEXT) or ("base64", DATA), or None for a folder}``. Text
    stays text, so the spec in the KFP UI shows the mlops.yaml the monitor runs with.

    The paths are relative to the deepest folder holding all of them, so files named
    with ``../`` keep their place beside the project.

    Raises:
        KfopsError: a file cannot be read, or all of them are more than
            ``MAX_EMBEDDED_BYTES``.
    """
    wanted: dict[Path, bool] = {project.config_file: False}  # path -> is a folder
    pipeline_file = project.pipeline.file
    wanted[pipeline_file] = False
    for image in project.images:
        for named in (image.requirements, image.dockerfile):
            if named is not None:
                wanted[named] = False
        if image.context is not None:
            wanted.setdefault(image.context, True)
    canary = project.serving.canary if project.serving is not None else None
    if canary is not None and canary.smoke is not None:
        wanted[canary.smoke] = False
    monitoring = project.monitoring
    if monitoring is not None:
        wanted.update({r.body: False for r in monitoring.requests if r.body is not None})
        wanted.update({s.file: False for s in monitoring.sets})
        if monitoring.drift is not None:
            wanted[monitoring.drift.reference] = False
    paths = {p.resolve(): folder for p, folder in wanted.items()}
    root = project.root.resolve()
    top = _repository(root) or root
    base = Path(os.path.commonpath([top, *(p if f else p.parent for p, f in paths.items())]))
    embedded: dict[str, tuple[str, str] | None] = {}
    size = 0
    for path, folder in sorted(paths.items()):
        key = path.relative_to(base).as_posix()
        if folder:
            embedded[key] = None
            continue
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise KfopsError(
                f"the monitor pipeline embeds {display_path(path)}, which cannot be read: {exc}"
            ) from None
        if path.suffix == ".ipynb" and isinstance(project.pipeline, NotebookRef):
            data = _without_outputs(data)
        size += len(data)
        try:
            embedded[key] = ("text", data.decode("utf-8"))
        except UnicodeDecodeError:
            embedded[key] = ("base64", base64.b64encode(data).decode("ascii"))
    if size > MAX_EMBEDDED_BYTES:
        biggest = max((p for p, f in paths.items() if not f), key=lambda p: p.stat().st_size)
        raise KfopsError(
            f"the monitor pipeline would carry {size // 1024} KiB of files (mlops.yaml and"
            f" the files it names), more than {MAX_EMBEDDED_BYTES // 1024} KiB; the"
            f" largest is {display_path(biggest)}",
            "make the reference profile and probe sets smaller, or run the monitor from"
            " GitHub (`runner: github` under monitoring.schedule)",
        )
    return embedded, root.relative_to(base).as_posix()


def _repository(folder: Path) -> Path | None:
    """The top of the git repository holding ``folder``, if any."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"],
            cwd=folder,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:  # no git here: the project is laid out on its own
        return None
    return Path(done.stdout.strip()).resolve() if done.returncode == 0 else None


def check(project: Project) -> None:
    """What the monitor needs to run in a pod, which has only the files it carries.

    Raises:
        KfopsError: the served inputs come from ``--inputs`` (drift.source probes), or
            from a folder of this machine: the pod has neither.
    """
    monitoring = project.monitoring
    if monitoring is None or monitoring.drift is None:
        return
    drift = monitoring.drift
    hint = (
        "keep KServe's payload logs in a bucket: `source: logger` and"
        " `logs: s3://BUCKET/PREFIX` under monitoring.drift; or run the monitor from"
        " GitHub (`runner: github` under monitoring.schedule)"
    )
    if drift.source != "logger":
        raise KfopsError(
            "monitoring.schedule.runner kfp runs `kfops monitor --once --env"
            f" {monitoring.schedule_environment}` in a pod, but drift.source"
            f" `{drift.source}` reads the served inputs from --inputs FILE, which a pod has not",
            hint,
        )
    if not (drift.logs or "").startswith("s3://"):
        raise KfopsError(
            "monitoring.schedule.runner kfp runs the monitor in a pod, which cannot read"
            f" drift.logs `{drift.logs}` (a folder of this machine)",
            hint,
        )


def _without_outputs(data: bytes) -> bytes:
    """A notebook without its outputs: validation reads only the cells' sources and tags."""
    try:
        notebook = json.loads(data)
    except ValueError:
        return data  # not JSON: validation in the pod says so, as it did here
    for cell in notebook.get("cells", []) if isinstance(notebook, dict) else []:
        if isinstance(cell, dict) and cell.get("cell_type") == "code":
            cell["outputs"], cell["execution_count"] = [], None
    return json.dumps(notebook, sort_keys=True, separators=(",", ":")).encode()


def command(project: Project) -> list[str]:
    """The task's command, up to the report's path (the task adds it): the preamble, the
    files and the project folder."""
    embedded, folder = files(project)
    return [
        "python3",
        "-c",
        _PREAMBLE,
        json.dumps(embedded, sort_keys=True, separators=(",", ":")),
        folder,
    ]


def monitor_arguments(project: Project) -> list[str]:
    """What follows the report's path: ``kfops monitor``'s options."""
    monitoring = project.monitoring
    assert monitoring is not None and monitoring.schedule_environment
    environment = monitoring.schedule_environment
    logs = monitoring.drift.logs if monitoring.drift is not None else None
    if logs is None or not logs.startswith("s3://"):
        return ["--once", "--env", environment]  # refused at plan time (see check)
    # A pod keeps nothing between runs: the monitor's memory sits beside the logs.
    state = f"{logs.rstrip('/')}/.kfops-monitor/{environment}.json"
    return ["--once", "--env", environment, "--state", state]


def compile_ir(project: Project) -> str:
    """The monitor pipeline's IR YAML (the same text for the same project files).

    Raises:
        KfopsError: the files are too large to carry (see ``files``).
    """
    from kfops.pipeline._kfp_import import import_kfp

    import_kfp()
    from kfp import compiler as kfp_compiler
    from kfp import dsl, kubernetes

    monitoring = project.monitoring
    assert monitoring is not None and monitoring.image is not None  # validated
    image = monitoring.image
    head = command(project)
    tail = monitor_arguments(project)

    def kfops_monitor(report: Any) -> Any:
        return dsl.ContainerSpec(image=image, command=head, args=[report.path, *tail])

    # KFP reads the annotations as objects; this module's are strings (PEP 563).
    kfops_monitor.__annotations__ = {"report": dsl.Output[dsl.Artifact]}
    component = dsl.container_component(kfops_monitor)

    def monitor_pipeline() -> None:
        task = component()
        task.set_display_name(TASK)
        task.set_caching_options(False)  # every trigger looks again
        kubernetes.use_secret_as_env(
            task,
            secret_name=secret_name(project),
            secret_key_to_env={key: key for key in SECRET_KEYS},
            optional=True,
        )

    monitor_pipeline.__annotations__ = {}
    pipeline = dsl.pipeline(
        name=pipeline_name(project),
        description=f"{description(project)}: kfops monitor --once --env"
        f" {monitoring.schedule_environment}",
    )(monitor_pipeline)

    with tempfile.TemporaryDirectory(prefix="kfops-monitor-") as tmp:
        out = Path(tmp) / "monitor.yaml"
        kfp_compiler.Compiler().compile(pipeline, package_path=str(out))
        return out.read_text(encoding="utf-8")
