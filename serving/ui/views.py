"""The page's view-model: what the templates show, built from the served repository, the loaded
versions' metadata and the server's own telemetry. Pure reading: nothing here writes anything,
loads a model or runs one.

Cost: what comes from a version's metadata (charts, tables, the form's prefill) is worked out
once per loaded version (``VersionDetail``, cached by the ``LoadedModel``, which a scan keeps
while the version is unchanged); what changes between requests (states, telemetry) is read per
page. ``python -m bench.ui`` measures a page of 20 models x 10 versions.

The traffic policy (modelrepo.policy, as the served state applies it) gives the versions'
labels (aliases, canary and shadow shares), the live version (production, else the latest) and
the policy's summary; drift (serving/telemetry/drift.py) the per-feature PSI of the live version
and of a canary, from the same multiprocess files, in the same pass as the live figures.
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import math
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup
from prometheus_client.mmap_dict import MmapedDict

import modelrepo
from serving.config import PREFIX
from serving.model import LoadedModel
from serving.repository import ModelRepository, ModelState
from serving.telemetry import Telemetry
from modelrepo.drift import reading
from serving.telemetry.drift import expected_fractions, feature_psi
from serving.telemetry.prometheus import (
    DRIFT_BINS,
    DRIFT_OUT_OF_RANGE,
    DRIFT_ROWS,
    LAST_INFERENCE,
    MODEL_REQUEST_SECONDS,
    MODEL_REQUESTS,
)
from serving.ui.charts import ConfusionMatrix, confusion_matrix, loss_curve_svg

FLOAT32_LIMIT = "3.4028234e38"  # the form's min/max: what an FP32 input can hold
MOST_PER_CLASS_ROWS = 100  # per-class figures shown for a large K; the metadata has them all


@dataclass(frozen=True)
class Figures:
    """Live figures of one version, every worker's summed (Triton's statistics extension)."""

    requests: int
    errors: int
    mean_ms: float | None  # of the successful requests
    last: str  # the last inference, ISO time (UTC), or ""


@dataclass(frozen=True)
class VersionRow:
    """One version directory of a model, as the version tables list it."""

    number: int
    status: str  # "live", "loaded", "broken", "not loaded", "retired"
    reason: str = ""
    created: str = ""
    accuracy: float | None = None
    data: str = ""
    figures: Figures | None = None
    # Aliases and traffic shares ("production", "canary 10%", "shadow"): see traffic_labels.
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class FormField:
    name: str
    id: str
    value: str


@dataclass(frozen=True)
class VersionDetail:
    """Everything the page shows of one loaded version, from its metadata (worked out once)."""

    number: int
    created: str
    figures: dict[str, float]  # the metrics as numbers, for comparisons
    data: list[tuple[str, str]]
    metrics: list[tuple[str, str, str]]  # (figure, train, validation)
    accuracy: float | None
    loss_svg: Markup | None
    confusion: ConfusionMatrix | None
    per_class: list[dict[str, str]]
    per_class_split: str
    per_class_hidden: int
    parity: list[tuple[str, str]]
    parity_passed: bool | None
    training: list[tuple[str, str]]
    feature_names: list[str]
    class_labels: list[str]
    missing_values: str
    fields: list[FormField]
    prefill_source: str
    # the training fractions per feature (data.statistics), None when not recorded
    drift_fractions: dict[str, list[float]] | None = None


@dataclass(frozen=True)
class DriftRow:
    """One feature's drift: every worker's counts summed, the PSI as /metrics shows it."""

    feature: str
    psi: float | None  # None: no value of it counted yet
    reading: str  # "stable", "moderate", "significant" (modelrepo.drift), or ""
    out_of_range: int  # values outside the training [min, max]


@dataclass(frozen=True)
class DriftTable:
    """Drift of one served version (the live one, or a canary)."""

    version: int
    role: str  # "live" or "canary"
    rows: int  # rows counted (SOFTSERVE_DRIFT_SAMPLE and the per-width stride apply)
    features: list[DriftRow]


@dataclass(frozen=True)
class TrafficView:
    """The model's traffic policy as it applies, in words."""

    target: str  # "production" or "latest": what answers a request naming no version
    parts: list[str]  # the canary's and the shadow's shares
    rollout: str  # the last rollout's verdict, or ""
    problems: list[tuple[str, str]]  # (alias or part, why it is ignored)


