"""The test API server is a real one: RBAC, CRD validation, pruning and defaulting,
server-side apply, dry runs; and the fake KServe controller's statuses pass its schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.kserve_controller import GROUP, PLURAL, VERSION, KServeController, Timeline
from tests.kube_env import LIMITED, KubeEnv

pytestmark = pytest.mark.kube
URL = "http://127.0.0.1:8080"  # never called: a status field only


def _isvc(name: str, storage_uri: str = "gs://models/iris/v1", **predictor: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {
            "predictor": {
                "model": {"modelFormat": {"name": "sklearn"}, "storageUri": storage_uri},
                **predictor,
            }
        },
    }


def _error(raised: pytest.ExceptionInfo[Any]) -> tuple[int, str]:
    return raised.value.status, json.loads(raised.value.body)["message"]


@pytest.fixture
def api(kube_env: KubeEnv) -> Iterator[Any]:
    with kube_env.api_client() as client:
        yield client


@pytest.fixture
def objects(api: Any) -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(api)


def _apply(api: Any, namespace: str, body: dict[str, Any], manager: str, **query: str) -> Any:
    """Server-side apply: the client's custom-object methods only merge-patch."""
    name = body["metadata"]["name"]
    params = [("fieldManager", manager), *query.items()]
    return api.call_api(
        f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}",
        "PATCH",
        query_params=params,
        header_params={
            "Content-Type": "application/apply-patch+yaml",
            "Accept": "application/json",
        },
        body=body,
        response_type="object",
        auth_settings=["BearerToken"],
        _return_http_data_only=True,
    )


def test_admin_kubeconfig_lists_namespaces(kube_env: KubeEnv) -> None:
    from kubernetes import client, config

    namespace = kube_env.namespace()
    with config.new_client_from_config(config_file=str(kube_env.kubeconfig)) as api:
        names = {item.metadata.name for item in client.CoreV1Api(api).list_namespace().items}
    assert {"default", "kube-system", namespace} <= names
    assert kube_env.server.startswith("https://127.0.0.1:")


def test_environ_points_a_child_process_at_the_server(kube_env: KubeEnv) -> None:
    namespace = kube_env.namespace()
    script = (
        "from kubernetes import client, config; config.load_kube_config(); "
        f"print(client.CoreV1Api().read_namespace({namespace!r}).metadata.name)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **kube_env.environ()},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == namespace


def test_limited_token_cannot_create_an_inferenceservice(kube_env: KubeEnv) -> None:
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    namespace = kube_env.namespace()
    path = kube_env.kubeconfig_for(kube_env.limited_token)
    with (
        config.new_client_from_config(config_file=str(path)) as api,
        pytest.raises(ApiException) as raised,
    ):
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, _isvc("iris")
        )
    assert _error(raised) == (
        403,
        f'inferenceservices.serving.kserve.io is forbidden: User "{LIMITED}" cannot create'
        f' resource "inferenceservices" in API group "serving.kserve.io" in the namespace'
        f' "{namespace}"',
    )


def test_a_granted_role_allows_get_but_not_patch(kube_env: KubeEnv, objects: Any) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    namespace = kube_env.namespace()
    objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _isvc("iris"))
    kube_env.grant(namespace, LIMITED, ["get"])
    with kube_env.api_client(kube_env.limited_token) as api:
        limited = client.CustomObjectsApi(api)
        got = limited.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "iris")
        assert got["metadata"]["name"] == "iris"
        with pytest.raises(ApiException) as raised:
            limited.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, "iris", {"metadata": {"labels": {"a": "b"}}}
            )
    status, message = _error(raised)
    assert status == 403
    assert f'User "{LIMITED}" cannot patch resource "inferenceservices"' in message


def test_kserve_client_creates_and_the_crd_prunes_and_defaults(
    kube_env: KubeEnv, objects: Any
) -> None:
    import kserve
    from kubernetes import client

    namespace = kube_env.namespace()
    isvc = kserve.V1beta1InferenceService(
        api_version=f"{GROUP}/{VERSION}",
        kind="InferenceService",
        metadata=client.V1ObjectMeta(name="iris", namespace=namespace),
        spec=kserve.V1beta1InferenceServiceSpec(
            predictor=kserve.V1beta1PredictorSpec(
                model=kserve.V1beta1ModelSpec(
                    model_format=kserve.V1beta1ModelFormat(name="sklearn"),
                    storage_uri="gs://models/iris/v1",
                    ports=[client.V1ContainerPort(container_port=8080)],
                )
            )
        ),
    )
    kserve_client = kserve.KServeClient(config_file=str(kube_env.kubeconfig))
    kserve_client.create(isvc)
    model = kserve_client.get("iris", namespace=namespace)["spec"]["predictor"]["model"]
    assert model["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]  # defaulted

    body = _isvc("wine")
    body["spec"]["predictor"]["model"]["notAField"] = "dropped"
    objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    got = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "wine")
    assert "notAField" not in got["spec"]["predictor"]["model"]


