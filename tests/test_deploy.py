"""``kfops deploy`` and ``kfops rollback`` against a real Kubernetes API server.

The API server and etcd are real (``tests/kube_env.py``), with KServe's CRDs installed, so
every object kfops applies is validated, pruned and defaulted as on a cluster, RBAC is
enforced, and server-side apply tracks field managers. The KServe controller is played by
``tests/kserve_controller.py``, which writes statuses on scripted timelines; the URLs it
writes point at real KServe model servers on loopback (``tests/data/serving/model_server.py``),
one answering correctly, one loading fine but answering wrongly.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from kfops.cli import cli
from tests.kserve_controller import KServeController, Timeline
from tests.kube_env import KubeEnv
from tests.model_servers import free_port as _free_port
from tests.model_servers import servers

__all__ = ["servers"]  # the fixture, imported for pytest

pytestmark = pytest.mark.kube

ROOT = Path(__file__).resolve().parents[1]
IRIS = ROOT / "pipelines" / "iris"
GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"


def _project(tmp_path: Path, namespace: str, **changes: str) -> Path:
    folder = tmp_path / "iris"
    folder.mkdir()
    for name in ("pipeline.py", "smoke.json"):
        (folder / name).write_text((IRIS / name).read_text())
    text = (IRIS / "mlops.yaml").read_text()
    text = text.replace("  format: sklearn\n", "  format: sklearn\n  timeout: 8\n")
    for old, new in changes.items():
        assert old in text, old
        text = text.replace(old, new)
    text += f"\nenvironments:\n  prod:\n    kubernetes: {{namespace: {namespace}}}\n"
    (folder / "mlops.yaml").write_text(text)
    (folder / "metrics-v1.json").write_text(json.dumps({"accuracy": 0.95}))
    (folder / "metrics-v2.json").write_text(json.dumps({"accuracy": 0.96, "f1_macro": 0.9}))
    (folder / "metrics-bad.json").write_text(json.dumps({"accuracy": 0.5}))
    return folder


def _deploy(
    kube_env: KubeEnv, folder: Path, *args: str, kubeconfig: Path | None = None
) -> tuple[int, str, str]:
    env = {
        "KUBECONFIG": str(kubeconfig or kube_env.kubeconfig),
        "KFOPS_POLL_SECONDS": "0.05",
        "GITHUB_SHA": "",
        "GITHUB_REF": "",
    }
    result = CliRunner().invoke(cli, [*args, str(folder), "--env", "prod"], env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def _live(kube_env: KubeEnv, namespace: str, name: str = "iris") -> dict[str, Any]:
    from kubernetes import client

    with kube_env.api_client() as api:
        found: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name
        )
        return found


def _records(kube_env: KubeEnv, namespace: str) -> list[dict[str, Any]]:
    from kubernetes import client

    with kube_env.api_client() as api:
        found = client.CoreV1Api(api).read_namespaced_config_map("iris-kfops-releases", namespace)
        loaded: list[dict[str, Any]] = json.loads(found.data["releases.json"])
        return loaded


def _uri(obj: dict[str, Any]) -> str:
    return str(obj["spec"]["predictor"]["model"]["storageUri"])


V1 = ("--model-uri", "s3://models/iris/v1", "--metrics")
V2 = ("--model-uri", "s3://models/iris/v2", "--metrics")


def _release(
    kube_env: KubeEnv, folder: Path, version: str, metrics: str = ""
) -> tuple[int, str, str]:
    return _deploy(
        kube_env,
        folder,
        "deploy",
        "--model-uri",
        f"s3://models/iris/{version}",
        "--metrics",
        str(folder / (metrics or f"metrics-{version}.json")),
    )


def test_a_first_release_then_a_canary_that_is_promoted(
    kube_env: KubeEnv, servers: dict[str, str], tmp_path: Path
) -> None:
    namespace = kube_env.namespace("deploy")
    folder = _project(tmp_path, namespace)
    timeline = Timeline.canary(url=servers["good"], canary_url=servers["good"])
    with KServeController(kube_env.api_client(), namespace, timeline):
        code, out, err = _release(kube_env, folder, "v1")
        assert code == 0, err
        assert "first release here: nothing to split traffic with" in err
        assert "smoke: 3/3 passed" in err
        assert f"release {folder.name}" not in out
        assert out.startswith(f"iris in prod ({namespace}): release ")
        live = _live(kube_env, namespace)
        assert _uri(live) == "s3://models/iris/v1"
        meta = live["metadata"]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "kfops"
        assert meta["annotations"]["kfops.dev/stage"] == "promoted"
        assert json.loads(meta["annotations"]["kfops.dev/metrics"]) == {"accuracy": 0.95}
        managers = {m["manager"] for m in meta["managedFields"]}
        assert "kfops" in managers
        # KServe's own client agrees that what kfops waited for is ready
        from kserve import KServeClient

        kserve_client = KServeClient(config_file=str(kube_env.kubeconfig))
        assert kserve_client.is_isvc_ready("iris", namespace=namespace)
        assert kserve_client.get("iris", namespace=namespace)["status"]["url"] == servers["good"]
        generation = meta["generation"]

        # the same release again changes nothing
        code, out, err = _release(kube_env, folder, "v1")
        assert code == 0, err
        assert "is already serving" in out
        assert _live(kube_env, namespace)["metadata"]["generation"] == generation

        # a second release goes through a 10% canary, is smoke-tested there, and promoted
        code, out, err = _release(kube_env, folder, "v2")
        assert code == 0, err
        assert "canary at 10%" in err
        assert "gate: every metric passes" in err
        live = _live(kube_env, namespace)
        assert _uri(live) == "s3://models/iris/v2"
        assert "canaryTrafficPercent" not in live["spec"]["predictor"]
        assert live["metadata"]["annotations"]["kfops.dev/stage"] == "promoted"
    records = _records(kube_env, namespace)
    assert [(r["model_uri"], r["status"]) for r in records] == [
        ("s3://models/iris/v1", "promoted"),
        ("s3://models/iris/v2", "promoted"),
    ]


def _serving_v1(kube_env: KubeEnv, folder: Path, namespace: str, url: str) -> None:
    with KServeController(kube_env.api_client(), namespace, Timeline.ready_at_once(url=url)):
        code, _, err = _release(kube_env, folder, "v1")
        assert code == 0, err


def test_a_canary_that_fails_its_smoke_test_is_rolled_back(
    kube_env: KubeEnv, servers: dict[str, str], tmp_path: Path
) -> None:
    namespace = kube_env.namespace("smoke")
    folder = _project(tmp_path, namespace)
    _serving_v1(kube_env, folder, namespace, servers["good"])
    timeline = Timeline.canary(url=servers["good"], canary_url=servers["wrong"])
    with KServeController(kube_env.api_client(), namespace, timeline):
        code, _, err = _release(kube_env, folder, "v2")
    assert code == 1
    assert "smoke: 1/3 passed: setosa: expected predictions [0], got [1]" in err
    assert "release" in err and "was rolled back" in err
    assert "Release v1" not in err  # releases are named by tag, else by commit
    assert "is serving, as before" in err
    live = _live(kube_env, namespace)
    assert _uri(live) == "s3://models/iris/v1"
    assert "canaryTrafficPercent" not in live["spec"]["predictor"]
    statuses = [(r["model_uri"], r["status"]) for r in _records(kube_env, namespace)]
    assert statuses[-2:] == [("s3://models/iris/v2", "rolled-back")] or statuses[1] == (
        "s3://models/iris/v2",
        "rolled-back",
    )


def test_a_model_that_never_becomes_ready_times_out_and_is_rolled_back(
    kube_env: KubeEnv, servers: dict[str, str], tmp_path: Path
) -> None:
    namespace = kube_env.namespace("never")
    folder = _project(tmp_path, namespace, **{"timeout: 8": "timeout: 5"})
    _serving_v1(kube_env, folder, namespace, servers["good"])
    with KServeController(kube_env.api_client(), namespace, Timeline.never_ready()):
        code, _, err = _release(kube_env, folder, "v2")
    assert code == 1
    assert "not ready after 5s (serving.timeout)" in err
    assert "is serving, as before" in err
    assert _uri(_live(kube_env, namespace)) == "s3://models/iris/v1"


def test_a_model_that_fails_to_load_is_rolled_back_at_once(
    kube_env: KubeEnv, servers: dict[str, str], tmp_path: Path
) -> None:
    namespace = kube_env.namespace("load")
    folder = _project(tmp_path, namespace)
    _serving_v1(kube_env, folder, namespace, servers["good"])
    timeline = Timeline.failed_load(message="model.joblib not found in s3://models/iris/v2")
    started = time.monotonic()
    with KServeController(kube_env.api_client(), namespace, timeline):
        code, _, err = _release(kube_env, folder, "v2")
    assert code == 1
    assert time.monotonic() - started < 8  # the failure is final at once, not at the timeout
    assert (
        "model failed to load (ModelLoadFailed): model.joblib not found in s3://models/iris/v2"
        in err
    )
    assert _uri(_live(kube_env, namespace)) == "s3://models/iris/v1"


def test_a_manual_promotion_waits_at_the_canary(
    kube_env: KubeEnv, servers: dict[str, str], tmp_path: Path
) -> None:
    namespace = kube_env.namespace("manual")
    folder = _project(tmp_path, namespace, **{"promote: auto": "promote: manual"})
    _serving_v1(kube_env, folder, namespace, servers["good"])
    timeline = Timeline.canary(url=servers["good"], canary_url=servers["good"])
    with KServeController(kube_env.api_client(), namespace, timeline):
        code, out, err = _release(kube_env, folder, "v2")
        assert code == 0, err
        assert "is a canary; promote it with `kfops deploy --env prod --promote`" in out
        live = _live(kube_env, namespace)
        assert live["spec"]["predictor"]["canaryTrafficPercent"] == 10
        # a new release while the canary waits is refused
        code, _, err = _release(kube_env, folder, "v3", "metrics-v2.json")
        assert code == 1
        assert "a canary of release" in err and "is in progress" in err
        code, out, err = _deploy(kube_env, folder, "deploy", "--promote")
        assert code == 0, err
        live = _live(kube_env, namespace)
        assert "canaryTrafficPercent" not in live["spec"]["predictor"]
        assert _uri(live) == "s3://models/iris/v2"
        # and rollback returns to v1
        code, out, err = _deploy(kube_env, folder, "rollback")
        assert code == 0, err
        assert _uri(_live(kube_env, namespace)) == "s3://models/iris/v1"
        code, out, err = _deploy(kube_env, folder, "rollback", "--format", "json")
    assert code == 1
    assert "is the first kfops recorded" in err


def test_a_gate_failure_changes_nothing(
    kube_env: KubeEnv, servers: dict[str, str], tmp_path: Path
) -> None:
    namespace = kube_env.namespace("gate")
    folder = _project(tmp_path, namespace)
    _serving_v1(kube_env, folder, namespace, servers["good"])
    before = _live(kube_env, namespace)["metadata"]["resourceVersion"]
    code, _, err = _release(kube_env, folder, "v2", "metrics-bad.json")
    assert code == 1
    assert "fails the gate: `accuracy` 0.5 is below the minimum 0.8" in err
    assert "worse than the serving release" in err and "0.95 by more than 0.02" in err
    assert _live(kube_env, namespace)["metadata"]["resourceVersion"] == before


def test_rbac_denial_names_the_verb_resource_and_namespace(
    kube_env: KubeEnv, tmp_path: Path
) -> None:
    namespace = kube_env.namespace("rbac")
    folder = _project(tmp_path, namespace)
    kubeconfig = kube_env.kubeconfig_for(kube_env.limited_token)
    code, _, err = _deploy(
        kube_env,
        folder,
        "deploy",
        *V1,
        str(folder / "metrics-v1.json"),
        kubeconfig=kubeconfig,
    )
    assert code == 1
    assert "denied get inferenceservices/iris in namespace" in err
    assert f"`{namespace}` (HTTP 403)" in err
    assert f"kubeconfig {kubeconfig}" in err
    assert kube_env.limited_token not in err


def test_an_inference_service_kfops_did_not_create_is_left_alone(
    kube_env: KubeEnv, tmp_path: Path
) -> None:
    from kubernetes import client

    namespace = kube_env.namespace("foreign")
    folder = _project(tmp_path, namespace)
    theirs = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {"name": "iris"},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}}}},
    }
    with kube_env.api_client() as api:
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, theirs
        )
    code, _, err = _deploy(kube_env, folder, "deploy", *V1, str(folder / "metrics-v1.json"))
    assert code == 1
    assert "was not created by kfops for project `iris`" in err
    assert "kfops never changes what it did not create" in err
    assert "storageUri" not in _live(kube_env, namespace)["spec"]["predictor"]["model"]


def test_a_field_another_manager_changed_is_a_conflict_naming_it(
    kube_env: KubeEnv, servers: dict[str, str], tmp_path: Path
) -> None:
    namespace = kube_env.namespace("conflict")
    folder = _project(tmp_path, namespace)
    _serving_v1(kube_env, folder, namespace, servers["good"])
    patch = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {"name": "iris"},
        "spec": {"predictor": {"model": {"storageUri": "s3://models/iris/hotfix"}}},
    }
    with kube_env.api_client() as api:
        api.call_api(
            f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/iris",
            "PATCH",
            query_params=[("fieldManager", "kubectl-edit"), ("force", "true")],
            header_params={"Content-Type": "application/apply-patch+yaml"},
            body=patch,
            response_type="object",
            auth_settings=["BearerToken"],
        )
    code, _, err = _release(kube_env, folder, "v2")
    assert code == 1
    assert "changed by `kubectl-edit` (HTTP 409)" in err
    assert "--force-conflicts" in err
    assert _uri(_live(kube_env, namespace)) == "s3://models/iris/hotfix"
    # the dry run found the conflict: nothing was recorded or applied
    assert [(r["model_uri"], r["status"]) for r in _records(kube_env, namespace)] == [
        ("s3://models/iris/v1", "promoted")
    ]


def test_dry_run_checks_with_the_server_and_changes_nothing(
    kube_env: KubeEnv, tmp_path: Path
) -> None:
    namespace = kube_env.namespace("dry")
    folder = _project(tmp_path, namespace)
    code, out, err = _deploy(
        kube_env, folder, "deploy", "--dry-run", *V1, str(folder / "metrics-v1.json")
    )
    assert code == 0, err
    assert "(dry run: nothing changed)" in out
    assert "server-side dry run accepted" in err
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    with kube_env.api_client() as api, pytest.raises(ApiException) as caught:
        client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "iris"
        )
    assert caught.value.status == 404


def test_an_unreachable_api_server_says_which_and_that_nothing_changed(
    kube_env: KubeEnv, tmp_path: Path
) -> None:
    folder = _project(tmp_path, "nowhere")
    port = _free_port()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        kube_env.kubeconfig.read_text().replace(kube_env.server, f"https://127.0.0.1:{port}")
    )
    code, _, err = _deploy(
        kube_env,
        folder,
        "deploy",
        *V1,
        str(folder / "metrics-v1.json"),
        kubeconfig=kubeconfig,
    )
    assert code == 1
    assert f"cannot reach the Kubernetes API server https://127.0.0.1:{port}" in err
    assert "nothing was changed" in err


def test_no_kubeconfig_and_no_cluster_is_explained(tmp_path: Path) -> None:
    folder = _project(tmp_path, "ns")
    env = {"KUBECONFIG": str(tmp_path / "missing"), "HOME": str(tmp_path)}
    result = CliRunner().invoke(cli, ["deploy", str(folder), "--env", "prod", *V1, "x"], env=env)
    assert result.exit_code == 1
    assert f"no kubeconfig at {tmp_path / 'missing'} and not running in a cluster" in (
        result.stderr
    )


def test_a_spec_the_api_server_rejects_is_reported_at_its_mlops_yaml_line(
    kube_env: KubeEnv, tmp_path: Path
) -> None:
    """A cluster's own admission policy (CEL, built into kube-apiserver) rejects it. The
    server's answer names no field here (a CEL policy's fieldPath is not echoed), so kfops
    finds the field in the message."""
    from kubernetes import client

    namespace = kube_env.namespace("policy")
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": f"max-replicas-{namespace}"},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [GROUP],
                        "apiVersions": [VERSION],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": [PLURAL],
                    }
                ]
            },
            "validations": [
                {
                    "expression": "!has(object.spec.predictor.maxReplicas)"
                    " || object.spec.predictor.maxReplicas <= 3",
                    "message": "spec.predictor.maxReplicas: at most 3 replicas in this namespace",
                    "fieldPath": "spec.predictor.maxReplicas",
                    "reason": "Invalid",
                }
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": f"max-replicas-{namespace}"},
        "spec": {
            "policyName": f"max-replicas-{namespace}",
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            },
        },
    }
    with kube_env.api_client() as api:
        admission = client.AdmissionregistrationV1Api(api)
        admission.create_validating_admission_policy(policy)
        admission.create_validating_admission_policy_binding(binding)
    folder = _project(
        tmp_path, namespace, **{"  format: sklearn\n": "  format: sklearn\n  replicas: {max: 5}\n"}
    )
    line = next(
        number
        for number, text in enumerate((folder / "mlops.yaml").read_text().splitlines(), 1)
        if text.startswith("  replicas:")
    )
    probe = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {"name": "probe"},
        "spec": {"predictor": {"maxReplicas": 5, "model": {"modelFormat": {"name": "x"}}}},
    }
    deadline = time.monotonic() + 30
    with kube_env.api_client() as api:  # the policy takes a moment to be in force
        objects = client.CustomObjectsApi(api)
        while time.monotonic() < deadline:
            try:
                objects.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, probe, dry_run="All"
                )
            except client.exceptions.ApiException as exc:
                if exc.status == 422:
                    break
            time.sleep(0.3)
    code, _, err = _deploy(kube_env, folder, "deploy", *V1, str(folder / "metrics-v1.json"))
    assert code == 1
    assert f"mlops.yaml:{line}:3: the Kubernetes API server" in err
    assert "at most 3 replicas in this namespace" in err
    assert "fix the value in mlops.yaml's `serving:` section; nothing was changed" in err


def test_standard_mode_canaries_with_spec_canary_and_rolls_back_by_removing_it(
    kube_env: KubeEnv, servers: dict[str, str], tmp_path: Path
) -> None:
    namespace = kube_env.namespace("standard")
    folder = _project(tmp_path, namespace)
    (folder / "mlops.yaml").write_text(
        (folder / "mlops.yaml")
        .read_text()
        .replace(
            f"{{namespace: {namespace}}}", f"{{namespace: {namespace}, deployment_mode: Standard}}"
        )
    )
    timeline = Timeline.ready_at_once(url=servers["good"])
    with KServeController(kube_env.api_client(), namespace, timeline) as controller:
        code, _, err = _release(kube_env, folder, "v1")
        assert code == 0, err
        live = _live(kube_env, namespace)
        assert live["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == (
            "RawDeployment"
        )
        code, _, err = _release(kube_env, folder, "v2")
        assert code == 0, err
        assert "canary at 10%" in err
        # the canary was spec.canary beside the serving predictor
        canary_specs = [e.status for e in controller.events if e.status.get("canaryStatuses")]
        assert canary_specs and canary_specs[0]["canaryStatuses"][0]["trafficPercent"] == 10
        live = _live(kube_env, namespace)
        assert _uri(live) == "s3://models/iris/v2"
        assert "canary" not in live["spec"]
        # a canary that fails to load is dropped: the serving predictor never changed
        controller.set_timeline("iris", Timeline.failed_load(message="bad pickle"))
        code, _, err = _release(kube_env, folder, "v3", "metrics-v2.json")
    assert code == 1
    assert "the canary model failed to load (ModelLoadFailed): bad pickle" in err
    live = _live(kube_env, namespace)
    assert _uri(live) == "s3://models/iris/v2"
    assert "canary" not in live["spec"]


def _canary_kept(kube_env: KubeEnv, namespace: str) -> bool:
    probe = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {"name": "probe"},
        "spec": {
            "predictor": {"model": {"modelFormat": {"name": "x"}}},
            "canary": [
                {
                    "trafficPercent": 5,
                    "predictor": {"model": {"name": "c", "modelFormat": {"name": "x"}}},
                }
            ],
        },
    }
    from kubernetes import client

    with kube_env.api_client() as api:
        kept = client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, probe, dry_run="All"
        )
    return "canary" in kept["spec"]


def _wait_for(check: Any, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)


def test_a_canary_the_cluster_would_silently_ignore_is_refused_before_any_change(
    kube_env: KubeEnv, servers: dict[str, str], tmp_path: Path
) -> None:
    """KServe before 0.20 has no spec.canary in its CRD: the API server prunes it, and
    Standard mode would send no traffic to the new model. Played by dropping the field
    from the installed CRD for the length of the test."""
    from kubernetes import client

    namespace = kube_env.namespace("old-kserve")
    folder = _project(tmp_path, namespace)
    text = (folder / "mlops.yaml").read_text()
    (folder / "mlops.yaml").write_text(
        text.replace(
            f"{{namespace: {namespace}}}", f"{{namespace: {namespace}, deployment_mode: Standard}}"
        )
    )
    with KServeController(
        kube_env.api_client(), namespace, Timeline.ready_at_once(url=servers["good"])
    ):
        code, _, err = _release(kube_env, folder, "v1")
        assert code == 0, err
    name = f"{PLURAL}.{GROUP}"
    with kube_env.api_client() as api:
        crds = client.ApiextensionsV1Api(api)
        original = crds.read_custom_resource_definition(name)
        schema = original.spec.versions[0].schema.open_apiv3_schema
        saved = schema.properties["spec"].properties.pop("canary")
        crds.replace_custom_resource_definition(name, original)
        try:
            _wait_for(lambda: not _canary_kept(kube_env, namespace))
            before = _live(kube_env, namespace)["metadata"]["resourceVersion"]
            code, _, err = _release(kube_env, folder, "v2")
        finally:
            current = crds.read_custom_resource_definition(name)
            current.spec.versions[0].schema.open_apiv3_schema.properties["spec"].properties[
                "canary"
            ] = saved
            crds.replace_custom_resource_definition(name, current)
            _wait_for(lambda: _canary_kept(kube_env, namespace))
    assert code == 1
    assert "has no `spec.canary` (KServe before 0.20)" in err
    assert "the canary would be ignored" in err
    assert _live(kube_env, namespace)["metadata"]["resourceVersion"] == before


def test_predict_env_finds_the_model_through_the_inference_service(
    kube_env: KubeEnv, servers: dict[str, str], tmp_path: Path
) -> None:
    namespace = kube_env.namespace("predict")
    folder = _project(tmp_path, namespace)
    rows = tmp_path / "rows.json"
    rows.write_text("[[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]")
    env = {"KUBECONFIG": str(kube_env.kubeconfig)}
    args = ["predict", str(folder), "--env", "prod", "--data", str(rows), "--format", "json"]
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 1
    assert f"InferenceService `iris` in namespace `{namespace}`" in result.stderr
    assert "does not exist" in result.stderr
    _serving_v1(kube_env, folder, namespace, servers["good"])
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["predictions"] == [0, 2]
    assert answer["url"].startswith(servers["good"])


def test_plan_shows_what_a_deploy_would_change_from_a_dry_run(
    kube_env: KubeEnv, servers: dict[str, str], tmp_path: Path
) -> None:
    namespace = kube_env.namespace("plan")
    folder = _project(tmp_path, namespace)
    code, out, err = _deploy(kube_env, folder, "plan")
    assert code == 0, err
    assert (
        out.splitlines()[0]
        == f"InferenceService iris ({namespace}): create release (this commit's model)"
    )
    assert "note: the model comes from this commit's run: known at deploy time" in out
    _serving_v1(kube_env, folder, namespace, servers["good"])
    before = _live(kube_env, namespace)["metadata"]["resourceVersion"]
    code, out, err = _deploy(kube_env, folder, "plan", "--model-uri", "s3://models/iris/v1")
    assert code == 0, err
    assert out.strip() == f"InferenceService iris ({namespace}): unchanged"
    code, out, err = _deploy(
        kube_env, folder, "plan", "--model-uri", "s3://models/iris/v2", "--format", "json"
    )
    assert code == 0, err
    planned = json.loads(out)["serving"]
    assert planned["action"] == "update"
    assert planned["canary_percent"] == 10 and planned["mode"] == "Knative"
    changes = {c["path"]: (c["from"], c["to"]) for c in planned["changes"]}
    assert changes["spec.predictor.model.storageUri"] == (
        "s3://models/iris/v1",
        "s3://models/iris/v2",
    )
    assert changes["spec.predictor.canaryTrafficPercent"] == (None, 10)
    assert changes["metadata.annotations.kfops.dev/stage"] == ("promoted", "canary")
    assert _live(kube_env, namespace)["metadata"]["resourceVersion"] == before


def test_a_release_record_kfops_did_not_create_is_left_alone(
    kube_env: KubeEnv, tmp_path: Path
) -> None:
    from kubernetes import client

    namespace = kube_env.namespace("record")
    folder = _project(tmp_path, namespace)
    with kube_env.api_client() as api:
        client.CoreV1Api(api).create_namespaced_config_map(
            namespace, {"metadata": {"name": "iris-kfops-releases"}, "data": {"a": "b"}}
        )
    code, _, err = _deploy(kube_env, folder, "deploy", *V1, str(folder / "metrics-v1.json"))
    assert code == 1
    assert "ConfigMap `iris-kfops-releases`" in err and "was not created by kfops" in err
    from kubernetes.client.exceptions import ApiException

    with kube_env.api_client() as api, pytest.raises(ApiException):
        client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "iris"
        )


def test_an_unknown_environment_hints_at_what_a_release_needs(tmp_path: Path) -> None:
    folder = _project(tmp_path, "ns")
    result = CliRunner().invoke(cli, ["deploy", str(folder), "--env", "staging", *V1, "x"])
    assert result.exit_code == 2
    assert f"environments in {folder / 'mlops.yaml'}: `prod`" in result.stderr
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("pipeline.py", "smoke.json", "mlops.yaml"):
        (bare / name).write_text((IRIS / name).read_text())
    result = CliRunner().invoke(cli, ["deploy", str(bare), "--env", "prod", *V1, "x"])
    assert result.exit_code == 2
    assert "add `environments: {prod: {kubernetes: {namespace: NAME}}}`" in result.stderr
