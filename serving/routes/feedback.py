"""``POST /v2/models/<name>/feedback``: the true labels of served predictions.

The body is one item or a list of items ``{"id": "<request id>", "label": "<true label>"}``,
each optionally with ``"row"`` (which row of a multi-row request, default 0) and the
``"model_version"`` and ``"class"`` (a label, or its index) the client received. Labels must be
the model's (the named version's when it is loaded, else the latest's); at most
``SOFTSERVE_FEEDBACK_MAX_ITEMS`` items. Answered 202 ``{"accepted": n, "logged": bool}``.

Items go to the prediction log as feedback events (``serving/telemetry/prediction_log.py``),
where ``python -m modelrepo report`` and ``python -m training --from-log`` join them with the
predictions by request id; an id that matches no logged prediction is accepted (the report
counts it as unmatched). Without a prediction log (``SOFTSERVE_PREDICTION_LOG`` unset) feedback
is still accepted and counted, ``"logged": false``. An item with ``model_version`` and ``class``
also counts in ``softserve_feedback_total{model,version,outcome="correct|wrong"}`` when the
repository has that version (any other number is logged, not counted: no unbounded series).
The endpoint writes only to the prediction-log directory, never to the model repository.
"""

from __future__ import annotations

import threading
from typing import Any

import orjson
from flask import Response, request

from modelrepo import parse_version
from serving.config import PREFIX, Config
from serving.errors import BadRequest, PayloadTooLarge
from serving.model import LoadedModel
from serving.repository import ModelRepository
from serving.routes import Handlers
from serving.routes.responses import json_response
from serving.telemetry import Telemetry
from serving.telemetry.prediction_log import PredictionLog
from serving.telemetry.prometheus import PrometheusBridge

_KEYS = frozenset({"id", "label", "row", "model_version", "class"})
MAX_ID_CHARS = 200  # as the request ids the server accepts (X-Request-ID)


class FeedbackCounts:
    """Per worker: feedback outcomes not yet handed to prometheus-client."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str, str], int] = {}

    def add(self, key: tuple[str, str, str]) -> None:
        with self._lock:
            self._pending[key] = self._pending.get(key, 0) + 1

    def flush(self, bridge: PrometheusBridge) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for labels, n in pending.items():
            bridge.feedback.labels(*labels).inc(n)


def _label_of(value: Any, model: LoadedModel, where: str, key: str) -> str:
    """A label given as a label or a class index. Raises BadRequest."""
    labels = model.class_labels
    if type(value) is int and 0 <= value < len(labels):
        return labels[value]
    if type(value) is str and value in labels:
        return value
    shown = ", ".join(map(repr, labels[:10])) + (", ..." if len(labels) > 10 else "")
    raise BadRequest(f"{where}: {key} {value!r} is not a label of model {model.name!r} "
                     f"version {model.version} ({shown}) nor a class index 0 to "
                     f"{len(labels) - 1}")


def parse_feedback(body: bytes, name: str, repository: ModelRepository,
                   max_items: int) -> list[dict[str, Any]]:
    """The feedback items of ``body``, checked, as the log records them. Raises BadRequest,
    PayloadTooLarge (more than ``max_items``), ModelNotFound, ModelNotReady."""
    latest = repository.get(name)  # 404 unknown model, 503 no valid version
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest('feedback must be JSON: one object {"id": "<request id>", "label": '
                         '"<true label>"} or a list of them') from None
    items = doc if isinstance(doc, list) else [doc]
    if not items:
        raise BadRequest("the feedback list is empty: send at least one "
                         '{"id": "<request id>", "label": "<true label>"}')
    if len(items) > max_items:
        raise PayloadTooLarge(f"{len(items)} feedback items, more than the {max_items} allowed "
                              f"per request ({PREFIX}FEEDBACK_MAX_ITEMS): split them")
    out = []
    for i, item in enumerate(items):
        where = f"feedback[{i}]" if isinstance(doc, list) else "feedback"
        if not isinstance(item, dict):
            raise BadRequest(f'{where} must be an object {{"id": "<request id>", "label": '
                             f'"<true label>"}}, not {type(item).__name__}')
        if unknown := sorted(set(item) - _KEYS):
            raise BadRequest(f"{where}: unknown key {unknown[0]!r}; the keys are id, label and "
                             "optionally row, model_version, class")
        request_id, label = item.get("id"), item.get("label")
        if type(request_id) is not str or not request_id or len(request_id) > MAX_ID_CHARS \
                or not request_id.isprintable():
            raise BadRequest(f'{where}: "id" must be the request id the prediction answered in '
                             f"its X-Request-ID header (1 to {MAX_ID_CHARS} printable "
                             "characters)")
        row = item.get("row", 0)
        if type(row) is not int or row < 0:
            raise BadRequest(f'{where}: "row" must be an integer >= 0 (the row of the '
                             "request, default 0)")
        model = latest
        record: dict[str, Any] = {"model": name, "request_id": request_id, "row": row}
        version = item.get("model_version")
        if version is not None:
            if type(version) is not str or parse_version(version) is None:
                raise BadRequest(f'{where}: "model_version" must be a version number as a '
                                 f'string, as the prediction answered it, not {version!r}')
            state = repository.state(name)
            model = state.loaded.get(int(version), latest)
        if type(label) is not str:
            raise BadRequest(f'{where}: "label" must be one of the model\'s labels (a string)')
        record["label"] = _label_of(label, model, where, '"label"')
        if version is not None:
            record["model_version"] = version
        if "class" in item:
            record["class"] = _label_of(item["class"], model, where, '"class"')
        out.append(record)
    return out


def handlers(config: Config, repository: ModelRepository, prediction_log: PredictionLog | None,
             telemetry: Telemetry | None) -> Handlers:
    """The feedback handler, by endpoint."""
    counts = FeedbackCounts()
    if telemetry is not None:
        telemetry.add_source(counts.flush)

    def feedback(name: str) -> Response:
        items = parse_feedback(request.get_data(), name, repository, config.feedback_max_items)
        # Only versions the repository has make metric series: a client naming any number
        # must not grow them without bound (the log keeps every item as sent).
        on_disk = repository.state(name).on_disk
        for item in items:
            if "model_version" in item and "class" in item \
                    and int(item["model_version"]) in on_disk:
                counts.add((name, item["model_version"],
                            "correct" if item["class"] == item["label"] else "wrong"))
        if prediction_log is not None:
            prediction_log.feedback(items)
        return json_response({"accepted": len(items), "logged": prediction_log is not None},
                             status=202)

    return {"feedback": feedback}
