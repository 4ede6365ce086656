"""The InferenceService a release asks for, as a pure function of the project and the release.

Nothing here talks to a cluster: ``render`` turns ``serving:`` plus a ``Release`` (the model's
URI and where it came from) into the object kfops applies. Labels and annotations carry the
project, commit, ref, tag, pipeline version, run id and the model's metrics, so the next
release can gate against them and ``kfops status`` can say what came from which commit.

A canary is expressed the way the cluster's deployment mode understands it:

- Knative (called Serverless before KServe 0.15): ``spec.predictor`` is the new model with
  ``canaryTrafficPercent``; Knative keeps the previous revision serving the rest. Tag routing
  is turned on so the new revision has its own URL for the smoke test.
- Standard (RawDeployment): ``spec.predictor`` stays the serving model and ``spec.canary``
  holds the new one with its ``trafficPercent`` (KServe 0.20 and later).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from kfops.project.model import Serving

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"
KIND = "InferenceService"
API_VERSION = f"{GROUP}/{VERSION}"
FIELD_MANAGER = "kfops"

MANAGED_BY = "app.kubernetes.io/managed-by"
PREFIX = "kfops.dev/"
PROJECT = PREFIX + "project"
COMMIT = PREFIX + "commit"
REF = PREFIX + "ref"
TAG = PREFIX + "tag"
PIPELINE_VERSION = PREFIX + "pipeline-version"
RUN_ID = PREFIX + "run-id"
MODEL_URI = PREFIX + "model-uri"
METRICS = PREFIX + "metrics"
RELEASE = PREFIX + "release"
STAGE = PREFIX + "stage"
DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
TAG_ROUTING = "serving.kserve.io/enable-tag-routing"

KNATIVE = "Knative"
STANDARD = "Standard"
# What KServe writes in the annotation and status, old names and new, to the mode they mean.
MODE_NAMES = {
    "Serverless": KNATIVE,
    "Knative": KNATIVE,
    "RawDeployment": STANDARD,
    "Standard": STANDARD,
    "ModelMesh": "ModelMesh",
}
# The annotation value each mode is written with: the names every KServe release knows.
_MODE_ANNOTATION = {KNATIVE: "Serverless", STANDARD: "RawDeployment"}


@dataclass(frozen=True)
class Release:
    """One model version on its way to an environment, and where it came from."""

    model_uri: str
    commit: str  # full SHA, or "" outside git
    ref: str = ""  # refs/tags/v1.2.0, refs/heads/main
    tag: str = ""  # v1.2.0
    pipeline_version: str = ""
    run_id: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    source: str = ""  # for messages: "run 3f2a on Kubeflow", "serving.model.uri"

    @property
    def name(self) -> str:
        """How messages and the release record name it: the tag, else the commit."""
        return self.tag or (self.commit[:12] if self.commit else self.model_uri)

    def annotations(self) -> dict[str, str]:
        found = {
            COMMIT: self.commit,
            REF: self.ref,
            TAG: self.tag,
            PIPELINE_VERSION: self.pipeline_version,
            RUN_ID: self.run_id,
            MODEL_URI: self.model_uri,
            RELEASE: self.name,
        }
        if self.metrics:
            found[METRICS] = json.dumps(self.metrics, sort_keys=True, separators=(",", ":"))
        return {key: value for key, value in found.items() if value}

    @classmethod
    def from_annotations(cls, annotations: dict[str, str]) -> Release:
        try:
            metrics = json.loads(annotations.get(METRICS) or "{}")
        except ValueError:
            metrics = {}
        return cls(
            model_uri=annotations.get(MODEL_URI, ""),
            commit=annotations.get(COMMIT, ""),
            ref=annotations.get(REF, ""),
            tag=annotations.get(TAG, ""),
            pipeline_version=annotations.get(PIPELINE_VERSION, ""),
            run_id=annotations.get(RUN_ID, ""),
            metrics={k: v for k, v in metrics.items() if isinstance(v, int | float)},
        )


class Manifest(dict[str, Any]):
    """An object to apply, and where in the config file its parts were written, for
    messages (never sent to the cluster): ``marks`` maps a field path such as
    ``.spec.predictor.logger`` to ``LINE:COLUMN``."""

    def __init__(self, obj: dict[str, Any], marks: dict[str, str]) -> None:
        super().__init__(obj)
        self.marks = marks


LOGGER = ".spec.predictor.logger"


def predictor(serving: Serving, model_uri: str) -> dict[str, Any]:
    """The ``spec.predictor`` that serves ``model_uri`` as ``serving:`` says."""
    model: dict[str, Any] = {"modelFormat": {"name": serving.format}, "storageUri": model_uri}
    if serving.runtime:
        model["runtime"] = serving.runtime
    if serving.protocol == "v2":
        model["protocolVersion"] = "v2"
    resources = serving.resources
    if resources is not None:
        amounts: dict[str, str] = {}
        if resources.cpu:
            amounts["cpu"] = resources.cpu
        if resources.memory:
            amounts["memory"] = resources.memory
        if resources.gpu:
            amounts["nvidia.com/gpu"] = str(resources.gpu)
        model["resources"] = {"requests": dict(amounts), "limits": dict(amounts)}
    spec: dict[str, Any] = {"model": model}
    if serving.logger is not None:
        # Only when asked: a logger kfops leaves out is one server-side apply never
        # touches, so one that someone else added survives every deploy.
        spec["logger"] = {"mode": serving.logger.mode, "url": serving.logger.url}
    if serving.min_replicas is not None:
        spec["minReplicas"] = serving.min_replicas
    if serving.max_replicas is not None:
        spec["maxReplicas"] = serving.max_replicas
    if serving.service_account:
        spec["serviceAccountName"] = serving.service_account
    return spec


def render(
    project: str,
    serving: Serving,
    namespace: str,
    release: Release,
    *,
    mode: str,
    canary_percent: int | None = None,
    stable: Release | None = None,
) -> dict[str, Any]:
    """The InferenceService for ``release``: all its traffic, or ``canary_percent`` of it
    beside ``stable`` (the model serving now).

    Knative needs no ``stable``: its previous revision keeps serving the rest. Standard
    mode keeps ``stable``'s predictor in ``spec.predictor`` and the new one in
    ``spec.canary``.
    """
    new = predictor(serving, release.model_uri)
    annotations = {DEPLOYMENT_MODE: _MODE_ANNOTATION[mode], **release.annotations()}
    spec: dict[str, Any]
    if canary_percent is None:
        spec = {"predictor": new}
        annotations[STAGE] = "promoted"
    elif mode == KNATIVE:
        spec = {"predictor": {**new, "canaryTrafficPercent": canary_percent}}
        annotations[TAG_ROUTING] = "true"
        annotations[STAGE] = "canary"
    else:
        assert stable is not None, "a Standard-mode canary needs the serving model"
        # The canary's model is a container spec there, and a container needs its name.
        new["model"] = {"name": "kserve-container", **new["model"]}
        # KServe's webhook requires a canary's predictor.name ("canary[0] predictor.name
        # is required"); its Deployment and Service are then NAME-canary-predictor.
        new = {"name": "canary", **new}
        spec = {
            "predictor": predictor(serving, stable.model_uri),
            "canary": [{"trafficPercent": canary_percent, "predictor": new}],
        }
        annotations[STAGE] = "canary"
    marks = {}
    if serving.logger is not None:
        marks[LOGGER] = f"{serving.logger.mark.line}:{serving.logger.mark.column}"
    return Manifest(
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {
                "name": serving.name,
                "namespace": namespace,
                "labels": {MANAGED_BY: FIELD_MANAGER, PROJECT: project},
                "annotations": annotations,
            },
            "spec": spec,
        },
        marks,
    )


def managed_by_kfops(obj: dict[str, Any], project: str) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(MANAGED_BY) == FIELD_MANAGER and labels.get(PROJECT) == project)
