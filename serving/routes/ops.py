"""The API index (``/``), server metadata and health (V2): ``/v2``, ``/v2/health/live``,
``/v2/health/ready``."""

from __future__ import annotations

from flask import Response, request

from serving.codecs import SERVER_EXTENSIONS
from serving.config import Config
from serving.routes.responses import json_response
from serving.repository import ModelRepository
from serving.routes import Handlers


def handlers(config: Config, repository: ModelRepository) -> Handlers:
    """The index, server metadata and health handlers, by endpoint."""
    from serving import SERVER_NAME, __version__

    # Triton's read-only repository index and model configuration (serving.routes.v2).
    extensions = [*SERVER_EXTENSIONS, "model_repository", "model_configuration",
                  *(["statistics"] if config.metrics else []),
                  "softserve_feedback"]  # POST /v2/models/<name>/feedback
    metadata = {"name": SERVER_NAME, "version": __version__, "extensions": extensions}
    # Where a person (or a script) who found the server starts: what to read, what to call.
    endpoints = {
        "docs": "GET /docs",
        "ui": "GET /ui",
        "openapi": "GET /openapi.json",
        "predict": "POST /predict",
        "v1_predict": "POST /v1/models/{name}:predict",
        "v2_infer": "POST /v2/models/{name}[/versions/{version}]/infer",
        "v2_metadata": "GET /v2/models/{name}[/versions/{version}]",
        "models": "POST /v2/repository/index",
        "ready": "GET /v2/health/ready",
        "feedback": "POST /v2/models/{name}/feedback",
        **({"metrics": "GET /metrics", "statistics": "GET /v2/models/stats"}
           if config.metrics else {}),
    }

    def index() -> Response:
        # A browser asks for HTML first: it gets the page for people. Scripts and curl (no
        # Accept, or */*) keep getting this JSON. script_root: right under a path prefix too.
        if request.accept_mimetypes.best_match(("application/json", "text/html")) == "text/html":
            return Response(status=303, headers={"Location": f"{request.script_root}/ui",
                                                 "Vary": "Accept"})
        predict_model = repository.predict_model
        return json_response({**metadata, "models": sorted(repository.models),
                              **({"predict_model": predict_model} if predict_model else {}),
                              "endpoints": endpoints}, headers={"Vary": "Accept"})

    def server_metadata() -> Response:
        return json_response(metadata)

    def live() -> Response:
        return json_response({"live": True})

    def ready() -> Response:
        ok, reason = repository.ready()
        if ok:  # a reason other than "ready" is a problem served through (store unreachable)
            return json_response({"ready": True} if reason == "ready" else
                                 {"ready": True, "details": reason})
        return json_response({"ready": False, "error": f"not ready: {reason}"}, status=503)

    return {"api_index": index, "server_metadata": server_metadata, "live": live, "ready": ready}
