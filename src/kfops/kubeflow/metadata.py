"""Artifact URIs from Kubeflow's ML Metadata, which KFP's own API does not give.

KFP's v2beta1 API names a run's output artifacts by ML Metadata id only; their URIs live
in ML Metadata (MLMD). The KFP UI reads them through the gRPC-Web gateway Kubeflow
serves at ``/ml_metadata`` beside ``/pipeline``; kfops asks the same gateway, with the
same bearer token, for ``MetadataStoreService.GetArtifactsByID``.

Only the few fields kfops needs are declared (an artifact's id, URI, type and custom
properties: a Metrics artifact keeps its metrics there), with MLMD's field numbers
(ml_metadata/proto/metadata_store.proto and metadata_store_service.proto); protobuf
(already there through kfp) encodes and decodes them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import unquote

from kfops.errors import KfopsError

SERVICE = "ml_metadata.MetadataStoreService"
METHOD = "GetArtifactsByID"


@cache
def _messages() -> tuple[Any, Any]:
    """(GetArtifactsByIDRequest, GetArtifactsByIDResponse) with the fields kfops reads."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    optional, repeated = field.LABEL_OPTIONAL, field.LABEL_REPEATED
    proto = descriptor_pb2.FileDescriptorProto(
        name="kfops_mlmd_subset.proto", package="ml_metadata", syntax="proto2"
    )
    value = proto.message_type.add(name="Value")
    value.field.add(name="int_value", number=1, label=optional, type=field.TYPE_INT64)
    value.field.add(name="double_value", number=2, label=optional, type=field.TYPE_DOUBLE)
    value.field.add(name="string_value", number=3, label=optional, type=field.TYPE_STRING)
    artifact = proto.message_type.add(name="Artifact")
    artifact.field.add(name="id", number=1, label=optional, type=field.TYPE_INT64)
    artifact.field.add(name="uri", number=3, label=optional, type=field.TYPE_STRING)
    artifact.field.add(name="type", number=8, label=optional, type=field.TYPE_STRING)
    entry = artifact.nested_type.add(name="CustomPropertiesEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, label=optional, type=field.TYPE_STRING)
    entry.field.add(
        name="value",
        number=2,
        label=optional,
        type=field.TYPE_MESSAGE,
        type_name=".ml_metadata.Value",
    )
    artifact.field.add(
        name="custom_properties",
        number=5,
        label=repeated,
        type=field.TYPE_MESSAGE,
        type_name=".ml_metadata.Artifact.CustomPropertiesEntry",
    )
    request = proto.message_type.add(name="GetArtifactsByIDRequest")
    request.field.add(name="artifact_ids", number=1, label=repeated, type=field.TYPE_INT64)
    request.field.add(
        name="populate_artifact_types", number=3, label=optional, type=field.TYPE_BOOL
    )
    response = proto.message_type.add(name="GetArtifactsByIDResponse")
    response.field.add(
        name="artifacts",
        number=1,
        label=repeated,
        type=field.TYPE_MESSAGE,
        type_name=".ml_metadata.Artifact",
    )
    # A pool of its own: the subset must not meet the real ml_metadata protos.
    classes = message_factory.GetMessages([proto], pool=descriptor_pool.DescriptorPool())
    return (
        classes["ml_metadata.GetArtifactsByIDRequest"],
        classes["ml_metadata.GetArtifactsByIDResponse"],
    )


@dataclass(frozen=True)
class Artifact:
    """What ML Metadata knows of one artifact: where it is, its type, its metadata."""

    id: int
    uri: str
    type: str  # e.g. system.Model, system.Metrics
    properties: dict[str, Any]  # custom properties: a Metrics artifact's are its metrics

    def metrics(self) -> dict[str, float]:
        return {
            k: float(v)
            for k, v in self.properties.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }


def gateway_url(kfp_host: str) -> str:
    """Where Kubeflow serves ML Metadata's gRPC-Web gateway for a KFP at ``kfp_host``."""
    return kfp_host.rstrip("/").removesuffix("/pipeline") + "/ml_metadata"


def artifacts(
    gateway: str, ids: list[int], token: str, *, timeout: float = 30.0
) -> dict[int, Artifact]:
    """The artifacts ``ids``, by id.

    Raises:
        KfopsError: the gateway is unreachable, refuses the token, or answers an error.
    """
    import httpx

    request_class, response_class = _messages()
    message = request_class(artifact_ids=ids, populate_artifact_types=True).SerializeToString()
    url = f"{gateway.rstrip('/')}/{SERVICE}/{METHOD}"
    try:
        answer = httpx.post(
            url,
            content=b"\x00" + struct.pack(">I", len(message)) + message,
            headers={
                "Content-Type": "application/grpc-web+proto",
                "Accept": "application/grpc-web+proto",
                "X-Grpc-Web": "1",
                "Authorization": f"Bearer {token}",
            },
            timeout=timeout,
        )
    except httpx.HTTPError as exc:
        raise KfopsError(
            f"cannot reach Kubeflow's ML Metadata gateway at {gateway}: {type(exc).__name__}",
            "set `kfp.metadata` in mlops.yaml to its address, or pass the model with"
            " --model-uri (and its metrics with --metrics)",
        ) from None
    if answer.status_code in (401, 403):
        raise KfopsError(
            f"Kubeflow's ML Metadata gateway at {gateway} refused the token (HTTP"
            f" {answer.status_code})",
            "the KFP token must also be valid for /ml_metadata; or pass --model-uri",
        )
    if answer.status_code != 200:
        raise KfopsError(
            f"Kubeflow's ML Metadata gateway at {gateway} answered HTTP {answer.status_code}",
            "check `kfp.metadata` in mlops.yaml, or pass --model-uri",
        )
    data, trailers = _frames(answer.content)
    status = trailers.get("grpc-status") or answer.headers.get("grpc-status") or "0"
    if status != "0":
        why = unquote(trailers.get("grpc-message") or answer.headers.get("grpc-message") or "")
        raise KfopsError(
            f"ML Metadata at {gateway} answered gRPC status {status} to {METHOD}: {why}",
            "pass the model with --model-uri",
        )
    response = response_class()
    response.ParseFromString(data)
    found = {}
    for item in response.artifacts:
        properties: dict[str, Any] = {}
        for key, value in item.custom_properties.items():
            if value.HasField("double_value"):
                properties[key] = value.double_value
            elif value.HasField("int_value"):
                properties[key] = value.int_value
            elif value.HasField("string_value"):
                properties[key] = value.string_value
        found[int(item.id)] = Artifact(int(item.id), str(item.uri), str(item.type), properties)
    return found


def _frames(body: bytes) -> tuple[bytes, dict[str, str]]:
    """The message and the trailers of a gRPC-Web answer."""
    data, trailers, at = b"", {}, 0
    while at + 5 <= len(body):
        flag = body[at]
        (size,) = struct.unpack(">I", body[at + 1 : at + 5])
        chunk = body[at + 5 : at + 5 + size]
        at += 5 + size
        if flag & 0x80:
            for line in chunk.decode("utf-8", "replace").split("\r\n"):
                key, _, value = line.partition(":")
                if key:
                    trailers[key.strip().lower()] = value.strip()
        else:
            data += chunk
    return data, trailers


def servable(uri: str) -> str:
    """The URI as KServe's storage initializer reads it: KFP's ``minio://`` is S3."""
    return "s3://" + uri.removeprefix("minio://") if uri.startswith("minio://") else uri
