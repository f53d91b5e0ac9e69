"""KServe V1 / TF-Serving: ``GET /v1/models/<name>``, ``POST /v1/models/<name>:predict``."""

from __future__ import annotations

from flask import Blueprint, Response

from serving.config import Config
from serving.errors import json_response
from serving.repository import ModelRepository
from serving.routes import request_body, resolve
from serving.routes.simple import predict_response


def blueprint(config: Config, repository: ModelRepository) -> Blueprint:
    bp = Blueprint("v1", __name__)

    @bp.get("/v1/models/<model:name>")
    def model_status(name: str) -> Response:
        state = repository.state(name)
        return json_response({"name": name, "ready": state.latest is not None,
                              "versions": state.versions})

    @bp.post("/v1/models/<model:name>:predict")
    def predict(name: str) -> Response:
        return predict_response(resolve(repository, name), request_body(config.max_body_bytes),
                                config.max_batch_rows)

    return bp
