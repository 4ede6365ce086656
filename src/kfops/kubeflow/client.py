"""The Kubeflow Pipelines API (v2beta1), through KFP's own client library.

One small class with the calls delivery needs, built in one place (``connect``) from an
environment's ``kfp:`` settings. Credentials are explicit: a bearer token from the
variable ``token_env`` names, or the ServiceAccount token KFP mounts into pods. KFP's
``ServiceAccountTokenVolumeCredentials`` is applied only when no host is passed, so
kfops reads the token itself. Errors name the server, the environment and where the
credential came from; the token itself is never printed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfops.errors import KfopsError
from kfops.project.model import Environment

# Where KFP's ServiceAccountTokenVolumeCredentials reads the token (kfp.client.token_credentials).
SA_TOKEN_PATH = Path("/var/run/secrets/kubeflow/pipelines/token")
SA_TOKEN_ENV = "KF_PIPELINES_SA_TOKEN_PATH"


@dataclass(frozen=True)
class Credential:
    token: str
    source: str  # for messages: "$KFP_TOKEN" or the token file; never the token


def credential_for(environment: Environment, env: Mapping[str, str]) -> Credential:
    """The bearer token for ``environment``'s KFP.

    Raises:
        KfopsError: the variable is unset, or no ServiceAccount token is mounted.
    """
    target = environment.kfp
    assert target is not None
    if target.token_env:
        token = env.get(target.token_env, "")
        if not token:
            raise KfopsError(
                f"environment `{environment.name}`: ${target.token_env} is not set or empty",
                f"set {target.token_env} to a token for {target.host} (in GitHub Actions,"
                " from a secret through `env:`)",
            )
        return Credential(token, f"${target.token_env}")
    path = Path(env.get(SA_TOKEN_ENV) or SA_TOKEN_PATH)
    try:
        return Credential(path.read_text(encoding="utf-8").strip(), f"ServiceAccount token {path}")
    except OSError:
        raise KfopsError(
            f"environment `{environment.name}` has no `kfp.token_env`, and there is no"
            f" ServiceAccount token at {path} (kfops is not running in a Kubeflow pod)",
            f"set `token_env: KFP_TOKEN` under environments.{environment.name}.kfp and put"
            " a token in that variable",
        ) from None


class Kfp:
    """The KFP API of one environment."""

    def __init__(self, environment: Environment, credential: Credential) -> None:
        import kfp_server_api

        target = environment.kfp
        assert target is not None
        self.environment = environment.name
        self.host = target.host.rstrip("/")
        self.namespace = target.namespace
        self.credential_source = credential.source
        self.token = credential.token  # for ML Metadata's gateway, the same bearer; never shown
        configuration = kfp_server_api.Configuration(host=self.host)
        configuration.retries = 0  # kfops retries itself, knowing which calls are safe to repeat
        self._api = kfp_server_api.ApiClient(
            configuration, header_name="Authorization", header_value=f"Bearer {credential.token}"
        )
        self.pipelines = kfp_server_api.PipelineServiceApi(self._api)
        self.uploads = kfp_server_api.PipelineUploadServiceApi(self._api)
        self.experiments = kfp_server_api.ExperimentServiceApi(self._api)
        self.runs = kfp_server_api.RunServiceApi(self._api)
        self.recurring = kfp_server_api.RecurringRunServiceApi(self._api)
        self.calls: list[str] = []  # what was asked, for dry runs and tests
        self.attempts = 4
        self.backoff = float(os.environ.get("KFOPS_RETRY_SECONDS") or 1)
        self.sleep: Callable[[float], None] = time.sleep

    def pipeline_by_name(self, name: str) -> Any | None:
        """The pipeline called ``name`` in this environment's namespace, or None."""
        found = self.call(
            "get pipeline",
            self.pipelines.pipeline_service_get_pipeline_by_name,
            name=name,
            **self.namespaced(),
            missing_ok=True,
        )
        if found is not None and self.namespace and (found.namespace or "") != self.namespace:
            return None  # single-user servers ignore the namespace: never take another's
        return found

    def create_pipeline(self, name: str, description: str) -> Any:
        import kfp_server_api

        body = kfp_server_api.V2beta1Pipeline(
            name=name, display_name=name, description=description, **self.namespaced()
        )
        return self.call(
            "create pipeline",
            self.pipelines.pipeline_service_create_pipeline,
            body,
            retry=False,
            recover=lambda: self.pipeline_by_name(name),
        )

    def version_by_name(self, pipeline_id: str, name: str) -> Any | None:
        """The version called ``name`` of the pipeline, or None (one filtered listing)."""
        predicate = {"key": "name", "operation": "EQUALS", "string_value": name}
        answer = self.call(
            "list pipeline versions",
            self.pipelines.pipeline_service_list_pipeline_versions,
            pipeline_id,
            filter=json.dumps({"predicates": [predicate]}),
            page_size=1,
        )
        versions = [v for v in (answer.pipeline_versions or []) if v.name == name]
        return versions[0] if versions else None

    def upload_version(self, pipeline_id: str, name: str, description: str, package: Path) -> Any:
        return self.call(
            "upload pipeline version",
            self.uploads.upload_pipeline_version,
            str(package),
            name=name,
            display_name=name,
            pipelineid=pipeline_id,
            description=description,
            retry=False,
            recover=lambda: self.version_by_name(pipeline_id, name),
        )

    def pipeline_url(self, pipeline_id: str, version_id: str | None = None) -> str:
        """The pipeline (or version) in the KFP UI."""
        base = self.host.removesuffix("/pipeline")
        link = f"{base}/pipeline/#/pipelines/details/{pipeline_id}"
        return f"{link}/version/{version_id}" if version_id else link

    def run_url(self, run_id: str) -> str:
        """The run in the KFP UI."""
        return f"{self.host.removesuffix('/pipeline')}/pipeline/#/runs/details/{run_id}"

    def namespaced(self) -> dict[str, Any]:
        return {"namespace": self.namespace} if self.namespace else {}

    def call(
        self,
        what: str,
        method: Any,
        *args: Any,
        missing_ok: bool = False,
        retry: bool = True,
        recover: Callable[[], Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """``method(*args, **kwargs)``, its failures as messages that say what to do.

        ``retry``: 429, 5xx and connection failures are tried again with backoff (reads,
        and writes that are safe to repeat). A create is not: give ``recover``, which
        looks the object up by name after a failure; what it finds (made by a request
        whose answer was lost) is the answer, and only when it finds nothing is the
        create sent again. So a retry never makes a duplicate.
        """
        import kfp_server_api
        import urllib3

        attempts = self.attempts if retry or recover is not None else 1
        for attempt in range(1, attempts + 1):
            self.calls.append(what)
            try:
                return method(*args, **kwargs)
            except kfp_server_api.ApiException as exc:
                if exc.status == 404 and missing_ok:
                    return None
                if exc.status == 409:
                    raise AlreadyExists(what) from None
                if not (exc.status == 429 or exc.status >= 500) or attempt == attempts:
                    raise self._error(what, exc.status, _message(exc)) from None
            except urllib3.exceptions.HTTPError as exc:
                if attempt == attempts:
                    raise KfopsError(
                        f"cannot reach Kubeflow Pipelines at {self.host} (environment"
                        f" `{self.environment}`): {type(exc).__name__}",
                        "check `kfp.host` in mlops.yaml and that the server is up;"
                        " nothing was changed by this request",
                    ) from None
            self.sleep(self.backoff * 2 ** (attempt - 1))
            if recover is not None:
                found = recover()
                if found is not None:
                    return found
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def _error(self, what: str, status: int, message: str) -> KfopsError:
        if status in (401, 403):
            verb = "refused the token" if status == 401 else "denied access"
            return KfopsError(
                f"Kubeflow Pipelines at {self.host} {verb} (HTTP {status}) for environment"
                f" `{self.environment}`, {what}; credential: {self.credential_source}",
                "check that the token is valid and may use namespace"
                f" `{self.namespace or 'the default'}`; nothing was changed",
            )
        return KfopsError(
            f"Kubeflow Pipelines at {self.host} answered HTTP {status} to {what}: {message}",
            "see the server's message above",
        )


class AlreadyExists(KfopsError):
    """A 409: something with that name is already there (e.g. a concurrent apply)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what}: already exists")


def _message(exc: Any) -> str:
    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)


def connect(environment: Environment, env: Mapping[str, str] | None = None) -> Kfp:
    """The KFP API of ``environment``.

    Raises:
        KfopsError: the environment has no ``kfp:``, or no credential can be found.
    """
    if environment.kfp is None:
        raise KfopsError(
            f"environment `{environment.name}` has no `kfp:`, so there is no Kubeflow"
            " Pipelines to deliver to",
            f"add `kfp: {{host: https://..., token_env: KFP_TOKEN}}` under"
            f" environments.{environment.name}",
        )
    return Kfp(environment, credential_for(environment, os.environ if env is None else env))
