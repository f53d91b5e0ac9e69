"""The per-worker recorder: cheap on the request path, flushed into prometheus-client.

The request path only adds numbers to plain per-worker dictionaries (a few microseconds); a
background thread flushes them every ``SOFTSERVE_METRICS_FLUSH_SECONDS`` into prometheus-client
(prometheus.py), which, under gunicorn, writes its multiprocess files so that ``/metrics`` and
the V2 statistics sum every worker. Writing each update straight to those memory-mapped files
would cost about 35 µs per request — a quarter of a single-row prediction.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from serving.telemetry.prometheus import Figures, PrometheusBridge
from serving.telemetry.record import RequestRecord

_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})


class Telemetry:
    """Per-worker recorder of requests, inferences and model loads."""

    def __init__(self, flush_seconds: float = 1.0) -> None:
        self.flush_seconds = flush_seconds
        self.prometheus = PrometheusBridge()
        self._in_flight = 0
        self._pending = Figures()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # More figures to hand over at each flush (drift counts, prediction-log counts).
        self._sources: list[Callable[[PrometheusBridge], None]] = []

    def add_source(self, source: Callable[[PrometheusBridge], None]) -> None:
        """Call ``source(bridge)`` at every flush (in the flush thread, and at close), to add
        figures kept elsewhere. What it raises is the flush's."""
        self._sources.append(source)

    @property
    def registry(self) -> CollectorRegistry:
        """This worker's metrics, as flushed so far."""
        return self.prometheus.registry

    # --- recording (request path: plain dictionaries under one lock) --------------------------

    def request_started(self) -> None:
        with self._lock:
            self._in_flight += 1

    def request_finished(self, record: RequestRecord) -> None:
        route, name, version = record.route, record.model or "", record.version or ""
        method = record.method if record.method in _METHODS else "other"
        seconds = record.seconds
        p = self._pending
        with self._lock:
            self._in_flight -= 1
            key = (route, method, name, version, str(record.status))
            p.requests[key] = p.requests.get(key, 0) + 1
            p.latency.observe((route,), seconds)
            p.request_size.observe((route,), record.request_bytes)
            p.response_size.observe((route,), record.response_bytes)
            if record.model is None:
                return
            outcome = "success" if record.status < 400 else "fail"
            entry = p.model_requests.setdefault((name, version, outcome), [0, 0.0])
            entry[0] += 1
            entry[1] += seconds
            p.model_latency.observe((name, version), seconds)
            if record.target is not None:
                routed = (name, version, record.target)
                p.routed[routed] = p.routed.get(routed, 0) + 1
            if record.rows is not None:
                model = (name, version)
                p.rows[model] = p.rows.get(model, 0) + record.rows
                p.inference.observe(model, record.infer_seconds)
                for stage, value in (("decode", record.decode_seconds),
                                     ("infer", record.infer_seconds),
                                     ("encode", record.encode_seconds)):
                    stage_key = (name, version, stage)
                    p.stages[stage_key] = p.stages.get(stage_key, 0.0) + value
                p.last_inference[model] = time.time()

    def shadow_compared(self, model: str, primary: str, shadow: str, rows: int, agreed: int,
                        max_diff: float, seconds: float, ok: bool) -> None:
        """One answer replayed on a shadow version: rows compared, rows whose class agreed,
        the largest probability difference, its run time; ``ok`` False when it failed."""
        labels = (model, primary, shadow)
        p = self._pending
        with self._lock:
            outcome = (*labels, "success" if ok else "fail")
            p.shadow_requests[outcome] = p.shadow_requests.get(outcome, 0) + 1
            if not ok:
                return
            entry = p.shadow_rows.setdefault(labels, [0, 0])
            entry[0] += rows
            entry[1] += agreed
            p.shadow_max_diff[labels] = max(p.shadow_max_diff.get(labels, 0.0), max_diff)
            p.shadow_seconds.observe(labels, seconds)

    def model_loaded(self, name: str, version: int, ok: bool) -> None:
        self.prometheus.model_loaded(name, version, ok)

    def versions_loaded(self, counts: dict[str, int]) -> None:
        self.prometheus.versions_loaded(counts)

    # --- flushing -------------------------------------------------------------------------------

    def flush(self) -> None:
        """Move what was recorded into prometheus-client (its files, under gunicorn).
        Raises what prometheus-client raises writing its files."""
        with self._flush_lock:
            with self._lock:
                figures, self._pending = self._pending, Figures()
                in_flight = self._in_flight
            self.prometheus.add(figures, in_flight)
            for source in self._sources:
                source(self.prometheus)

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

    def every_worker(self) -> CollectorRegistry:
        """Every worker's metrics, this worker's pending figures flushed first (the others' as
        of their last flush). Raises what prometheus-client raises reading its files."""
        self.flush()
        return self.prometheus.every_worker()

    def exposition(self) -> bytes:
        """The Prometheus text format of ``every_worker()``. Raises as ``every_worker()``."""
        self.flush()
        return self.prometheus.exposition()
