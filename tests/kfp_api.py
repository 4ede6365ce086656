"""A stateful Kubeflow Pipelines v2beta1 API test server, checked against KFP's own
Swagger description (``../shared/specs/kfp-v2beta1/``, kubeflow/pipelines 2.17.0).

No KFP API server can run here, so this one keeps pipelines, versions, experiments,
runs and recurring runs in memory and reproduces the semantics that matter to a client
(each verified against the KFP sources, cited where it is surprising):

- ``GET /pipelines/names/{name}`` answers 404 for an unknown name, and looks in the
  ``namespace`` query parameter's namespace;
- a duplicate pipeline name in a namespace, or version name in a pipeline, is 409
  (ALREADY_EXISTS), for ``POST /pipelines`` and ``POST /pipelines/create`` alike;
- a plain ``upload`` names the pipeline's first version after the pipeline
  (kubeflow/pipelines#5881, #13753);
- recurring runs have no update call (#3789); ``DELETE`` takes ``propagation_policy``;
- a run's states are scripted per test (``script_run``), CANCELED included.

Every request body and every response is validated with jsonschema against the
operation's schema in the description; a request that does not validate is answered
400, a response that does not validate is replaced by a 500, and both are recorded in
``server.validation_errors``, which the ``kfp_api`` fixture asserts to be empty.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from jsonschema import Draft4Validator, FormatChecker

from tests import mlmd_api

SPECS = Path(__file__).resolve().parents[2] / "shared" / "specs" / "kfp-v2beta1"
API = "/apis/v2beta1"

# gRPC codes the KFP API server puts in its error bodies, by HTTP status.
_GRPC = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 500: 13, 503: 14}


class SpecMissingError(FileNotFoundError):
    pass


@dataclass(frozen=True)
class _Operation:
    method: str
    template: str
    pattern: re.Pattern[str]
    spec: dict[str, Any]


def _load_operations() -> tuple[list[_Operation], dict[str, Any]]:
    files = ["kfp_api_single_file.swagger.json", "pipeline.upload.swagger.json"]
    definitions: dict[str, Any] = {}
    operations = []
    for name in files:
        path = SPECS / name
        if not path.is_file():
            raise SpecMissingError(
                f"{path} is missing: the KFP API test server validates against it"
                " (../shared/specs beside the checkout)"
            )
        spec = json.loads(path.read_text(encoding="utf-8"))
        definitions.update(spec.get("definitions", {}))
        for template, methods in spec["paths"].items():
            regex = re.sub(
                r"\{[^}]+\}",
                r"([^/]+)",
                re.escape(template).replace(r"\{", "{").replace(r"\}", "}"),
            )
            for method, operation in methods.items():
                operations.append(
                    _Operation(method.upper(), template, re.compile(f"^{regex}$"), operation)
                )
    # Literal paths (".../pipelines/upload") before templated ones (".../{pipeline_id}").
    operations.sort(key=lambda op: (op.template.count("{"), -len(op.template)))
    return operations, definitions


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class KfpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class RunScript:
    """The states a run goes through, one per GET; the last one stays."""

    states: list[str]
    failed_tasks: dict[str, str] = field(default_factory=dict)  # task name -> error message
    # task name -> its output artifacts, reported with ML Metadata ids once it succeeds
    outputs: dict[str, list[str]] = field(default_factory=dict)
    # task name -> the metrics it logs (its output artifact `metrics`, a system.Metrics)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)


class KfpTestServer:
    """The KFP API on 127.0.0.1, with its state open to the test."""

    def __init__(self, *, multi_user: bool = False, token: str = "kfp-test-token") -> None:
        self.operations, self.definitions = _load_operations()
        self.multi_user = multi_user
        self.token = token
        self.pipelines: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, dict[str, Any]] = {}  # version id -> version
        self.specs: dict[str, Any] = {}  # version id -> the uploaded pipeline spec
        self.experiments: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.recurring_runs: dict[str, dict[str, Any]] = {}
        self.deleted_recurring_runs: list[tuple[str, str]] = []  # (display name, policy)
        self.requests: list[tuple[str, str, int]] = []  # method, path, status
        self.validation_errors: list[str] = []
        self.scripts: dict[str, RunScript] = {}
        self.artifact_ids: dict[tuple[str, str, str], int] = {}
        self.next_script: RunScript | None = None
        self.fail_next: list[int] = []  # statuses to answer the next requests with
        # operationIds whose next call is carried out but answered 504, as when a proxy
        # times out after the server acted: the client cannot tell it happened.
        self.lose_answer: list[str] = []
        self._ids = itertools.count(1)
        self._validators: dict[str, Draft4Validator] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> KfpTestServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: without this, Nagle's algorithm and
            # delayed ACKs add 40 ms to every answer on a kept-alive connection.
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                server._serve(self)

            do_POST = do_DELETE = do_PATCH = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def mutating_requests(self) -> list[tuple[str, str, int]]:
        return [r for r in self.requests if r[0] in ("POST", "DELETE", "PATCH")]

    def script_run(
        self,
        *states: str,
        failed_tasks: dict[str, str] | None = None,
        outputs: dict[str, list[str]] | None = None,
        metrics: dict[str, dict[str, float]] | None = None,
    ) -> None:
        """The states of the next run created, one per GET; ``outputs``: the artifacts of
        tasks that succeed (by task name); ``metrics``: what tasks log as Metrics."""
        self.next_script = RunScript(
            list(states), dict(failed_tasks or {}), dict(outputs or {}), dict(metrics or {})
        )

    # -- HTTP

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        parts = urlsplit(handler.path)
        if parts.path.startswith("/ml_metadata/"):
            # Kubeflow's ML Metadata gateway, beside the API (tests/mlmd_api.py)
            with self._lock:
                uris = self.artifact_uris()
                known = {
                    n: found
                    for n, found in self.mlmd_artifacts().items()
                    if n in uris  # a test may hide URIs: hide the artifact then
                }
            status, headers, data = mlmd_api.answer(
                parts.path, handler.headers, body, known, self.token
            )
            self.requests.append((handler.command, parts.path, status))
            handler.send_response(status)
            for key, value in headers.items():
                handler.send_header(key, value)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            return
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        with self._lock:
            status, payload = self._dispatch(
                handler.command, parts.path, query, handler.headers, body
            )
            self.requests.append((handler.command, parts.path, status))
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _dispatch(
        self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes
    ) -> tuple[int, Any]:
        if self.fail_next:
            status = self.fail_next.pop(0)
            return status, _status(status, "injected failure")
        # Health is open, as on a real deployment; everything else wants the token.
        public = path == f"{API}/healthz"
        if not public and headers.get("Authorization") != f"Bearer {self.token}":
            return 401, _status(401, "Unauthorized: missing or wrong bearer token")
        for operation in self.operations:
            match = operation.pattern.match(path)
            if match and operation.method == method:
                break
        else:
            return 404, _status(404, f"no operation {method} {path}")
        names = re.findall(r"\{([^}]+)\}", operation.template)
        params = dict(zip(names, match.groups(), strict=True))
        try:
            arguments = self._validate_request(operation, query, headers, body)
            handler = getattr(self, "_op_" + operation.spec["operationId"].split("_")[-1], None)
            if handler is None:
                raise KfpError(
                    501, f"{operation.spec['operationId']} is not served by the test server"
                )
            status, payload = 200, handler(params, query, arguments)
            short = operation.spec["operationId"].split("_")[-1]
            if short in self.lose_answer:
                self.lose_answer.remove(short)
                return 504, _status(503, "upstream request timeout (the server did act)")
        except KfpError as exc:
            status, payload = exc.status, _status(exc.status, exc.message)
        except Exception as exc:  # a bug in the test server: never hidden
            self.validation_errors.append(f"{method} {path}: the test server raised {exc!r}")
            status, payload = 500, _status(500, repr(exc))
        problem = self._validate_response(operation, status, payload)
        if problem:
            self.validation_errors.append(f"response to {method} {path}: {problem}")
            return 500, _status(500, f"test server sent an invalid response: {problem}")
        return status, payload

    def _schema(self, schema: dict[str, Any]) -> Draft4Validator:
        key = json.dumps(schema, sort_keys=True)
        if key not in self._validators:
            self._validators[key] = Draft4Validator(
                {**schema, "definitions": self.definitions}, format_checker=FormatChecker()
            )
        return self._validators[key]

    def _validate_request(
        self, operation: _Operation, query: dict[str, str], headers: Any, body: bytes
    ) -> Any:
        parameters = operation.spec.get("parameters", [])
        known = {p["name"] for p in parameters if p["in"] == "query"}
        for name in query:
            if name not in known and not name.startswith(("filter", "sort")):
                self._bad(operation, f"unknown query parameter {name!r}")
        for parameter in parameters:
            if (
                parameter["in"] == "query"
                and parameter.get("required")
                and parameter["name"] not in query
            ):
                self._bad(operation, f"missing query parameter {parameter['name']!r}")
        body_parameter = next((p for p in parameters if p["in"] == "body"), None)
        if any(p["in"] == "formData" for p in parameters):
            return _multipart(headers, body)
        if body_parameter is None:
            return None
        try:
            document = json.loads(body or b"{}")
        except json.JSONDecodeError:
            self._bad(operation, "the body is not JSON")
        errors = sorted(self._schema(body_parameter["schema"]).iter_errors(document), key=str)
        if errors:
            self._bad(operation, errors[0].message)
        return document

    def _bad(self, operation: _Operation, message: str) -> None:
        self.validation_errors.append(
            f"request to {operation.method} {operation.template}: {message}"
        )
        raise KfpError(400, message)

    def _validate_response(self, operation: _Operation, status: int, payload: Any) -> str:
        responses = operation.spec.get("responses", {})
        answer = responses.get(str(status)) or responses.get("default")
        if answer is None or "schema" not in answer:
            return ""
        errors = sorted(self._schema(answer["schema"]).iter_errors(payload), key=str)
        return errors[0].message if errors else ""

    # -- helpers

    def _id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids):04d}"

    def _namespace(self, query_or_body: dict[str, Any]) -> str:
        namespace = str(query_or_body.get("namespace") or "")
        if self.multi_user and not namespace:
            raise KfpError(400, "Invalid input error: namespace is required in multi-user mode")
        return namespace

    def _pipeline(self, pipeline_id: str) -> dict[str, Any]:
        found = self.pipelines.get(pipeline_id)
        if found is None:
            raise KfpError(404, f"Failed to get pipeline {pipeline_id}: ResourceNotFoundError")
        return found

    def _new_pipeline(self, spec: dict[str, Any]) -> dict[str, Any]:
        name = spec.get("name") or spec.get("display_name")
        if not name:
            raise KfpError(400, "Invalid input error: pipeline name is empty")
        namespace = self._namespace(spec)
        for existing in self.pipelines.values():
            if existing["name"] == name and existing.get("namespace", "") == namespace:
                raise KfpError(
                    409, f"Already exist error: pipeline with name {name} already exists"
                )
        pipeline = {
            "pipeline_id": self._id("pipeline"),
            "name": name,
            "display_name": spec.get("display_name") or name,
            "description": spec.get("description", ""),
            "created_at": _now(),
            "namespace": namespace,
        }
        self.pipelines[pipeline["pipeline_id"]] = pipeline
        return pipeline

    def _new_version(
        self, pipeline_id: str, spec: dict[str, Any], pipeline_spec: Any
    ) -> dict[str, Any]:
        self._pipeline(pipeline_id)
        name = spec.get("name") or spec.get("display_name")
        if not name:
            raise KfpError(400, "Invalid input error: pipeline version name is empty")
        for existing in self.versions.values():
            if existing["pipeline_id"] == pipeline_id and existing["name"] == name:
                raise KfpError(
                    409, f"Already exist error: pipeline version with name {name} already exists"
                )
        version = {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": self._id("version"),
            "name": name,
            "display_name": spec.get("display_name") or name,
            "description": spec.get("description", ""),
            "created_at": _now(),
        }
        self.versions[version["pipeline_version_id"]] = version
        self.specs[version["pipeline_version_id"]] = pipeline_spec
        return version

    # -- operations (named after the description's operationIds)

    def _op_GetHealthz(self, params: dict[str, str], query: dict[str, str], body: Any) -> Any:
        return {"multi_user": self.multi_user, "pipeline_store": "database"}

    def _op_CreatePipeline(self, params: dict[str, str], query: dict[str, str], body: Any) -> Any:
        return self._new_pipeline(body)

    def _op_CreatePipelineAndVersion(
        self, params: dict[str, str], query: dict[str, str], body: Any
    ) -> Any:
        pipeline = self._new_pipeline(body.get("pipeline") or {})
        self._new_version(pipeline["pipeline_id"], body.get("pipeline_version") or {}, None)
        return pipeline

    def _op_GetPipelineByName(
        self, params: dict[str, str], query: dict[str, str], body: Any
    ) -> Any:
        namespace = self._namespace(query)
        for pipeline in self.pipelines.values():
            if pipeline["name"] == params["name"] and pipeline.get("namespace", "") == namespace:
                return pipeline
        raise KfpError(
            404, f"Failed to get a pipeline with name {params['name']}: ResourceNotFoundError"
        )

    def _op_GetPipeline(self, params: dict[str, str], query: dict[str, str], body: Any) -> Any:
        return self._pipeline(params["pipeline_id"])

    def _op_ListPipelines(self, params: dict[str, str], query: dict[str, str], body: Any) -> Any:
        namespace = self._namespace(query)
        found = [p for p in self.pipelines.values() if p.get("namespace", "") == namespace]
        return {"pipelines": found, "total_size": len(found)}

    def _op_DeletePipeline(self, params: dict[str, str], query: dict[str, str], body: Any) -> Any:
        self._pipeline(params["pipeline_id"])
        if any(v["pipeline_id"] == params["pipeline_id"] for v in self.versions.values()):
            raise KfpError(400, "Failed to delete pipeline: it has pipeline versions")
        del self.pipelines[params["pipeline_id"]]
        return {}

    def _op_CreatePipelineVersion(
        self, params: dict[str, str], query: dict[str, str], body: Any
    ) -> Any:
        return self._new_version(params["pipeline_id"], body, None)

    def _op_ListPipelineVersions(
        self, params: dict[str, str], query: dict[str, str], body: Any
    ) -> Any:
        self._pipeline(params["pipeline_id"])
        found = [v for v in self.versions.values() if v["pipeline_id"] == params["pipeline_id"]]
        for predicate in _predicates(query.get("filter")):
            if predicate.get("key") != "name" or predicate.get("operation") != "EQUALS":
                raise KfpError(400, f"the test server filters on name EQUALS only: {predicate}")
            found = [v for v in found if v["name"] == predicate.get("string_value")]
        if query.get("sort_by") not in (None, "", "created_at desc"):
            raise KfpError(
                400, f"the test server sorts by `created_at desc` only: {query['sort_by']}"
            )
        if query.get("sort_by"):
            found = sorted(
                found, key=lambda v: (v["created_at"], v["pipeline_version_id"]), reverse=True
            )
        size = int(query.get("page_size") or 0) or len(found)
        return {"pipeline_versions": found[:size], "total_size": len(found)}

    def _op_GetPipelineVersion(
        self, params: dict[str, str], query: dict[str, str], body: Any
    ) -> Any:
        version = self.versions.get(params["pipeline_version_id"])
        if version is None or version["pipeline_id"] != params["pipeline_id"]:
            raise KfpError(404, "Failed to get pipeline version: ResourceNotFoundError")
        return version

    def _op_UploadPipeline(self, params: dict[str, str], query: dict[str, str], body: Any) -> Any:
        spec = _pipeline_spec(body)
        name = query.get("name") or spec.get("pipelineInfo", {}).get("name") or "pipeline"
        pipeline = self._new_pipeline({**query, "name": name})
        # The first version is named after the pipeline (kubeflow/pipelines#5881, #13753).
        self._new_version(pipeline["pipeline_id"], {"name": name}, spec)
        return pipeline

    def _op_UploadPipelineVersion(
        self, params: dict[str, str], query: dict[str, str], body: Any
    ) -> Any:
        if not query.get("pipelineid"):
            raise KfpError(400, "Invalid input error: pipeline id is empty")
        spec = _pipeline_spec(body)
        return self._new_version(
            query["pipelineid"],
            {k: query[k] for k in ("name", "display_name", "description") if k in query},
            spec,
        )

    # -- experiments and runs

    def _op_CreateExperiment(self, params: dict[str, str], query: dict[str, str], body: Any) -> Any:
        name = body.get("display_name")
        if not name:
            raise KfpError(400, "Invalid input error: experiment name is empty")
        namespace = self._namespace(body)
        for existing in self.experiments.values():
            if existing["display_name"] == name and existing["namespace"] == namespace:
                raise KfpError(409, f"Already exist error: experiment {name} already exists")
        experiment = {
            "experiment_id": self._id("experiment"),
            "display_name": name,
            "description": body.get("description", ""),
            "created_at": _now(),
            "namespace": namespace,
            "storage_state": "AVAILABLE",
        }
        self.experiments[experiment["experiment_id"]] = experiment
        return experiment

    def _op_ListExperiments(self, params: dict[str, str], query: dict[str, str], body: Any) -> Any:
        namespace = self._namespace(query)
        found = [e for e in self.experiments.values() if e["namespace"] == namespace]
        for predicate in _predicates(query.get("filter")):
            if predicate.get("key") != "display_name" or predicate.get("operation") != "EQUALS":
                raise KfpError(
                    400, f"the test server filters on display_name EQUALS only: {predicate}"
                )
            found = [e for e in found if e["display_name"] == predicate.get("string_value")]
        return {"experiments": found, "total_size": len(found)}

    def _op_GetExperiment(self, params: dict[str, str], query: dict[str, str], body: Any) -> Any:
        found = self.experiments.get(params["experiment_id"])
        if found is None:
            raise KfpError(404, "Failed to get experiment: ResourceNotFoundError")
        return found

    def _op_CreateRun(self, params: dict[str, str], query: dict[str, str], body: Any) -> Any:
        reference = body.get("pipeline_version_reference") or {}
        version = self.versions.get(reference.get("pipeline_version_id", ""))
        if version is None or version["pipeline_id"] != reference.get("pipeline_id"):
            raise KfpError(404, "Failed to create a run: pipeline version not found")
        if body.get("experiment_id") not in self.experiments:
            raise KfpError(404, "Failed to create a run: experiment not found")
        run = {
            "run_id": self._id("run"),
            "experiment_id": body["experiment_id"],
            "display_name": body.get("display_name") or version["name"],
            "description": body.get("description", ""),
            "pipeline_version_reference": reference,
            "runtime_config": body.get("runtime_config") or {},
            "created_at": _now(),
            "state": "PENDING",
            "storage_state": "AVAILABLE",
        }
        self.runs[run["run_id"]] = run
        self.scripts[run["run_id"]] = self.next_script or RunScript(
            ["PENDING", "RUNNING", "SUCCEEDED"]
        )
        self.next_script = None
        return run

    def _op_GetRun(self, params: dict[str, str], query: dict[str, str], body: Any) -> Any:
        run = self.runs.get(params["run_id"])
        if run is None:
            raise KfpError(404, f"Failed to get run {params['run_id']}: ResourceNotFoundError")
        script = self.scripts[run["run_id"]]
        run["state"] = script.states.pop(0) if len(script.states) > 1 else script.states[0]
        tasks = []
        for name, error in sorted(script.failed_tasks.items()):
            failed = run["state"] in ("FAILED", "CANCELED")
            tasks.append(
                {
                    "run_id": run["run_id"],
                    "task_id": f"{run['run_id']}-{name}",
                    "display_name": name,
                    "state": "FAILED" if failed else "RUNNING",
                    **({"error": {"code": 2, "message": error, "details": []}} if failed else {}),
                }
            )
        if run["state"] == "SUCCEEDED":
            produced = {name: list(names) for name, names in script.outputs.items()}
            for name in script.metrics:
                produced.setdefault(name, []).append("metrics")
            for name, artifacts in sorted(produced.items()):
                tasks.append(
                    {
                        "run_id": run["run_id"],
                        "task_id": f"{run['run_id']}-{name}",
                        "display_name": name,
                        "state": "SUCCEEDED",
                        "outputs": {
                            artifact: {
                                "artifact_ids": [str(self._artifact_id(run, name, artifact))]
                            }
                            for artifact in artifacts
                        },
                    }
                )
        if run["state"] in ("SUCCEEDED", "FAILED", "SKIPPED", "CANCELED"):
            run["finished_at"] = _now()
        return {**run, "run_details": {"task_details": tasks}}

    def artifact_uris(self) -> dict[int, str]:
        """ML Metadata's URI of each artifact the scripted runs produced: below KFP's
        default pipeline root, with the launcher's per-execution salt."""
        return {number: found[0] for number, found in self.mlmd_artifacts().items()}

    def mlmd_artifacts(self) -> dict[int, tuple[str, str, dict[str, Any]]]:
        """What ML Metadata knows of each artifact: (URI, type, custom properties)."""
        found = {}
        for (run_id, task, artifact), number in self.artifact_ids.items():
            reference = self.runs[run_id]["pipeline_version_reference"]
            version = self.versions[reference["pipeline_version_id"]]
            pipeline = self.pipelines[version["pipeline_id"]]["name"]
            salt = f"{number:08x}-salt"
            uri = f"minio://mlpipeline/v2/artifacts/{pipeline}/{run_id}/{task}/{salt}/{artifact}"
            logged = self.scripts[run_id].metrics.get(task) if artifact == "metrics" else None
            if logged is not None:
                found[number] = (uri, "system.Metrics", dict(logged))
            else:
                found[number] = (uri, "system.Artifact", {})
        return found

    def _artifact_id(self, run: dict[str, Any], task: str, artifact: str) -> int:
        key = (run["run_id"], task, artifact)
        return self.artifact_ids.setdefault(key, len(self.artifact_ids) + 1)

    def _op_ListRuns(self, params: dict[str, str], query: dict[str, str], body: Any) -> Any:
        """Runs, newest first, by experiment (or namespace) and pipeline_version_id EQUALS;
        the states are as the last GET left them (listing moves no script on)."""
        runs = list(self.runs.values())
        if query.get("experiment_id"):
            runs = [r for r in runs if r["experiment_id"] == query["experiment_id"]]
        for predicate in _predicates(query.get("filter")):
            key = predicate.get("key")
            if key != "pipeline_version_id" or predicate.get("operation") != "EQUALS":
                raise KfpError(
                    400, f"the test server filters on pipeline_version_id EQUALS only: {predicate}"
                )
            wanted = predicate.get("string_value")
            runs = [
                r
                for r in runs
                if r["pipeline_version_reference"].get("pipeline_version_id") == wanted
            ]
        if query.get("sort_by") not in (None, "", "created_at desc"):
            raise KfpError(
                400, f"the test server sorts by `created_at desc` only: {query['sort_by']}"
            )
        runs.sort(key=lambda r: (r["created_at"], r["run_id"]), reverse=True)
        return {"runs": runs, "total_size": len(runs)}

    # -- recurring runs: no update call (kubeflow/pipelines#3789)

    def _op_CreateRecurringRun(
        self, params: dict[str, str], query: dict[str, str], body: Any
    ) -> Any:
        reference = body.get("pipeline_version_reference") or {}
        self._pipeline(reference.get("pipeline_id", ""))
        if (
            reference.get("pipeline_version_id")
            and reference["pipeline_version_id"] not in self.versions
        ):
            raise KfpError(404, "Failed to create a recurring run: pipeline version not found")
        cron = (body.get("trigger") or {}).get("cron_schedule", {}).get("cron", "")
        if len(cron.split()) != 6:
            raise KfpError(
                400, f"Invalid input error: cron {cron!r} must have 6 fields, seconds first"
            )
        if body.get("mode") not in ("ENABLE", "DISABLE"):
            raise KfpError(400, "Invalid input error: mode must be ENABLE or DISABLE")
        recurring = {
            **body,
            "recurring_run_id": self._id("recurring"),
            "created_at": _now(),
            "updated_at": _now(),
            "status": "ENABLED" if body["mode"] == "ENABLE" else "DISABLED",
            "namespace": self._namespace(body),
        }
        self.recurring_runs[recurring["recurring_run_id"]] = recurring
        return recurring

    def _recurring(self, recurring_run_id: str) -> dict[str, Any]:
        found = self.recurring_runs.get(recurring_run_id)
        if found is None:
            raise KfpError(
                404, f"Failed to get recurring run {recurring_run_id}: ResourceNotFoundError"
            )
        return found

    def _op_ListRecurringRuns(
        self, params: dict[str, str], query: dict[str, str], body: Any
    ) -> Any:
        namespace = self._namespace(query)
        found = [r for r in self.recurring_runs.values() if r["namespace"] == namespace]
        if query.get("experiment_id"):
            found = [r for r in found if r.get("experiment_id") == query["experiment_id"]]
        # KFP answers this one field in camelCase.
        return {"recurringRuns": found, "total_size": len(found)}

    def _op_GetRecurringRun(self, params: dict[str, str], query: dict[str, str], body: Any) -> Any:
        return self._recurring(params["recurring_run_id"])

    def _op_DeleteRecurringRun(
        self, params: dict[str, str], query: dict[str, str], body: Any
    ) -> Any:
        self._recurring(params["recurring_run_id"])
        policy = query.get("propagation_policy", "")
        if policy not in ("", "FOREGROUND", "BACKGROUND", "ORPHAN"):
            raise KfpError(400, f"Invalid input error: propagation_policy {policy!r}")
        removed = self.recurring_runs.pop(params["recurring_run_id"])
        self.deleted_recurring_runs.append((removed["display_name"], policy or "FOREGROUND"))
        return {}

    def _op_EnableRecurringRun(
        self, params: dict[str, str], query: dict[str, str], body: Any
    ) -> Any:
        self._recurring(params["recurring_run_id"])["status"] = "ENABLED"
        return {}

    def _op_DisableRecurringRun(
        self, params: dict[str, str], query: dict[str, str], body: Any
    ) -> Any:
        self._recurring(params["recurring_run_id"])["status"] = "DISABLED"
        return {}


