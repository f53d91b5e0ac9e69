"""Server metadata and health (V2): ``/v2``, ``/v2/health/live``, ``/v2/health/ready``."""

from __future__ import annotations

from flask import Blueprint, Response

from serving.codecs import SERVER_EXTENSIONS
from serving.config import Config
from serving.errors import json_response
from serving.repository import ModelRepository


def blueprint(config: Config, repository: ModelRepository) -> Blueprint:
    bp = Blueprint("ops", __name__)
    from serving import SERVER_NAME, __version__

    extensions = [*SERVER_EXTENSIONS, *(["statistics"] if config.metrics else [])]
    metadata = {"name": SERVER_NAME, "version": __version__, "extensions": extensions}

    @bp.get("/v2")
    def server_metadata() -> Response:
        return json_response(metadata)

    @bp.get("/v2/health/live")
    def live() -> Response:
        return json_response({"live": True})

    @bp.get("/v2/health/ready")
    def ready() -> Response:
        ok, reason = repository.ready()
        if ok:
            return json_response({"ready": True})
        return json_response({"ready": False, "error": f"not ready: {reason}"}, status=503)

    return bp
