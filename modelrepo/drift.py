"""Per-feature statistics of a training split, and the population stability index against them.

Training (and ``modelrepo import --sample``) records :func:`feature_statistics` of the rows a
model was fitted on in ``metadata.json`` under ``data.statistics``; serving counts the values it
is sent into the same bins (``serving/telemetry/drift.py``) and ``python -m modelrepo report``
does the same from the prediction log. Both read the PSI with :func:`psi`.

The bins of a feature are cut at the training values' quantiles (deciles by default), repeated
edges merged (a feature with few distinct values has fewer bins). A value ``v`` falls in bin
``searchsorted(edges, v, side="right")``: bin 0 is below the first edge, the last bin at or
above the last edge. Values outside the training ``[min, max]`` are still binned (into the
first or last bin) and also counted as out of range. Missing values (NaN) are counted apart and
in no bin.

PSI = sum over bins of (actual - expected) * ln(actual / expected), the fractions floored at
:data:`PSI_FLOOR` so that an empty bin does not make it infinite. The usual reading: below 0.1
stable, 0.1 to 0.25 a moderate shift, above 0.25 a significant one (:data:`PSI_MODERATE`,
:data:`PSI_SIGNIFICANT`). With n rows counted, a sample of the training distribution itself
scores about (bins - 1) / n, so figures from fewer than a few hundred rows are noise.

numpy only: no torch, no onnx. ``modelrepo.check_metadata`` checks a recorded ``statistics``
(the standard library only).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modelrepo import STATISTICS_KEY

STATISTICS_SCHEMA = 1
DEFAULT_QUANTILES = 10
PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.25
PSI_FLOOR = 1e-4
# Up to this many features, a single row is counted feature by feature in Python (cheaper than
# numpy's per-call overhead); wider rows, and batches, with numpy.
SCALAR_FEATURES = 32


def feature_statistics(rows: np.ndarray, names: Sequence[str],
                       quantiles: int = DEFAULT_QUANTILES) -> dict[str, Any]:
    """The statistics of ``rows`` (N, F), feature by feature, as metadata.json stores them::

        {"schema": 1, "rows": N, "quantiles": 10,
         "features": [{"name", "count", "missing", "mean", "std", "min", "max",
                       "edges": [...], "fractions": [...]}, ...]}

    ``count`` is the values present (NaN is missing), ``edges`` the distinct interior quantile
    edges, ``fractions`` the share of the present values in each of the len(edges) + 1 bins.
    A feature with no value at all has null mean/std/min/max, no edges and fractions [1.0].
    Raises ValueError if ``rows`` is not 2-D with len(names) columns, or quantiles < 2.
    """
    values = np.asarray(rows, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(names):
        raise ValueError(f"rows of shape {values.shape} do not have {len(names)} features")
    if quantiles < 2:
        raise ValueError(f"quantiles must be >= 2, not {quantiles}")
    features = []
    probabilities = np.linspace(0, 1, quantiles + 1)[1:-1]
    for j, name in enumerate(names):
        column = values[:, j]
        present = column[~np.isnan(column)]
        entry: dict[str, Any] = {"name": name, "count": int(len(present)),
                                 "missing": int(len(column) - len(present))}
        if len(present) == 0:
            features.append({**entry, "mean": None, "std": None, "min": None, "max": None,
                             "edges": [], "fractions": [1.0]})
            continue
        # Edges at data values ("lower"): a discrete feature gets one bin per value, not
        # edges between its values.
        edges = np.unique(np.quantile(present, probabilities, method="lower"))
        # An edge at the minimum would leave bin 0 empty in training: every value >= it.
        edges = edges[edges > present.min()]
        counts = np.bincount(np.searchsorted(edges, present, side="right"),
                             minlength=len(edges) + 1)
        features.append({**entry, "mean": float(present.mean()), "std": float(present.std()),
                         "min": float(present.min()), "max": float(present.max()),
                         "edges": [float(e) for e in edges],
                         "fractions": [float(c) / len(present) for c in counts]})
    return {"schema": STATISTICS_SCHEMA, "rows": int(values.shape[0]), "quantiles": quantiles,
            "features": features}


def statistics_of(metadata: Mapping[str, Any]) -> dict[str, Any] | None:
    """A version's recorded statistics (``data.statistics``), or None when it has none (every
    version published before they existed)."""
    data = metadata.get("data")
    found = data.get(STATISTICS_KEY) if isinstance(data, Mapping) else None
    return found if isinstance(found, dict) else None


def psi(expected: Sequence[float] | np.ndarray, counts: Sequence[float] | np.ndarray) -> float:
    """The population stability index of ``counts`` (observations per bin) against the
    ``expected`` fractions of the same bins; 0.0 when nothing was counted. Raises ValueError
    when the two differ in length."""
    e = np.asarray(expected, dtype=np.float64)
    c = np.asarray(counts, dtype=np.float64)
    if e.shape != c.shape:
        raise ValueError(f"{len(e)} expected fractions for {len(c)} bins")
    total = c.sum()
    if total <= 0:
        return 0.0
    a = np.maximum(c / total, PSI_FLOOR)
    e = np.maximum(e, PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def reading(value: float) -> str:
    """The usual reading of a PSI: "stable", "moderate" or "significant"."""
    if value > PSI_SIGNIFICANT:
        return "significant"
    return "moderate" if value >= PSI_MODERATE else "stable"


class BinCounter:
    """Counts rows into the bins of a model's statistics, all features at once (numpy).

    ``counts`` (F, B) holds per feature the values per bin (B: the most bins of any feature;
    a feature's unused bins stay 0), ``out_of_range`` (F,) the values outside the training
    range, ``missing`` (F,) the NaNs, ``rows`` the rows counted.
    """

    def __init__(self, statistics: Mapping[str, Any]) -> None:
        features = statistics["features"]
        self.names = [f["name"] for f in features]
        width = max(len(f["edges"]) for f in features) if features else 0
        # Edges padded with +inf: x >= inf never holds, so padding adds nothing to a bin index.
        self.edges = np.full((len(features), max(width, 1)), np.inf)
        for j, f in enumerate(features):
            self.edges[j, :len(f["edges"])] = f["edges"]
        self.bins = width + 1
        self.expected = [np.asarray(f["fractions"], dtype=np.float64) for f in features]
        self.low = np.asarray([f["min"] if f["min"] is not None else -np.inf
                               for f in features])
        self.high = np.asarray([f["max"] if f["max"] is not None else np.inf
                                for f in features])
        self.offsets = np.arange(len(features)) * self.bins
        self.counts = np.zeros((len(features), self.bins), dtype=np.int64)
        self.out_of_range = np.zeros(len(features), dtype=np.int64)
        self.missing = np.zeros(len(features), dtype=np.int64)
        self.rows = 0
        # A single row of a narrow model is counted in plain Python lists (bisect per feature,
        # ~2 µs for F = 4), merged into the arrays by ``merge``: numpy's per-call overhead
        # makes the same row cost ~10 µs there.
        self._edge_lists = [list(map(float, f["edges"])) for f in features]
        self._bounds = list(zip(self.low.tolist(), self.high.tolist()))
        self._flat_offsets = self.offsets.tolist()
        self._pending = [0] * self.counts.size
        self._pending_out = [0] * len(features)
        self._pending_missing = [0] * len(features)
        self._pending_rows = 0

    def add(self, rows: np.ndarray) -> None:
        """Count ``rows`` (N, F), float32 or float64, NaN for a missing value."""
        if len(rows) == 1 and rows.shape[1] <= SCALAR_FEATURES:
            pending, out = self._pending, self._pending_out
            for j, (v, edges, (low, high), offset) in enumerate(zip(
                    rows[0].tolist(), self._edge_lists, self._bounds, self._flat_offsets)):
                if v != v:  # NaN: missing
                    self._pending_missing[j] += 1
                    continue
                pending[offset + bisect_right(edges, v)] += 1
                if v < low or v > high:
                    out[j] += 1
            self._pending_rows += 1
            return
        x = rows[:, :, None]
        index = (x >= self.edges).sum(axis=2)  # (N, F): the bin, searchsorted side="right"
        nan = np.isnan(rows)
        flat = (index + self.offsets).ravel()
        if nan.any():
            flat = flat[~nan.ravel()]
            self.missing += nan.sum(axis=0)
        if len(rows) == 1:  # one row: every index differs (one per feature); ~3x cheaper
            self.counts.reshape(-1)[flat] += 1
        else:
            self.counts += np.bincount(flat, minlength=self.counts.size).reshape(
                self.counts.shape)
        self.out_of_range += ((rows < self.low) | (rows > self.high)).sum(axis=0)
        self.rows += len(rows)

    def merge(self) -> None:
        """Move the single rows counted in Python lists into the arrays."""
        if self._pending_rows:
            self.counts += np.asarray(self._pending, dtype=np.int64).reshape(self.counts.shape)
            self.out_of_range += np.asarray(self._pending_out, dtype=np.int64)
            self.missing += np.asarray(self._pending_missing, dtype=np.int64)
            self.rows += self._pending_rows
            self._pending = [0] * self.counts.size
            self._pending_out = [0] * len(self._pending_out)
            self._pending_missing = [0] * len(self._pending_missing)
            self._pending_rows = 0

    def psi(self) -> list[float]:
        """Per feature, the PSI of what was counted against the training fractions."""
        self.merge()
        return [psi(e, self.counts[j, :len(e)]) for j, e in enumerate(self.expected)]
