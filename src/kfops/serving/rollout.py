"""``kfops deploy`` and ``kfops rollback``: a release as a reviewed, reversible, recorded act.

A deploy goes: check what is serving (kfops never takes over an InferenceService it did not
create), gate the new model's metrics against the serving model's, render the
InferenceService, check it with a server-side dry run (a canary the cluster would ignore is
an error before anything changes), record the release, apply it, wait until the cluster
says it is ready *and* it answers, smoke-test it, compare the canary with the stable
model when ``monitoring.gates.canary`` asks (the probes of ``kfops probe``, sent to both),
then promote it (or stop for a manual promotion). Any failure after the apply returns the
InferenceService to the previous spec, which the release record keeps, and says so.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from rich.console import Console

from kfops.errors import KfopsError
from kfops.project.model import CanaryGates, Environment, Project, Serving
from kfops.serving import render, smoke
from kfops.serving.kube import Conflict, Kube, Rejected
from kfops.serving.render import KNATIVE, STANDARD, Release

if TYPE_CHECKING:
    from kfops.monitor.probes import CanaryAnalysis

KEEP_RELEASES = 20
# Which mlops.yaml key a rejected field of the InferenceService comes from.
_FIELD_KEYS = (
    ("storageUri", ("serving", "model")),
    ("resources", ("serving", "resources")),
    ("Replicas", ("serving", "replicas")),
    ("runtime", ("serving", "runtime")),
    ("modelFormat", ("serving", "format")),
    ("protocolVersion", ("serving", "protocol")),
    ("serviceAccountName", ("serving", "service_account")),
    ("canaryTrafficPercent", ("serving", "canary", "percent")),
    ("trafficPercent", ("serving", "canary", "percent")),
    ("metadata.name", ("serving", "name")),
)


@dataclass
class Step:
    what: str
    ok: bool
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Outcome:
    """What a deploy or rollback did, for the console, the job summary and --format json."""

    environment: str
    name: str
    namespace: str
    release: Release | None
    stage: str = "planned"  # promoted | canary | unchanged | rolled-back | failed | planned
    url: str = ""
    previous: Release | None = None
    steps: list[Step] = field(default_factory=list)
    smoke: list[smoke.Outcome] = field(default_factory=list)
    analysis: CanaryAnalysis | None = None  # the canary compared with the stable model
    analysis_skipped: str = ""  # why comparisons were skipped
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.stage in ("promoted", "canary", "unchanged", "planned")

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "inference_service": self.name,
            "namespace": self.namespace,
            "stage": self.stage,
            "ok": self.ok,
            "url": self.url,
            "release": _release_json(self.release),
            "previous": _release_json(self.previous),
            "steps": [s.__dict__ for s in self.steps],
            "smoke": [{"name": o.name, "passed": o.passed, "detail": o.detail} for o in self.smoke],
            "canary_analysis": self._analysis_json(),
            "error": self.error,
        }

    def _analysis_json(self) -> dict[str, Any] | None:
        if self.analysis is not None:
            return {"skipped": "", **self.analysis.to_json()}
        if self.analysis_skipped:
            return {"skipped": self.analysis_skipped, "passed": None, "comparisons": []}
        return None


def _release_json(release: Release | None) -> dict[str, Any] | None:
    if release is None:
        return None
    return {
        "name": release.name,
        "model_uri": release.model_uri,
        "commit": release.commit,
        "tag": release.tag,
        "pipeline_version": release.pipeline_version,
        "run_id": release.run_id,
        "metrics": release.metrics,
    }


@dataclass
class ServingPlan:
    """``kfops plan`` for the InferenceService: what a deploy would change."""

    environment: str
    name: str
    namespace: str
    action: str = "unchanged"  # create | update | unchanged | blocked
    release: str = ""
    mode: str = ""
    canary: int | None = None
    changes: list[tuple[str, Any, Any]] = field(default_factory=list)  # (path, old, new)
    note: str = ""
    analysis: str = ""  # what canary analysis the deploy will do

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "inference_service": self.name,
            "namespace": self.namespace,
            "action": self.action,
            "release": self.release,
            "mode": self.mode,
            "canary_percent": self.canary,
            "changes": [{"path": p, "from": old, "to": new} for p, old, new in self.changes],
            "note": self.note,
            "canary_analysis": self.analysis,
        }

    def lines(self) -> list[str]:
        head = f"InferenceService {self.name} ({self.namespace}): {self.action}"
        if self.release and self.action in ("create", "update"):
            head += f" release {self.release}"
            if self.canary is not None:
                head += f" as a {self.canary}% canary ({self.mode} mode)"
        rows = [head]
        rows += [f"{path}: {_shown(old)} -> {_shown(new)}" for path, old, new in self.changes]
        if self.note:
            rows.append(f"note: {self.note}")
        if self.analysis and self.action in ("create", "update"):
            rows.append(f"canary analysis: {self.analysis}")
        return rows


def _shown(value: Any) -> str:
    if value is None:
        return "(none)"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def _differences(live: dict[str, Any] | None, kept: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """The spec and kfops annotations that change from ``live`` to ``kept``."""

    def flat(value: Any, prefix: str, into: dict[str, Any]) -> dict[str, Any]:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                flat(item, f"{prefix}.{key}" if prefix else str(key), into)
        else:
            into[prefix] = value
        return into

    def view(obj: dict[str, Any] | None) -> dict[str, Any]:
        if obj is None:
            return {}
        annotations = {k: v for k, v in _annotations(obj).items() if k.startswith(render.PREFIX)}
        return {
            **flat(obj.get("spec") or {}, "spec", {}),
            **{f"metadata.annotations.{k}": v for k, v in annotations.items()},
        }

    before, after = view(live), view(kept)
    return [
        (path, before.get(path), after.get(path))
        for path in sorted(set(before) | set(after))
        if before.get(path) != after.get(path)
    ]


class Failed(KfopsError):
    """A release that did not go through; ``outcome`` says what was left serving."""

    def __init__(self, outcome: Outcome, hint: str = "") -> None:
        super().__init__(outcome.error, hint)
        self.outcome = outcome


@dataclass
class Rollout:
    """One deploy or rollback of ``project``'s model to ``environment``."""

    project: Project
    environment: Environment
    kube: Kube
    console: Console
    poll_seconds: float = 2.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    # Where a Kubernetes Service answers (Standard mode's canary and stable predictors).
    service_url: Callable[[str, str], str] = field(default=lambda n, ns: _cluster_url(n, ns))
    outcome: Outcome = field(init=False)

    def __post_init__(self) -> None:
        assert self.project.serving is not None and self.environment.kubernetes is not None
        self.serving: Serving = self.project.serving
        self.namespace = self.environment.kubernetes.namespace
        self.outcome = Outcome(self.environment.name, self.serving.name, self.namespace, None)

    # -- deploy ---------------------------------------------------------------------------

    def deploy(
        self,
        release: Release,
        *,
        dry_run: bool = False,
        promote: bool = False,
        force: bool = False,
    ) -> Outcome:
        """Release ``release``; returns what happened.

        Raises:
            Failed: the release did not go through (what serves now is in its outcome).
            KfopsError: bad input or an unreachable cluster, before anything changed.
        """
        outcome = self.outcome
        outcome.release = release
        live = self._owned(self.kube.get(self.serving.name))
        serving_now = _serving_release(live)
        outcome.previous = serving_now
        stage = _stage(live)
        if promote:
            return self._promote(live, release, dry_run=dry_run, force=force)
        if live is not None and stage == "canary":
            waiting = Release.from_annotations(_annotations(live))
            if waiting.model_uri == release.model_uri and waiting.commit == release.commit:
                raise KfopsError(
                    f"release {release.name} is already a canary on {self._where()}",
                    f"promote it with `kfops deploy --env {self.environment.name} --promote`,"
                    f" or return to the previous release with `kfops rollback --env"
                    f" {self.environment.name}`",
                )
            raise KfopsError(
                f"a canary of release {waiting.name} is in progress on {self._where()}",
                f"finish it first: `kfops deploy --env {self.environment.name} --promote` or"
                f" `kfops rollback --env {self.environment.name}`",
            )
        if (
            serving_now is not None
            and serving_now.model_uri == release.model_uri
            and serving_now.commit == release.commit
            and stage == "promoted"
        ):
            outcome.stage = "unchanged"
            outcome.url = _url(live, self.environment)
            self._step("compare", True, f"release {release.name} is already serving: no change")
            return outcome

        self._gate(release, serving_now)
        mode = self._mode(live)
        percent = self.serving.canary.percent if self.serving.canary else None
        canary = percent if (percent is not None and serving_now is not None) else None
        if percent is not None and serving_now is None:
            self._step(
                "canary",
                True,
                "first release here: nothing to split traffic with, the new model takes it all",
            )
        if canary is not None and mode == "ModelMesh":
            self._fail_before(
                f"{self._where()} runs in ModelMesh mode, which has no traffic split: the"
                f" canary of {canary}% would be ignored",
                "remove `serving.canary.percent` (the smoke test still runs), or deploy to"
                " a Knative or Standard mode namespace",
            )
        obj = render.render(
            self.project.name,
            self.serving,
            self.namespace,
            release,
            mode=mode,
            canary_percent=canary,
            stable=serving_now,
        )
        kept = self._dry_run(obj, force=force, canary_field=canary is not None)
        if canary is not None and mode == STANDARD and not kept.get("spec", {}).get("canary"):
            self._no_spec_canary()
        gates = self._analysis_gates(canary, serving_now, announce=dry_run)
        if dry_run:
            outcome.stage = "planned"
            self._step("dry run", True, "the API server accepts the InferenceService")
            return outcome

        self._record(release, "canary" if canary is not None else "promoted", obj, live)
        before = _revisions(live)
        try:
            applied = self._apply(obj, force=force)
        except Failed:
            self._mark_record(release, "failed")  # never applied: the record says so
            raise
        try:
            self._wait(applied, before, canary=canary, mode=mode, new_revision=_changes(live, obj))
            target = self._target_url(canary=canary is not None)
            self._probe(target)
            self._smoke(target)
            if gates is not None and serving_now is not None:
                self._analyse(serving_now, mode)
        except _NotReleased as exc:
            return self._roll_back(serving_now, str(exc), force=force)
        if canary is not None and self.serving.canary and self.serving.canary.promote == "manual":
            outcome.stage = "canary"
            outcome.url = _url(self.kube.get(self.serving.name), self.environment)
            self._step(
                "promote",
                True,
                f"waiting for a manual promotion: `kfops deploy --env {self.environment.name}"
                " --promote`",
            )
            return outcome
        if canary is not None:
            return self._promote(self.kube.get(self.serving.name), release, force=force)
        outcome.stage = "promoted"
        outcome.url = _url(self.kube.get(self.serving.name), self.environment)
        self._mark_record(release, "promoted")
        return outcome

    def _promote(
        self,
        live: dict[str, Any] | None,
        release: Release,
        *,
        dry_run: bool = False,
        force: bool = False,
    ) -> Outcome:
        outcome = self.outcome
        if live is None or _stage(live) != "canary":
            raise KfopsError(
                f"there is no canary to promote on {self._where()}",
                f"`kfops deploy --env {self.environment.name}` starts a release",
            )
        canary = Release.from_annotations(_annotations(live))
        outcome.release = canary
        records, _ = self.kube.record(self.serving.name)
        outcome.previous = _previous_release(records, canary)
        obj = render.render(
            self.project.name, self.serving, self.namespace, canary, mode=self._mode(live)
        )
        self._dry_run(obj, force=force)
        if dry_run:
            outcome.stage = "planned"
            return outcome
        before = _revisions(live)
        applied = self._apply(obj, force=force)
        try:
            self._wait(applied, before, canary=None, mode=self._mode(live), new_revision=False)
            self._probe(self._target_url(canary=False))
        except _NotReleased as exc:
            return self._roll_back(outcome.previous, str(exc), force=force)
        outcome.stage = "promoted"
        outcome.url = _url(self.kube.get(self.serving.name), self.environment)
        self._step("promote", True, f"release {canary.name} takes all traffic")
        self._mark_record(canary, "promoted")
        return outcome

    # -- plan -----------------------------------------------------------------------------

    def plan(self, release: Release | None) -> ServingPlan:
        """What ``deploy`` would change, from a server-side dry run; changes nothing.

        ``release`` None: this commit's model is not known yet (it comes from a run), so
        the plan keeps the serving model's URI and says so.
        """
        live = self._owned(self.kube.get(self.serving.name))
        serving_now = _serving_release(live)
        planned = ServingPlan(self.environment.name, self.serving.name, self.namespace)
        if release is None:
            planned.note = "the model comes from this commit's run: known at deploy time"
            release = Release(
                model_uri=serving_now.model_uri if serving_now else "(this commit's model)",
                commit="",
            )
        planned.release = release.name
        if live is not None and _stage(live) == "canary":
            planned.action = "blocked"
            planned.note = "a canary is waiting: `kfops deploy --promote` or `kfops rollback`"
            return planned
        if (
            serving_now is not None
            and serving_now.model_uri == release.model_uri
            and serving_now.commit == release.commit
        ):
            planned.action = "unchanged"
            return planned
        mode = self._mode(live)
        percent = self.serving.canary.percent if self.serving.canary else None
        canary = percent if (percent is not None and serving_now is not None) else None
        planned.mode, planned.canary = mode, canary
        obj = render.render(
            self.project.name,
            self.serving,
            self.namespace,
            release,
            mode=mode,
            canary_percent=canary,
            stable=serving_now,
        )
        if not release.model_uri.startswith("("):
            kept = self._dry_run(obj, force=False, canary_field=canary is not None)
        else:
            kept = obj  # no URI to check with the server yet
        planned.action = "create" if live is None else "update"
        planned.changes = _differences(live, kept)
        gates = self._canary_gates()
        if gates is not None:
            planned.analysis = (
                f"after the smoke test, the probes go to the canary and to release"
                f" {serving_now.name}; the canary must meet {_thresholds(gates)}"
                if canary is not None and serving_now is not None
                else "skipped: " + self._why_no_comparison(serving_now)
            )
        return planned

    # -- rollback -------------------------------------------------------------------------

    def rollback(self, *, dry_run: bool = False, force: bool = False) -> Outcome:
        """Return to the release before the one serving (or before a canary)."""
        outcome = self.outcome
        live = self._owned(self.kube.get(self.serving.name))
        if live is None:
            raise KfopsError(
                f"nothing to roll back: there is no InferenceService `{self.serving.name}`"
                f" on {self._where()}"
            )
        current = Release.from_annotations(_annotations(live))
        records, _ = self.kube.record(self.serving.name)
        previous = _previous_release(records, current)
        outcome.release = previous
        outcome.previous = current
        if previous is None:
            raise KfopsError(
                f"release {current.name} is the first kfops recorded for"
                f" `{self.serving.name}` on {self._where()}: there is nothing before it",
                "deploy an earlier tag instead (`git checkout TAG && kfops deploy`)",
            )
        mode = self._mode(live)
        obj = render.render(self.project.name, self.serving, self.namespace, previous, mode=mode)
        self._dry_run(obj, force=force)
        if dry_run:
            outcome.stage = "planned"
            return outcome
        self._record(previous, "promoted", obj, live, note=f"rollback from {current.name}")
        before = _revisions(live)
        applied = self._apply(obj, force=force)
        try:
            self._wait(applied, before, canary=None, mode=mode, new_revision=_changes(live, obj))
            self._probe(self._target_url(canary=False))
        except _NotReleased as exc:
            outcome.stage = "failed"
            outcome.error = (
                f"rolled back to release {previous.name} on {self._where()}, but it is not"
                f" serving: {exc}"
            )
            raise Failed(outcome, "look at the InferenceService's events and pods") from None
        outcome.stage = "promoted"
        outcome.url = _url(self.kube.get(self.serving.name), self.environment)
        self._step("rollback", True, f"release {previous.name} serves again")
        self._mark_record(current, "rolled-back")
        self._mark_record(previous, "promoted")
        return outcome

    # -- the parts ------------------------------------------------------------------------

    def _owned(self, live: dict[str, Any] | None) -> dict[str, Any] | None:
        if live is not None and not render.managed_by_kfops(live, self.project.name):
            self._fail_before(
                f"InferenceService `{self.serving.name}` on {self._where()} was not created by"
                f" kfops for project `{self.project.name}` (it lacks the labels"
                f" {render.MANAGED_BY}=kfops and {render.PROJECT}={self.project.name})",
                "kfops never changes what it did not create: choose another name with"
                " `serving.name`, or delete that InferenceService yourself",
            )
        return live

    def _gate(self, release: Release, serving_now: Release | None) -> None:
        rules = self.serving.gate
        if not rules:
            return
        failures, notes = [], []
        for rule in rules:
            value = release.metrics.get(rule.metric)
            if value is None:
                known = ", ".join(sorted(release.metrics)) or "none"
                failures.append(
                    f"`{rule.metric}`: release {release.name} has no such metric"
                    f" (its metrics: {known})"
                )
                continue
            if rule.min is not None and value < rule.min:
                failures.append(f"`{rule.metric}` {value:g} is below the minimum {rule.min:g}")
            if rule.max is not None and value > rule.max:
                failures.append(f"`{rule.metric}` {value:g} is above the maximum {rule.max:g}")
            if rule.not_worse_than_serving is not None:
                recorded = serving_now.metrics.get(rule.metric) if serving_now else None
                if recorded is None:
                    notes.append(f"`{rule.metric}`: no value recorded for the serving model")
                    continue
                margin = rule.not_worse_than_serving
                if rule.higher_is_better:
                    worse = value < recorded - margin
                else:
                    worse = value > recorded + margin
                if worse:
                    assert serving_now is not None
                    failures.append(
                        f"`{rule.metric}` {value:g} is worse than the serving release"
                        f" {serving_now.name}'s {recorded:g} by more than {margin:g}"
                    )
        detail = "; ".join(failures or notes) or "every metric passes"
        self._step("gate", not failures, detail)
        if failures:
            self._fail_before(
                f"release {release.name} fails the gate: " + "; ".join(failures),
                "the serving model is unchanged; improve the model, or change `serving.gate`"
                " in mlops.yaml (a reviewed change)",
            )

    def _canary_gates(self) -> CanaryGates | None:
        monitoring = self.project.monitoring
        return monitoring.gates.canary if monitoring and monitoring.gates else None

    def _why_no_comparison(self, serving_now: Release | None) -> str:
        if serving_now is None:
            return "first release here: there is no stable model to compare the new one with"
        return (
            "there is no canary (`serving.canary.percent` is not set): the new model takes"
            " all traffic at once, with no stable model beside it to compare with"
        )

    def _analysis_gates(
        self, canary: int | None, serving_now: Release | None, *, announce: bool
    ) -> CanaryGates | None:
        """``monitoring.gates.canary`` when this deploy will compare the canary with the
        stable model, its probes checked now (before anything changes); None otherwise,
        with a line saying why the comparisons are skipped."""
        gates = self._canary_gates()
        if gates is None:
            return None
        monitoring = self.project.monitoring
        assert monitoring is not None
        if canary is None or serving_now is None:
            why = self._why_no_comparison(serving_now)
            self.outcome.analysis_skipped = why
            self._step("canary analysis", True, f"comparisons skipped: {why}")
            return None
        target = self.environment.kubernetes
        assert target is not None
        if target.url:
            self._fail_before(
                f"environments.{self.environment.name}.kubernetes.url ({target.url}) is one"
                " address for the canary and the stable model alike, so"
                f" monitoring.gates.canary ({self.project.shown}:{gates.mark.line}) cannot"
                " compare them",
                "remove `kubernetes.url` (kfops then finds each model's own address in the"
                " InferenceService's status), or remove `monitoring.gates.canary`",
            )
        from kfops.monitor import probes

        try:
            probes.comparable(monitoring)
            probes.prepare(monitoring, self.serving.protocol, self.serving.name)
        except KfopsError as exc:
            self._fail_before(exc.message, exc.hint or "fix mlops.yaml")
        if announce:
            count = len(monitoring.requests) + len(monitoring.sets)
            self._step(
                "canary analysis",
                True,
                f"will run after the smoke test: {count} probe{'s' * (count != 1)} to the"
                f" canary and to release {serving_now.name}; the canary must meet"
                f" {_thresholds(gates)}",
            )
        return gates

    def _analyse(self, stable: Release, mode: str) -> None:
        """Compare the canary with the stable model (``monitoring.gates.canary``)."""
        from kfops.monitor import probes

        monitoring = self.project.monitoring
        assert monitoring is not None
        started = self.clock()
        canary_url, stable_url = self._addresses(mode)
        analysis = probes.compare(
            monitoring, canary_url, stable_url, self.serving.name, self.serving.protocol
        )
        self.outcome.analysis = analysis
        for gate in analysis.canary.gates:
            self._step(f"canary {gate.name}", gate.passed, gate.detail)
        for comparison in analysis.comparisons:
            self._step(f"canary {probes.label(comparison)}", comparison.passed, comparison.detail)
        failures = analysis.failures()
        if not analysis.canary.ready:
            where = (
                " (a Standard-mode canary is reached at its own Service, from inside the"
                " cluster only)"
                if mode == STANDARD
                else ""
            )
            failures.insert(0, f"the canary does not answer at {canary_url}{where}")
        count = len(analysis.canary.results)
        detail = (
            f"{count} probe{'s' * (count != 1)} to the canary ({canary_url}) and to release"
            f" {stable.name} ({stable_url}): "
            + ("every comparison passed" if not failures else f"{len(failures)} failed")
        )
        self._step("canary analysis", not failures, detail, self.clock() - started)
        if failures:
            raise _NotReleased("the canary analysis failed: " + "; ".join(failures))

    def _addresses(self, mode: str) -> tuple[str, str]:
        """The canary's own address and the stable model's, apart from the route that
        splits the traffic: in Knative mode the tagged URLs of tag routing (``latest``,
        ``prev``) in the status; in Standard mode each predictor's own Service."""
        live = self.kube.get(self.serving.name) or {}
        status = live.get("status") or {}
        if mode == STANDARD:
            names = [str(c.get("name") or "") for c in status.get("canaryStatuses") or []]
            if not names or not names[0]:
                raise _NotReleased(
                    "the InferenceService's status names no canary (canaryStatuses[].name),"
                    " so the canary's own Service is not known"
                )
            own = str(((live.get("spec") or {}).get("predictor") or {}).get("name") or "")
            name = self.serving.name
            stable = f"{name}-{own}-predictor" if own else f"{name}-predictor"
            return (
                self.service_url(f"{name}-{names[0]}-predictor", self.namespace),
                self.service_url(stable, self.namespace),
            )
        traffic = ((status.get("components") or {}).get("predictor") or {}).get("traffic") or []
        canary = next((t["url"] for t in traffic if t.get("latestRevision") and t.get("url")), "")
        stable = next(
            (t["url"] for t in traffic if not t.get("latestRevision") and t.get("url")), ""
        )
        if not canary or not stable:
            which = "the canary (tag `latest`)" if not canary else "the stable model (tag `prev`)"
            raise _NotReleased(
                f"the InferenceService's status has no URL of its own for {which} in"
                " status.components.predictor.traffic: is tag routing"
                f" ({render.TAG_ROUTING}) on?"
            )
        return str(canary).rstrip("/"), str(stable).rstrip("/")

    def _mode(self, live: dict[str, Any] | None) -> str:
        """The deployment mode in force: the InferenceService's own (status, annotation),
        else mlops.yaml's, else the cluster's default, else Knative (KServe's default)."""
        if live is not None:
            status_mode = render.MODE_NAMES.get(
                str((live.get("status") or {}).get("deploymentMode") or "")
            )
            annotated = render.MODE_NAMES.get(_annotations(live).get(render.DEPLOYMENT_MODE, ""))
            if status_mode or annotated:
                return status_mode or annotated or KNATIVE
        target = self.environment.kubernetes
        assert target is not None
        return target.deployment_mode or self.kube.default_mode() or KNATIVE

    def _no_spec_canary(self) -> None:
        self._fail_before(
            f"the InferenceService CRD on {self._where()} has no `spec.canary` (KServe"
            " before 0.20), so the API server drops it: the canary would be ignored and"
            " the new model would take no traffic",
            "upgrade KServe to 0.20 or later, use Knative mode"
            " (`kubernetes.deployment_mode: Knative`), or remove `serving.canary.percent`",
        )

    def _dry_run(
        self, obj: dict[str, Any], *, force: bool, canary_field: bool = False
    ) -> dict[str, Any]:
        started = self.clock()
        try:
            kept = self.kube.apply(obj, dry_run=True, force=force)
        except Rejected as exc:
            if canary_field and any(f.startswith(".spec.canary") for f in exc.fields):
                self._no_spec_canary()
            self._fail_before(self._located(exc), exc.hint)
        except Conflict as exc:
            self._fail_before(exc.message, exc.hint)
        self._step("check", True, "server-side dry run accepted", self.clock() - started)
        return kept

    def _apply(self, obj: dict[str, Any], *, force: bool, what: str = "") -> dict[str, Any]:
        started = self.clock()
        try:
            applied = self.kube.apply(obj, force=force)
        except Conflict as exc:
            # One re-read and retry: a change that raced ours may have been kfops's own.
            self._step("apply", False, f"conflict, retrying once: {exc.message}")
            try:
                applied = self.kube.apply(obj, force=force)
            except Conflict as again:
                self._fail_before(again.message, again.hint)
        except Rejected as exc:
            self._fail_before(self._located(exc), exc.hint)
        what = what or {"canary": "the canary", "promoted": "all traffic"}.get(
            _annotations(obj).get(render.STAGE, ""), ""
        )
        self._step("apply", True, f"applied ({what})", self.clock() - started)
        return applied

    def _wait(
        self,
        applied: dict[str, Any],
        before: dict[str, str],
        *,
        canary: int | None,
        mode: str,
        new_revision: bool = True,
    ) -> None:
        started = self.clock()
        deadline = started + self.serving.timeout
        generation = int((applied.get("metadata") or {}).get("generation") or 0)
        applied_at = datetime.now(timezone.utc)
        detail = "no status yet"
        with self.console.status(
            f"waiting for {self.serving.name} to be ready (up to {self.serving.timeout}s)"
        ):
            while True:
                live = self.kube.get(self.serving.name)
                state, detail = readiness(
                    live,
                    mode=mode,
                    canary=canary,
                    before=before,
                    generation=generation,
                    applied_at=applied_at,
                    new_revision=new_revision,
                )
                if state == "ready":
                    self._step("ready", True, detail, self.clock() - started)
                    return
                if state == "failed":
                    self._step("ready", False, detail, self.clock() - started)
                    raise _NotReleased(detail)
                if self.clock() >= deadline:
                    message = f"not ready after {self.serving.timeout}s (serving.timeout): {detail}"
                    self._step("ready", False, message, self.clock() - started)
                    raise _NotReleased(message)
                self.sleep(self.poll_seconds)

    def _target_url(self, *, canary: bool) -> str:
        live = self.kube.get(self.serving.name)
        target = self.environment.kubernetes
        assert target is not None
        if target.url:
            return target.url.rstrip("/")
        status = (live or {}).get("status") or {}
        if canary:
            for entry in ((status.get("components") or {}).get("predictor") or {}).get(
                "traffic"
            ) or []:
                if entry.get("latestRevision") and entry.get("url"):
                    return str(entry["url"]).rstrip("/")
        url = status.get("url") or ((status.get("address") or {}).get("url"))
        if not url:
            raise _NotReleased("the InferenceService has no URL in its status")
        return str(url).rstrip("/")

    def _probe(self, url: str) -> None:
        from kfops.serving import predict

        started = self.clock()
        if not predict.ready(url, self.serving.name, self.serving.protocol):
            detail = (
                f"{url} does not answer for model `{self.serving.name}` ({self.serving.protocol})"
            )
            self._step("probe", False, detail, self.clock() - started)
            raise _NotReleased(detail)
        self._step("probe", True, f"{url} answers", self.clock() - started)

    def _smoke(self, url: str) -> None:
        canary = self.serving.canary
        if canary is None or canary.smoke is None:
            return
        from kfops.serving import predict

        started = self.clock()
        cases = smoke.load(canary.smoke)
        for case in cases:
            try:
                rows = predict.read_rows(
                    f"{canary.smoke.name} ({case.name})", text=json.dumps(case.body or case.rows)
                )
                answer = predict.predict(url, self.serving.name, rows, self.serving.protocol)
            except KfopsError as exc:
                self.outcome.smoke.append(smoke.Outcome(case.name, False, exc.message))
                continue
            self.outcome.smoke.append(smoke.check(case, answer.predictions, answer.latency_ms))
        failed = [o for o in self.outcome.smoke if not o.passed]
        detail = f"{len(cases) - len(failed)}/{len(cases)} passed" + (
            ": " + "; ".join(f"{o.name}: {o.detail}" for o in failed) if failed else ""
        )
        self._step("smoke", not failed, detail, self.clock() - started)
        if failed:
            raise _NotReleased(f"the smoke test failed: {detail}")

    def _roll_back(self, previous: Release | None, why: str, *, force: bool) -> Outcome:
        outcome = self.outcome
        release = outcome.release
        assert release is not None
        if previous is None:
            outcome.stage = "failed"
            outcome.error = (
                f"release {release.name} is not serving on {self._where()}: {why}. It was the"
                f" first release here, so there is nothing to return to; the InferenceService"
                f" `{self.serving.name}` is left as it is for you to look at"
            )
            self._mark_record(release, "failed")
            raise Failed(outcome, "fix the cause and deploy again")
        mode = self._mode(self.kube.get(self.serving.name))
        obj = render.render(self.project.name, self.serving, self.namespace, previous, mode=mode)
        try:
            self._apply(obj, force=force, what=f"rollback to {previous.name}")
        except Failed:
            outcome.stage = "failed"
            outcome.error = (
                f"release {release.name} failed on {self._where()} ({why}), and the rollback"
                f" to release {previous.name} could not be applied: {outcome.error}"
            )
            self._mark_record(release, "failed")
            raise Failed(
                outcome,
                f"release {release.name}'s spec is in place: fix the cause above, then"
                f" `kfops rollback --env {self.environment.name}`",
            ) from None
        self._mark_record(release, "rolled-back")
        outcome.stage = "rolled-back"
        # The previous release kept serving (a canary's revision, or the Deployment that
        # rolls only when the new pods are ready); a probe of its address confirms it.
        try:
            url = self._target_url(canary=False)
        except _NotReleased:
            url = ""
        from kfops.serving import predict

        answers = bool(url) and predict.ready(url, self.serving.name, self.serving.protocol)
        serving = (
            f"Release {previous.name} is serving, as before"
            if answers
            else f"Release {previous.name} was applied again, but {url or 'its address'} does"
            " not answer yet: check the InferenceService"
        )
        outcome.error = (
            f"release {release.name} was rolled back on {self._where()}: {why}. {serving}"
        )
        self._step("rollback", answers, serving[0].lower() + serving[1:])
        raise Failed(outcome, "fix the cause and deploy again; nothing else changed")

    def _record(
        self,
        release: Release,
        stage: str,
        obj: dict[str, Any],
        live: dict[str, Any] | None,
        note: str = "",
    ) -> None:
        for attempt in (1, 2):
            records, version = self.kube.record(self.serving.name)
            entry = {
                **(_release_json(release) or {}),
                "stage": stage,
                "status": "in-progress",
                "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "spec": obj["spec"],
            }
            if note:
                entry["note"] = note
            try:
                self.kube.write_record(
                    self.serving.name,
                    self.project.name,
                    [*records, entry][-KEEP_RELEASES:],
                    version,
                )
                return
            except Conflict:
                if attempt == 2:
                    raise

    def _mark_record(self, release: Release, status: str) -> None:
        for attempt in (1, 2):
            records, version = self.kube.record(self.serving.name)
            for entry in reversed(records):
                if (
                    entry.get("model_uri") == release.model_uri
                    and entry.get("commit") == release.commit
                ):
                    entry["status"] = status
                    break
            try:
                self.kube.write_record(self.serving.name, self.project.name, records, version)
                return
            except Conflict:
                if attempt == 2:
                    raise

    def _located(self, exc: Rejected) -> str:
        """The API server's message, with the mlops.yaml line its field comes from."""
        for name in (*exc.fields, exc.message):
            for needle, path in _FIELD_KEYS:
                if needle in name:
                    mark = _mark(self.project, path)
                    if mark:
                        return f"{self.project.shown}:{mark}: {exc.message}"
        return exc.message

    def _fail_before(self, message: str, hint: str) -> Any:
        self.outcome.stage = "failed"
        self.outcome.error = message
        self._step("check", False, message)
        settled = "unchanged" in hint or "nothing was changed" in hint
        raise Failed(self.outcome, hint + ("" if settled else "; nothing was changed"))

    def _where(self) -> str:
        return f"{self.kube.where.server} namespace `{self.namespace}`"

    def _step(self, what: str, ok: bool, detail: str, seconds: float = 0.0) -> None:
        self.outcome.steps.append(Step(what, ok, detail, round(seconds, 3)))
        mark = "[green]ok[/]" if ok else "[red]failed[/]"
        timing = f" ({seconds:.1f}s)" if seconds >= 0.05 else ""
        self.console.print(f"  {mark}  {what}: {detail}{timing}", highlight=False, soft_wrap=True)


