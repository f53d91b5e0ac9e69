"""The bridge into prometheus-client: the metrics softserve exports, and how figures get in.

Under gunicorn, ``serving/gunicorn.conf.py`` sets ``PROMETHEUS_MULTIPROC_DIR`` before anything
imports prometheus-client, cleans it at start and marks dead workers (their live gauges go):
prometheus-client then keeps every value in memory-mapped files, which ``every_worker()`` sums.
Without it (a test client, ``flask run``) the same metrics live in this process only.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Metric, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0)
INFERENCE_BUCKETS = (0.00002, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                     0.025, 0.05, 0.1, 0.25, 1.0)
SIZE_BUCKETS = (64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
                16777216.0)

# Metric names, declared once: the V2 statistics (statistics.py) read these same metrics back.
REQUESTS = "softserve_requests"
LATENCY = "softserve_request_duration_seconds"
REQUEST_SIZE = "softserve_request_size_bytes"
RESPONSE_SIZE = "softserve_response_size_bytes"
INFERENCE = "softserve_inference_duration_seconds"
ROWS = "softserve_predicted_rows"
MODEL_REQUESTS = "softserve_model_requests"
MODEL_REQUEST_SECONDS = "softserve_model_request_seconds"
STAGE_SECONDS = "softserve_inference_stage_seconds"
LAST_INFERENCE = "softserve_last_inference_timestamp_seconds"
LOADS = "softserve_model_loads"
LOADED_VERSIONS = "softserve_loaded_versions"
IN_FLIGHT = "softserve_in_flight_requests"
# Traffic policies (issue 16): per-version latency, the route each unversioned request took,
# and the shadow's comparison with the version that answered.
MODEL_LATENCY = "softserve_model_request_duration_seconds"
ROUTED = "softserve_routed_requests"
SHADOW_REQUESTS = "softserve_shadow_requests"
SHADOW_ROWS = "softserve_shadow_rows"
SHADOW_AGREED = "softserve_shadow_agreed_rows"
SHADOW_MAX_DIFF = "softserve_shadow_max_probability_difference"
SHADOW_SECONDS = "softserve_shadow_duration_seconds"
# Drift (telemetry/drift.py): the per-bin counts are read back at each scrape into a PSI gauge,
# and not shown themselves.
DRIFT_BINS = "softserve_drift_bin_values"
DRIFT_ROWS = "softserve_drift_rows"
DRIFT_OUT_OF_RANGE = "softserve_drift_out_of_range"
# The prediction log and feedback (telemetry/prediction_log.py, routes/feedback.py).
PREDICTION_LOG_RECORDS = "softserve_prediction_log_records"
PREDICTION_LOG_DROPPED = "softserve_prediction_log_dropped"
FEEDBACK = "softserve_feedback"

Labels = tuple[str, ...]


class PendingHistogram:
    """Observations not yet added: per label tuple, the count per bucket (not cumulative; the
    last one is +Inf) and their sum."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.data: dict[Labels, list[Any]] = {}  # labels: [counts, sum]

    def observe(self, labels: Labels, value: float) -> None:
        entry = self.data.get(labels)
        if entry is None:
            entry = self.data[labels] = [[0] * (len(self.bounds) + 1), 0.0]
        entry[0][bisect.bisect_left(self.bounds, value)] += 1
        entry[1] += value

    def merge(self, labels: Labels, counts: list[int], total: float) -> None:
        """Add observations already counted per bucket (as ``data`` holds them) summing
        ``total``."""
        entry = self.data.get(labels)
        if entry is None:
            self.data[labels] = [list(counts), total]
            return
        entry[0] = [a + b for a, b in zip(entry[0], counts)]
        entry[1] += total


class Figures:
    """What a worker recorded since it last handed its figures to prometheus-client, keyed by
    label tuples in the order of each metric's label names."""

    def __init__(self) -> None:
        self.requests: dict[Labels, int] = {}
        self.latency = PendingHistogram(LATENCY_BUCKETS)
        self.request_size = PendingHistogram(SIZE_BUCKETS)
        self.response_size = PendingHistogram(SIZE_BUCKETS)
        self.inference = PendingHistogram(INFERENCE_BUCKETS)
        self.rows: dict[Labels, int] = {}
        self.model_requests: dict[Labels, list[float]] = {}  # labels: [count, seconds]
        self.stages: dict[Labels, float] = {}  # (model, version, stage): seconds
        self.last_inference: dict[Labels, float] = {}
        self.model_latency = PendingHistogram(LATENCY_BUCKETS)  # (model, version)
        self.routed: dict[Labels, int] = {}  # (model, version, target)
        # (model, primary, shadow[, outcome])
        self.shadow_requests: dict[Labels, int] = {}
        self.shadow_rows: dict[Labels, list[int]] = {}  # [rows, agreed]
        self.shadow_max_diff: dict[Labels, float] = {}
        self.shadow_seconds = PendingHistogram(INFERENCE_BUCKETS)


