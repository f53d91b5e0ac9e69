"""``GET /metrics`` (Prometheus) and the V2 statistics extension, summed over all workers."""

from __future__ import annotations

from flask import Blueprint, Response

from serving.config import PREFIX, Config
from serving.errors import ModelNotFound, SoftserveError, json_response
from serving.repository import ModelRepository
from serving.telemetry import Telemetry

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def blueprint(config: Config, repository: ModelRepository,
              telemetry: Telemetry | None) -> Blueprint:
    bp = Blueprint("metrics", __name__)

    def enabled() -> Telemetry:
        if telemetry is None:
            raise SoftserveError(f"metrics are turned off ({PREFIX}METRICS=0)", 404)
        return telemetry

    @bp.get("/metrics")
    def metrics() -> Response:
        return Response(enabled().exposition(), content_type=PROMETHEUS_CONTENT_TYPE)

    @bp.get("/v2/models/stats")
    @bp.get("/v2/models/<model:name>/stats")
    @bp.get("/v2/models/<model:name>/versions/<version>/stats")
    def stats(name: str | None = None, version: str | None = None) -> Response:
        recorder = enabled()
        if name is not None:
            state = repository.state(name)  # 404 for an unknown model
            if version is not None and version not in {str(v) for v in state.on_disk} | \
                    {str(v) for v in state.loaded}:
                raise ModelNotFound(f"model {name!r} has no version {version!r}")
        found = recorder.model_stats(
            lambda n, v: (name is None or n == name) and (version is None or v == version))
        # Loaded versions without traffic yet are listed with zeros, as Triton does.
        listed = {(s["name"], s["version"]) for s in found}
        for model_name, state in repository.models.items():
            for v in state.versions:
                if (model_name, v) not in listed and (name is None or model_name == name) \
                        and (version is None or v == version):
                    found += recorder.model_stats_zero(model_name, v)
        if version is not None and not found:
            found = recorder.model_stats_zero(name or "", version)
        found.sort(key=lambda s: (s["name"], int(s["version"])))
        return json_response({"model_stats": found})

    return bp
