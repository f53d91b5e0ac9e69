"""Handlers: decode the request, call the model, encode the answer — nothing else.

Which URL reaches which handler is the route table's business (``serving.routes.table``); each
module here returns its handlers by endpoint name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from werkzeug.routing import BaseConverter

from modelrepo import MODEL_NAME_PATTERN

# endpoint name -> handler (a Flask view, or for the hot routes ``(environ, **args) -> Answer``)
Handlers = dict[str, Callable[..., Any]]


class ModelNameConverter(BaseConverter):
    """``<model:name>``: only names the repository can hold, so ``iris:predict`` or ``..``
    never reach a model lookup (and ``GET /v1/models/iris:predict`` is a 405, not a 404)."""

    regex = MODEL_NAME_PATTERN
