"""A scripted stand-in for the KServe controller, for tests against the real API server.

No KServe controller runs beside the test API server (``tests/kube_env.py``), so nothing
would ever write an InferenceService's ``status``. ``KServeController`` plays that part:
a background thread polls the InferenceServices of one namespace and, for each new
generation of each one, writes the statuses of a ``Timeline`` (ready at once, ready
after some seconds, never ready, failing to load its model, a canary split) through the
``/status`` subresource with the real ``kubernetes`` client. The fields are those of
KServe's own CRD schema, which the API server enforces (``tests/test_kube_env.py``
reads every timeline back).

Revisions are numbered as Knative would: a change of ``spec.predictor`` other than
``canaryTrafficPercent`` makes a new one; with ``canaryTrafficPercent`` set, the newest
revision gets that share of the traffic (tag ``latest``) and the last fully rolled-out
one the rest (tag ``prev``). With tag routing, KServe writes each tag's own URL into its
traffic target (``latest-NAME-predictor...``, ``prev-NAME-predictor...``), beside the
route's ``status.url`` that splits the traffic: here ``canary_url``, ``stable_url`` and
``url`` of the timeline, each a real model server.

In Standard mode a canary (``spec.canary``, KServe 0.20) runs as a Deployment and Service
of its own, ``NAME-CANARY-predictor`` (``CANARY`` is its ``predictor.name``), beside the
stable ``NAME-predictor``; the status names it in ``canaryStatuses`` but gives it no URL
(KServe's ``CanaryStatus`` has none).

    with KServeController(api_client, namespace, Timeline.ready_at_once(url=url)) as ctl:
        ...create the InferenceService...
        ctl.wait("iris", "ready")
"""

from __future__ import annotations

import copy
import datetime
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
Phase = Literal["pending", "loading", "ready", "failed"]
FAILURE_REASONS = (  # status.modelStatus.lastFailureInfo.reason, from the CRD's enum
    "ModelLoadFailed",
    "RuntimeUnhealthy",
    "RuntimeDisabled",
    "NoSupportingRuntime",
    "RuntimeNotRecognized",
    "InvalidPredictorSpec",
)


@dataclass(frozen=True)
class Step:
    at: float  # seconds after the controller first saw the generation
    phase: Phase


@dataclass(frozen=True)
class Timeline:
    """The statuses to write for each generation of an InferenceService, and when."""

    steps: tuple[Step, ...]
    url: str | None = None  # status.url, address.url, components.predictor.url
    canary_url: str | None = None  # the `latest` traffic target's url in a canary split
    stable_url: str | None = None  # the `prev` traffic target's url (default: url)
    split_at_first: bool = False  # first seen with a canary: pretend an earlier revision
    failure_reason: str = "ModelLoadFailed"
    failure_message: str = ""

    @classmethod
    def ready_at_once(cls, *, url: str) -> Timeline:
        return cls((Step(0.0, "ready"),), url=url)

    @classmethod
    def ready_after(cls, seconds: float, *, url: str) -> Timeline:
        return cls((Step(0.0, "loading"), Step(seconds, "ready")), url=url)

    @classmethod
    def never_ready(cls) -> Timeline:
        return cls((Step(0.0, "pending"),))

    @classmethod
    def failed_load(
        cls,
        reason: str = "ModelLoadFailed",
        message: str = "Failed to load model: model.joblib not found in storage",
        after: float = 0.0,
    ) -> Timeline:
        if reason not in FAILURE_REASONS:
            raise ValueError(f"reason {reason!r} is not one of KServe's {FAILURE_REASONS}")
        steps = (Step(0.0, "loading"), Step(after, "failed"))
        return cls(steps, failure_reason=reason, failure_message=message)

    @classmethod
    def canary(
        cls, *, url: str, canary_url: str | None = None, stable_url: str | None = None
    ) -> Timeline:
        """Ready at once; an InferenceService first seen with ``canaryTrafficPercent``
        gets two revisions sharing the traffic, as if an earlier one had been rolled out."""
        return cls(
            (Step(0.0, "ready"),),
            url=url,
            canary_url=canary_url,
            stable_url=stable_url,
            split_at_first=True,
        )


@dataclass(frozen=True)
class Event:
    """One status the controller wrote."""

    name: str
    generation: int
    phase: Phase
    status: dict[str, Any]
    after: float  # seconds from first seeing the generation to deciding to write this


