"""Metrics, V2 statistics and the access log.

The request path only adds numbers to plain per-worker dictionaries (a few microseconds); a
background thread flushes them every ``SOFTSERVE_METRICS_FLUSH_SECONDS`` into prometheus-client,
which, under gunicorn, writes its multiprocess files so that ``/metrics`` and the V2 statistics
sum every worker. Writing each update straight to those memory-mapped files would cost about
35 µs per request — a quarter of a single-row prediction.

Under gunicorn, ``serving/gunicorn.conf.py`` sets ``PROMETHEUS_MULTIPROC_DIR`` before anything
imports prometheus-client, cleans it at start and marks dead workers (their live gauges go).
Without it (a test client, ``flask run``) the same metrics live in this process only.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0)
INFERENCE_BUCKETS = (0.00002, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                     0.025, 0.05, 0.1, 0.25, 1.0)
SIZE_BUCKETS = (64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
                16777216.0)
UNMATCHED = "<unmatched>"
_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})

# Keys a route leaves in the WSGI environ for the middleware to account.
MODEL_KEY = "softserve.model"  # (name, version) once a route resolved the model
INFERENCE_KEY = "softserve.inference"  # (rows, decode_s, infer_s, encode_s) after a success
REQUEST_KEY = "softserve.request"  # the Flask request, to name the matched route
ROUTE_KEY = "softserve.route"  # the route, when the fast path answered without Flask


class _Histograms:
    """Pending histogram observations: per label tuple, bucket counts and a sum."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.data: dict[tuple[str, ...], list[Any]] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        entry = self.data.get(labels)
        if entry is None:
            entry = self.data[labels] = [[0] * (len(self.bounds) + 1), 0.0]
        entry[0][bisect.bisect_left(self.bounds, value)] += 1
        entry[1] += value


