"""Where KServe's payload logger sends its CloudEvents, and where they are kept.

``kfops monitor sink`` is an HTTP server for the URL in ``spec.predictor.logger.url``.
KServe's logger POSTs one CloudEvent per request (type
``org.kubeflow.serving.inference.request``, sent before the request reaches the model) and
one per answer (``...inference.response``, sent only when the model answered 200), both
with the same ``ce-id``; the extensions ``inferenceservicename``, ``namespace``,
``component`` and ``endpoint`` say where they come from. Binary and structured content
modes are parsed with the ``cloudevents`` library.

Each event is kept as one JSON line (id, type, source, time, inferenceservicename,
namespace, component, endpoint, data) in a segment partitioned by the event's hour:
``STORE/YYYY/MM/DD/HH/<uuid>.jsonl``, so that a window reads only its own hours. A store
is a local folder (lines are appended as they come) or ``s3://bucket/prefix`` (lines are
buffered and written as one new object per hour every ``flush_seconds``, since S3 objects
cannot be appended to).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

from kfops.errors import EXIT_USAGE, KfopsError

REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"
TYPES = (REQUEST, RESPONSE)
EXTENSIONS = ("inferenceservicename", "namespace", "component", "endpoint")
# The fields of a stored line, in order.
FIELDS = ("id", "type", "source", "time", *EXTENSIONS, "data")


class Store(Protocol):
    """Time-partitioned segments of JSON lines."""

    shown: str  # for messages: the folder or s3://bucket/prefix

    def append(self, hour: datetime, line: bytes) -> None:
        """Keep ``line`` (one JSON line, with its newline) in ``hour``'s partition."""

    def flush(self) -> None:
        """Make what was appended readable (a no-op where appending writes at once)."""

    def segments(self, hour: datetime) -> list[str]:
        """The segments of ``hour``'s partition, by key."""

    def read(self, key: str) -> bytes:
        """The bytes of one segment."""


def partition(hour: datetime) -> str:
    """``YYYY/MM/DD/HH`` of ``hour`` (UTC)."""
    return hour.astimezone(timezone.utc).strftime("%Y/%m/%d/%H")


def hours(since: datetime, until: datetime) -> list[datetime]:
    """The hours (UTC, on the hour) that ``[since, until]`` overlaps, oldest first."""
    start = since.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
    end = until.astimezone(timezone.utc)
    found = []
    while start <= end:
        found.append(start)
        start += timedelta(hours=1)
    return found


class LocalStore:
    """Segments as files under a folder; each sink process appends to its own segment."""

    def __init__(self, root: Path, *, create: bool = False) -> None:
        self.root = root
        self.shown = str(root)
        if create:
            try:
                root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise KfopsError(
                    f"log store {root}: cannot create it: {exc.strerror or exc}",
                    "give a folder you can write to (--store DIR or monitoring.drift.logs)",
                ) from None
        elif not root.is_dir():
            raise KfopsError(
                f"log store {root}: no such folder",
                "start `kfops monitor sink` (it creates the folder and keeps the logger's"
                " events there), or correct monitoring.drift.logs",
                EXIT_USAGE,
            )
        self._segment = uuid.uuid4().hex  # this process's segment in each partition
        self._lock = threading.Lock()

    def append(self, hour: datetime, line: bytes) -> None:
        folder = self.root / partition(hour)
        with self._lock:
            folder.mkdir(parents=True, exist_ok=True)
            # One write of one line in append mode: readers never see half a line from a
            # live writer (and skip and count one left by a crash).
            with (folder / f"{self._segment}.jsonl").open("ab") as f:
                f.write(line)

    def flush(self) -> None:
        return None

    def segments(self, hour: datetime) -> list[str]:
        folder = self.root / partition(hour)
        try:
            names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".jsonl"))
        except FileNotFoundError:
            return []
        return [f"{partition(hour)}/{name}" for name in names]

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()


