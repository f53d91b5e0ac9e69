"""Triton's statistics extension (``/v2/models[/<name>[/versions/<v>]]/stats``), every worker's
figures summed.

Built from the metrics as prometheus-client returns them (prometheus.py), not from this
worker's recorder: the other workers' figures exist only in prometheus-client's multiprocess
files, and its ``MultiProcessCollector`` is what reads and sums them. The metrics are found by
the names prometheus.py declares them with; only the six families below are read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry

from serving.telemetry.prometheus import (
    INFERENCE,
    LAST_INFERENCE,
    MODEL_REQUEST_SECONDS,
    MODEL_REQUESTS,
    ROWS,
    SHADOW_AGREED,
    SHADOW_MAX_DIFF,
    SHADOW_REQUESTS,
    SHADOW_ROWS,
    SHADOW_SECONDS,
    STAGE_SECONDS,
)

_STAGES = {"decode": "compute_input", "infer": "compute_infer", "encode": "compute_output"}
_DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output",
              "cache_hit", "cache_miss")
_FAMILIES = frozenset({MODEL_REQUESTS, MODEL_REQUEST_SECONDS, ROWS, INFERENCE, STAGE_SECONDS,
                       LAST_INFERENCE})
# The samples read, named as prometheus-client names them: "_total" for a counter's value,
# "_count" for the number of a histogram's observations, a gauge's own name for its value.
_OUTCOME_COUNT = f"{MODEL_REQUESTS}_total"
_OUTCOME_SECONDS = f"{MODEL_REQUEST_SECONDS}_total"
_ROWS = f"{ROWS}_total"
_EXECUTIONS = f"{INFERENCE}_count"
_STAGE_SECONDS = f"{STAGE_SECONDS}_total"


def model_stats(metrics: CollectorRegistry, wanted: Callable[[str, str], bool],
                listed: Iterable[tuple[str, str]] = ()) -> list[dict[str, Any]]:
    """Triton's statistics for the (model, version) ``wanted``, from ``metrics`` (see
    ``Telemetry.every_worker()``).

    The versions in ``listed`` appear even without traffic (zeros), as Triton lists every
    loaded version. Sorted by model name, then version number. Raises what prometheus-client
    raises reading its files.
    """
    stats: dict[tuple[str, str], dict[str, Any]] = {}

    def entry(name: str, version: str) -> dict[str, Any]:
        if (name, version) not in stats:
            stats[(name, version)] = {
                "name": name, "version": version, "last_inference": 0,
                "inference_count": 0, "execution_count": 0,
                "inference_stats": {k: {"count": 0, "ns": 0} for k in _DURATIONS},
                "batch_stats": []}
        return stats[(name, version)]

    for name, version in listed:
        entry(name, version)
    for family in metrics.collect():
        if family.name not in _FAMILIES:
            continue
        for s in family.samples:
            model, model_version = s.labels.get("model"), s.labels.get("version")
            if not model or model_version is None or not wanted(model, model_version):
                continue
            name, version = model, model_version
            if s.name == _OUTCOME_COUNT:
                entry(name, version)["inference_stats"][s.labels["outcome"]]["count"] += \
                    int(s.value)
            elif s.name == _OUTCOME_SECONDS:
                entry(name, version)["inference_stats"][s.labels["outcome"]]["ns"] += \
                    int(s.value * 1e9)
            elif s.name == _ROWS:
                entry(name, version)["inference_count"] += int(s.value)
            elif s.name == _EXECUTIONS:
                e = entry(name, version)
                e["execution_count"] += int(s.value)
                for stage in _STAGES.values():
                    e["inference_stats"][stage]["count"] += int(s.value)
                # A request is queued nowhere: gunicorn hands it straight to a worker.
                e["inference_stats"]["queue"]["count"] += int(s.value)
            elif s.name == _STAGE_SECONDS:
                e = entry(name, version)["inference_stats"][_STAGES[s.labels["stage"]]]
                e["ns"] += int(s.value * 1e9)
            elif s.name == LAST_INFERENCE:
                e = entry(name, version)
                e["last_inference"] = max(e["last_inference"], int(s.value * 1000))
    return [stats[k] for k in sorted(stats, key=lambda k: (k[0], int(k[1])))]


_SHADOW_FAMILIES = frozenset({SHADOW_REQUESTS, SHADOW_ROWS, SHADOW_AGREED, SHADOW_MAX_DIFF,
                              SHADOW_SECONDS})


def shadow_stats(metrics: CollectorRegistry, wanted: Callable[[str], bool]
                 ) -> list[dict[str, Any]]:
    """Per (model, primary version, shadow version) of the models ``wanted``: shadow runs
    (``requests``, ``failed``), rows compared, rows whose class agreed and their share, the
    largest probability difference and the shadow's run time (``shadow_ns``), in the manner
    of the statistics extension. Sorted; empty without shadow runs. Raises as ``model_stats``.
    """
    stats: dict[tuple[str, str, str], dict[str, Any]] = {}
    for family in metrics.collect():
        if family.name not in _SHADOW_FAMILIES:
            continue
        for s in family.samples:
            key = (s.labels.get("model", ""), s.labels.get("primary", ""),
                   s.labels.get("shadow", ""))
            if not key[0] or not wanted(key[0]):
                continue
            e = stats.setdefault(key, {
                "name": key[0], "primary_version": key[1], "shadow_version": key[2],
                "requests": 0, "failed": 0, "rows": 0, "agreed_rows": 0, "agreement": None,
                "max_probability_difference": 0.0, "shadow_ns": 0})
            if s.name == f"{SHADOW_REQUESTS}_total":
                e["requests"] += int(s.value)
                e["failed"] += int(s.value) if s.labels.get("outcome") == "fail" else 0
            elif s.name == f"{SHADOW_ROWS}_total":
                e["rows"] += int(s.value)
            elif s.name == f"{SHADOW_AGREED}_total":
                e["agreed_rows"] += int(s.value)
            elif s.name == SHADOW_MAX_DIFF:
                e["max_probability_difference"] = max(e["max_probability_difference"],
                                                      float(s.value))
            elif s.name == f"{SHADOW_SECONDS}_sum":
                e["shadow_ns"] += int(s.value * 1e9)
    for e in stats.values():
        e["agreement"] = e["agreed_rows"] / e["rows"] if e["rows"] else None
    return [stats[k] for k in sorted(stats)]