@dataclass
class ModelView:
    name: str
    live: int | None
    rows: list[VersionRow]
    predict_model: bool
    broken: int = 0
    shape: tuple[int, int] | None = None  # the live version's features and classes
    detail: VersionDetail | None = None  # the live version's, with details
    details: list[VersionDetail] = field(default_factory=list)  # every loaded one, newest first
    drift: list[DriftTable] | None = None
    traffic: TrafficView | None = None
    compare_with: int | None = None  # the compare form's default other version


def compare_defaults(state: ModelState) -> tuple[int, int] | None:
    """The versions a comparison shows unless told: (what is to replace the live version, the
    live version): the canary, else the newest other loaded version (the one before, when the
    live one is the latest). None with fewer than two loaded versions."""
    loaded = sorted(state.loaded, reverse=True)
    if len(loaded) < 2:
        return None
    live = int(state.serving.version) if state.serving is not None else loaded[0]
    canary = state.traffic.canary if state.traffic is not None else None
    if canary is not None and int(canary.version) != live:
        return int(canary.version), live
    return next(v for v in loaded if v != live), live


# ----------------------------------------------------------------------- formatting helpers


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def fmt(value: Any) -> str:
    """A metadata value as short text: numbers to 4 significant digits, None as a dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    number = _finite(value)
    if number is not None:
        return str(value) if isinstance(value, int) else f"{number:.4g}"
    if isinstance(value, list):
        return ", ".join(fmt(v) for v in value[:8]) + (" …" if len(value) > 8 else "")
    if isinstance(value, dict):
        return ", ".join(f"{k} {fmt(v)}" for k, v in list(value.items())[:8])
    return str(value)


def _percent(value: Any) -> str:
    number = _finite(value)
    return "—" if number is None else f"{number:.1%}"


def _created(metadata: Mapping[str, Any]) -> str:
    text = metadata.get("created_at")
    if not isinstance(text, str):
        return ""
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return text
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _data_text(metadata: Mapping[str, Any]) -> str:
    data = metadata.get("data")
    if not isinstance(data, dict):
        return ""
    source, rows = data.get("source"), data.get("rows")
    return ", ".join(p for p in (str(source) if source else "",
                                 f"{rows} rows" if isinstance(rows, int) else "") if p)


def _accuracy(metadata: Mapping[str, Any]) -> float | None:
    metrics = metadata.get("metrics")
    if not isinstance(metrics, dict):
        return None
    for split in ("validation", "train"):
        figures = metrics.get(split)
        if isinstance(figures, dict) and _finite(figures.get("accuracy")) is not None:
            return _finite(figures["accuracy"])
    return None


# ------------------------------------------------------------------ what a version records


def training_means(metadata: Mapping[str, Any]) -> tuple[list[float], str] | None:
    """The training data's mean of each feature, where the version records it, and where from:
    the drift statistics (``data.statistics.features[i].mean``, issue 17), else per-feature
    statistics as ``data.feature_statistics``, else the standardization's means, else mean
    imputation's fill values. None when the metadata has none of them."""
    n = len(metadata.get("feature_names", ()))
    data = metadata.get("data")
    recorded = data.get(modelrepo.STATISTICS_KEY) if isinstance(data, dict) else None
    stats = recorded.get("features") if isinstance(recorded, dict) else None
    if not isinstance(stats, list) or len(stats) != n:
        stats = data.get("feature_statistics") if isinstance(data, dict) else None
    if isinstance(stats, dict):  # {feature: {"mean": ...}}
        stats = [stats.get(name) for name in metadata.get("feature_names", ())]
    if isinstance(stats, list) and len(stats) == n:
        means = [_finite(s.get("mean")) if isinstance(s, dict) else None for s in stats]
        if all(m is not None for m in means):
            return [m for m in means if m is not None], "the training data's means"
    training = metadata.get("training")
    if isinstance(training, dict):
        candidates = [(training.get("standardization"), "mean", "the training data's means")]
        imputation = training.get("imputation")
        if isinstance(imputation, dict) and imputation.get("strategy") == "mean":
            candidates.append((imputation, "values", "the training data's means"))
        for record, key, source in candidates:
            values = record.get(key) if isinstance(record, dict) else None
            if isinstance(values, list) and len(values) == n:
                numbers = [_finite(v) for v in values]
                if all(v is not None for v in numbers):
                    return [v for v in numbers if v is not None], source
    return None


