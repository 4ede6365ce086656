"""The InferenceService kfops renders: a pure function, checked against KServe's CRD schema."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from kfops.project import config
from kfops.project.document import Mark
from kfops.project.model import Canary, Resources
from kfops.serving import render
from kfops.serving.render import KNATIVE, STANDARD, Release

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT.parent / "shared" / "specs" / "kserve"
IRIS = ROOT / "pipelines" / "iris"

NEW = Release(
    model_uri="s3://models/iris/v2",
    commit="a" * 40,
    ref="refs/tags/v2.0.0",
    tag="v2.0.0",
    pipeline_version="aaaaaaaaaaaa-0123456789",
    run_id="run-2",
    metrics={"accuracy": 0.95, "f1_macro": 0.94},
)
OLD = Release(model_uri="s3://models/iris/v1", commit="b" * 40, tag="v1.0.0")


@cache
def _crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load((SPECS / "serving.kserve.io_inferenceservices.yaml").read_text())
    [version] = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _valid(obj: dict[str, Any]) -> None:
    jsonschema.Draft4Validator(_crd_schema()).validate(obj)


def _serving() -> Any:
    project = config.load(IRIS)
    assert project.serving is not None
    return project.serving


def test_a_full_release_is_a_valid_inference_service_with_its_origin() -> None:
    obj = render.render("iris", _serving(), "ml-staging", NEW, mode=KNATIVE)
    _valid(obj)
    meta = obj["metadata"]
    assert meta["name"] == "iris" and meta["namespace"] == "ml-staging"
    assert meta["labels"] == {"app.kubernetes.io/managed-by": "kfops", "kfops.dev/project": "iris"}
    annotations = meta["annotations"]
    assert annotations["kfops.dev/commit"] == "a" * 40
    assert annotations["kfops.dev/tag"] == "v2.0.0"
    assert annotations["kfops.dev/pipeline-version"] == "aaaaaaaaaaaa-0123456789"
    assert annotations["kfops.dev/run-id"] == "run-2"
    assert json.loads(annotations["kfops.dev/metrics"]) == {"accuracy": 0.95, "f1_macro": 0.94}
    assert annotations["kfops.dev/stage"] == "promoted"
    assert annotations["serving.kserve.io/deploymentMode"] == "Serverless"
    assert obj["spec"] == {
        "predictor": {
            "model": {
                "modelFormat": {"name": "sklearn"},
                "storageUri": "s3://models/iris/v2",
                "protocolVersion": "v2",
            }
        }
    }
    # what the annotations carry comes back as the same release
    back = Release.from_annotations(annotations)
    assert (back.model_uri, back.commit, back.tag, back.metrics) == (
        NEW.model_uri,
        NEW.commit,
        NEW.tag,
        NEW.metrics,
    )


def test_a_knative_canary_splits_traffic_on_the_predictor_with_tag_routing() -> None:
    obj = render.render("iris", _serving(), "ns", NEW, mode=KNATIVE, canary_percent=10)
    _valid(obj)
    assert obj["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert obj["spec"]["predictor"]["model"]["storageUri"] == NEW.model_uri
    assert "canary" not in obj["spec"]
    assert obj["metadata"]["annotations"]["serving.kserve.io/enable-tag-routing"] == "true"
    assert obj["metadata"]["annotations"]["kfops.dev/stage"] == "canary"


def test_a_standard_canary_keeps_the_serving_model_and_adds_spec_canary() -> None:
    obj = render.render("iris", _serving(), "ns", NEW, mode=STANDARD, canary_percent=25, stable=OLD)
    _valid(obj)
    assert obj["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert obj["spec"]["predictor"]["model"]["storageUri"] == OLD.model_uri
    [canary] = obj["spec"]["canary"]
    assert canary["trafficPercent"] == 25
    assert canary["predictor"]["model"]["storageUri"] == NEW.model_uri
    assert "canaryTrafficPercent" not in obj["spec"]["predictor"]


def test_resources_replicas_runtime_and_service_account() -> None:
    serving = replace(
        _serving(),
        resources=Resources(cpu="500m", memory="1Gi", gpu=1),
        min_replicas=1,
        max_replicas=3,
        runtime="kserve-sklearnserver",
        service_account="models-reader",
        protocol="v1",
    )
    obj = render.render("iris", serving, "ns", NEW, mode=KNATIVE)
    _valid(obj)
    predictor = obj["spec"]["predictor"]
    assert predictor["minReplicas"] == 1 and predictor["maxReplicas"] == 3
    assert predictor["serviceAccountName"] == "models-reader"
    model = predictor["model"]
    assert model["runtime"] == "kserve-sklearnserver"
    assert "protocolVersion" not in model
    amounts = {"cpu": "500m", "memory": "1Gi", "nvidia.com/gpu": "1"}
    assert model["resources"] == {"requests": amounts, "limits": amounts}


def test_render_is_pure_and_the_schema_check_can_fail() -> None:
    one = render.render("iris", _serving(), "ns", NEW, mode=KNATIVE, canary_percent=10)
    two = render.render("iris", _serving(), "ns", NEW, mode=KNATIVE, canary_percent=10)
    assert one == two
    broken = json.loads(json.dumps(one))
    broken["spec"]["predictor"]["canaryTrafficPercent"] = "10%"
    with pytest.raises(jsonschema.ValidationError, match="'10%' is not of type 'integer'"):
        _valid(broken)


def test_managed_by_kfops_needs_both_labels() -> None:
    obj = render.render("iris", _serving(), "ns", NEW, mode=KNATIVE)
    assert render.managed_by_kfops(obj, "iris")
    assert not render.managed_by_kfops(obj, "wine")
    del obj["metadata"]["labels"]["app.kubernetes.io/managed-by"]
    assert not render.managed_by_kfops(obj, "iris")


def test_the_example_canary_settings_are_read() -> None:
    serving = _serving()
    assert serving.canary == Canary(
        mark=serving.canary.mark if serving.canary else Mark(0, 0),
        percent=10,
        smoke=(IRIS / "smoke.json").resolve(),
        promote="auto",
    )
    assert [(g.metric, g.min, g.not_worse_than_serving) for g in serving.gate] == [
        ("accuracy", 0.8, 0.02)
    ]


def test_a_logger_is_rendered_only_when_serving_logger_asks_for_it() -> None:
    from kfops.project.model import PayloadLogger

    serving = _serving()
    assert serving.logger is None
    plain = render.render("iris", serving, "ml", NEW, mode=KNATIVE)
    assert "logger" not in plain["spec"]["predictor"]
    assert plain.marks == {}

    logger = PayloadLogger(Mark(21, 3), url="http://sink.monitoring:8099", mode="request")
    obj = render.render("iris", replace(serving, logger=logger), "ml", NEW, mode=KNATIVE)
    _valid(obj)
    assert obj["spec"]["predictor"]["logger"] == {
        "mode": "request",
        "url": "http://sink.monitoring:8099",
    }
    assert obj.marks == {".spec.predictor.logger": "21:3"}
    # A Standard-mode canary logs from both predictors.
    canary = render.render(
        "iris",
        replace(serving, logger=logger),
        "ml",
        NEW,
        mode=STANDARD,
        canary_percent=10,
        stable=OLD,
    )
    _valid(canary)
    assert canary["spec"]["canary"][0]["predictor"]["logger"]["url"] == logger.url
    # The CRD knows only these modes: the schema check fails on another.
    wrong = render.render(
        "iris", replace(serving, logger=replace(logger, mode="both")), "ml", NEW, mode=KNATIVE
    )
    with pytest.raises(jsonschema.ValidationError, match="'both' is not one of"):
        _valid(wrong)


def test_serving_logger_is_read_from_mlops_yaml(tmp_path: Path) -> None:
    line = "  logger: {url: 'http://sink.monitoring:8099', mode: all}"
    text = (IRIS / "mlops.yaml").read_text()
    text = text.replace("  format: sklearn\n", f"  format: sklearn\n{line}\n")
    for name in ("pipeline.py", "smoke.json"):
        (tmp_path / name).write_text((IRIS / name).read_text())
    (tmp_path / "mlops.yaml").write_text(text)
    project = config.load(tmp_path)
    assert project.serving is not None and project.serving.logger is not None
    obj = render.render("iris", project.serving, "ml", NEW, mode=KNATIVE)
    number = text.splitlines().index(line) + 1
    assert obj.marks[".spec.predictor.logger"] == f"{number}:3"
    assert obj["spec"]["predictor"]["logger"] == {
        "mode": "all",
        "url": "http://sink.monitoring:8099",
    }
