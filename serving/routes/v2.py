"""V2 Open Inference Protocol: model metadata, readiness and inference (JSON and binary), and
Triton's model-repository (read-only: the index) and model-configuration extensions."""

from __future__ import annotations

from flask import Blueprint, Response, request

import orjson

import modelrepo
from modelrepo import PLATFORM
from serving.config import PREFIX
from serving.errors import BadRequest, ModelNotReady, SoftserveError, json_response
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

    @bp.get("/v2/models/<model:name>/config")
    @bp.get("/v2/models/<model:name>/versions/<version>/config")
    def model_config(name: str, version: str | None = None) -> Response:
        model = repository.get(name, version)
        return json_response(modelrepo.model_config(
            name, model.metadata["inputs"], model.metadata["outputs"], repository.keep_versions))

    @bp.post("/v2/repository/index")
    def repository_index() -> Response:
        ready_only = _ready_only(request.get_data())
        index = repository.index()
        return json_response([e for e in index if e["state"] == "READY"] if ready_only
                             else index)

    @bp.post("/v2/repository/models/<model:name>/load")
    @bp.post("/v2/repository/models/<model:name>/unload")
    def load_or_unload(name: str) -> Response:
        raise SoftserveError(
            "the model repository is read-only over HTTP: publish a version with "
            "`python -m training` (or retire one with `python -m modelrepo`) and every worker "
            f"loads it within {PREFIX}POLL_SECONDS", 403)

    @bp.post("/v2/models/<model:name>/infer")
    @bp.post("/v2/models/<model:name>/versions/<version>/infer")
    def infer(name: str, version: str | None = None) -> Response:
        body, headers = inference.infer(request.environ, name, version)
        return Response(body, headers=headers)

    return bp


def _ready_only(body: bytes) -> bool:
    """The index request's ``ready`` flag: an empty body, or ``{"ready": true|false}``.

    Raises BadRequest for anything else.
    """
    if not body.strip():
        return False
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest('the repository index request must be empty or a JSON object such as '
                         '{"ready": true}') from None
    if not isinstance(request, dict) or not isinstance(request.get("ready", False), bool) or \
            set(request) - {"ready"}:
        raise BadRequest('the repository index request takes one optional key, "ready", a '
                         f'boolean; got {body[:80].decode("utf-8", "replace")!r}')
    return bool(request.get("ready", False))