def _per_class(metrics: Any) -> tuple[list[dict[str, str]], str, int]:
    record = metrics.get("per_class") if isinstance(metrics, dict) else None
    if not isinstance(record, dict) or not isinstance(record.get("classes"), list):
        return [], "", 0
    classes = [c for c in record["classes"] if isinstance(c, dict)]
    rows = [{"label": str(c.get("label", "")), "precision": fmt(c.get("precision")),
             "recall": fmt(c.get("recall")), "f1": fmt(c.get("f1")),
             "support": fmt(c.get("support"))} for c in classes[:MOST_PER_CLASS_ROWS]]
    return rows, str(record.get("split", "")), max(0, len(classes) - MOST_PER_CLASS_ROWS)


def _parity(parity: Any) -> tuple[list[tuple[str, str]], bool | None]:
    if not isinstance(parity, dict) or not parity:
        return [], None
    items: list[tuple[str, str]] = []
    for key, value in parity.items():
        if key == "passed":
            continue
        if key == "rows" and isinstance(value, dict):
            for rows_name, figures in value.items():
                items.append((f"rows {rows_name}", fmt(figures)))
        else:
            items.append((key.replace("_", " "), fmt(value)))
    passed = parity.get("passed")
    return items, passed if isinstance(passed, bool) else None


def _training(training: Any) -> list[tuple[str, str]]:
    if not isinstance(training, dict):
        return []
    skip = {"standardization", "imputation", "log_every"}
    return [(k.replace("_", " "), fmt(v)) for k, v in training.items()
            if k not in skip and v not in (None, [], {})]


def _mapping(value: Any) -> Mapping[str, Any]:
    """A metadata object, or an empty one for anything else (metadata may be hand-made)."""
    return value if isinstance(value, dict) else {}


def _metrics_rows(metrics: Any) -> list[tuple[str, str, str]]:
    if not isinstance(metrics, dict):
        return []
    train, validation = _mapping(metrics.get("train")), _mapping(metrics.get("validation"))
    if not train and not validation:
        return []
    return [("accuracy", _percent(train.get("accuracy")), _percent(validation.get("accuracy"))),
            ("loss", fmt(train.get("loss")), fmt(validation.get("loss"))),
            ("rows", fmt(train.get("rows")), fmt(validation.get("rows")))]


