"""The validated project, as frozen dataclasses. Built only by ``config.load``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfops.errors import EXIT_USAGE, KfopsError, Problem, did_you_mean
from kfops.project.document import Mark


@dataclass(frozen=True)
class Resources:
    cpu: str | None = None
    memory: str | None = None
    gpu: int | None = None


@dataclass(frozen=True)
class StepOverride:
    """Settings from ``pipeline.steps.NAME``; ``None`` means "leave the pipeline's own"."""

    name: str
    mark: Mark
    resources: Resources | None = None
    retries: int | None = None
    cache: bool | None = None
    env: tuple[tuple[str, str], ...] = ()
    image: str | None = None  # a name from ``images:``


@dataclass(frozen=True)
class ImageRecipe:
    """``images.NAME``: a recipe (``base`` plus packages) or the user's own Dockerfile.

    An implicit recipe comes from a component's own ``base_image`` and
    ``packages_to_install``; it has no place in mlops.yaml (its mark is 0:0).
    """

    name: str
    mark: Mark
    base: str | None = None
    requirements: Path | None = None  # absolute
    packages: tuple[str, ...] = ()
    system_packages: tuple[str, ...] = ()
    dockerfile: Path | None = None  # absolute
    context: Path | None = None  # absolute; a Dockerfile image's build context
    build_args: tuple[tuple[str, str], ...] = ()
    implicit: bool = False


@dataclass(frozen=True)
class KfpTarget:
    """``environments.NAME.kfp``: the Kubeflow Pipelines API an environment delivers to."""

    host: str
    mark: Mark
    namespace: str | None = None
    experiment: str | None = None
    token_env: str | None = None  # the variable holding the bearer token; never the token
    metadata: str | None = None  # ML Metadata's gRPC-Web gateway; None: beside /pipeline


@dataclass(frozen=True)
class KubeTarget:
    """``environments.NAME.kubernetes``: where KServe serves the model."""

    namespace: str
    mark: Mark
    context: str | None = None  # the kubeconfig context; None: the current one
    deployment_mode: str | None = None  # "Knative" | "Standard"; None: find out
    url: str | None = None  # the model's address for callers, when not status.url


@dataclass(frozen=True)
class Environment:
    """``environments.NAME``: one place the project is delivered to."""

    name: str
    mark: Mark
    registry: str | None = None
    kfp: KfpTarget | None = None
    kubernetes: KubeTarget | None = None


@dataclass(frozen=True)
class Schedule:
    """``schedules[]``: one recurring run on an environment's Kubeflow Pipelines."""

    name: str
    cron: str  # 5-field Unix cron, as written
    environment: str
    mark: Mark
    parameters: tuple[tuple[str, Any], ...] = ()
    enabled: bool = True
    max_concurrency: int = 1

    @property
    def kfp_cron(self) -> str:
        """KFP's 6-field, seconds-first form."""
        return "0 " + " ".join(self.cron.split())


@dataclass(frozen=True)
class PipelineRef:
    """``pipeline.python``: a @dsl.pipeline function in a Python file."""

    file: Path  # absolute
    function: str
    mark: Mark


@dataclass(frozen=True)
class Trigger:
    """One entry of ``on:``: which events count, and whether CI also runs the pipeline."""

    branches: tuple[str, ...] = ()  # globs; empty means every branch
    pattern: str | None = None  # tags only
    run: bool = False
    environment: str | None = None  # whose images are built (pushed on push and tag)
    build: bool = False  # pull requests: build the environment's images, without pushing
    apply: bool = False  # pushes and tags: apply to the environment's Kubeflow Pipelines
    deploy: bool = False  # tags: release the model to the environment's KServe


@dataclass(frozen=True)
class Triggers:
    """The ``on:`` section. Without it: validate and compile on pull requests and pushes."""

    pull_request: Trigger | None = Trigger()
    push: Trigger | None = Trigger()
    tag: Trigger | None = None
    declared: bool = False


