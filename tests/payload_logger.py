"""An emulator of KServe's payload logger, in front of a real KServe model server.

It follows the contract KServe documents and its agent implements (pkg/logger/handler.go
and worker.go in kserve/kserve): per request one id (the client's ``Ce-Id`` header if
given, else a new UUID); the request is logged as a CloudEvent of type
``org.kubeflow.serving.inference.request`` BEFORE it is proxied to the model; the
response is logged as ``...inference.response`` with the same id ONLY when the model
answered 200; ``mode`` all, request or response says which of the two are logged. Events
carry the extensions ``inferenceservicename``, ``namespace``, ``component`` and
``endpoint``, the request's content type, and are sent in binary content mode as KServe
sends them (structured mode on request, for the sink's other parser).

    with PayloadLogger(model_url, sink_url, mode="all") as proxy:
        httpx.post(f"{proxy.url}/v1/models/iris:predict", json={"instances": [...]})
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent

REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"


class PayloadLogger:
    """A reverse proxy to ``model_url`` that logs to ``sink_url`` as KServe's agent does."""

    def __init__(
        self,
        model_url: str,
        sink_url: str,
        *,
        mode: str = "all",
        service: str = "iris",
        namespace: str = "monitoring",
        component: str = "predictor",
        endpoint: str = "default",
        structured: bool = False,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        assert mode in ("all", "request", "response")
        self.model_url = model_url.rstrip("/")
        self.sink_url = sink_url
        self.mode = mode
        self.extensions = {
            "inferenceservicename": service,
            "namespace": namespace,
            "component": component,
            "endpoint": endpoint,
        }
        self.structured = structured
        self.clock = clock
        self.sent: list[tuple[str, str, int]] = []  # (type, id, the sink's status)
        self.order: list[str] = []  # "log request", "proxy", "log response"
        self._client = httpx.Client(timeout=30)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> PayloadLogger:
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status, headers, answer = emulator._serve(self.path, dict(self.headers), body)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._thread.join()
        self._server.server_close()
        self._client.close()

    def _serve(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        lowered = {k.lower(): v for k, v in headers.items()}
        ident = lowered.get("ce-id") or str(uuid.uuid4())
        content_type = lowered.get("content-type", "application/json")
        if self.mode in ("all", "request"):
            self.order.append("log request")
            self._log(REQUEST, ident, content_type, body)
        self.order.append("proxy")
        answer = self._client.post(
            self.model_url + path, content=body, headers={"Content-Type": content_type}
        )
        if answer.status_code == 200 and self.mode in ("all", "response"):
            self.order.append("log response")
            # KServe logs the response with the request's content type.
            self._log(RESPONSE, ident, content_type, answer.content)
        kept = {"Content-Type": answer.headers.get("content-type", "application/json")}
        return answer.status_code, kept, answer.content

    def _log(self, kind: str, ident: str, content_type: str, body: bytes) -> None:
        # Structured mode carries a JSON body as JSON in the envelope's `data`.
        data: Any = json.loads(body) if self.structured else body
        event = CloudEvent(
            {
                "id": ident,
                "type": kind,
                "source": f"http://localhost:9081/{self.extensions['inferenceservicename']}",
                "specversion": "1.0",
                "time": self.clock().isoformat(),
                "datacontenttype": content_type,
                **self.extensions,
            },
            data,
        )
        headers, payload = to_structured(event) if self.structured else to_binary(event)
        answer = self._client.post(self.sink_url, headers=headers, content=payload)
        self.sent.append((kind, ident, answer.status_code))