class S3Store:
    """Segments as objects under ``s3://bucket/prefix/``, through boto3.

    boto3 finds the credentials and the endpoint as usual (``AWS_ACCESS_KEY_ID``...,
    ``AWS_ENDPOINT_URL_S3`` for an S3-compatible store such as MinIO).
    """

    def __init__(self, url: str, client: Any = None) -> None:
        rest = url[len("s3://") :]
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise KfopsError(
                f"log store {url}: no bucket", "write it as s3://bucket/prefix", EXIT_USAGE
            )
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.shown = url.rstrip("/")
        if client is None:
            try:
                import boto3
            except ImportError:
                raise KfopsError(
                    f"log store {url} needs boto3, which is not installed",
                    "install kfops with the monitor extra: pip install 'kfops[monitor]'",
                ) from None
            client = boto3.client("s3")
        self.client = client
        self._buffers: dict[str, list[bytes]] = {}
        self._lock = threading.Lock()

    def _key(self, rest: str) -> str:
        return f"{self.prefix}/{rest}" if self.prefix else rest

    def append(self, hour: datetime, line: bytes) -> None:
        with self._lock:
            self._buffers.setdefault(partition(hour), []).append(line)

    def flush(self) -> None:
        with self._lock:
            buffers, self._buffers = self._buffers, {}
        for part, lines in sorted(buffers.items()):
            key = self._key(f"{part}/{uuid.uuid4().hex}.jsonl")
            try:
                self._s3(self.client.put_object, Bucket=self.bucket, Key=key, Body=b"".join(lines))
            except KfopsError:
                # Keep what was not written, for the next flush.
                with self._lock:
                    for later, kept in buffers.items():
                        if later >= part:
                            self._buffers[later] = kept + self._buffers.get(later, [])
                raise

    def segments(self, hour: datetime) -> list[str]:
        prefix = self._key(partition(hour)) + "/"
        keys: list[str] = []
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = self._s3(self.client.list_objects_v2, Bucket=self.bucket, Prefix=prefix, **extra)
            keys += [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".jsonl")]
            if not page.get("IsTruncated"):
                return sorted(keys)
            token = page.get("NextContinuationToken")

    def read(self, key: str) -> bytes:
        found = self._s3(self.client.get_object, Bucket=self.bucket, Key=key)
        body: bytes = self._s3(found["Body"].read)
        return body

    def _s3(self, call: Callable[..., Any], **arguments: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call(**arguments)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise KfopsError(
                f"log store {self.shown}: S3 answered {error.get('Code', '?')}:"
                f" {error.get('Message', exc)}",
                "check the bucket, and the credentials and endpoint boto3 uses"
                " (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL_S3)",
            ) from None
        except BotoCoreError as exc:
            raise KfopsError(
                f"log store {self.shown}: {exc}",
                "check the credentials and endpoint boto3 uses"
                " (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL_S3)",
            ) from None


def read_object(url: str, client: Any = None) -> bytes | None:
    """The bytes of the object at ``s3://bucket/key``, or None when there is none."""
    from botocore.exceptions import ClientError

    store = S3Store(url.rsplit("/", 1)[0], client)
    key = url[len("s3://") :].partition("/")[2]

    def get() -> Any:
        try:
            return store.client.get_object(Bucket=store.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise

    found = store._s3(get)
    if found is None:
        return None
    body: bytes = store._s3(found["Body"].read)
    return body


def write_object(url: str, data: bytes, client: Any = None) -> None:
    """Write ``data`` to ``s3://bucket/key``."""
    store = S3Store(url.rsplit("/", 1)[0], client)
    key = url[len("s3://") :].partition("/")[2]
    store._s3(store.client.put_object, Bucket=store.bucket, Key=key, Body=data)


def open_store(spec: str, *, create: bool = False, client: Any = None) -> Store:
    """The store named by ``spec``: ``s3://bucket/prefix`` or a folder.

    Raises:
        KfopsError: no bucket in an s3:// URL; a folder that is missing (unless ``create``)
            or cannot be created.
    """
    if spec.startswith("s3://"):
        return S3Store(spec, client)
    return LocalStore(Path(spec), create=create)


# ------------------------------------------------------------------ the events


class BadEvent(Exception):
    """Not an inference event of KServe's logger: the reason, for the 400 answer."""


def record(headers: dict[str, str], body: bytes) -> tuple[datetime, dict[str, Any]]:
    """The stored form of one HTTP request from the logger, and the event's time.

    Raises:
        BadEvent: not a CloudEvent, not a KServe inference event, or data that is not JSON.
    """
    from cloudevents.exceptions import GenericException
    from cloudevents.http import from_http

    try:
        event = from_http(headers, body)
    except GenericException as exc:
        raise BadEvent(f"not a CloudEvent: {exc}") from None
    attributes = event.get_attributes()
    kind = attributes.get("type")
    if kind not in TYPES:
        raise BadEvent(f"type {kind!r} is not a KServe inference event ({' or '.join(TYPES)})")
    data = event.get_data()
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            data = json.loads(bytes(data))
        except (ValueError, UnicodeDecodeError):
            raise BadEvent("the data is not JSON (kfops reads V1 and V2 JSON bodies)") from None
    when = _time(attributes.get("time"))
    line: dict[str, Any] = {
        "id": str(attributes.get("id")),
        "type": kind,
        "source": str(attributes.get("source")),
        "time": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),  # compares as text
    }
    for name in EXTENSIONS:
        value = attributes.get(name)
        line[name] = None if value is None else str(value)
    line["data"] = data
    return when, line


def _time(value: Any) -> datetime:
    # The cloudevents library fills in the time of receipt when the event has none.
    text = str(value or "").replace("Z", "+00:00")
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise BadEvent(f"ce-time {value!r} is not an RFC 3339 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)


@dataclass
class Sink:
    """Takes the logger's HTTP requests and keeps their events in ``store``."""

    store: Store
    received: int = 0
    rejected: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def accept(self, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        """The HTTP status and text to answer one request with."""
        try:
            when, line = record(headers, body)
        except BadEvent as exc:
            with self._lock:
                self.rejected += 1
            return 400, str(exc)
        encoded = json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n"
        try:
            self.store.append(when, encoded.encode())
        except OSError as exc:
            return 503, f"cannot keep the event in {self.store.shown}: {exc.strerror or exc}"
        with self._lock:
            self.received += 1
        return 202, "stored"


def serve(
    sink: Sink,
    host: str,
    port: int,
    *,
    flush_seconds: float = 10.0,
    ready: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
    warn: Callable[[str], None] | None = None,
) -> None:
    """Answer the logger's POSTs on ``host:port`` until ``stop`` is set (or Ctrl-C);
    flush the store every ``flush_seconds`` (a failure is passed to ``warn`` and the
    events are kept for the next flush) and on the way out.

    Raises:
        KfopsError: the port cannot be bound; or the last flush failed.
    """
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm
        # and the client's delayed ACK hold every answer on a kept-alive connection ~40 ms.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0:
                status, text = 400, "the request has no valid Content-Length"
                self.close_connection = True
            else:
                body = self.rfile.read(length) if length else b""
                status, text = sink.accept(dict(self.headers.items()), body)
            payload = (text + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            payload = f"kfops monitor sink: {sink.received} events kept\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            return None  # one line a request would drown the ready line

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        raise KfopsError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            "choose another port with --port",
            EXIT_USAGE,
        ) from None
    server.daemon_threads = True
    stop = stop or threading.Event()
    address = f"http://{_url_host(host)}:{server.server_address[1]}"
    worker = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    worker.start()
    try:
        if ready is not None:
            ready(address)
        while not stop.wait(flush_seconds):
            try:
                sink.store.flush()
            except KfopsError as exc:
                if warn is not None:
                    warn(f"{exc.message}; the events are kept and written at the next flush")
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        worker.join()
        server.server_close()
        sink.store.flush()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def read_segments(store: Store, keys: Iterable[str]) -> Iterable[tuple[str, bytes]]:
    """Each segment's bytes by key (a few in parallel: S3 answers each GET slowly)."""
    keys = list(keys)
    if isinstance(store, LocalStore) or len(keys) < 2:
        for key in keys:
            yield key, store.read(key)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        yield from zip(keys, pool.map(store.read, keys), strict=True)