@dataclass(frozen=True)
class GateRule:
    """``serving.gate.METRIC``: what the new model's metric must reach to be promoted."""

    metric: str
    mark: Mark
    min: float | None = None
    max: float | None = None
    not_worse_than_serving: float | None = None

    @property
    def higher_is_better(self) -> bool:
        return self.max is None


@dataclass(frozen=True)
class Canary:
    """``serving.canary``: a share of traffic first, a smoke test, then promotion."""

    mark: Mark
    percent: int | None = None  # None: no traffic split, the new model takes all at once
    smoke: Path | None = None  # absolute
    promote: str = "auto"  # "auto" | "manual"


@dataclass(frozen=True)
class PayloadLogger:
    """``serving.logger``: KServe's payload logger, sending requests and responses as
    CloudEvents to ``url``."""

    mark: Mark
    url: str
    mode: str = "all"  # "all" | "request" | "response"


@dataclass(frozen=True)
class Serving:
    """``serving:``: how the model is served locally and by KServe."""

    name: str  # the InferenceService's name and the model's name on the server
    mark: Mark
    format: str
    from_step: str | None = None
    artifact: str | None = None  # None: the step's only Model output
    uri: str | None = None
    run: str | None = None  # ``serving.model.run``: the run whose model is served
    runtime: str | None = None
    protocol: str = "v1"
    resources: Resources | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    service_account: str | None = None
    timeout: int = 600
    canary: Canary | None = None
    gate: tuple[GateRule, ...] = ()
    logger: PayloadLogger | None = None
    marks: tuple[tuple[str, Mark], ...] = ()  # where each key under serving: is written

    def mark_of(self, key: str) -> Mark:
        """Where ``serving.KEY`` is written in mlops.yaml (``serving:`` itself if absent)."""
        return dict(self.marks).get(key, self.mark)


@dataclass(frozen=True)
class Bound:
    """A metric threshold: the value must be at least ``min`` and at most ``max``."""

    metric: str
    mark: Mark
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class ProbeRequest:
    """``monitoring.probes.requests[]``: one request sent to the served model.

    ``rows`` are sent as ``kfops predict`` sends them; ``body`` is a JSON file (a V1 or V2
    body) sent as it is. ``expect`` holds the smoke-test expectations (predictions,
    tolerance, count, min, max, max_latency_ms); ``status`` the HTTP status expected.
    """

    name: str
    mark: Mark
    rows: tuple[Any, ...] | None = None
    body: Path | None = None  # absolute
    status: int = 200
    expect: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class ProbeSet:
    """``monitoring.probes.sets[]``: JSON lines of ``{"inputs": ..., "label": ...}`` whose
    predictions are scored against the labels."""

    name: str
    mark: Mark
    file: Path  # absolute
    metrics: tuple[Bound, ...] = ()


@dataclass(frozen=True)
class CanaryGates:
    """``monitoring.gates.canary``: how a canary must compare with the stable model."""

    mark: Mark
    latency_ratio: float | None = None  # canary p95 / stable p95, at most
    agreement: float | None = None  # share of equal predictions, at least
    metric_delta: tuple[tuple[str, float], ...] = ()  # per metric: how much worse, at most


@dataclass(frozen=True)
class Gates:
    """``monitoring.gates``: what the served model must keep up, over a probe run."""

    mark: Mark
    error_rate: float | None = None  # at most this share of requests may fail
    latency_p95_ms: float | None = None  # the 95th percentile latency, at most
    availability: float | None = None  # at least this share of checks must find it up
    canary: CanaryGates | None = None


@dataclass(frozen=True)
class DriftTest:
    """A drift test: the method and the score above which a feature has drifted."""

    method: str  # "psi" | "jensen_shannon" | "ks" | "wasserstein"
    threshold: float


DRIFT_DEFAULTS = {
    "numeric": DriftTest("psi", 0.2),
    "categorical": DriftTest("jensen_shannon", 0.1),
}


