"""V2 Open Inference Protocol: model metadata, readiness and inference (JSON and binary)."""

from __future__ import annotations

import numpy as np
from flask import Blueprint, Response, request

from modelrepo import PLATFORM
from serving import codecs
from serving.config import Config
from serving.errors import ModelNotReady, json_response
from serving.repository import ModelRepository
from serving.routes import answer, request_body, resolve


def blueprint(config: Config, repository: ModelRepository) -> Blueprint:
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
        model = resolve(repository, name, version)
        header_length = codecs.parse_header_length(
            request.headers.get(codecs.HEADER_LENGTH_HEADER))
        body = request_body(config.max_body_bytes)

        def decode() -> tuple[np.ndarray, codecs.InferRequest]:
            decoded = codecs.decode_infer(body, header_length, config.max_batch_rows)
            return decoded.inputs, decoded

        def encode(probabilities: np.ndarray, classes: np.ndarray,
                   decoded: codecs.InferRequest) -> Response:
            out, headers = codecs.encode_infer(model.name, model.version, decoded,
                                               probabilities, classes, model.class_labels)
            return Response(out, headers=headers)

        return answer(model, decode, encode)

    return bp