def add_bucket_counts(child: Histogram, counts: list[int], total: float) -> None:
    """Add observations already sorted into ``child``'s buckets, and their sum.

    The one place softserve reaches into prometheus-client's internals (0.26: per-bucket, not
    cumulative, values in ``_buckets``; the sum in ``_sum``): ``Histogram.observe()`` once per
    value would cost a file write each, and the maintainers declined a bulk observe
    (prometheus/client_python#733, #1124) in favour of custom collectors, which the multiprocess
    mode cannot sum over workers. tests/serving/test_telemetry.py checks this against observe().
    """
    child._sum.inc(total)
    for i, n in enumerate(counts):
        if n:
            child._buckets[i].inc(n)


class PrometheusBridge:
    """softserve's metrics, declared in their own registry (one per worker process)."""

    def __init__(self) -> None:
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        self.registry = r = CollectorRegistry()
        self.requests = Counter(REQUESTS, "HTTP requests answered.",
                                ["route", "method", "model", "version", "code"], registry=r)
        self.latency = Histogram(LATENCY, "Time from receiving a request to its response body.",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.request_size = Histogram(REQUEST_SIZE, "Request body sizes.", ["route"],
                                      buckets=SIZE_BUCKETS, registry=r)
        self.response_size = Histogram(RESPONSE_SIZE, "Response body sizes.", ["route"],
                                       buckets=SIZE_BUCKETS, registry=r)
        self.inference = Histogram(INFERENCE, "onnxruntime run time per request.",
                                   ["model", "version"], buckets=INFERENCE_BUCKETS, registry=r)
        self.rows = Counter(ROWS, "Rows predicted.", ["model", "version"], registry=r)
        self.model_requests = Counter(
            MODEL_REQUESTS, "Inference requests that reached a model, by outcome.",
            ["model", "version", "outcome"], registry=r)
        self.model_request_seconds = Counter(
            MODEL_REQUEST_SECONDS,
            "Time spent on inference requests that reached a model, by outcome.",
            ["model", "version", "outcome"], registry=r)
        self.stage_seconds = Counter(
            STAGE_SECONDS,
            "Time per inference stage (decode the request, run the model, encode the answer).",
            ["model", "version", "stage"], registry=r)
        self.last_inference = Gauge(LAST_INFERENCE, "When the model last answered.",
                                    ["model", "version"], multiprocess_mode="max", registry=r)
        self.loads = Counter(LOADS, "Model version loads by outcome.",
                             ["model", "version", "outcome"], registry=r)
        self.loaded_versions = Gauge(LOADED_VERSIONS, "Versions loaded per model.", ["model"],
                                     multiprocess_mode="livemax", registry=r)
        self.in_flight = Gauge(IN_FLIGHT, "Requests being answered.",
                               multiprocess_mode="livesum", registry=r)
        self.model_latency = Histogram(
            MODEL_LATENCY, "Time from receiving an inference request to its response body, "
            "per model version.", ["model", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.routed = Counter(
            ROUTED, "Inference requests naming no version, by the version the traffic policy "
            "chose and why (production, canary or latest).", ["model", "version", "target"],
            registry=r)
        shadow = ["model", "primary", "shadow"]
        self.shadow_requests = Counter(
            SHADOW_REQUESTS, "Answers replayed on the shadow version, by outcome.",
            [*shadow, "outcome"], registry=r)
        self.shadow_rows = Counter(SHADOW_ROWS, "Rows the shadow version compared.", shadow,
                                   registry=r)
        self.shadow_agreed = Counter(
            SHADOW_AGREED, "Rows where the shadow version chose the class the answer had.",
            shadow, registry=r)
        self.shadow_max_diff = Gauge(
            SHADOW_MAX_DIFF, "Largest absolute probability difference between the shadow "
            "version and the answer.", shadow, multiprocess_mode="max", registry=r)
        self.shadow_seconds = Histogram(
            SHADOW_SECONDS, "onnxruntime run time of the shadow version per replayed request.",
            shadow, buckets=INFERENCE_BUCKETS, registry=r)
        self.drift_bins = Counter(DRIFT_BINS, "Values served per training bin (read into "
                                  f"{DRIFT_BINS.replace('bin_values', 'psi')}, not exposed).",
                                  ["model", "version", "feature", "bin"], registry=r)
        self.drift_rows = Counter(DRIFT_ROWS, "Rows counted for drift (SOFTSERVE_DRIFT_SAMPLE "
                                  "of the requests).", ["model", "version"], registry=r)
        self.drift_out_of_range = Counter(
            DRIFT_OUT_OF_RANGE, "Values counted for drift outside the training [min, max].",
            ["model", "version", "feature"], registry=r)
        self.prediction_log_records = Counter(
            PREDICTION_LOG_RECORDS, "Records written to the prediction log, by kind.", ["kind"],
            registry=r)
        self.prediction_log_dropped = Counter(
            PREDICTION_LOG_DROPPED, "Prediction-log records lost (an unwritable directory, a "
            "full disk), by kind.", ["kind"], registry=r)
        self.feedback = Counter(FEEDBACK, "Feedback labels that name the version and class "
                                "the client received, by outcome (correct or wrong).",
                                ["model", "version", "outcome"], registry=r)
        # What each scrape's families pass through before they are written (drift's PSI).
        self.exposition_filters: list[Callable[[Iterable[Metric]], list[Metric]]] = []

    def add(self, figures: Figures, in_flight: int) -> None:
        """Add ``figures`` to the metrics (their files, under gunicorn), and set the gauge of
        requests in flight. Raises what prometheus-client raises writing its files."""
        self.in_flight.set(in_flight)
        for labels, n in figures.requests.items():
            self.requests.labels(*labels).inc(n)
        for labels, n in figures.rows.items():
            self.rows.labels(*labels).inc(n)
        for labels, (count, seconds) in figures.model_requests.items():
            self.model_requests.labels(*labels).inc(count)
            self.model_request_seconds.labels(*labels).inc(seconds)
        for labels, seconds in figures.stages.items():
            self.stage_seconds.labels(*labels).inc(seconds)
        for labels, when in figures.last_inference.items():
            self.last_inference.labels(*labels).set(when)
        for labels, n in figures.routed.items():
            self.routed.labels(*labels).inc(n)
        for labels, n in figures.shadow_requests.items():
            self.shadow_requests.labels(*labels).inc(n)
        for labels, (rows, agreed) in figures.shadow_rows.items():
            self.shadow_rows.labels(*labels).inc(rows)
            self.shadow_agreed.labels(*labels).inc(agreed)
        for labels, diff in figures.shadow_max_diff.items():
            child = self.shadow_max_diff.labels(*labels)
            # max mode sums workers' maxima as a max; within a worker, keep the largest
            if diff > child._value.get():
                child.set(diff)
        for metric, pending in ((self.latency, figures.latency),
                                (self.model_latency, figures.model_latency),
                                (self.shadow_seconds, figures.shadow_seconds),
                                (self.inference, figures.inference),
                                (self.request_size, figures.request_size),
                                (self.response_size, figures.response_size)):
            for labels, (counts, total) in pending.data.items():
                add_bucket_counts(metric.labels(*labels), counts, total)

    def model_loaded(self, name: str, version: int, ok: bool) -> None:
        self.loads.labels(name, str(version), "success" if ok else "failure").inc()

    def versions_loaded(self, counts: dict[str, int]) -> None:
        for name, count in counts.items():
            self.loaded_versions.labels(name).set(count)

    def every_worker(self) -> CollectorRegistry:
        """Every worker's metrics, as flushed so far (only this process's without gunicorn)."""
        if not self.multiprocess_dir:
            return self.registry
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return registry

    def exposition(self) -> bytes:
        """The Prometheus text format of ``every_worker()``, through ``exposition_filters``."""
        registry = self.every_worker()
        if not self.exposition_filters:
            return generate_latest(registry)
        families: list[Metric] = list(registry.collect())
        for transform in self.exposition_filters:
            families = transform(families)
        out = CollectorRegistry(auto_describe=False)
        out.register(_Families(families))
        return generate_latest(out)


class _Families:
    """Metric families already collected, as a collector."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families
