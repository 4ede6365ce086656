"""The KFP API test server (tests/kfp_api.py) against the real clients: kfp.Client and
kfp_server_api speak to it as to a KFP API server, and it answers what the real server
answers, checked against KFP's Swagger description on every request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.kfp_api import KfpTestServer

IRIS_IR = ROOT / "tests" / "golden" / "compile" / "iris.yaml"


def _client(server: KfpTestServer, token: str | None = None) -> Any:
    import kfp

    return kfp.Client(host=server.url, existing_token=token or server.token)


def test_upload_names_the_first_version_after_the_pipeline(kfp_api: KfpTestServer) -> None:
    client = _client(kfp_api)
    pipeline = client.upload_pipeline(str(IRIS_IR), pipeline_name="iris")
    [version] = kfp_api.versions.values()
    assert version["pipeline_id"] == pipeline.pipeline_id
    assert version["name"] == "iris"  # kubeflow/pipelines#5881, #13753
    assert kfp_api.specs[version["pipeline_version_id"]]["pipelineInfo"]["name"] == "iris"


def test_versions_are_unique_per_pipeline_and_name(kfp_api: KfpTestServer) -> None:
    import kfp_server_api

    client = _client(kfp_api)
    pipeline = client.upload_pipeline(str(IRIS_IR), pipeline_name="iris")
    client.upload_pipeline_version(
        str(IRIS_IR), pipeline_version_name="abc1234-0f0f", pipeline_id=pipeline.pipeline_id
    )
    with pytest.raises(kfp_server_api.ApiException) as raised:
        client.upload_pipeline_version(
            str(IRIS_IR), pipeline_version_name="abc1234-0f0f", pipeline_id=pipeline.pipeline_id
        )
    assert raised.value.status == 409
    versions = client.list_pipeline_versions(pipeline_id=pipeline.pipeline_id)
    assert sorted(v.display_name for v in versions.pipeline_versions) == ["abc1234-0f0f", "iris"]


def test_duplicate_pipeline_names_are_409_in_both_body_shapes(kfp_api: KfpTestServer) -> None:
    import kfp_server_api

    client = _client(kfp_api)
    api = client._pipelines_api
    api.pipeline_service_create_pipeline(kfp_server_api.V2beta1Pipeline(name="iris"))
    with pytest.raises(kfp_server_api.ApiException) as first:
        api.pipeline_service_create_pipeline(kfp_server_api.V2beta1Pipeline(name="iris"))
    with pytest.raises(kfp_server_api.ApiException) as second:
        api.pipeline_service_create_pipeline_and_version(
            kfp_server_api.V2beta1CreatePipelineAndVersionRequest(
                pipeline=kfp_server_api.V2beta1Pipeline(name="iris"),
                pipeline_version=kfp_server_api.V2beta1PipelineVersion(
                    name="v1",
                    package_url=kfp_server_api.V2beta1Url(pipeline_url="https://x/p.yaml"),
                ),
            )
        )
    assert (first.value.status, second.value.status) == (409, 409)
    assert len(kfp_api.pipelines) == 1


def test_names_lookup_is_404_for_an_unknown_pipeline(kfp_api: KfpTestServer) -> None:
    import kfp_server_api

    api = _client(kfp_api)._pipelines_api
    with pytest.raises(kfp_server_api.ApiException) as raised:
        api.pipeline_service_get_pipeline_by_name(name="nope")
    assert raised.value.status == 404
    created = api.pipeline_service_create_pipeline(kfp_server_api.V2beta1Pipeline(name="iris"))
    found = api.pipeline_service_get_pipeline_by_name(name="iris")
    assert found.pipeline_id == created.pipeline_id


def test_multi_user_mode_needs_the_namespace() -> None:
    import kfp_server_api

    server = KfpTestServer(multi_user=True).start()
    try:
        api = _client(server)._pipelines_api
        api.pipeline_service_create_pipeline(
            kfp_server_api.V2beta1Pipeline(name="iris", namespace="team-a")
        )
        with pytest.raises(kfp_server_api.ApiException) as missing:
            api.pipeline_service_get_pipeline_by_name(name="iris")
        assert missing.value.status == 400
        with pytest.raises(kfp_server_api.ApiException) as elsewhere:
            api.pipeline_service_get_pipeline_by_name(name="iris", namespace="team-b")
        assert elsewhere.value.status == 404
        assert (
            api.pipeline_service_get_pipeline_by_name(name="iris", namespace="team-a").name
            == "iris"
        )
    finally:
        server.stop()
    assert server.validation_errors == []


def test_a_wrong_token_is_401(kfp_api: KfpTestServer) -> None:
    import kfp_server_api

    api = _client(kfp_api, token="wrong")._pipelines_api
    with pytest.raises(kfp_server_api.ApiException) as raised:
        api.pipeline_service_list_pipelines()
    assert raised.value.status == 401


def test_an_invalid_request_is_400_and_recorded(kfp_api: KfpTestServer) -> None:
    import requests

    answer = requests.post(
        f"{kfp_api.url}/apis/v2beta1/pipelines",
        json={"name": 7},
        headers={"Authorization": f"Bearer {kfp_api.token}"},
        timeout=10,
    )
    assert answer.status_code == 400
    assert kfp_api.validation_errors == [
        "request to POST /apis/v2beta1/pipelines: 7 is not of type 'string'"
    ]
    kfp_api.validation_errors.clear()  # seen; the fixture checks the rest


def test_spec_files_are_read_from_shared(tmp_path: Path) -> None:
    from tests import kfp_api as module

    assert (module.SPECS / "kfp_api_single_file.swagger.json").is_file()
