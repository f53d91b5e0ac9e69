"""Drift: the values each model version is sent, counted into its training bins.

A version published with per-feature statistics (``data.statistics`` in metadata.json, see
``modelrepo.drift``) gets a ``BinCounter`` in each worker. A request of up to ``HOLD_BATCH``
rows only leaves a reference to its rows; they are counted together with the others held, as one
batch, at the next metrics flush (or after the answer that brings them to ``HOLD_ROWS``): a
fraction of a µs a row, where counting a single row alone cost ~1.5 µs for 4 features
(``modelrepo.drift``'s scalar path) and ~11 µs for 64 (numpy). Bigger requests are counted
after their answer is sent (``RequestRecord.after_answer``): ~5 µs for 32 features, ~25 µs for
784 (the 2-vCPU VM). ``SOFTSERVE_DRIFT_SAMPLE`` counts only a share
of the requests, for wide models.

Every metrics flush hands the counts gathered since the last one to prometheus-client (summed
over workers in its multiprocess files): ``softserve_drift_rows_total``,
``softserve_drift_out_of_range_total`` and the per-bin counts, which ``/metrics`` does not show
as such: at each scrape it turns them into ``softserve_drift_psi{model,version,feature}``, the
population stability index of everything every worker counted since the server started against
the training distribution. A worker also logs one warning (per worker, version and feature)
when its own counts put a feature past the significant threshold (PSI > 0.25) after at least
``WARN_MIN_ROWS`` rows.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from prometheus_client import Metric
from prometheus_client.core import GaugeMetricFamily

from modelrepo.drift import PSI_SIGNIFICANT, BinCounter, psi, statistics_of
from serving.telemetry.prometheus import DRIFT_BINS, PrometheusBridge

log = logging.getLogger("softserve.drift")

# Below this many rows a PSI is mostly noise (a sample of the training distribution itself
# scores about (bins - 1) / rows): no warning yet.
WARN_MIN_ROWS = 200
DRIFT_PSI = "softserve_drift_psi"

Key = tuple[str, str]  # (model, version)


# A single row costs ~0.16 µs a feature to count (modelrepo.drift's scalar path up to 32
# features; numpy's, ~11 µs at 64 and ~30 µs at 784): a version of F features counts one
# request in every ceil(F / FEATURES_PER_COUNT), so that counting stays ~5 µs a request or
# less on average, on top of SOFTSERVE_DRIFT_SAMPLE.
FEATURES_PER_COUNT = 24
# Requests of at most HOLD_BATCH rows are not counted one by one after their answers: their rows
# are held (a reference to the decoded array, no copy) and counted together at the next flush,
# or after the answer that brings a version's held rows to HOLD_ROWS, as one batch: numpy counts
# a thousand rows in about the time Python counts one row (issue 20: ~2.5 µs of a single-row
# request's ~27 µs in-process went to counting it). Bigger requests are counted after their
# answer, as they come.
HOLD_BATCH = 16
HOLD_ROWS = 1024


class _Version:
    """One version's counter in this worker, and what was already handed to prometheus."""

    def __init__(self, counter: BinCounter) -> None:
        self.counter = counter
        self.stride = -(-len(counter.names) // FEATURES_PER_COUNT)
        self.seen = 0
        self.sent_counts = np.zeros_like(counter.counts)
        self.sent_out = np.zeros_like(counter.out_of_range)
        self.sent_rows = 0
        self.warned: set[str] = set()
        self.held: list[np.ndarray] = []  # small requests' rows, not yet counted
        self.held_rows = 0


class DriftCounts:
    """Per worker: bin counts per model version and feature (see the module docstring)."""

    def __init__(self, sample: float) -> None:
        self.sample = sample
        self._versions: dict[Key, _Version | None] = {}
        self._lock = threading.Lock()

    def sampled(self) -> bool:
        """Whether to count this request (``SOFTSERVE_DRIFT_SAMPLE``)."""
        return self.sample >= 1.0 or random.random() < self.sample

    def _entry(self, name: str, version: str, metadata: dict[str, Any]) -> _Version | None:
        """The version's counter (made on its first request), None without statistics; or
        None for a request its stride skips."""
        key = (name, version)
        if key in self._versions:
            entry = self._versions[key]
        else:
            statistics = statistics_of(metadata)
            entry = self._versions[key] = _Version(BinCounter(statistics)) if statistics \
                else None
        if entry is None:
            return None
        entry.seen += 1
        return None if entry.seen % entry.stride else entry

    def count(self, name: str, version: str, metadata: dict[str, Any],
              rows: np.ndarray) -> None:
        """Count ``rows`` (N, F) sent to ``name`` ``version`` (nothing for a version without
        statistics). Raises nothing of its own."""
        entry = self._entry(name, version, metadata)
        if entry is not None:
            with self._lock:
                entry.counter.add(rows)

    def observe(self, name: str, version: str, metadata: dict[str, Any],
                rows: np.ndarray) -> Callable[[], None] | None:
        """An inference's ``rows`` (N, F): a small request's (N <= HOLD_BATCH) are held
        (``hold``), a bigger one's counted. Returns the work to run after the answer, if any.
        Raises nothing of its own."""
        if len(rows) <= HOLD_BATCH:
            return self.hold(name, version, metadata, rows)
        return lambda: self.count(name, version, metadata, rows)

    def hold(self, name: str, version: str, metadata: dict[str, Any],
             rows: np.ndarray) -> Callable[[], None] | None:
        """Keep ``rows`` (N <= HOLD_BATCH, F) sent to ``name`` ``version`` to be counted with
        others at the next flush (no copy: the array must not change). Returns the work that
        counts the version's held rows now, to run after the answer, once they reach
        HOLD_ROWS; else None. Raises nothing of its own."""
        entry = self._entry(name, version, metadata)
        if entry is None:
            return None
        with self._lock:
            entry.held.append(rows)
            entry.held_rows += len(rows)
            if entry.held_rows < HOLD_ROWS:
                return None

        def count_held() -> None:
            with self._lock:
                self._count_held(entry)

        return count_held

    @staticmethod
    def _count_held(entry: _Version) -> None:
        """Count what ``entry`` holds, as one batch. The caller holds the lock."""
        if entry.held:
            held, entry.held, entry.held_rows = entry.held, [], 0
            entry.counter.add(held[0] if len(held) == 1 else np.concatenate(held))

    def flush(self, bridge: PrometheusBridge) -> None:
        """Hand what was counted since the last flush to prometheus-client, and warn once per
        feature whose PSI (from this worker's counts) passed the significant threshold.
        Raises what prometheus-client raises writing its files."""
        for (name, version), entry in list(self._versions.items()):
            if entry is None:
                continue
            with self._lock:
                self._count_held(entry)
                entry.counter.merge()
                counts = entry.counter.counts.copy()
                out = entry.counter.out_of_range.copy()
                rows = entry.counter.rows
            if rows == entry.sent_rows:
                continue
            counter = entry.counter
            bridge.drift_rows.labels(name, version).inc(rows - entry.sent_rows)
            new_counts, new_out = counts - entry.sent_counts, out - entry.sent_out
            for j, feature in enumerate(counter.names):
                if new_out[j]:
                    bridge.drift_out_of_range.labels(name, version, feature).inc(int(new_out[j]))
                for b in np.flatnonzero(new_counts[j]).tolist():
                    bridge.drift_bins.labels(name, version, feature, str(b)).inc(
                        int(new_counts[j, b]))
            entry.sent_counts, entry.sent_out, entry.sent_rows = counts, out, rows
            if rows >= WARN_MIN_ROWS:
                for feature, value in zip(counter.names, counter.psi()):
                    if value > PSI_SIGNIFICANT and feature not in entry.warned:
                        entry.warned.add(feature)
                        log.warning(
                            "drift: model %s version %s feature %r has PSI %.3f over %d rows "
                            "(> %g, a significant shift from its training data; this worker's "
                            "rows)", name, version, feature, value, rows, PSI_SIGNIFICANT,
                            extra={"model": name, "version": version})


Expected = Callable[[str, str], dict[str, list[float]] | None]  # feature: fractions


def psi_family(families: Iterable[Metric], expected: Expected) -> list[Metric]:
    """The metric families to expose: ``families`` without the per-bin counts, plus
    ``softserve_drift_psi`` computed from them (every worker's counts summed) against the
    training fractions ``expected(model, version)`` gives (None: version not known here,
    no PSI)."""
    kept: list[Metric] = []
    bins: dict[tuple[str, str, str], dict[int, float]] = {}
    for family in families:
        if family.name != DRIFT_BINS:
            kept.append(family)
            continue
        for s in family.samples:
            if s.name.endswith("_total"):
                key = (s.labels["model"], s.labels["version"], s.labels["feature"])
                bins.setdefault(key, {})[int(s.labels["bin"])] = s.value
    gauge = GaugeMetricFamily(
        DRIFT_PSI, "Population stability index of the values served against the training "
        "data, per feature (< 0.1 stable, 0.1-0.25 moderate, > 0.25 significant).",
        labels=["model", "version", "feature"])
    fractions: dict[tuple[str, str], dict[str, list[float]] | None] = {}
    for (model, version, feature), counted in sorted(bins.items()):
        if (model, version) not in fractions:
            fractions[(model, version)] = expected(model, version)
        by_feature = fractions[(model, version)]
        if not by_feature or feature not in by_feature:
            continue
        gauge.add_metric([model, version, feature], feature_psi(by_feature[feature], counted))
    return [*kept, gauge]


def feature_psi(expected: list[float], counted: dict[int, float]) -> float:
    """One feature's PSI as ``softserve_drift_psi`` shows it: ``counted`` (bin -> values,
    every worker's summed) against the training fractions ``expected``, rounded to 6 places.
    The page (serving/ui/views.py) shows the same figure. Raises nothing of its own."""
    return round(psi(expected, [counted.get(b, 0.0) for b in range(len(expected))]), 6)


def expected_fractions(metadata: dict[str, Any]) -> dict[str, list[float]] | None:
    """A version's training fractions per feature, None if it recorded no statistics."""
    statistics = statistics_of(metadata)
    if statistics is None:
        return None
    return {f["name"]: f["fractions"] for f in statistics["features"]}
