"""Thin blueprints: decode the request, call the model, encode the answer — nothing else."""

from __future__ import annotations

from werkzeug.routing import BaseConverter

from modelrepo import MODEL_NAME_PATTERN


class ModelNameConverter(BaseConverter):
    """``<model:name>``: only names the repository can hold, so ``iris:predict`` or ``..``
    never reach a model lookup (and ``GET /v1/models/iris:predict`` is a 405, not a 404)."""

    regex = MODEL_NAME_PATTERN