def _numbers(metrics: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for split in ("validation", "train"):
        figures = metrics.get(split) if isinstance(metrics, dict) else None
        for key in ("accuracy", "loss"):
            value = _finite(figures.get(key)) if isinstance(figures, dict) else None
            if value is not None:
                out[f"{split} {key}"] = value
    return out


def compare_rows(a: VersionDetail, b: VersionDetail, fa: Figures | None,
                 fb: Figures | None) -> list[tuple[str, str, str, str]]:
    """(figure, version a, version b, change from a to b) for the figures both record, and
    the live ones."""
    rows = []
    for key in ("validation accuracy", "validation loss", "train accuracy", "train loss"):
        x, y = a.figures.get(key), b.figures.get(key)
        if x is None and y is None:
            continue
        percent = key.endswith("accuracy")

        def show(v: float | None, percent: bool = percent) -> str:
            return "—" if v is None else (f"{v:.1%}" if percent else f"{v:.4g}")

        change = "—" if x is None or y is None else (
            f"{(y - x) * 100:+.1f} points" if percent else f"{y - x:+.4g}")
        rows.append((key, show(x), show(y), change))
    if fa is not None or fb is not None:
        rows.append(("requests", str(fa.requests if fa else 0), str(fb.requests if fb else 0),
                     ""))
        rows.append(("errors", str(fa.errors if fa else 0), str(fb.errors if fb else 0), ""))

        def latency(f: Figures | None) -> str:
            return f"{f.mean_ms:.2f} ms" if f and f.mean_ms is not None else "—"

        rows.append(("mean latency", latency(fa), latency(fb), ""))
    return rows


def _form_fields(model: LoadedModel) -> tuple[list[FormField], str]:
    means = training_means(model.metadata)
    values = means[0] if means else [0.0] * model.n_features
    fields = [FormField(name, f"f-{model.name}-{i}", f"{value:.6g}")
              for i, (name, value) in enumerate(zip(model.feature_names, values))]
    return fields, means[1] if means else "zeros (the version records no training means)"


def build_detail(model: LoadedModel) -> VersionDetail:
    """What the page shows of a loaded version, from its metadata alone."""
    metadata = model.metadata
    data = _mapping(metadata.get("data"))
    data_items = [(k.replace("_", " "), fmt(v)[:12] + "…" if k == "sha256" else fmt(v))
                  for k, v in data.items()
                  if k in ("source", "rows", "train_rows", "validation_rows", "sha256")]
    metrics = metadata.get("metrics")
    per_class, per_class_split, hidden = _per_class(metrics)
    parity, passed = _parity(metadata.get("parity"))
    fields, prefill = _form_fields(model)
    number = int(model.version)
    try:
        fractions = expected_fractions(metadata)
    except (KeyError, TypeError):  # hand-made statistics that check_metadata let through
        fractions = None
    return VersionDetail(
        number=number, created=_created(metadata), figures=_numbers(metrics),
        data=data_items,
        metrics=_metrics_rows(metrics), accuracy=_accuracy(metadata),
        loss_svg=loss_curve_svg(metadata.get("loss_curve"),
                                f"{model.name} version {number}: loss per epoch"),
        confusion=confusion_matrix(metrics), per_class=per_class,
        per_class_split=per_class_split, per_class_hidden=hidden, parity=parity,
        parity_passed=passed, training=_training(metadata.get("training")),
        feature_names=model.feature_names, class_labels=model.class_labels,
        missing_values="impute" if model.impute else "refuse", fields=fields,
        prefill_source=prefill, drift_fractions=fractions)


# ------------------------------------------------------------------- traffic policy, drift


def _share(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def traffic_labels(repository: ModelRepository, state: ModelState, number: int) -> tuple[str, ...]:
    """The aliases and traffic shares of a version, as short labels ("production",
    "candidate", "canary 10%", "shadow 100%"). An alias the server ignores (its version is
    not served) is labelled so; the model page says why."""
    labels = [alias if alias not in state.alias_problems else f"{alias} (ignored)"
              for alias, version in sorted(state.policy.aliases.items()) if version == number]
    traffic = state.traffic
    if traffic is not None:
        if traffic.canary is not None and int(traffic.canary.version) == number:
            labels.append(f"canary {_share(traffic.canary_share)}")
        if traffic.shadow is not None and int(traffic.shadow.version) == number:
            labels.append(f"shadow {_share(traffic.shadow_share)}")
    return tuple(labels)


def live_version(repository: ModelRepository, state: ModelState) -> LoadedModel | None:
    """The version that answers a request naming no version (before any canary): production,
    else the latest valid one. The "live" badge and the "try it" form follow it."""
    return state.serving


def _why_not_served(state: ModelState, version: int) -> str:
    if version in state.broken:
        return f"version {version} is broken: {state.broken[version]}"
    if version in state.on_disk:
        return f"version {version} is not loaded"
    return f"no version {version}"


def traffic_view(state: ModelState) -> TrafficView | None:
    """The model's traffic policy in words, None when it has none: where unversioned requests
    go, the canary's and the shadow's shares, the last rollout's verdict, and each part of the
    policy the server ignores, with the reason."""
    policy = state.policy
    if policy.empty and not policy.rollout:
        return None
    traffic = state.traffic
    target = traffic.target if traffic is not None else "latest"
    parts: list[str] = []
    if traffic is not None and traffic.canary is not None:
        sticky = policy.canary.sticky_header if policy.canary else None
        parts.append(f"canary: version {traffic.canary.version} takes "
                     f"{_share(traffic.canary_share)} of the requests naming no version"
                     + (f" (sticky on {sticky})" if sticky else ""))
    if traffic is not None and traffic.shadow is not None:
        parts.append(f"shadow: version {traffic.shadow.version} replays "
                     f"{_share(traffic.shadow_share)} of the answers, after they are sent")
    problems = sorted(state.alias_problems.items())
    # The served state keeps only the aliases' problems: a canary or shadow it dropped is
    # worked out again here (the same reasons as the server's log).
    for part, split, served in (("canary", policy.canary, traffic and traffic.canary),
                                ("shadow", policy.shadow, traffic and traffic.shadow)):
        if split is not None and not served:
            default = state.serving
            problems.append((part, f"version {split.version} already serves as {target}"
                             if default is not None and int(default.version) == split.version
                             else _why_not_served(state, split.version)))
    rollout = ""
    record = policy.rollout
    if record:
        step = _finite(record.get("step"))
        rollout = (f"version {record.get('version')} {record.get('outcome')}"
                   + (f" at {step:g}%" if step is not None else "")
                   + (f": {record['reason']}" if record.get("reason") else "")
                   + (f" ({record['at']})" if record.get("at") else ""))
    return TrafficView(target, parts, rollout, problems)


@dataclass
class Counted:
    """One version's drift counts, every worker's summed."""

    rows: float = 0.0
    bins: dict[str, dict[int, float]] = field(default_factory=dict)  # feature -> bin -> n
    out_of_range: dict[str, float] = field(default_factory=dict)  # feature -> n


def feature_drift(state: ModelState, counted: Mapping[str, Counted] | None,
                  detail: Callable[[LoadedModel], VersionDetail]) -> list[DriftTable] | None:
    """Drift per feature of the live version and of a canary, from ``counted`` (version ->
    counts, every worker's): the PSI computed as /metrics does, its reading, the rows counted
    and the values out of the training range. Only versions that record training statistics
    get a table; None when none does or metrics are off (``counted`` None)."""
    if counted is None:
        return None
    served: list[tuple[LoadedModel, str]] = []
    if state.serving is not None:
        served.append((state.serving, "live"))
    if state.traffic is not None and state.traffic.canary is not None:
        served.append((state.traffic.canary, "canary"))
    tables = []
    for model, role in served:
        fractions = detail(model).drift_fractions
        if not fractions:
            continue
        counts = counted.get(model.version) or Counted()
        rows = []
        for feature, expected in fractions.items():
            bins = counts.bins.get(feature)
            value = feature_psi(expected, bins) if bins else None
            rows.append(DriftRow(feature, value, reading(value) if value is not None else "",
                                 int(counts.out_of_range.get(feature, 0))))
        tables.append(DriftTable(int(model.version), role, int(counts.rows), rows))
    return tables or None


# ------------------------------------------------------------------------------- the pages


# The families the page's figures come from, as their keys start in prometheus-client's
# multiprocess files (JSON: [family, sample, labels, help]): the live figures, and drift's.
_FIGURES = (MODEL_REQUESTS, MODEL_REQUEST_SECONDS, LAST_INFERENCE)
_DRIFT = (DRIFT_BINS, DRIFT_ROWS, DRIFT_OUT_OF_RANGE)
_KEY_PREFIXES = {f'["{name}", ': name for name in _FIGURES + _DRIFT}
_Tally = dict[tuple[str, str], list[float]]  # (model, version) -> [ok, failed, ok seconds, last]


def _tally(telemetry: Telemetry, drift_model: str | None = None
           ) -> tuple[_Tally, dict[str, Counted]]:
    """Every worker's requests, failures, seconds of the successful ones and last inference
    time, per (model, version); and, for ``drift_model``, its drift counts per version.

    Under gunicorn, read straight from prometheus-client's multiprocess files with its own
    reader, JSON-decoding only the keys of the families above (drift's only for
    ``drift_model``): merging every file with MultiProcessCollector (as /metrics does) decodes
    every key of every metric, ~45 ms with 20 models x 10 versions where this takes a few
    (python -m bench.ui). Without multiprocess files (in-process), this worker's registry.
    Raises OSError if a file cannot be read.
    """
    tally: _Tally = {}
    drift: dict[str, Counted] = {}
    # how drift_model appears in a key's labels (json.dumps, as prometheus-client writes them)
    model_label = None if drift_model is None else f'"model": {json.dumps(drift_model)}'

    def add_drift(family: str, labels: Mapping[str, str], value: float) -> None:
        if labels.get("model") != drift_model:
            return
        counted = drift.setdefault(labels.get("version", ""), Counted())
        feature = labels.get("feature", "")
        if family == DRIFT_ROWS:
            counted.rows += value
        elif family == DRIFT_OUT_OF_RANGE:
            counted.out_of_range[feature] = counted.out_of_range.get(feature, 0.0) + value
        elif labels.get("bin", "").isdigit():
            bins = counted.bins.setdefault(feature, {})
            bins[int(labels["bin"])] = bins.get(int(labels["bin"]), 0.0) + value

    def add(family: str, labels: Mapping[str, str], value: float) -> None:
        if family in _DRIFT:
            add_drift(family, labels, value)
            return
        entry = tally.setdefault((labels.get("model", ""), labels.get("version", "")),
                                 [0.0, 0.0, 0.0, 0.0])
        if family == LAST_INFERENCE:
            entry[3] = max(entry[3], value)
        elif family == MODEL_REQUESTS:
            entry[0 if labels.get("outcome") == "success" else 1] += value
        elif labels.get("outcome") == "success":
            entry[2] += value

    directory = telemetry.prometheus.multiprocess_dir
    if not directory:
        for metric in telemetry.every_worker().collect():
            if metric.name in _FIGURES or (drift_model is not None and metric.name in _DRIFT):
                for sample in metric.samples:
                    if not sample.name.endswith("_created"):
                        add(metric.name, sample.labels, sample.value)
        return tally, drift
    files = glob.glob(os.path.join(directory, "counter_*.db")) + \
        glob.glob(os.path.join(directory, "gauge_max_*.db"))
    for path in files:
        try:
            values = MmapedDict.read_all_values_from_file(path)  # type: ignore[no-untyped-call]
        except FileNotFoundError:  # a worker's file removed meanwhile
            continue
        for key, value, _timestamp, _position in values:
            family = _KEY_PREFIXES.get(key[:key.find(", ") + 2])
            if family is None or (family in _DRIFT and (
                    model_label is None or model_label not in key)):
                continue
            _, sample, labels, _help = json.loads(key)
            if not sample.endswith("_created"):
                add(family, labels, value)
    return tally, drift


class Views:
    """Builds the pages' view-models for one worker's repository."""

    def __init__(self, repository: ModelRepository, telemetry: Telemetry | None) -> None:
        self.repository = repository
        self.telemetry = telemetry
        self._details: weakref.WeakKeyDictionary[LoadedModel, VersionDetail] = \
            weakref.WeakKeyDictionary()
        self._retired: dict[str, tuple[ModelState, list[int]]] = {}
        self._lock = threading.Lock()

    def detail(self, model: LoadedModel) -> VersionDetail:
        with self._lock:
            found = self._details.get(model)
        if found is None:
            found = build_detail(model)
            with self._lock:
                self._details[model] = found
        return found

    def retired(self, state: ModelState) -> list[int]:
        """The model's retired versions, listed again only when a scan made a new state."""
        cached = self._retired.get(state.name)
        if cached is not None and cached[0] is state:
            return cached[1]
        try:
            numbers = modelrepo.retired_versions(self.repository.root / state.name)
        except OSError:
            numbers = []
        self._retired[state.name] = (state, numbers)
        return numbers

    def figures(self, names: Iterable[str] | None = None) -> dict[tuple[str, str], Figures] | None:
        """Every version's live figures (all workers), or None when metrics are off."""
        return self.read(names)[0]

    def read(self, names: Iterable[str] | None = None, drift_model: str | None = None
             ) -> tuple[dict[tuple[str, str], Figures] | None, dict[str, Counted] | None]:
        """Every version's live figures (all workers) and ``drift_model``'s drift counts per
        version, in one pass over the metrics files; (None, None) when metrics are off."""
        if self.telemetry is None:
            return None, None
        wanted = None if names is None else set(names)
        out = {}
        tally, drift = _tally(self.telemetry, drift_model)
        for (name, version), (ok, failed, seconds, last) in tally.items():
            if wanted is not None and name not in wanted:
                continue
            out[(name, version)] = Figures(
                int(ok + failed), int(failed), seconds / ok * 1e3 if ok else None,
                dt.datetime.fromtimestamp(last, dt.timezone.utc).strftime(
                    "%Y-%m-%d %H:%M:%S UTC") if last else "")
        return out, drift

    def model(self, state: ModelState, figures: dict[tuple[str, str], Figures] | None,
              details: bool = False, drift: Mapping[str, Counted] | None = None) -> ModelView:
        """One model: a row per version directory (and retired version), newest first; with
        ``details``, every loaded version's detail, the traffic policy and the drift of the
        served versions (from ``drift``: version -> counts, see ``read``) too."""
        live = live_version(self.repository, state)
        live_number = int(live.version) if live else None
        rows: list[VersionRow] = []
        figures = figures or {}
        keep = self.repository.keep_versions
        for number in sorted(set(state.on_disk) | set(self.retired(state)), reverse=True):
            figure = figures.get((state.name, str(number)))
            labels = traffic_labels(self.repository, state, number)
            loaded = state.loaded.get(number)
            if loaded is not None:
                metadata = loaded.metadata
                rows.append(VersionRow(
                    number, "live" if number == live_number else "loaded",
                    created=_created(metadata), accuracy=_accuracy(metadata),
                    data=_data_text(metadata), figures=figure, labels=labels))
            elif number in state.broken:
                rows.append(VersionRow(number, "broken", state.broken[number], figures=figure,
                                       labels=labels))
            elif number in state.on_disk:
                rows.append(VersionRow(number, "not loaded", self._not_loaded_reason(keep),
                                       figures=figure, labels=labels))
            else:
                rows.append(VersionRow(number, "retired", "taken out of service (rollback); "
                                       "python -m modelrepo restore brings it back",
                                       figures=figure))
        view = ModelView(state.name, live_number, rows,
                         self.repository.predict_model == state.name,
                         broken=len(state.broken))
        if live is not None:
            view.shape = (live.n_features, live.n_classes)
        if details and live is not None:
            view.detail = self.detail(live)
        if details:
            view.details = [self.detail(state.loaded[n]) for n in sorted(state.loaded,
                                                                        reverse=True)]
            view.drift = feature_drift(state, drift, self.detail)
            view.traffic = traffic_view(state)
            view.compare_with = (compare_defaults(state) or (None, None))[0]
        return view

    @staticmethod
    def _not_loaded_reason(keep: int) -> str:
        # the words of the repository index (POST /v2/repository/index), without its prefix
        return f"only the newest {keep} valid versions are ({PREFIX}KEEP_VERSIONS)"

    def index(self) -> list[ModelView]:
        figures = self.figures()
        return [self.model(state, figures) for _, state in sorted(self.repository.models.items())]
