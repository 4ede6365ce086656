"""The Kubernetes API of one environment, through the ``kubernetes`` client.

A small class with the calls a release needs: read, server-side apply (field manager
``kfops``, dry run for ``kfops plan``) and status of InferenceServices, the release record
(a ConfigMap kfops owns), and the cluster's default deployment mode. Credentials come from
the kubeconfig (KUBECONFIG, or ~/.kube/config, optionally a named context), else the pod's
ServiceAccount. Every failure names the API server, the credential source and what was left
as it was; a token is never printed.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kfops.errors import KfopsError
from kfops.project.model import Environment
from kfops.serving import render

IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
# KServe's cluster-wide settings: `deploy.defaultDeploymentMode` says which mode an
# InferenceService without the annotation gets.
KSERVE_CONFIG = ("kserve", "inferenceservice-config")


class Conflict(KfopsError):
    """A server-side apply found fields another manager owns (HTTP 409)."""

    def __init__(self, message: str, hint: str, managers: tuple[str, ...]) -> None:
        super().__init__(message, hint)
        self.managers = managers


class Rejected(KfopsError):
    """The API server refused the object (HTTP 422 or 400): its message, and the field."""

    def __init__(self, message: str, hint: str, fields: tuple[str, ...]) -> None:
        super().__init__(message, hint)
        self.fields = fields


@dataclass(frozen=True)
class Where:
    server: str
    source: str  # for messages: "kubeconfig /path (context c)", "in-cluster ServiceAccount"
    namespace: str
    environment: str


class Kube:
    """InferenceServices and release records in one environment's namespace."""

    def __init__(self, environment: Environment, env: dict[str, str] | None = None) -> None:
        from kubernetes import client, config

        target = environment.kubernetes
        assert target is not None
        environ = dict(os.environ if env is None else env)
        configuration = client.Configuration()
        kubeconfig = environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
        first = kubeconfig.split(os.pathsep)[0]
        if Path(first).is_file():
            try:
                config.load_kube_config(
                    config_file=first,
                    context=target.context,
                    client_configuration=configuration,
                    persist_config=False,
                )
            except (config.ConfigException, ValueError, KeyError, TypeError) as exc:
                raise KfopsError(
                    f"environment `{environment.name}`: cannot use the kubeconfig {first}"
                    + (f" (context `{target.context}`)" if target.context else "")
                    + f": {exc}",
                    "check KUBECONFIG and `kubernetes.context` in mlops.yaml"
                    " (`kubectl config get-contexts` lists the contexts)",
                ) from None
            source = f"kubeconfig {first}" + (
                f" (context {target.context})" if target.context else ""
            )
        elif IN_CLUSTER_TOKEN.is_file():
            config.load_incluster_config(client_configuration=configuration)
            source = "the pod's ServiceAccount"
        else:
            raise KfopsError(
                f"environment `{environment.name}`: no kubeconfig at {first} and not"
                " running in a cluster",
                "set KUBECONFIG to a kubeconfig for the cluster (in GitHub Actions, write it"
                " from a secret), or run kfops inside the cluster",
            )
        configuration.retries = 0
        self.where = Where(
            server=configuration.host,
            source=source,
            namespace=target.namespace,
            environment=environment.name,
        )
        self.api = client.ApiClient(configuration)
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)
        self.calls: list[str] = []

    # -- InferenceServices ------------------------------------------------------------

    def get(self, name: str) -> dict[str, Any] | None:
        """The InferenceService called ``name``, or None."""
        found: dict[str, Any] | None = self._call(
            f"get inferenceservices/{name}",
            lambda: self.custom.get_namespaced_custom_object(
                render.GROUP, render.VERSION, self.where.namespace, render.PLURAL, name
            ),
            missing_ok=True,
        )
        return found

    def apply(
        self, obj: dict[str, Any], *, dry_run: bool = False, force: bool = False
    ) -> dict[str, Any]:
        """Server-side apply of ``obj`` as field manager ``kfops``; what the server keeps.

        Raises:
            Conflict: another field manager owns a field ``obj`` sets (unless ``force``).
            Rejected: the API server refused the object (422), with its message.
        """
        name = obj["metadata"]["name"]
        if "logger" in ((obj.get("spec") or {}).get("predictor") or {}):
            self._own_logger(obj)
        # The client's custom-object patch always sends a merge patch: server-side apply
        # needs its own content type, so the call is made one level down.
        query: list[tuple[str, str]] = [("fieldManager", render.FIELD_MANAGER)]
        if force:
            query.append(("force", "true"))
        if dry_run:
            query.append(("dryRun", "All"))
        path = (
            f"/apis/{render.GROUP}/{render.VERSION}/namespaces/{self.where.namespace}"
            f"/{render.PLURAL}/{name}"
        )
        applied: dict[str, Any] = self._call(
            f"apply inferenceservices/{name}" + (" (dry run)" if dry_run else ""),
            lambda: self.api.call_api(
                path,
                "PATCH",
                query_params=query,
                header_params={
                    "Content-Type": "application/apply-patch+yaml",
                    "Accept": "application/json",
                },
                body=obj,
                response_type="object",
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
            ),
        )
        return applied

    def _own_logger(self, obj: dict[str, Any]) -> None:
        """Refuse to apply a logger over one another field manager wrote: kfops never
        fights over ``spec.predictor.logger``, whatever ``force`` says."""
        name = obj["metadata"]["name"]
        live = self.get(name)
        owners = foreign_logger_owners(live) if live is not None else {}
        if not owners:
            return
        at = obj.marks.get(render.LOGGER, "") if isinstance(obj, render.Manifest) else ""
        who = "; ".join(
            f"`{manager}` ({', '.join(fields)})" for manager, fields in sorted(owners.items())
        )
        raise Conflict(
            f"mlops.yaml{':' + at if at else ''}: serving.logger: InferenceService `{name}`"
            f" in namespace `{self.where.namespace}` ({self.where.server}) has a"
            f" spec.predictor.logger written by {who}, not by kfops; kfops does not take"
            " over a logger it did not write",
            "remove `serving.logger` from mlops.yaml to leave that logger as it is, or"
            f" remove it (`kubectl patch inferenceservice {name} -n {self.where.namespace}"
            ' --type=json -p \'[{"op": "remove", "path": "/spec/predictor/logger"}]\'`)'
            " and deploy again; nothing was changed",
            tuple(sorted(owners)),
        )

    # -- the release record -----------------------------------------------------------

    def record(self, name: str) -> tuple[list[dict[str, Any]], str | None]:
        """The releases kfops made of ``name``, oldest first, and the record's
        resourceVersion (None: no record yet)."""
        found = self._call(
            f"get configmaps/{record_name(name)}",
            lambda: self.core.read_namespaced_config_map(record_name(name), self.where.namespace),
            missing_ok=True,
        )
        if found is None:
            return [], None
        labels = found.metadata.labels or {}
        if labels.get(render.MANAGED_BY) != render.FIELD_MANAGER:
            raise KfopsError(
                f"ConfigMap `{record_name(name)}` in namespace `{self.where.namespace}`"
                f" ({self.where.server}) was not created by kfops, and kfops keeps its"
                " release record there",
                "kfops never changes what it did not create: rename or delete that ConfigMap;"
                " nothing was changed",
            )
        try:
            releases = json.loads((found.data or {}).get("releases.json") or "[]")
        except ValueError:
            releases = []
        return (releases if isinstance(releases, list) else []), found.metadata.resource_version

    def write_record(
        self, name: str, project: str, releases: list[dict[str, Any]], version: str | None
    ) -> None:
        """Replace the record; ``version`` makes a concurrent change a 409 (``Conflict``)."""
        from kubernetes import client

        body = client.V1ConfigMap(
            metadata=client.V1ObjectMeta(
                name=record_name(name),
                namespace=self.where.namespace,
                labels={render.MANAGED_BY: render.FIELD_MANAGER, render.PROJECT: project},
                resource_version=version,
            ),
            data={"releases.json": json.dumps(releases, indent=1, sort_keys=True)},
        )
        if version is None:
            self._call(
                f"create configmaps/{record_name(name)}",
                lambda: self.core.create_namespaced_config_map(self.where.namespace, body),
            )
        else:
            self._call(
                f"replace configmaps/{record_name(name)}",
                lambda: self.core.replace_namespaced_config_map(
                    record_name(name), self.where.namespace, body
                ),
            )

    def default_mode(self) -> str | None:
        """The cluster's default deployment mode, or None when it cannot be read."""
        namespace, name = KSERVE_CONFIG
        try:
            found = self.core.read_namespaced_config_map(name, namespace)
        except Exception:  # absent or not readable: the caller decides
            return None
        try:
            deploy = json.loads((found.data or {}).get("deploy") or "{}")
        except ValueError:
            return None
        mode = deploy.get("defaultDeploymentMode") if isinstance(deploy, dict) else None
        return render.MODE_NAMES.get(mode) if isinstance(mode, str) else None

    # -- errors -----------------------------------------------------------------------

    def _call(self, what: str, method: Any, *, missing_ok: bool = False) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        self.calls.append(what)
        try:
            return method()
        except ApiException as exc:
            if exc.status == 404 and missing_ok:
                return None
            raise self._error(what, exc) from None
        except HTTPError as exc:
            raise KfopsError(
                f"cannot reach the Kubernetes API server {self.where.server} (environment"
                f" `{self.where.environment}`, {self.where.source}): {type(exc).__name__}",
                "check the kubeconfig's server and that the cluster is up; nothing was"
                " changed by this request",
            ) from None

    def _error(self, what: str, exc: Any) -> KfopsError:
        status = int(exc.status or 0)
        body = _status_body(exc)
        message = str(body.get("message") or exc.reason or "")
        at = f"{self.where.server} (environment `{self.where.environment}`, {self.where.source})"
        if status == 401:
            return KfopsError(
                f"the Kubernetes API server {at} refused the credentials (HTTP 401) to {what}",
                "renew the kubeconfig's token; nothing was changed",
            )
        if status == 403:
            return KfopsError(
                f"the Kubernetes API server {at} denied {what} in namespace"
                f" `{self.where.namespace}` (HTTP 403): {message}",
                "grant the identity above that verb on that resource in the namespace"
                " (a Role and RoleBinding); nothing was changed",
            )
        if status == 409:
            managers = _managers(message)
            owner = ", ".join(f"`{m}`" for m in managers) or "another client"
            return Conflict(
                f"{what}: fields kfops sets were changed by {owner} (HTTP 409): {message}",
                "kfops never overwrites what it did not write: undo that change, or take the"
                " fields over with `kfops deploy --force-conflicts`",
                managers,
            )
        if status in (400, 422) or "field not declared in schema" in message:
            # Server-side apply refuses a field the CRD's schema lacks (an older KServe).
            causes = (body.get("details") or {}).get("causes") or []
            fields = tuple(str(c.get("field")) for c in causes if c.get("field"))
            fields += tuple(re.findall(r"(\.[\w.]+): field not declared in schema", message))
            return Rejected(
                f"the Kubernetes API server {at} rejected {what} (HTTP {status}): {message}",
                "fix the value in mlops.yaml's `serving:` section; nothing was changed",
                fields,
            )
        return KfopsError(
            f"the Kubernetes API server {at} answered HTTP {status} to {what}: {message}",
            "see the server's message above",
        )