class _NotReleased(Exception):
    """The applied release is not serving: roll back."""


def readiness(
    live: dict[str, Any] | None,
    *,
    mode: str,
    canary: int | None,
    before: dict[str, str],
    generation: int,
    applied_at: datetime | None = None,
    new_revision: bool = True,
) -> tuple[str, str]:
    """("ready" | "waiting" | "failed", why) for the InferenceService after an apply.

    Ready means: the ``Ready`` and ``PredictorReady`` conditions are True, the model is
    ``Loaded`` and ``UpToDate``, and the status is about the spec just applied — a new
    revision in Knative mode (``observedGeneration`` alone is not reliable, kserve #6081),
    and for a canary, the split in force. A failed load is final at once.
    """
    if live is None:
        return "failed", "the InferenceService is gone"
    status = live.get("status") or {}
    model = status.get("modelStatus") or {}
    states = model.get("states") or {}
    failure = model.get("lastFailureInfo") or {}
    transition = model.get("transitionStatus", "")
    if _failed_load(model):
        reason = failure.get("reason") or transition or "FailedToLoad"
        message = failure.get("message") or "the model server could not load the model"
        return "failed", f"model failed to load ({reason}): {message}"
    for entry in status.get("canaryStatuses") or []:
        canary_model = entry.get("modelStatus") or {}
        if _failed_load(canary_model):
            info = canary_model.get("lastFailureInfo") or {}
            return "failed", (
                f"the canary model failed to load ({info.get('reason') or 'FailedToLoad'}):"
                f" {info.get('message') or 'no message'}"
            )
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    predictor = (status.get("components") or {}).get("predictor") or {}
    if mode == KNATIVE:
        created = predictor.get("latestCreatedRevision", "")
        if not created or (new_revision and created == before.get("latestCreatedRevision")):
            return "waiting", "no new revision yet"
        if predictor.get("latestReadyRevision") != created:
            return "waiting", f"revision {created} is not ready yet"
        latest = [t for t in predictor.get("traffic") or [] if t.get("latestRevision")]
        if canary is None and latest and int(latest[0].get("percent") or 0) != 100:
            return "waiting", f"revision {created} does not take all traffic yet"
    else:
        observed = int(status.get("observedGeneration") or 0)
        fresh = observed >= generation > 0
        if not fresh and applied_at is not None:
            fresh = any(
                _time(c.get("lastTransitionTime")) >= applied_at.replace(microsecond=0)
                for c in conditions.values()
            )
        if not fresh:
            return "waiting", "the status is not about the applied spec yet"
    for kind in ("PredictorReady", "Ready"):
        condition = conditions.get(kind)
        if condition is None:
            if kind == "Ready":
                return "waiting", "no Ready condition yet"
            continue
        if condition.get("status") != "True":
            why = condition.get("message") or condition.get("reason") or "not ready"
            return "waiting", f"{kind} is {condition.get('status')}: {why}"
    if model and (transition != "UpToDate" or states.get("activeModelState") != "Loaded"):
        return "waiting", (
            f"model {states.get('activeModelState') or 'pending'}"
            f" ({transition or 'no transition status'})"
        )
    if canary is not None:
        if mode == KNATIVE:
            latest = [t for t in predictor.get("traffic") or [] if t.get("latestRevision")]
            if not latest or int(latest[0].get("percent") or 0) != canary:
                return "waiting", f"traffic split to {canary}% is not in force yet"
        else:
            statuses = status.get("canaryStatuses") or []
            if not statuses or not statuses[0].get("ready"):
                return "waiting", "the canary is not ready yet"
    return "ready", "Ready, model Loaded and UpToDate" + (
        f", canary at {canary}%" if canary is not None else ""
    )


