"""Thin blueprints: decode the request, call the model, encode the answer — nothing else.

The two helpers here are what every inference route shares: resolving the model (so the
access log and metrics know which one answered) and timing the three stages.
"""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter
from typing import TypeVar

import numpy as np
from flask import Response, request
from werkzeug.routing import BaseConverter

from modelrepo import MODEL_NAME_PATTERN
from serving.errors import PayloadTooLarge
from serving.model import LoadedModel
from serving.repository import ModelRepository
from serving.telemetry import INFERENCE_KEY, MODEL_KEY

Decoded = TypeVar("Decoded")


class ModelNameConverter(BaseConverter):
    """``<model:name>``: only names the repository can hold, so ``iris:predict`` or ``..``
    never reach a model lookup (and ``GET /v1/models/iris:predict`` is a 405, not a 404)."""

    regex = MODEL_NAME_PATTERN


def request_body(max_bytes: int) -> bytes:
    """The raw body, whatever the Content-Type (tritonclient sends none).

    Werkzeug refuses a declared Content-Length over the limit before reading (413); a chunked
    body is read up to the limit, so one more byte means it was too large. Raises
    PayloadTooLarge.
    """
    body = request.get_data(cache=False)
    if request.content_length is None and len(body) >= max_bytes and \
            request.environ["wsgi.input"].read(1):
        raise PayloadTooLarge(f"request body over {max_bytes} bytes (SOFTSERVE_MAX_BODY_BYTES)")
    return body


def resolve(repository: ModelRepository, name: str, version: str | None = None) -> LoadedModel:
    """The model that answers this request. Raises ModelNotFound or ModelNotReady."""
    model = repository.get(name, version)
    request.environ[MODEL_KEY] = (model.name, model.version)
    return model


def answer(model: LoadedModel, decode: Callable[[], tuple[np.ndarray, Decoded]],
           encode: Callable[[np.ndarray, np.ndarray, Decoded], Response]) -> Response:
    """decode -> model.predict -> encode, with each stage timed for the statistics.

    ``decode`` returns the float32 rows and whatever ``encode`` needs besides the outputs.
    Raises what decode raises (BadRequest, PayloadTooLarge).
    """
    started = perf_counter()
    rows, decoded = decode()
    decoded_at = perf_counter()
    probabilities, classes = model.predict(rows)
    predicted_at = perf_counter()
    response = encode(probabilities, classes, decoded)
    request.environ[INFERENCE_KEY] = (len(rows), decoded_at - started,
                                      predicted_at - decoded_at, perf_counter() - predicted_at)
    return response