class _Pending:
    """Everything recorded since the last flush."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, ...], int] = {}
        self.latency = _Histograms(LATENCY_BUCKETS)
        self.request_size = _Histograms(SIZE_BUCKETS)
        self.response_size = _Histograms(SIZE_BUCKETS)
        self.inference = _Histograms(INFERENCE_BUCKETS)
        self.rows: dict[tuple[str, ...], int] = {}
        self.model_requests: dict[tuple[str, ...], list[float]] = {}  # count, seconds
        self.stages: dict[tuple[str, ...], float] = {}  # (model, version, stage): seconds
        self.last_inference: dict[tuple[str, ...], float] = {}


def _add(table: dict[tuple[str, ...], int], key: tuple[str, ...], n: int = 1) -> None:
    table[key] = table.get(key, 0) + n


class Telemetry:
    """Per-worker recorder of requests, inferences and model loads."""

    def __init__(self, flush_seconds: float = 1.0) -> None:
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        self.flush_seconds = flush_seconds
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("softserve_requests", "HTTP requests answered.",
                                ["route", "method", "model", "version", "code"], registry=r)
        self.latency = Histogram("softserve_request_duration_seconds",
                                 "Time from receiving a request to its response body.",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.request_size = Histogram("softserve_request_size_bytes", "Request body sizes.",
                                      ["route"], buckets=SIZE_BUCKETS, registry=r)
        self.response_size = Histogram("softserve_response_size_bytes", "Response body sizes.",
                                       ["route"], buckets=SIZE_BUCKETS, registry=r)
        self.inference = Histogram("softserve_inference_duration_seconds",
                                   "onnxruntime run time per request.", ["model", "version"],
                                   buckets=INFERENCE_BUCKETS, registry=r)
        self.rows = Counter("softserve_predicted_rows", "Rows predicted.", ["model", "version"],
                            registry=r)
        self.model_requests = Counter(
            "softserve_model_requests", "Inference requests that reached a model, by outcome.",
            ["model", "version", "outcome"], registry=r)
        self.model_request_seconds = Counter(
            "softserve_model_request_seconds",
            "Time spent on inference requests that reached a model, by outcome.",
            ["model", "version", "outcome"], registry=r)
        self.stage_seconds = Counter(
            "softserve_inference_stage_seconds",
            "Time per inference stage (decode the request, run the model, encode the answer).",
            ["model", "version", "stage"], registry=r)
        self.last_inference = Gauge("softserve_last_inference_timestamp_seconds",
                                    "When the model last answered.", ["model", "version"],
                                    multiprocess_mode="max", registry=r)
        self.loads = Counter("softserve_model_loads", "Model version loads by outcome.",
                             ["model", "version", "outcome"], registry=r)
        self.loaded_versions = Gauge("softserve_loaded_versions", "Versions loaded per model.",
                                     ["model"], multiprocess_mode="livemax", registry=r)
        self.in_flight = Gauge("softserve_in_flight_requests", "Requests being answered.",
                               multiprocess_mode="livesum", registry=r)
        self._in_flight = 0
        self._pending = _Pending()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- recording (request path: plain dictionaries under one lock) --------------------------

    def request_started(self) -> None:
        with self._lock:
            self._in_flight += 1

    def request_finished(self, route: str, method: str, code: int, seconds: float,
                         request_bytes: int, response_bytes: int,
                         model: tuple[str, str] | None,
                         inference: tuple[int, float, float, float] | None) -> None:
        name, version = model or ("", "")
        p = self._pending
        with self._lock:
            self._in_flight -= 1
            _add(p.requests, (route, method, name, version, str(code)))
            p.latency.observe((route,), seconds)
            p.request_size.observe((route,), request_bytes)
            p.response_size.observe((route,), response_bytes)
            if model is None:
                return
            outcome = "success" if code < 400 else "fail"
            entry = p.model_requests.setdefault((name, version, outcome), [0, 0.0])
            entry[0] += 1
            entry[1] += seconds
            if inference is not None:
                rows, decode_s, infer_s, encode_s = inference
                _add(p.rows, (name, version), rows)
                p.inference.observe((name, version), infer_s)
                for stage, value in (("decode", decode_s), ("infer", infer_s),
                                     ("encode", encode_s)):
                    key = (name, version, stage)
                    p.stages[key] = p.stages.get(key, 0.0) + value
                p.last_inference[(name, version)] = time.time()

    def model_loaded(self, name: str, version: int, ok: bool) -> None:
        self.loads.labels(name, str(version), "success" if ok else "failure").inc()

    def versions_loaded(self, counts: dict[str, int]) -> None:
        for name, count in counts.items():
            self.loaded_versions.labels(name).set(count)

    # --- flushing -------------------------------------------------------------------------------

    def flush(self) -> None:
        """Move what was recorded into prometheus-client (its files, under gunicorn)."""
        with self._flush_lock:
            with self._lock:
                p, self._pending = self._pending, _Pending()
                in_flight = self._in_flight
            self.in_flight.set(in_flight)
            for labels, n in p.requests.items():
                self.requests.labels(*labels).inc(n)
            for labels, n in p.rows.items():
                self.rows.labels(*labels).inc(n)
            for labels, (count, seconds) in p.model_requests.items():
                self.model_requests.labels(*labels).inc(count)
                self.model_request_seconds.labels(*labels).inc(seconds)
            for labels, seconds in p.stages.items():
                self.stage_seconds.labels(*labels).inc(seconds)
            for labels, when in p.last_inference.items():
                self.last_inference.labels(*labels).set(when)
            for metric, pending in ((self.latency, p.latency), (self.inference, p.inference),
                                    (self.request_size, p.request_size),
                                    (self.response_size, p.response_size)):
                for labels, (counts, total) in pending.data.items():
                    # Histogram.observe() per value would cost a file write each; add the
                    # bucket counts instead (prometheus-client keeps per-bucket, not cumulative,
                    # counts, and the sum).
                    child = metric.labels(*labels)
                    child._sum.inc(total)
                    for i, n in enumerate(counts):
                        if n:
                            child._buckets[i].inc(n)

    def start(self) -> None:
        """Flush every ``flush_seconds`` in a daemon thread (one per worker process)."""
        if self._thread is not None or self.flush_seconds <= 0:
            return

        def loop() -> None:
            while not self._stop.wait(self.flush_seconds):
                self.flush()

        self._thread = threading.Thread(target=loop, name="softserve-metrics", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the flush thread (waiting ``timeout`` seconds at most for a flush in progress)
        and flush what is pending, so that an exiting worker loses nothing. Safe to call twice.
        Raises nothing of its own (whatever prometheus-client raises writing its files)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self.flush()

    # --- reading --------------------------------------------------------------------------------

    def _registry(self) -> CollectorRegistry:
        """Every worker's metrics (this worker's pending figures flushed first)."""
        self.flush()
        if not self.multiprocess_dir:
            return self.registry
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)
        return registry

    def exposition(self) -> bytes:
        """The Prometheus text format of every worker's metrics."""
        return generate_latest(self._registry())

    def model_stats(self, wanted: Callable[[str, str], bool],
                    listed: Iterable[tuple[str, str]] = ()) -> list[dict[str, Any]]:
        """Triton's statistics extension, summed over workers, for the (model, version) wanted.

        The versions in ``listed`` appear even without traffic (zeros), as Triton lists every
        loaded version. Sorted by model name, then version number.
        """
        stats: dict[tuple[str, str], dict[str, Any]] = {}

        def entry(name: str, version: str) -> dict[str, Any]:
            if (name, version) not in stats:
                stats[(name, version)] = {
                    "name": name, "version": version, "last_inference": 0,
                    "inference_count": 0, "execution_count": 0,
                    "inference_stats": {k: {"count": 0, "ns": 0} for k in (
                        "success", "fail", "queue", "compute_input", "compute_infer",
                        "compute_output", "cache_hit", "cache_miss")},
                    "batch_stats": []}
            return stats[(name, version)]

        for name, version in listed:
            entry(name, version)
        stage_key = {"decode": "compute_input", "infer": "compute_infer",
                     "encode": "compute_output"}
        for metric in self._registry().collect():
            for s in metric.samples:
                name, version = s.labels.get("model"), s.labels.get("version")
                if name is None or version is None or not name or not wanted(name, version):
                    continue
                if s.name == "softserve_model_requests_total":
                    e = entry(name, version)["inference_stats"][s.labels["outcome"]]
                    e["count"] += int(s.value)
                elif s.name == "softserve_model_request_seconds_total":
                    e = entry(name, version)["inference_stats"][s.labels["outcome"]]
                    e["ns"] += int(s.value * 1e9)
                elif s.name == "softserve_predicted_rows_total":
                    entry(name, version)["inference_count"] += int(s.value)
                elif s.name == "softserve_inference_duration_seconds_count":
                    e = entry(name, version)
                    e["execution_count"] += int(s.value)
                    for stage in stage_key.values():
                        e["inference_stats"][stage]["count"] += int(s.value)
                    # A request is queued nowhere: gunicorn hands it straight to a worker.
                    e["inference_stats"]["queue"]["count"] += int(s.value)
                elif s.name == "softserve_inference_stage_seconds_total":
                    e = entry(name, version)["inference_stats"][stage_key[s.labels["stage"]]]
                    e["ns"] += int(s.value * 1e9)
                elif s.name == "softserve_last_inference_timestamp_seconds":
                    e = entry(name, version)
                    e["last_inference"] = max(e["last_inference"], int(s.value * 1000))
        return [stats[k] for k in sorted(stats, key=lambda k: (k[0], int(k[1])))]