def _failed_load(model: dict[str, Any]) -> bool:
    states = model.get("states") or {}
    return model.get("transitionStatus") in ("BlockedByFailedLoad", "InvalidSpec") or (
        "FailedToLoad" in (states.get("activeModelState"), states.get("targetModelState"))
    )


def _time(text: Any) -> datetime:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return datetime.min.replace(tzinfo=timezone.utc)


def _annotations(obj: dict[str, Any] | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("annotations") or {})


def _stage(live: dict[str, Any] | None) -> str:
    return _annotations(live).get(render.STAGE, "") if live else ""


def _serving_release(live: dict[str, Any] | None) -> Release | None:
    """The release serving all traffic now: a promoted one as annotated; during a canary,
    the one before it (the record knows; the annotations name the canary)."""
    if live is None:
        return None
    return Release.from_annotations(_annotations(live))


def _changes(live: dict[str, Any] | None, obj: dict[str, Any]) -> bool:
    """Whether applying ``obj`` changes the predictor (a new Knative revision)."""

    def template(spec: dict[str, Any] | None) -> dict[str, Any]:
        found = dict(((spec or {}).get("spec") or {}).get("predictor") or {})
        found.pop("canaryTrafficPercent", None)
        return found

    if live is None:
        return True
    return not _within(template(obj), template(live))


