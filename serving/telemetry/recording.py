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
from bisect import bisect_left
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from serving.telemetry.prometheus import (INFERENCE_BUCKETS, LATENCY_BUCKETS, SIZE_BUCKETS,
                                          Figures, PrometheusBridge)
from serving.telemetry.record import RequestRecord

_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})

# route, method ("other" for an unknown one), model (None: not resolved), version, status,
# routing target
_SlotKey = tuple[str, str, str | None, str, int, str | None]


class _Slot:
    """What the requests of one set of label values added up to since the last flush."""

    __slots__ = ("requests", "seconds", "latency", "request_bytes", "request_size",
                 "response_bytes", "response_size", "inferences", "rows", "infer_seconds",
                 "inference", "decode_seconds", "encode_seconds", "last_inference")

    def __init__(self) -> None:
        self.requests = 0
        self.seconds = 0.0
        # per bucket, not cumulative; the last one is +Inf
        self.latency = [0] * (len(LATENCY_BUCKETS) + 1)
        self.request_bytes = 0
        self.request_size = [0] * (len(SIZE_BUCKETS) + 1)
        self.response_bytes = 0
        self.response_size = [0] * (len(SIZE_BUCKETS) + 1)
        self.inferences = 0  # requests of these that predicted rows
        self.rows = 0
        self.infer_seconds = 0.0
        self.inference = [0] * (len(INFERENCE_BUCKETS) + 1)
        self.decode_seconds = 0.0
        self.encode_seconds = 0.0
        self.last_inference = 0.0


def _spread(slots: dict[_SlotKey, _Slot], p: Figures) -> None:
    """Add the requests' slots to the figures, metric by metric."""
    for (route, method, model, version, status, target), slot in slots.items():
        name = model or ""
        key = (route, method, name, version, str(status))
        p.requests[key] = p.requests.get(key, 0) + slot.requests
        p.latency.merge((route,), slot.latency, slot.seconds)
        p.request_size.merge((route,), slot.request_size, slot.request_bytes)
        p.response_size.merge((route,), slot.response_size, slot.response_bytes)
        if model is None:
            continue
        outcome = "success" if status < 400 else "fail"
        entry = p.model_requests.setdefault((name, version, outcome), [0, 0.0])
        entry[0] += slot.requests
        entry[1] += slot.seconds
        p.model_latency.merge((name, version), slot.latency, slot.seconds)
        if target is not None:
            routed = (name, version, target)
            p.routed[routed] = p.routed.get(routed, 0) + slot.requests
        if slot.inferences:
            labels = (name, version)
            p.rows[labels] = p.rows.get(labels, 0) + slot.rows
            p.inference.merge(labels, slot.inference, slot.infer_seconds)
            for stage, value in (("decode", slot.decode_seconds),
                                 ("infer", slot.infer_seconds),
                                 ("encode", slot.encode_seconds)):
                stage_key = (name, version, stage)
                p.stages[stage_key] = p.stages.get(stage_key, 0.0) + value
            p.last_inference[labels] = max(p.last_inference.get(labels, 0.0),
                                           slot.last_inference)


class Telemetry:
    """Per-worker recorder of requests, inferences and model loads."""

    def __init__(self, flush_seconds: float = 1.0) -> None:
        self.flush_seconds = flush_seconds
        self.prometheus = PrometheusBridge()
        self._in_flight = 0
        self._pending = Figures()  # shadow runs'
        self._slots: dict[_SlotKey, _Slot] = {}  # requests', spread into Figures at each flush
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
        # One dictionary look-up a request: everything about it is added to the slot of its
        # label values, which ``flush`` spreads over the metrics (a request's latency is both
        # the route's and the model version's; its count both the route's and the model's).
        # Histogram observations into a slot are bucket counts, as PendingHistogram keeps them.
        model = record.model
        seconds, rows = record.seconds, record.rows
        method = record.method if record.method in _METHODS else "other"
        key = (record.route, method, model, record.version or "", record.status, record.target)
        with self._lock:
            self._in_flight -= 1
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = _Slot()
            slot.requests += 1
            slot.seconds += seconds
            slot.latency[bisect_left(LATENCY_BUCKETS, seconds)] += 1
            size = record.request_bytes
            slot.request_bytes += size
            slot.request_size[bisect_left(SIZE_BUCKETS, size)] += 1
            size = record.response_bytes
            slot.response_bytes += size
            slot.response_size[bisect_left(SIZE_BUCKETS, size)] += 1
            if rows is not None and model is not None:
                infer = record.infer_seconds
                slot.inferences += 1
                slot.rows += rows
                slot.infer_seconds += infer
                slot.inference[bisect_left(INFERENCE_BUCKETS, infer)] += 1
                slot.decode_seconds += record.decode_seconds
                slot.encode_seconds += record.encode_seconds
                slot.last_inference = time.time()

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
                slots, self._slots = self._slots, {}
                in_flight = self._in_flight
            _spread(slots, figures)
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
