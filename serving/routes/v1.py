"""KServe V1 / TF-Serving: ``GET /v1/models/<name>``, ``POST /v1/models/<name>:predict``."""

from __future__ import annotations

from flask import Blueprint, Response, request

from serving.errors import ModelNotReady, json_response
from serving.repository import ModelRepository
from serving.routes.inference import Inference


def blueprint(repository: ModelRepository, inference: Inference) -> Blueprint:
    bp = Blueprint("v1", __name__)

    @bp.get("/v1/models/<model:name>")
    def model_status(name: str) -> Response:
        state = repository.state(name)  # 404 for an unknown model
        try:
            repository.get(name)
        except ModelNotReady as exc:  # one rule with V2's ready routes: cannot serve is a 503
            return json_response({"name": name, "ready": False, "versions": state.versions,
                                  "error": exc.message}, status=503)
        return json_response({"name": name, "ready": True, "versions": state.versions})

    @bp.post("/v1/models/<model:name>:predict")
    def predict(name: str) -> Response:
        body, headers = inference.predict(request.environ, name)
        return Response(body, headers=headers)

    return bp
