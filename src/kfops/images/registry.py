"""OCI registries: a manifest lookup (HEAD), with the registry's token or basic auth.

kfops asks a registry one question: which digest does this tag point to, if any. That
is enough to skip builds that are already pushed, to pin a base image and to write
``repo@sha256:...`` into the compiled pipeline. Credentials come from the engine's own
login (``docker login`` writes ``~/.docker/config.json``; credential helpers are asked
the way the engine asks them); they are never printed.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfops.errors import KfopsError

# Without every one of these, a multi-platform image or one carrying provenance reads
# as missing (the registry answers 404 for a media type it cannot serve).
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
DOCKER_HUB = "registry-1.docker.io"
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Reference:
    """An image reference split the way registries see it."""

    host: str
    repository: str
    reference: str  # a tag or sha256:...

    @classmethod
    def parse(cls, ref: str) -> Reference:
        name, at, digest = ref.partition("@")
        tag = ""
        last = name.rsplit("/", 1)[-1]
        if ":" in last:
            name, tag = name[: len(name) - len(last)] + last.split(":", 1)[0], last.split(":")[1]
        first, _, rest = name.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            host, repository = first, rest
        else:
            host, repository = DOCKER_HUB, name if rest else f"library/{name}"
        return cls(host, repository, digest if at else (tag or "latest"))

    @property
    def display_host(self) -> str:
        return "Docker Hub" if self.host == DOCKER_HUB else self.host


@dataclass(frozen=True)
class Credentials:
    username: str
    secret: str
    source: str  # where they came from, for messages; never the secret itself


def credentials_for(host: str) -> Credentials | None:
    """The engine's login for ``host``: config.json ``auths``, or a credential helper."""
    folder = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    config_file = folder / "config.json"
    try:
        config: dict[str, Any] = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    keys = [host, f"https://{host}", f"http://{host}"]
    if host == DOCKER_HUB:
        keys += ["https://index.docker.io/v1/", "docker.io", "index.docker.io"]
    helpers: dict[str, str] = config.get("credHelpers") or {}
    # The engine's own order: a helper for this host, then auths, then the store.
    helper = next((helpers[k] for k in keys if k in helpers), None)
    if helper:
        return _from_helper(helper, host)
    for key in keys:
        entry = config.get("auths", {}).get(key)
        if isinstance(entry, dict) and entry.get("auth"):
            try:
                user, _, secret = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                continue
            return Credentials(user, secret, f"{config_file} (auths.{key})")
    store = config.get("credsStore")
    return _from_helper(store, host) if isinstance(store, str) and store else None