def _within(mine: Any, theirs: Any) -> bool:
    """Whether ``theirs`` holds everything ``mine`` sets (the server may add defaults)."""
    if isinstance(mine, dict):
        return isinstance(theirs, dict) and all(
            _within(value, theirs.get(key)) for key, value in mine.items()
        )
    return bool(mine == theirs)


def _revisions(live: dict[str, Any] | None) -> dict[str, str]:
    predictor = (((live or {}).get("status") or {}).get("components") or {}).get("predictor")
    return {
        key: str((predictor or {}).get(key) or "")
        for key in ("latestCreatedRevision", "latestReadyRevision")
    }


def _previous_release(records: list[dict[str, Any]], current: Release) -> Release | None:
    """The last release in the record before ``current`` that was promoted and not
    rolled back from (so a second rollback goes further back, never forward again)."""
    seen_current = False
    for entry in reversed(records):
        same = entry.get("model_uri") == current.model_uri and entry.get("commit") == current.commit
        if same and not seen_current:
            seen_current = True
            continue
        if same:
            continue
        if seen_current and entry.get("status") == "promoted":
            return Release(
                model_uri=str(entry.get("model_uri") or ""),
                commit=str(entry.get("commit") or ""),
                tag=str(entry.get("tag") or ""),
                pipeline_version=str(entry.get("pipeline_version") or ""),
                run_id=str(entry.get("run_id") or ""),
                metrics=dict(entry.get("metrics") or {}),
            )
    return None