@dataclass(frozen=True)
class Drift:
    """``monitoring.drift``: how served inputs are compared with the reference profile."""

    mark: Mark
    reference: Path  # absolute; a profile written by ``kfops monitor baseline``
    source: str = "probes"  # "probes" | "logger"
    logs: str | None = None  # the sink's store: an absolute folder, or s3://bucket/prefix
    signature: tuple[str, ...] = ()  # feature names in a row's order; () when not given
    window: str = "24h"
    window_seconds: float = 86400.0
    min_samples: int = 100
    numeric: DriftTest = DRIFT_DEFAULTS["numeric"]
    categorical: DriftTest = DRIFT_DEFAULTS["categorical"]
    features: tuple[tuple[str, DriftTest], ...] = ()  # per-feature overrides
    prediction: DriftTest | None = None  # None: predictions are not compared
    drift_share: float = 0.5  # breach when at least this share of features drifted

    def test_for(self, feature: str, kind: str) -> DriftTest:
        """The test for ``feature`` of ``kind`` ("numeric" or "categorical")."""
        override = dict(self.features).get(feature)
        if override is not None:
            return override
        return self.numeric if kind == "numeric" else self.categorical


@dataclass(frozen=True)
class OnBreach:
    """``monitoring.on_breach``: when a breach starts the next model cycle."""

    consecutive: int = 1
    cooldown: str = "24h"
    cooldown_seconds: float = 86400.0
    retrain: str = "issue"  # "issue" | "auto" | "off"
    close_after: int = 2  # clean runs in a row that close the issue
    workflow: str = "kfops-retrain.yml"  # the retrain workflow dispatched by ``auto``


@dataclass(frozen=True)
class Monitoring:
    """``monitoring:``: probes, gates, drift, schedule and what a breach does."""

    mark: Mark
    requests: tuple[ProbeRequest, ...] = ()
    sets: tuple[ProbeSet, ...] = ()
    gates: Gates | None = None
    drift: Drift | None = None
    schedule: str | None = None  # 5-field Unix cron
    runner: str = "github"  # "github" (a scheduled workflow) | "kfp" (a recurring run)
    schedule_environment: str | None = None  # the environment watched (and running it)
    image: str | None = None  # runner kfp: an image with kfops installed
    on_breach: OnBreach = OnBreach()


@dataclass(frozen=True)
class NotebookRef:
    """``pipeline.notebook``: a Jupyter notebook with Kale cell tags."""

    file: Path  # absolute
    mark: Mark


@dataclass(frozen=True)
class Project:
    """An mlops.yaml that passed validation."""

    root: Path  # the folder holding mlops.yaml
    config_file: Path
    shown: str  # the config file as the user named it, for messages
    name: str
    description: str | None
    pipeline: PipelineRef | NotebookRef
    parameters: dict[str, Any] = field(default_factory=dict)
    parameter_marks: dict[str, Mark] = field(default_factory=dict)
    steps: tuple[StepOverride, ...] = ()
    warnings: tuple[Problem, ...] = ()
    triggers: Triggers = Triggers()
    images: tuple[ImageRecipe, ...] = ()
    image: str | None = None  # ``pipeline.image``: the default image's name
    environments: tuple[Environment, ...] = ()
    schedules: tuple[Schedule, ...] = ()
    serving: Serving | None = None
    monitoring: Monitoring | None = None

    def environment(self, name: str, needs: str = "registry: HOST/PATH") -> Environment:
        """The environment called ``name``; ``needs`` is what the hint says to give a new
        one (what the command uses).

        Raises:
            KfopsError: (exit 2) no such environment, with did-you-mean.
        """
        for environment in self.environments:
            if environment.name == name:
                return environment
        hint = did_you_mean(
            name,
            (e.name for e in self.environments),
            f"environments in {self.shown}: ",
            f"add `environments: {{{name}: {{{needs}}}}}` to {self.shown}",
        )
        raise KfopsError(
            f"--env {name}: {self.shown} has no environment `{name}`", hint, exit_code=EXIT_USAGE
        )

    @property
    def workdir(self) -> Path:
        """Where steps run locally: a notebook's folder (as in Jupyter), else the project."""
        if isinstance(self.pipeline, NotebookRef):
            return self.pipeline.file.parent
        return self.root