def test_strict_field_validation_names_the_unknown_field(kube_env: KubeEnv, objects: Any) -> None:
    from kubernetes.client.exceptions import ApiException

    body = _isvc("wine")
    body["spec"]["predictor"]["model"]["notAField"] = "x"
    with pytest.raises(ApiException) as raised:
        objects.create_namespaced_custom_object(
            GROUP, VERSION, kube_env.namespace(), PLURAL, body, field_validation="Strict"
        )
    assert _error(raised) == (
        400,
        'InferenceService in version "v1beta1" cannot be handled as a InferenceService:'
        ' strict decoding error: unknown field "spec.predictor.model.notAField"',
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"model": {"modelFormat": {"version": "1"}, "storageUri": "gs://m"}},
            'InferenceService.serving.kserve.io "bad" is invalid:'
            " spec.predictor.model.modelFormat.name: Required value",
        ),
        (
            {"canaryTrafficPercent": "ten"},
            'spec.predictor.canaryTrafficPercent: Invalid value: "string":'
            ' spec.predictor.canaryTrafficPercent in body must be of type integer: "string"',
        ),
    ],
    ids=["model-format-without-name", "canary-percent-not-a-number"],
)
def test_the_crd_rejects_an_invalid_inferenceservice(
    kube_env: KubeEnv, objects: Any, change: dict[str, Any], expected: str
) -> None:
    from kubernetes.client.exceptions import ApiException

    body = _isvc("bad")
    body["spec"]["predictor"].update(change)
    with pytest.raises(ApiException) as raised:
        objects.create_namespaced_custom_object(GROUP, VERSION, kube_env.namespace(), PLURAL, body)
    status, message = _error(raised)
    assert status == 422
    assert expected in message


def test_server_side_apply_owns_fields_and_a_second_manager_conflicts(
    kube_env: KubeEnv, api: Any, objects: Any
) -> None:
    from kubernetes.client.exceptions import ApiException

    namespace = kube_env.namespace()
    applied = _apply(api, namespace, _isvc("iris"), "kfops")
    managers = {entry["manager"] for entry in applied["metadata"]["managedFields"]}
    assert managers == {"kfops"}
    with pytest.raises(ApiException) as raised:
        _apply(api, namespace, _isvc("iris", "gs://models/iris/v2"), "someone-else")
    status, message = _error(raised)
    assert status == 409
    assert 'conflict with "kfops"' in message
    assert ".spec.predictor.model.storageUri" in message
    _apply(api, namespace, _isvc("iris", "gs://models/iris/v2"), "kfops")
    got = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "iris")
    assert got["spec"]["predictor"]["model"]["storageUri"] == "gs://models/iris/v2"
    assert got["metadata"]["generation"] == 2


def test_a_dry_run_apply_changes_nothing(kube_env: KubeEnv, api: Any, objects: Any) -> None:
    namespace = kube_env.namespace()
    before = _apply(api, namespace, _isvc("iris"), "kfops")
    answer = _apply(api, namespace, _isvc("iris", "gs://models/iris/v2"), "kfops", dryRun="All")
    assert answer["spec"]["predictor"]["model"]["storageUri"] == "gs://models/iris/v2"
    after = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "iris")
    assert after["spec"] == before["spec"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def _status(objects: Any, namespace: str, name: str) -> dict[str, Any]:
    got = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    status: dict[str, Any] = got["status"]
    return status


def _conditions(status: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["conditions"]}


def test_ready_at_once_survives_the_schema(kube_env: KubeEnv, api: Any, objects: Any) -> None:
    import kserve

    namespace = kube_env.namespace()
    with KServeController(api, namespace, Timeline.ready_at_once(url=URL)) as controller:
        objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _isvc("iris"))
        event = controller.wait("iris", "ready")
    status = _status(objects, namespace, "iris")
    assert status == event.status
    assert _conditions(status) == dict.fromkeys(
        [
            "IngressReady",
            "PredictorConfigurationReady",
            "PredictorReady",
            "PredictorRouteReady",
            "Ready",
        ],
        "True",
    )
    assert status["url"] == status["address"]["url"] == URL
    assert status["modelStatus"]["states"] == {
        "activeModelState": "Loaded",
        "targetModelState": "Loaded",
    }
    predictor = status["components"]["predictor"]
    assert predictor["traffic"] == [
        {"revisionName": "iris-predictor-00001", "percent": 100, "latestRevision": True}
    ]
    assert status["observedGeneration"] == 1
    kserve_client = kserve.KServeClient(config_file=str(kube_env.kubeconfig))
    assert kserve_client.is_isvc_ready("iris", namespace=namespace, expected_generation=1)