def _cluster_url(service: str, namespace: str) -> str:
    """A Service's address inside the cluster (KServe's Services answer on port 80)."""
    return f"http://{service}.{namespace}.svc.cluster.local"


def _thresholds(gates: CanaryGates) -> str:
    found = []
    if gates.latency_ratio is not None:
        found.append(f"latency_ratio at most {gates.latency_ratio:g}x")
    if gates.agreement is not None:
        found.append(f"agreement at least {gates.agreement:.1%}")
    found += [f"{metric} at most {delta:g} worse" for metric, delta in gates.metric_delta]
    return ", ".join(found) or "the ordinary gates"


def _url(live: dict[str, Any] | None, environment: Environment) -> str:
    if environment.kubernetes and environment.kubernetes.url:
        return environment.kubernetes.url
    status = (live or {}).get("status") or {}
    return str(status.get("url") or (status.get("address") or {}).get("url") or "")


def _mark(project: Project, path: tuple[str, ...]) -> str:
    """``LINE:COLUMN`` in mlops.yaml of the setting at ``path`` (its section when the
    setting itself is not written there)."""
    serving = project.serving
    if serving is None:
        return ""
    mark = serving.mark_of(path[1]) if len(path) > 1 else serving.mark
    return f"{mark.line}:{mark.column}"
