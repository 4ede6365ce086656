"""Kubeflow's ML Metadata gateway (gRPC-Web at ``/ml_metadata``), for the release tests.

The KFP API test server (tests/kfp_api.py) serves it on the same host, as Kubeflow's
ingress does, for the artifacts of the runs it scripts. Requests and answers are encoded
and decoded with ML Metadata's own generated protobuf classes, taken from the
``ml-metadata`` wheel on PyPI (downloaded once with ``pip download --no-deps`` and kept
in ``~/.cache/kfops-tests``; only its ``proto`` modules are used, so none of its pinned
dependencies are installed): a request kfops encodes wrongly fails to parse, and a field
it does not know is caught.
"""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import sys
import zipfile
from functools import cache
from pathlib import Path
from typing import Any

CACHE = Path(os.environ.get("KFOPS_TEST_CACHE") or Path.home() / ".cache" / "kfops-tests")
VERSION = "1.17.1"
PREFIX = "/ml_metadata/ml_metadata.MetadataStoreService/"


@cache
def protos() -> tuple[Any, Any]:
    """ML Metadata's generated modules: (metadata_store_pb2, metadata_store_service_pb2)."""
    folder = CACHE / f"ml-metadata-{VERSION}"
    package = folder / "ml_metadata"
    folder.mkdir(parents=True, exist_ok=True)
    with (CACHE / "ml-metadata.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (package / "proto" / "metadata_store_service_pb2.py").is_file():
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--no-deps",
                    f"ml-metadata=={VERSION}",
                    "-d",
                    str(folder),
                ],
                check=True,
            )
            [wheel] = folder.glob("ml_metadata-*.whl")
            with zipfile.ZipFile(wheel) as archive:
                for name in archive.namelist():
                    if name.startswith("ml_metadata/proto/") and name.endswith(".py"):
                        archive.extract(name, folder)
            (package / "__init__.py").write_text("")  # not the wheel's: it imports absl
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    from ml_metadata.proto import metadata_store_pb2, metadata_store_service_pb2

    return metadata_store_pb2, metadata_store_service_pb2


def frame(message: bytes, trailer: bool = False) -> bytes:
    return bytes([0x80 if trailer else 0]) + struct.pack(">I", len(message)) + message


def answer(
    path: str,
    headers: Any,
    body: bytes,
    known: dict[int, tuple[str, str, dict[str, Any]]],
    token: str,
) -> tuple[int, dict[str, str], bytes]:
    """``known``: artifact id -> (URI, type name, custom properties)."""
    """(HTTP status, headers, body) of a gRPC-Web call to the gateway."""
    store, service = protos()
    grpc = {"Content-Type": "application/grpc-web+proto"}
    if headers.get("Authorization") != f"Bearer {token}":
        return 401, {"Content-Type": "text/plain"}, b"Unauthorized"
    if headers.get("Content-Type") != "application/grpc-web+proto":
        return 415, {"Content-Type": "text/plain"}, b"want application/grpc-web+proto"
    method = path.removeprefix(PREFIX)
    if method != "GetArtifactsByID":
        trailers = f"grpc-status:12\r\ngrpc-message:{method} is not served here\r\n".encode()
        return 200, grpc, frame(trailers, trailer=True)
    if len(body) < 5 or body[0] != 0 or struct.unpack(">I", body[1:5])[0] != len(body) - 5:
        return 400, {"Content-Type": "text/plain"}, b"not one gRPC-Web frame"
    request = service.GetArtifactsByIDRequest()
    request.ParseFromString(body[5:])
    from google.protobuf import unknown_fields

    if len(unknown_fields.UnknownFieldSet(request)):
        trailers = b"grpc-status:3\r\ngrpc-message:unknown fields in the request\r\n"
        return 200, grpc, frame(trailers, trailer=True)
    reply = service.GetArtifactsByIDResponse()
    for number in request.artifact_ids:
        if number not in known:
            continue
        uri, kind, properties = known[number]
        item = reply.artifacts.add(id=number, type_id=1, uri=uri, state=store.Artifact.LIVE)
        if request.populate_artifact_types:
            item.type = kind
        for key, value in properties.items():
            if isinstance(value, float):
                item.custom_properties[key].double_value = value
            elif isinstance(value, int):
                item.custom_properties[key].int_value = value
            else:
                item.custom_properties[key].string_value = str(value)
    return (
        200,
        grpc,
        frame(reply.SerializeToString())
        + frame(b"grpc-status:0\r\ngrpc-message:\r\n", trailer=True),
    )
