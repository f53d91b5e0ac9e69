"""V2 Open Inference Protocol: model metadata and readiness, Triton's model-configuration and
model-repository (read-only: the index) extensions. Inference is ``serving.routes.inference``."""

from __future__ import annotations

import orjson
from flask import Response, request

import modelrepo
from modelrepo import PLATFORM
from serving.config import PREFIX
from serving.errors import BadRequest, ModelNotReady, SoftserveError
from serving.routes.responses import json_response
from serving.repository import ModelRepository
from serving.routes import Handlers


def handlers(repository: ModelRepository) -> Handlers:
    """V2 metadata, readiness, configuration and repository handlers, by endpoint."""

    def model_metadata(name: str, version: str | None = None) -> Response:
        model = repository.get(name, version)
        return json_response({
            "name": name,
            # the concrete number, also when the version asked for is an alias
            "versions": [model.version] if version else repository.state(name).versions,
            "platform": PLATFORM,
            "inputs": model.metadata["inputs"],
            "outputs": model.metadata["outputs"],
        })

    def model_ready(name: str, version: str | None = None) -> Response:
        try:
            model = repository.get(name, version)
        except ModelNotReady as exc:
            return json_response({"name": name, "ready": False, "error": exc.message}, status=503)
        return json_response({"name": name, "version": model.version, "ready": True})

    def model_config(name: str, version: str | None = None) -> Response:
        model = repository.get(name, version)
        return json_response(modelrepo.model_config(
            name, model.metadata["inputs"], model.metadata["outputs"], repository.keep_versions))

    def repository_index() -> Response:
        ready_only = _ready_only(request.get_data())
        index = repository.index()
        return json_response([e for e in index if e["state"] == "READY"] if ready_only
                             else index)

    def load_or_unload(name: str) -> Response:
        raise SoftserveError(
            "the model repository is read-only over HTTP: publish a version with "
            "`python -m training` (or retire one with `python -m modelrepo`) and every worker "
            f"loads it within {PREFIX}POLL_SECONDS", 403)

    return {"model_metadata": model_metadata, "model_ready": model_ready,
            "model_config": model_config, "repository_index": repository_index,
            "repository_refused": load_or_unload}


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