def foreign_logger_owners(live: dict[str, Any]) -> dict[str, list[str]]:
    """The field managers other than kfops that own fields of ``spec.predictor.logger``
    in ``live`` (from its managedFields), with those fields."""
    found: dict[str, list[str]] = {}
    for entry in (live.get("metadata") or {}).get("managedFields") or []:
        manager = str(entry.get("manager") or "")
        if manager == render.FIELD_MANAGER:
            continue
        fields = ((entry.get("fieldsV1") or {}).get("f:spec") or {}).get("f:predictor") or {}
        logger = fields.get("f:logger")
        if logger is None:
            continue
        names = sorted(k[2:] for k in logger if k.startswith("f:")) or ["logger"]
        found.setdefault(manager or "an unnamed manager", []).extend(names)
    return found


def record_name(name: str) -> str:
    """The ConfigMap that keeps the releases of InferenceService ``name``."""
    return f"{name}-kfops-releases"


def _status_body(exc: Any) -> dict[str, Any]:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        try:
            body = yaml.safe_load(exc.body or "") or {}
        except yaml.YAMLError:
            return {}
    return body if isinstance(body, dict) else {}


def _managers(message: str) -> tuple[str, ...]:
    """The field managers a server-side apply conflict names: `conflict with "kubectl"`."""
    found: list[str] = []
    marker = 'conflict with "'
    start = message.find(marker)
    while start >= 0:
        end = message.find('"', start + len(marker))
        if end < 0:
            break
        manager = message[start + len(marker) : end]
        if manager not in found:
            found.append(manager)
        start = message.find(marker, end)
    return tuple(found)