@dataclass
class _Tracked:
    """What the controller remembers of one InferenceService (by uid)."""

    generation: int = 0
    seen_at: float = 0.0
    written: int = 0  # steps of the current generation already written
    template: Any = None  # spec.predictor without canaryTrafficPercent
    revision: int = 0
    rolled_out: str | None = None  # the last revision that got all the traffic
    previous: str | None = None  # the one rolled out before it
    spec: dict[str, Any] = field(default_factory=dict)
    timeline: Timeline = field(default_factory=Timeline.never_ready)
    mode: str = "Serverless"  # the deploymentMode annotation: Serverless or RawDeployment
    url: str | None = None  # the last status.url written: the route outlives revisions


def _resumed(item: dict[str, Any]) -> _Tracked:
    """What an InferenceService's status says a controller did before this one started
    (another test's controller, or a restart): its revisions, route and template."""
    tracked = _Tracked()
    status = item.get("status") or {}
    predictor = (status.get("components") or {}).get("predictor") or {}
    created = str(predictor.get("latestCreatedRevision") or "")
    if created[-5:].isdigit():
        tracked.revision = int(created[-5:])
        tracked.rolled_out = predictor.get("latestRolledoutRevision") or None
        tracked.previous = predictor.get("previousRolledoutRevision") or None
        template = copy.deepcopy((item.get("spec") or {}).get("predictor") or {})
        template.pop("canaryTrafficPercent", None)
        tracked.template = template if status.get("observedGeneration") else None
        tracked.generation = int(status.get("observedGeneration") or 0)
    tracked.url = status.get("url") or None
    return tracked


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(kind: str, ok: bool, reason: str = "", message: str = "") -> dict[str, Any]:
    condition: dict[str, Any] = {
        "type": kind,
        "status": "True" if ok else "False",
        "lastTransitionTime": _now(),
    }
    if not ok:
        condition.update(reason=reason, message=message, severity="Info")
    return condition


def _conditions(ready: bool, reason: str, message: str) -> list[dict[str, Any]]:
    kinds = ["IngressReady", "PredictorConfigurationReady", "PredictorReady", "PredictorRouteReady"]
    conditions = [
        _condition(kind, ready or kind == "PredictorConfigurationReady", reason, message)
        for kind in kinds
    ]
    conditions.append(_condition("Ready", ready, reason, message))
    return conditions