def test_ready_after_writes_loading_then_ready(kube_env: KubeEnv, api: Any, objects: Any) -> None:
    namespace = kube_env.namespace()
    with KServeController(api, namespace, Timeline.ready_after(0.5, url=URL)) as controller:
        objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _isvc("iris"))
        loading = controller.wait("iris", "loading")
        assert _status(objects, namespace, "iris") == loading.status
        ready = controller.wait("iris", "ready")
    assert ready.after >= 0.5
    assert [e.phase for e in controller.events] == ["loading", "ready"]
    assert loading.status["modelStatus"] == {
        "states": {"activeModelState": "", "targetModelState": "Loading"},
        "transitionStatus": "InProgress",
    }
    assert _conditions(loading.status)["Ready"] == "False"
    assert "url" not in loading.status
    assert _status(objects, namespace, "iris") == ready.status


def test_never_ready_stays_pending(kube_env: KubeEnv, api: Any, objects: Any) -> None:
    namespace = kube_env.namespace()
    with KServeController(api, namespace, Timeline.never_ready()) as controller:
        objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _isvc("iris"))
        pending = controller.wait("iris", "pending")
    status = _status(objects, namespace, "iris")
    assert status == pending.status
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "RevisionMissing")
    assert status["modelStatus"]["transitionStatus"] == "InProgress"
    assert [e.phase for e in controller.events] == ["pending"]


def test_failed_load_reports_the_failure(kube_env: KubeEnv, api: Any, objects: Any) -> None:
    namespace = kube_env.namespace()
    timeline = Timeline.failed_load(message="model.joblib: no such file")
    with KServeController(api, namespace, {"iris": timeline}) as controller:
        objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _isvc("iris"))
        objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _isvc("other"))
        failed = controller.wait("iris", "failed")
    status = _status(objects, namespace, "iris")
    assert status == failed.status
    model = status["modelStatus"]
    assert model["states"] == {"activeModelState": "", "targetModelState": "FailedToLoad"}
    assert model["transitionStatus"] == "BlockedByFailedLoad"
    info = model["lastFailureInfo"]
    assert (info["reason"], info["message"]) == ("ModelLoadFailed", "model.joblib: no such file")
    assert "status" not in objects.get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "other"
    )  # not in the mapping: left alone


def test_canary_splits_traffic_between_two_revisions(
    kube_env: KubeEnv, api: Any, objects: Any
) -> None:
    namespace = kube_env.namespace()
    canary = "http://127.0.0.1:8081"
    timeline = Timeline.canary(url=URL, canary_url=canary)
    with KServeController(api, namespace, timeline) as controller:
        objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _isvc("iris"))
        controller.wait("iris", "ready", generation=1)
        objects.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            "iris",
            {
                "spec": {
                    "predictor": {"canaryTrafficPercent": 20, "model": {"storageUri": "gs://v2"}}
                }
            },
        )
        event = controller.wait("iris", "ready", generation=2)
        status = _status(objects, namespace, "iris")
        assert status == event.status
        predictor = status["components"]["predictor"]
        assert predictor["traffic"] == [
            {
                "revisionName": "iris-predictor-00002",
                "percent": 20,
                "latestRevision": True,
                "tag": "latest",
                "url": canary,
            },
            {
                "revisionName": "iris-predictor-00001",
                "percent": 80,
                "latestRevision": False,
                "tag": "prev",
                "url": URL,
            },
        ]
        assert predictor["previousRolledoutRevision"] == "iris-predictor-00001"
        assert predictor["latestReadyRevision"] == predictor["latestCreatedRevision"]
        # Promotion: dropping canaryTrafficPercent gives the new revision everything.
        objects.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            "iris",
            {"spec": {"predictor": {"canaryTrafficPercent": None}}},
        )
        controller.wait("iris", "ready", generation=3)
    predictor = _status(objects, namespace, "iris")["components"]["predictor"]
    assert predictor["traffic"] == [
        {"revisionName": "iris-predictor-00002", "percent": 100, "latestRevision": True}
    ]
    assert predictor["previousRolledoutRevision"] == "iris-predictor-00001"


def test_the_status_schema_is_enforced(kube_env: KubeEnv, objects: Any) -> None:
    from kubernetes.client.exceptions import ApiException

    namespace = kube_env.namespace()
    objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _isvc("iris"))
    bad = {
        "status": {
            "modelStatus": {"states": {"activeModelState": "Ready"}, "transitionStatus": "UpToDate"}
        }
    }
    with pytest.raises(ApiException) as raised:
        objects.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, "iris", bad
        )
    status, message = _error(raised)
    assert status == 422
    assert 'status.modelStatus.states.activeModelState: Unsupported value: "Ready"' in message


def test_canary_on_first_sight_pretends_an_earlier_revision(
    kube_env: KubeEnv, api: Any, objects: Any
) -> None:
    namespace = kube_env.namespace()
    with KServeController(api, namespace, Timeline.canary(url=URL)) as controller:
        body = _isvc("iris", canaryTrafficPercent=30)
        objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        event = controller.wait("iris", "ready")
    status = _status(objects, namespace, "iris")
    assert status == event.status
    traffic = status["components"]["predictor"]["traffic"]
    assert [(t["revisionName"], t["percent"], t["tag"]) for t in traffic] == [
        ("iris-predictor-00002", 30, "latest"),
        ("iris-predictor-00001", 70, "prev"),
    ]