def _predicates(text: str | None) -> list[dict[str, Any]]:
    """The predicates of a KFP list filter (a JSON-encoded v2beta1 Filter)."""
    if not text:
        return []
    try:
        predicates: list[dict[str, Any]] = json.loads(text).get("predicates", [])
    except (ValueError, AttributeError):
        raise KfpError(400, f"Invalid input error: filter is not a JSON Filter: {text}") from None
    return predicates


def _status(status: int, message: str) -> dict[str, Any]:
    return {"code": _GRPC.get(status, 2), "message": message, "details": []}


def _multipart(headers: Any, body: bytes) -> dict[str, bytes]:
    """The parts of a multipart/form-data body, by field name."""
    from email.parser import BytesParser
    from email.policy import HTTP

    head = f"Content-Type: {headers.get('Content-Type', '')}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise KfpError(400, "Invalid input error: expected a multipart/form-data upload")
    parts: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            parts[name] = part.get_payload(decode=True) or b""
    return parts


def _pipeline_spec(form: dict[str, Any]) -> dict[str, Any]:
    import yaml

    data = form.get("uploadfile")
    if data is None:
        raise KfpError(400, "Invalid input error: no uploadfile in the request")
    try:
        documents = list(yaml.safe_load_all(data))
    except yaml.YAMLError as exc:
        raise KfpError(400, f"Invalid input error: the uploaded file is not YAML: {exc}") from None
    spec = documents[0] if documents else None
    if not isinstance(spec, dict) or "pipelineInfo" not in spec:
        raise KfpError(400, "Invalid input error: the uploaded file is not a pipeline spec")
    return spec


@pytest.fixture
def kfp_api() -> Iterator[KfpTestServer]:
    server = KfpTestServer().start()
    try:
        yield server
    finally:
        server.stop()
    assert server.validation_errors == [], server.validation_errors