class KServeController:
    """Writes InferenceService statuses in ``namespace`` following ``timeline``.

    ``timeline`` is one Timeline for every InferenceService, or a mapping from names to
    Timelines (other names are left alone). ``events`` lists what was written.
    """

    def __init__(
        self,
        api_client: Any,
        namespace: str,
        timeline: Timeline | Mapping[str, Timeline],
        poll: float = 0.05,
    ) -> None:
        from kubernetes import client

        self._api = client.CustomObjectsApi(api_client)
        self.namespace = namespace
        self._default = timeline if isinstance(timeline, Timeline) else None
        self._named = {} if isinstance(timeline, Timeline) else dict(timeline)
        self._poll = poll
        self._tracked: dict[str, _Tracked] = {}
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-kserve", daemon=True)
        self.events: list[Event] = []
        self.error: BaseException | None = None

    def __enter__(self) -> KServeController:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if self.error is not None and error is None:
            raise RuntimeError("the fake KServe controller failed") from self.error

    def set_timeline(self, name: str, timeline: Timeline) -> None:
        """Use ``timeline`` for ``name`` from its next generation on."""
        with self._changed:
            self._named[name] = timeline

    def wait(
        self, name: str, phase: Phase, generation: int | None = None, timeout: float = 30.0
    ) -> Event:
        """The first event that wrote ``phase`` for ``name`` (and ``generation``, if
        given), waiting for it if need be."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.events:
                    if (
                        event.name == name
                        and event.phase == phase
                        and generation in (None, event.generation)
                    ):
                        return event
                if self.error is not None:
                    raise RuntimeError("the fake KServe controller failed") from self.error
                left = deadline - time.monotonic()
                if left <= 0:
                    written = [(e.name, e.generation, e.phase) for e in self.events]
                    raise TimeoutError(f"no {phase!r} status for {name} in {timeout}s: {written}")
                self._changed.wait(left)

    def _timeline_for(self, name: str) -> Timeline | None:
        with self._changed:
            return self._named.get(name, self._default)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._tick()
                self._stop.wait(self._poll)
        except BaseException as error:  # reported by wait() and __exit__
            with self._changed:
                self.error = error
                self._changed.notify_all()

    def _tick(self) -> None:
        listed = self._api.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL)
        present = set()
        for item in listed["items"]:
            metadata = item["metadata"]
            name, uid = metadata["name"], metadata["uid"]
            present.add(uid)
            if metadata.get("deletionTimestamp"):
                continue
            tracked = self._tracked.get(uid)
            if tracked is None or metadata["generation"] != tracked.generation:
                timeline = self._timeline_for(name)
                if timeline is None:
                    continue
                if uid not in self._tracked:
                    self._tracked[uid] = _resumed(item)
                tracked = self._tracked[uid]
                self._new_generation(tracked, item, timeline)
            timeline = tracked.timeline
            elapsed = time.monotonic() - tracked.seen_at
            due = [step for step in timeline.steps[tracked.written :] if step.at <= elapsed]
            if due:
                # Only the last due step: a controller reconciles to the current state.
                if not self._write(item, tracked, timeline, due[-1].phase, elapsed):
                    continue
                tracked.written += len(due)
        for uid in set(self._tracked) - present:
            del self._tracked[uid]

    def _new_generation(self, tracked: _Tracked, item: dict[str, Any], timeline: Timeline) -> None:
        predictor = copy.deepcopy(item["spec"].get("predictor", {}))
        predictor.pop("canaryTrafficPercent", None)
        if predictor != tracked.template:
            canary = item["spec"].get("predictor", {}).get("canaryTrafficPercent")
            if tracked.revision == 0 and timeline.split_at_first and canary is not None:
                # A canary needs an earlier revision: pretend revision 1 was rolled out.
                tracked.revision = 1
                tracked.rolled_out = _revision(item["metadata"]["name"], 1)
            tracked.revision += 1
            tracked.template = predictor
        annotations = item["metadata"].get("annotations") or {}
        mode = annotations.get("serving.kserve.io/deploymentMode", "Serverless")
        tracked.mode = "RawDeployment" if mode in ("RawDeployment", "Standard") else "Serverless"
        tracked.generation = item["metadata"]["generation"]
        tracked.seen_at = time.monotonic()
        tracked.written = 0
        tracked.spec = item["spec"]
        tracked.timeline = timeline

    def _write(
        self,
        item: dict[str, Any],
        tracked: _Tracked,
        timeline: Timeline,
        phase: Phase,
        elapsed: float,
    ) -> bool:
        """Replace the status as a whole (fields of an earlier phase, lastFailureInfo or
        url, would linger after a merge patch); False when the object changed meanwhile."""
        from kubernetes.client.exceptions import ApiException

        name = item["metadata"]["name"]
        status, rolled_out = _status(name, tracked, timeline, phase)
        try:
            self._api.replace_namespaced_custom_object_status(
                GROUP, VERSION, self.namespace, PLURAL, name, {**item, "status": status}
            )
        except ApiException as error:
            if error.status in (404, 409):  # deleted or changed: the next poll sees it
                return False
            raise
        if rolled_out != tracked.rolled_out:
            tracked.previous, tracked.rolled_out = tracked.rolled_out, rolled_out
        with self._changed:
            self.events.append(Event(name, tracked.generation, phase, status, elapsed))
            self._changed.notify_all()
        return True


def _status(
    name: str, tracked: _Tracked, timeline: Timeline, phase: Phase
) -> tuple[dict[str, Any], str | None]:
    """The status for ``phase``, and the last rolled-out revision once it is written."""
    if tracked.mode == "RawDeployment":
        return _standard_status(tracked, timeline, phase), tracked.rolled_out
    latest = _revision(name, tracked.revision)
    status: dict[str, Any] = {
        "observedGeneration": tracked.generation,
        "deploymentMode": "Serverless",
    }
    predictor: dict[str, Any] = {"latestCreatedRevision": latest}
    rolled_out = tracked.rolled_out
    if phase == "ready":
        status["conditions"] = _conditions(True, "", "")
        status["modelStatus"] = {
            "states": {"activeModelState": "Loaded", "targetModelState": "Loaded"},
            "transitionStatus": "UpToDate",
            "copies": {"failedCopies": 0, "totalCopies": 1},
        }
        traffic, rolled_out = _traffic(tracked, timeline, latest)
        predictor.update(traffic)
        if timeline.url is not None:
            status["url"] = timeline.url
            status["address"] = {"url": timeline.url}
            predictor["url"] = timeline.url
            tracked.url = timeline.url
    elif phase == "failed":
        message = timeline.failure_message
        status["conditions"] = _conditions(False, "RevisionFailed", message)
        status["modelStatus"] = {
            "states": {"activeModelState": "", "targetModelState": "FailedToLoad"},
            "transitionStatus": "BlockedByFailedLoad",
            "copies": {"failedCopies": 1, "totalCopies": 1},
            "lastFailureInfo": {
                "reason": timeline.failure_reason,
                "message": message,
                "modelRevisionName": latest,
                "exitCode": 1,
                "time": _now(),
            },
        }
    else:
        message = f'Configuration "{name}-predictor" is waiting for a Revision to become ready.'
        status["conditions"] = _conditions(False, "RevisionMissing", message)
        target = "Pending" if phase == "pending" else "Loading"
        status["modelStatus"] = {
            "states": {"activeModelState": "", "targetModelState": target},
            "transitionStatus": "InProgress",
        }
    if tracked.rolled_out is not None and phase != "ready":
        # The previous revision still serves while the new one is not ready.
        predictor["latestReadyRevision"] = tracked.rolled_out
        predictor["latestRolledoutRevision"] = tracked.rolled_out
        predictor["traffic"] = [
            {"revisionName": tracked.rolled_out, "percent": 100, "latestRevision": False}
        ]
        if tracked.url is not None:  # the route still leads to the serving revision
            status["url"] = tracked.url
            status["address"] = {"url": tracked.url}
            predictor["url"] = tracked.url
    status["components"] = {"predictor": predictor}
    return status, rolled_out


def _standard_status(tracked: _Tracked, timeline: Timeline, phase: Phase) -> dict[str, Any]:
    """Standard (RawDeployment) mode: no revisions; a canary (``spec.canary``, KServe 0.20)
    is reported in ``canaryStatuses``, and the timeline's phase applies to it. The serving
    predictor stays ready meanwhile, as its Deployment is untouched."""
    canaries = tracked.spec.get("canary") or []
    status: dict[str, Any] = {
        "observedGeneration": tracked.generation,
        "deploymentMode": "RawDeployment",
    }
    loaded = {
        "states": {"activeModelState": "Loaded", "targetModelState": "Loaded"},
        "transitionStatus": "UpToDate",
        "copies": {"failedCopies": 0, "totalCopies": 1},
    }
    ready = phase == "ready" or bool(canaries)
    if phase == "failed" and not canaries:
        status["conditions"] = _conditions(False, "ModelLoadFailed", timeline.failure_message)
        status["modelStatus"] = _failed(timeline)
    else:
        status["conditions"] = _conditions(ready, "Deploying", "waiting for the Deployment")
        status["modelStatus"] = (
            loaded
            if ready
            else {
                "states": {"activeModelState": "", "targetModelState": "Loading"},
                "transitionStatus": "InProgress",
            }
        )
    if timeline.url is not None and ready:
        status["url"] = timeline.url
        status["address"] = {"url": timeline.url}
        status["components"] = {"predictor": {"url": timeline.url}}
    if canaries:
        status["canaryStatuses"] = [
            {
                # KServe's webhook requires the canary's predictor.name; none runs here,
                # so an unnamed one gets a made-up name.
                "name": (item.get("predictor") or {}).get("name") or f"canary-{index}",
                "ready": phase == "ready",
                "trafficPercent": int(item.get("trafficPercent") or 0),
                "modelStatus": _failed(timeline) if phase == "failed" else loaded,
            }
            for index, item in enumerate(canaries)
        ]
    return status


def _failed(timeline: Timeline) -> dict[str, Any]:
    return {
        "states": {"activeModelState": "", "targetModelState": "FailedToLoad"},
        "transitionStatus": "BlockedByFailedLoad",
        "copies": {"failedCopies": 1, "totalCopies": 1},
        "lastFailureInfo": {
            "reason": timeline.failure_reason,
            "message": timeline.failure_message,
            "exitCode": 1,
            "time": _now(),
        },
    }


def _revision(name: str, number: int) -> str:
    return f"{name}-predictor-{number:05d}"


def _traffic(
    tracked: _Tracked, timeline: Timeline, latest: str
) -> tuple[dict[str, Any], str | None]:
    """components.predictor's revisions and traffic once ``latest`` is ready, and the
    last rolled-out revision then."""
    percent = tracked.spec.get("predictor", {}).get("canaryTrafficPercent")
    previous = tracked.rolled_out
    fields: dict[str, Any] = {"latestReadyRevision": latest}
    if percent is not None and previous is not None and previous != latest:
        fields["previousRolledoutRevision"] = previous
        fields["latestRolledoutRevision"] = previous
        fields["traffic"] = [
            {
                "revisionName": latest,
                "percent": int(percent),
                "latestRevision": True,
                "tag": "latest",
                "url": timeline.canary_url or timeline.url or "",
            },
            {
                "revisionName": previous,
                "percent": 100 - int(percent),
                "latestRevision": False,
                "tag": "prev",
                "url": timeline.stable_url or timeline.url or "",
            },
        ]
        return fields, previous
    if previous == latest:  # still the same rollout (a change outside the predictor)
        previous = tracked.previous
    if previous is not None:
        fields["previousRolledoutRevision"] = previous
    fields["latestRolledoutRevision"] = latest
    fields["traffic"] = [{"revisionName": latest, "percent": 100, "latestRevision": True}]
    return fields, latest