def _from_helper(helper: str, host: str) -> Credentials | None:
    """Ask ``docker-credential-HELPER`` for ``host``'s login, as the engine does."""
    try:
        answer = subprocess.run(
            [f"docker-credential-{helper}", "get"],
            input=host if host != DOCKER_HUB else "https://index.docker.io/v1/",
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        found = json.loads(answer.stdout)
        return Credentials(
            found["Username"], found["Secret"], f"credential helper docker-credential-{helper}"
        )
    except (OSError, subprocess.SubprocessError, ValueError, KeyError):
        return None


class Registry:
    """Manifest lookups against any OCI distribution registry."""

    def __init__(self, timeout: float = 15.0) -> None:
        import requests

        self._session = requests.Session()
        self._timeout = timeout
        self._tokens: dict[tuple[str, str], str] = {}
        self.requests = 0  # counted for benchmarks and tests

    def digest(self, ref: str) -> str | None:
        """The digest that ``ref`` points to, or None when the registry has no such tag.

        Raises:
            KfopsError: the registry cannot be reached, or refuses the credentials.
        """
        parsed = Reference.parse(ref)
        url = f"{_scheme(parsed.host)}://{parsed.host}/v2/{parsed.repository}/manifests/{parsed.reference}"
        response = self._request(parsed, url)
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise _refused(parsed, response.status_code, self._credential_source(parsed))
        digest = response.headers.get("Docker-Content-Digest")
        if not digest:
            raise KfopsError(
                f"registry {parsed.display_host} answered for {parsed.repository}:"
                f"{parsed.reference} without a Docker-Content-Digest header",
                "kfops needs an OCI distribution registry (v2 API)",
            )
        return str(digest)

    def _request(self, parsed: Reference, url: str) -> Any:
        import requests

        headers = {"Accept": MANIFEST_TYPES}
        token = self._tokens.get((parsed.host, parsed.repository))
        if token:
            headers["Authorization"] = token
        try:
            self.requests += 1
            response = self._session.head(url, headers=headers, timeout=self._timeout)
            if response.status_code == 401:
                # No token yet, or the one kept has expired (Docker Hub's last 300 s):
                # ask once for a new one.
                token = self._authorize(parsed, response.headers.get("WWW-Authenticate", ""))
                if token:
                    self._tokens[(parsed.host, parsed.repository)] = token
                    headers["Authorization"] = token
                    self.requests += 1
                    response = self._session.head(url, headers=headers, timeout=self._timeout)
        except requests.exceptions.SSLError:
            raise KfopsError(
                f"registry {parsed.display_host} does not speak HTTPS (or its certificate is"
                " not trusted here)",
                "kfops speaks plain HTTP only to registries on 127.0.0.1 and localhost; give"
                " the registry a certificate, or add its CA to this machine's trust store",
            ) from None
        except requests.RequestException as exc:
            raise KfopsError(
                f"cannot reach registry {parsed.display_host} ({_scheme(parsed.host)}://"
                f"{parsed.host}): {_reason(exc)}",
                "check the registry's address (environments.NAME.registry, or the image"
                " name) and that it is up; nothing was built or pushed",
            ) from None
        return response

    def _authorize(self, parsed: Reference, challenge: str) -> str | None:
        """An Authorization header for the registry's challenge (Bearer or Basic)."""

        creds = credentials_for(parsed.host)
        scheme, _, rest = challenge.partition(" ")
        if scheme.lower() == "basic":
            if creds is None:
                return None
            pair = f"{creds.username}:{creds.secret}".encode()
            return "Basic " + base64.b64encode(pair).decode()
        if scheme.lower() != "bearer":
            return None
        fields = dict(_CHALLENGE.findall(rest))
        if "realm" not in fields:
            return None
        params = {"service": fields.get("service", parsed.host)}
        params["scope"] = fields.get("scope") or f"repository:{parsed.repository}:pull"
        auth = (creds.username, creds.secret) if creds else None
        self.requests += 1
        answer = self._session.get(fields["realm"], params=params, auth=auth, timeout=self._timeout)
        if answer.status_code >= 400:
            raise _refused(parsed, answer.status_code, self._credential_source(parsed))
        body = answer.json()
        token = body.get("token") or body.get("access_token")
        return f"Bearer {token}" if token else None

    @staticmethod
    def _credential_source(parsed: Reference) -> str:
        creds = credentials_for(parsed.host)
        return creds.source if creds else "none (anonymous)"


def _refused(parsed: Reference, status: int, source: str) -> KfopsError:
    if status == 401:
        what = "needs a login" if source.startswith("none") else "refused the credentials"
    else:
        what = "denied access"
    return KfopsError(
        f"registry {parsed.display_host} {what} for {parsed.repository} (HTTP {status});"
        f" credentials: {source}",
        f"log in with `docker login {parsed.host}` (in GitHub Actions: the action's"
        " registry inputs), with a token that may read and push this repository",
    )


def _scheme(host: str) -> str:
    # Registries on this machine speak plain HTTP, as the engine itself assumes.
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    loopback = name in ("localhost", "[::1]") or name.startswith("127.")
    return "http" if loopback else "https"


def _reason(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out"):
        if marker in text:
            return marker.lower()
    return type(exc).__name__
