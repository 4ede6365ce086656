"""When a release counts as ready, and the smoke file's rules (no cluster needed)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from kfops.errors import KfopsError
from kfops.serving import smoke
from kfops.serving.render import KNATIVE, STANDARD
from kfops.serving.rollout import readiness

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)


def _status(**status: Any) -> dict[str, Any]:
    return {"metadata": {"generation": 2}, "status": status}


def _conditions(ready: str = "True", message: str = "") -> list[dict[str, Any]]:
    stamp = (NOW + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    return [
        {"type": t, "status": ready, "message": message, "lastTransitionTime": stamp}
        for t in ("PredictorReady", "Ready")
    ]


LOADED = {"transitionStatus": "UpToDate", "states": {"activeModelState": "Loaded"}}
BEFORE = {"latestCreatedRevision": "iris-predictor-00001", "latestReadyRevision": "x"}


def _knative(created: str, ready: str, **extra: Any) -> dict[str, Any]:
    return _status(
        conditions=_conditions(),
        modelStatus=LOADED,
        components={
            "predictor": {"latestCreatedRevision": created, "latestReadyRevision": ready, **extra}
        },
    )


def _ready(live: Any, mode: str = KNATIVE, canary: int | None = None) -> tuple[str, str]:
    return readiness(live, mode=mode, canary=canary, before=BEFORE, generation=2, applied_at=NOW)


def test_knative_waits_for_a_new_revision_then_its_readiness() -> None:
    old = "iris-predictor-00001"
    assert _ready(_knative(old, old)) == ("waiting", "no new revision yet")
    new = "iris-predictor-00002"
    assert _ready(_knative(new, old)) == ("waiting", f"revision {new} is not ready yet")
    assert _ready(_knative(new, new))[0] == "ready"


def test_a_knative_canary_is_ready_when_the_split_is_in_force() -> None:
    new = "iris-predictor-00002"
    traffic = [
        {"revisionName": "iris-predictor-00001", "percent": 100, "tag": "prev"},
        {"revisionName": new, "percent": 0, "latestRevision": True},
    ]
    assert _ready(_knative(new, new, traffic=traffic), canary=10) == (
        "waiting",
        "traffic split to 10% is not in force yet",
    )
    traffic[0]["percent"], traffic[1]["percent"] = 90, 10
    assert _ready(_knative(new, new, traffic=traffic), canary=10) == (
        "ready",
        "Ready, model Loaded and UpToDate, canary at 10%",
    )


def test_a_failed_load_is_final_with_the_reason() -> None:
    live = _status(
        conditions=_conditions("False"),
        modelStatus={
            "transitionStatus": "BlockedByFailedLoad",
            "states": {"activeModelState": "FailedToLoad"},
            "lastFailureInfo": {"reason": "ModelLoadFailed", "message": "no model.joblib"},
        },
    )
    assert _ready(live) == ("failed", "model failed to load (ModelLoadFailed): no model.joblib")


def test_standard_mode_needs_a_status_about_the_applied_spec() -> None:
    stale = _status(
        observedGeneration=1,
        conditions=[
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-30T00:00:00Z"}
        ],
        modelStatus=LOADED,
    )
    assert _ready(stale, STANDARD) == ("waiting", "the status is not about the applied spec yet")
    fresh = _status(observedGeneration=2, conditions=_conditions(), modelStatus=LOADED)
    assert _ready(fresh, STANDARD)[0] == "ready"
    # observedGeneration is not reliable (kserve #6081): a condition that moved after the
    # apply counts too
    moved = _status(observedGeneration=1, conditions=_conditions(), modelStatus=LOADED)
    assert _ready(moved, STANDARD)[0] == "ready"


def test_not_ready_conditions_and_loading_models_wait_with_the_reason() -> None:
    live = _status(
        observedGeneration=2,
        conditions=_conditions("False", "Revision missing"),
        modelStatus=LOADED,
    )
    assert _ready(live, STANDARD) == ("waiting", "PredictorReady is False: Revision missing")
    loading = _status(
        observedGeneration=2,
        conditions=_conditions(),
        modelStatus={"transitionStatus": "InProgress", "states": {"activeModelState": "Loading"}},
    )
    assert _ready(loading, STANDARD) == ("waiting", "model Loading (InProgress)")


def test_a_standard_canary_waits_for_its_canary_status() -> None:
    live = _status(
        observedGeneration=2,
        conditions=_conditions(),
        modelStatus=LOADED,
        canaryStatuses=[{"name": "canary", "ready": False, "trafficPercent": 20}],
    )
    assert _ready(live, STANDARD, canary=20) == ("waiting", "the canary is not ready yet")
    live["status"]["canaryStatuses"][0]["ready"] = True
    assert _ready(live, STANDARD, canary=20)[0] == "ready"
    failed = {
        "transitionStatus": "BlockedByFailedLoad",
        "states": {"activeModelState": "FailedToLoad"},
        "lastFailureInfo": {"reason": "ModelLoadFailed", "message": "bad pickle"},
    }
    live["status"]["canaryStatuses"][0]["modelStatus"] = failed
    assert _ready(live, STANDARD, canary=20) == (
        "failed",
        "the canary model failed to load (ModelLoadFailed): bad pickle",
    )


def test_a_deleted_inference_service_fails() -> None:
    assert _ready(None) == ("failed", "the InferenceService is gone")


# -- the smoke file ---------------------------------------------------------------------


def _smoke(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "smoke.json"
    path.write_text(text)
    return path


def test_the_example_smoke_file_loads() -> None:
    root = Path(__file__).resolve().parents[1]
    cases = smoke.load(root / "pipelines" / "iris" / "smoke.json")
    assert [c.name for c in cases][:2] == ["setosa", "virginica"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"requests": [', "smoke.json:1:15: not JSON: Expecting value"),
        ('{"requests": []}', "smoke.json: no requests"),
        ('{"requests": [3]}', "smoke.json: request 1 is not an object"),
        (
            '{"requests": [{"name": "a", "expect": {}}]}',
            "smoke.json: request 1 (`a`): give either `rows` or `body`",
        ),
        (
            '{"requests": [{"rows": [[1]], "expect": {"prediction": [0]}}]}',
            "smoke.json: request 1 (`request 1`): unknown `expect` key `prediction`",
        ),
        ('{"requests": [{"rows": 3}]}', "smoke.json: request 1 (`request 1`): `rows` must be"),
    ],
)
def test_bad_smoke_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(KfopsError) as caught:
        smoke.load(_smoke(tmp_path, text))
    assert message in caught.value.message


def test_expectations(tmp_path: Path) -> None:
    [exact, bounds, latency] = smoke.load(
        _smoke(
            tmp_path,
            json.dumps(
                {
                    "requests": [
                        {"rows": [[1]], "expect": {"predictions": [0.5, 1], "tolerance": 0.01}},
                        {"rows": [[1]], "expect": {"min": 0, "max": 1, "count": 2}},
                        {"rows": [[1]], "expect": {"max_latency_ms": 100}},
                    ]
                }
            ),
        )
    )
    assert smoke.check(exact, [0.505, 1], 3).passed
    assert smoke.check(exact, [0.6, 1], 3).detail == "expected predictions [0.5, 1], got [0.6, 1]"
    assert smoke.check(bounds, [0.2, 0.9], 3).passed
    assert smoke.check(bounds, [1.5], 3).detail == (
        "expected 2 predictions, got 1; 1 prediction(s) outside max 1: [1.5]"
    )
    assert smoke.check(latency, [0], 250).detail == "took 250 ms, more than 100 ms"
