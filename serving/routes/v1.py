"""KServe V1 / TF-Serving: ``GET /v1/models/<name>`` (the predict route is the hot path's,
``serving.routes.inference``)."""

from __future__ import annotations

from flask import Response

from serving.errors import ModelNotReady
from serving.routes.responses import json_response
from serving.repository import ModelRepository
from serving.routes import Handlers


def handlers(repository: ModelRepository) -> Handlers:
    """KServe V1's model status handler (its predict is the hot path's), by endpoint."""

    def model_status(name: str) -> Response:
        state = repository.state(name)  # 404 for an unknown model
        try:
            repository.get(name)
        except ModelNotReady as exc:  # one rule with V2's ready routes: cannot serve is a 503
            return json_response({"name": name, "ready": False, "versions": state.versions,
                                  "error": exc.message}, status=503)
        return json_response({"name": name, "ready": True, "versions": state.versions})

    return {"v1_model_status": model_status}
