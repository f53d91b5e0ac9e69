"""V2 Open Inference Protocol: model metadata, readiness and inference (JSON and binary)."""

from __future__ import annotations

from flask import Blueprint, Response, request

from modelrepo import PLATFORM
from serving.errors import ModelNotReady, json_response
from serving.repository import ModelRepository
from serving.routes.inference import Inference


def blueprint(repository: ModelRepository, inference: Inference) -> Blueprint:
    bp = Blueprint("v2", __name__)

    @bp.get("/v2/models/<model:name>")
    @bp.get("/v2/models/<model:name>/versions/<version>")
    def model_metadata(name: str, version: str | None = None) -> Response:
        model = repository.get(name, version)
        return json_response({
            "name": name,
            "versions": [version] if version else repository.state(name).versions,
            "platform": PLATFORM,
            "inputs": model.metadata["inputs"],
            "outputs": model.metadata["outputs"],
        })

    @bp.get("/v2/models/<model:name>/ready")
    @bp.get("/v2/models/<model:name>/versions/<version>/ready")
    def model_ready(name: str, version: str | None = None) -> Response:
        try:
            model = repository.get(name, version)
        except ModelNotReady as exc:
            return json_response({"name": name, "ready": False, "error": exc.message}, status=503)
        return json_response({"name": name, "version": model.version, "ready": True})

    @bp.post("/v2/models/<model:name>/infer")
    @bp.post("/v2/models/<model:name>/versions/<version>/infer")
    def infer(name: str, version: str | None = None) -> Response:
        body, headers = inference.infer(request.environ, name, version)
        return Response(body, headers=headers)

    return bp
