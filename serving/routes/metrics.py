"""``GET /metrics`` (Prometheus) and the V2 statistics extension, summed over all workers."""

from __future__ import annotations

from flask import Response

from modelrepo import parse_version
from serving.config import PREFIX
from serving.errors import ModelNotFound, SoftserveError
from serving.routes.responses import json_response
from serving.repository import ModelRepository
from serving.routes import Handlers
from serving.telemetry import Telemetry
from serving.telemetry.statistics import model_stats, shadow_stats

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def handlers(repository: ModelRepository, telemetry: Telemetry | None) -> Handlers:
    """/metrics and the V2 statistics handlers, by endpoint."""

    def enabled() -> Telemetry:
        if telemetry is None:
            raise SoftserveError(f"metrics are turned off ({PREFIX}METRICS=0)", 404)
        return telemetry

    def metrics() -> Response:
        return Response(enabled().exposition(), content_type=PROMETHEUS_CONTENT_TYPE)

    def stats(name: str | None = None, version: str | None = None) -> Response:
        recorder = enabled()
        listed = [(n, v) for n, state in repository.models.items() for v in state.versions]
        if name is not None:
            state = repository.state(name)  # 404 for an unknown model
            if version is not None:
                if parse_version(version) is None and version in state.aliases:
                    version = state.aliases[version].version  # an alias: its version's
                number = parse_version(version)
                if number not in state.on_disk:
                    raise ModelNotFound(f"model {name!r} has no version {version!r}")
                if number in state.broken:  # as its ready route says: broken, not served
                    repository.get(name, version)  # raises ModelNotReady with the reason
                listed.append((name, version))

        def wanted(n: str, v: str) -> bool:
            return (name is None or n == name) and (version is None or v == version)

        registry = recorder.every_worker()
        answer: dict[str, object] = {"model_stats": model_stats(
            registry, wanted, [key for key in listed if wanted(*key)])}
        # A shadow's comparison with the answers (issue 16), only where there is one.
        if version is None and (shadows := shadow_stats(
                registry, lambda n: name is None or n == name)):
            answer["shadow_stats"] = shadows
        return json_response(answer)

    return {"metrics": metrics, "statistics": stats}