# --- the middleware -------------------------------------------------------------------------


class _Clock:
    """ISO 8601 UTC timestamps with milliseconds, formatting the date-time part once a second
    (datetime.isoformat costs ~2 µs; a log line per request wants it cheaper)."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{int((now - second) * 1000):03d}+00:00"


class _RequestIds:
    """Unique request ids: a random per-process prefix and a counter (uuid4 costs ~2 µs)."""

    def __init__(self) -> None:
        self._fresh_prefix()
        os.register_at_fork(after_in_child=self._fresh_prefix)  # a new prefix in every worker

    def _fresh_prefix(self) -> None:
        self._prefix = uuid.uuid4().hex[:16]
        self._next = itertools.count(1).__next__  # thread-safe in CPython

    def new(self) -> str:
        return f"{self._prefix}{self._next():016x}"


_PIPE_BUF = 4096


def _write_all(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(1, view):]


class ObservedApp:
    """WSGI middleware: request id, timing, metrics and one JSON access-log line per request.

    It wraps the Flask app, so it sees every request, including werkzeug's own errors. Routes
    tell it which model answered through ``environ[MODEL_KEY]``/``environ[INFERENCE_KEY]``.
    """

    def __init__(self, app: Callable[..., Any], telemetry: Telemetry | None,
                 access_log: bool) -> None:
        self.app = app
        self.telemetry = telemetry
        self.access_log = access_log
        self._clock = _Clock()
        self._ids = _RequestIds()
        self._pending: list[bytes] | None = None  # access-log lines not yet written, if buffered

    def buffer_access_log(self) -> Callable[[], None]:
        """Hold access-log lines until the returned function is called, instead of one write(2)
        per request (~10 µs here). softserve's worker calls it before each wait for events, so
        the lines still go out as soon as the worker is idle for an instant."""
        self._pending = []
        return self.flush_access_log

    def flush_access_log(self) -> None:
        pending = self._pending
        if not pending:
            return
        self._pending = []
        # Writes of at most PIPE_BUF bytes, whole lines each: lines of concurrent workers never
        # interleave on a pipe (docker's log driver reads one).
        chunk: list[bytes] = []
        size = 0
        for line in pending:
            if size + len(line) > _PIPE_BUF and chunk:
                _write_all(b"".join(chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        _write_all(b"".join(chunk))

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        started = time.perf_counter()
        request_id = environ.get("HTTP_X_REQUEST_ID", "")
        if not request_id or len(request_id) > 200 or not request_id.isprintable():
            request_id = self._ids.new()
        status_line: list[str] = []

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers.append(("X-Request-ID", request_id))
            status_line.append(status)
            return start_response(status, headers, exc_info)

        telemetry = self.telemetry
        if telemetry is not None:
            telemetry.request_started()
        try:
            body = self.app(environ, start)
            try:
                chunks = list(body)  # our bodies are built whole; this only collects them
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()
        except BaseException:
            # Flask answers every exception itself; this only keeps the gauge honest.
            if telemetry is not None:
                telemetry.request_finished(UNMATCHED, "other", 500, 0.0, 0, 0, None, None)
            raise
        seconds = time.perf_counter() - started
        code = int(status_line[-1][:3]) if status_line else 500
        route = environ.get(ROUTE_KEY)
        if route is None:
            request = environ.pop(REQUEST_KEY, None)  # and break the environ <-> request cycle
            rule = getattr(request, "url_rule", None)
            route = rule.rule if rule is not None else UNMATCHED
        method = environ.get("REQUEST_METHOD", "")
        model = environ.get(MODEL_KEY)
        inference = environ.get(INFERENCE_KEY)
        response_bytes = sum(len(c) for c in chunks)
        if telemetry is not None:
            try:
                request_bytes = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                request_bytes = 0
            telemetry.request_finished(route, method if method in _METHODS else "other", code,
                                       seconds, request_bytes, response_bytes, model, inference)
        if self.access_log:
            record = {"time": self._clock.now(), "level": "INFO", "logger": "softserve.access",
                      "request_id": request_id, "method": method,
                      "path": environ.get("PATH_INFO", ""), "route": route,
                      "model": model[0] if model else None,
                      "version": model[1] if model else None,
                      "rows": inference[0] if inference else None, "status": code,
                      "duration_ms": round(seconds * 1000, 3), "response_bytes": response_bytes,
                      "remote_addr": environ.get("REMOTE_ADDR")}
            line = orjson.dumps(record) + b"\n"
            if self._pending is None:
                # One write(2) per line: lines of concurrent workers never interleave.
                os.write(1, line)
            else:
                self._pending.append(line)
        return chunks


class JsonFormatter(logging.Formatter):
    """Log records as one JSON object a line, with the same keys as the access log."""

    def format(self, record: logging.LogRecord) -> str:
        data = {"time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc)
                .isoformat(timespec="milliseconds"), "level": record.levelname,
                "logger": record.name, "pid": record.process, "message": record.getMessage()}
        for key in ("model", "version", "reason", "path"):
            if hasattr(record, key):
                data[key] = getattr(record, key)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(data).decode()
