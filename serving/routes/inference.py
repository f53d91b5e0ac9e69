"""The three inference endpoints, written against the WSGI environ.

``/predict``, ``/v1/models/<name>:predict`` and ``/v2/models/<name>[/versions/<v>]/infer``
are the hot routes of the route table: ``serving.fastpath`` calls these handlers without
Flask's per-request machinery, and nothing else does. Decode, call the model, encode — each
stage timed for the statistics.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

from serving import codecs
from serving.config import PREFIX, Config
from serving.errors import BadRequest, ModelNotFound, PayloadTooLarge
from serving.model import LoadedModel
from serving.repository import ModelRepository, ModelState
from serving.routes import Handlers
from serving.telemetry.drift import DriftCounts
from serving.telemetry.prediction_log import PredictionLog
from serving.telemetry.record import RECORD_KEY
from serving.telemetry.shadow import shadow_task

# body, headers (Content-Type included)
Answer = tuple[bytes, list[tuple[str, str]]]
_JSON_HEADERS = [("Content-Type", codecs.JSON_CONTENT_TYPE)]
_HEADER_LENGTH_ENVIRON = "HTTP_" + codecs.HEADER_LENGTH_HEADER.upper().replace("-", "_")
_NO_STATE = ModelState("", {}, {}, ())  # an unknown model: repository.get says so


def read_body(environ: dict[str, Any], max_bytes: int) -> bytes:
    """The raw body, whatever the Content-Type (tritonclient sends none).

    A declared Content-Length over the limit is refused before anything is read; a chunked
    body is read up to the limit plus one byte. Raises PayloadTooLarge, BadRequest.
    """
    declared = environ.get("CONTENT_LENGTH")
    stream = environ["wsgi.input"]
    body: bytes
    try:
        if declared:
            try:
                length = int(declared)
            except ValueError:
                raise BadRequest(f"Content-Length {declared!r} is not a number") from None
            if length > max_bytes:
                raise PayloadTooLarge(f"request body of {length} bytes is over the limit of "
                                      f"{max_bytes} ({PREFIX}MAX_BODY_BYTES)")
            body = stream.read(length) if length > 0 else b""  # wsgi.input: bytes
            if len(body) != length:
                raise BadRequest(f"request body ended after {len(body)} of the {length} bytes "
                                 "its Content-Length declares")
            return body
        if environ.get("wsgi.input_terminated"):  # chunked: the server knows where it ends
            body = stream.read(max_bytes + 1)
            if len(body) > max_bytes:
                raise PayloadTooLarge(f"request body over the limit of {max_bytes} bytes "
                                      f"({PREFIX}MAX_BODY_BYTES)")
            return body
        return b""
    except (BadRequest, PayloadTooLarge):
        raise
    except Exception as exc:  # gunicorn's own parse errors for a malformed chunked body
        raise BadRequest(f"the request body is malformed: {exc}") from None


def _account(environ: dict[str, Any], rows: int, started: float, decoded: float,
             predicted: float) -> None:
    """Leave an answered inference's rows and stage times (decode, infer, encode — which ends
    now) in the request record, for the statistics and the access log."""
    record = environ[RECORD_KEY]
    record.rows, record.encode_seconds = rows, perf_counter() - predicted
    record.decode_seconds, record.infer_seconds = decoded - started, predicted - decoded


def _observe(environ: dict[str, Any], model: LoadedModel, rows: Any, probabilities: Any,
             classes: Any, drift: DriftCounts | None, log: PredictionLog | None) -> None:
    """After the answer is sent: count the rows for drift (``DriftCounts.observe``: a small
    request's are held, to be counted with others at the next metrics flush) and log the
    inference, each if sampled (neither adds to the client's latency, nor can fail its
    answer)."""
    record = environ[RECORD_KEY]
    if drift is not None and drift.sampled():
        counting = drift.observe(model.name, model.version, model.metadata, rows)
        if counting is not None:
            record.after_answer(counting)
    if log is not None and log.sampled():
        def log_it() -> None:
            log.prediction(record, model.feature_names, model.class_labels, rows,
                           probabilities, classes)

        record.after_answer(log_it)


class Inference:
    def __init__(self, config: Config, repository: ModelRepository,
                 drift: DriftCounts | None = None,
                 prediction_log: PredictionLog | None = None) -> None:
        self.config = config
        self.repository = repository
        self.drift, self.prediction_log = drift, prediction_log

    def handlers(self) -> Handlers:
        """The hot routes' handlers, by endpoint: ``(environ, **url args) -> Answer``."""
        return {"predict": self.predict, "v1_predict": self.predict, "v2_infer": self.infer,
                # TF Serving's versions/<n> and labels/<alias>: either takes either
                "v1_version_predict": self.predict, "v1_label_predict": self.predict}

    def _resolve(self, environ: dict[str, Any], name: str,
                 version: str | None = None) -> LoadedModel:
        record = environ[RECORD_KEY]  # for the access log and metrics
        traffic = self.repository.models.get(name, _NO_STATE).traffic if version is None \
            else None
        if traffic is None:
            model = self.repository.get(name, version)
        else:  # the model's traffic policy: production, a canary, a shadow (shadow.py)
            model, record.target = traffic.choose(environ)
            if traffic.shadow is not None and model is traffic.default and traffic.shadows():
                record.shadow = traffic.shadow
        record.model, record.version = model.name, model.version
        return model

    def _shadow(self, environ: dict[str, Any], model: LoadedModel, rows: Any,
                probabilities: Any, classes: Any) -> None:
        """Leave the shadow run for after the answer, if this request has one."""
        record = environ[RECORD_KEY]
        if record.shadow is not None:
            record.after_answer(shadow_task(self.repository.telemetry, model, record.shadow,
                                            rows, probabilities, classes))

    def default_model_name(self) -> str:
        """The model behind /predict. Raises ModelNotFound when the repository has none."""
        name = self.repository.predict_model
        if name is None:
            raise ModelNotFound(f"no model in the model repository ({PREFIX}MODEL_REPOSITORY): "
                                "publish one with `python -m training`")
        return name

    def predict(self, environ: dict[str, Any], name: str | None = None,
                version: str | None = None) -> Answer:
        """Simple and V1: ``{"instances": [...]}``. Raises SoftserveError subclasses."""
        model = self._resolve(environ, name or self.default_model_name(), version)
        body = read_body(environ, self.config.max_body_bytes)
        started = perf_counter()
        rows = codecs.decode_instances(body, model.shape, self.config.max_batch_rows)
        decoded = perf_counter()
        probabilities, classes = model.predict(rows)
        predicted = perf_counter()
        out = codecs.encode_predictions(model.name, model.version, probabilities, classes,
                                        model.class_labels)
        _account(environ, len(rows), started, decoded, predicted)
        self._shadow(environ, model, rows, probabilities, classes)
        _observe(environ, model, rows, probabilities, classes, self.drift, self.prediction_log)
        return out, _JSON_HEADERS

    def infer(self, environ: dict[str, Any], name: str, version: str | None = None) -> Answer:
        """V2 inference, JSON or binary. Raises SoftserveError subclasses."""
        model = self._resolve(environ, name, version)
        header_length = codecs.parse_header_length(environ.get(_HEADER_LENGTH_ENVIRON))
        body = read_body(environ, self.config.max_body_bytes)
        started = perf_counter()
        request = codecs.decode_infer(body, header_length, model.shape,
                                     self.config.max_batch_rows)
        decoded = perf_counter()
        probabilities, classes = model.predict(request.inputs)
        predicted = perf_counter()
        out, headers = codecs.encode_infer(model.name, model.version, request, probabilities,
                                           classes, model.class_labels)
        _account(environ, len(request.inputs), started, decoded, predicted)
        self._shadow(environ, model, request.inputs, probabilities, classes)
        _observe(environ, model, request.inputs, probabilities, classes, self.drift,
                 self.prediction_log)
        return out, list(headers.items())
