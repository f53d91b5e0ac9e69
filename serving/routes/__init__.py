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

from serving.model import LoadedModel
from serving.repository import ModelRepository
from serving.telemetry import INFERENCE_KEY, MODEL_KEY

Decoded = TypeVar("Decoded")


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
