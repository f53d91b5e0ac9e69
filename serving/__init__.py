"""softserve's HTTP server: ``create_app()`` is the one place things are wired.

Run it with gunicorn: ``gunicorn -c serving/gunicorn.conf.py "serving:create_app()"``.
This package never imports torch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask

from serving.config import Config
from serving.routes.responses import name_flask_route, register_error_handlers
from serving.fastpath import FastPath
from serving.repository import ModelRepository
from serving.routes import Handlers, ModelNameConverter, docs, feedback, metrics, ops, v1, v2
from serving import ui
from serving.routes.inference import Inference
from serving.routes.table import ROUTES
from serving.telemetry import Telemetry
from serving.telemetry.access_log import ObservedApp, offer_access_log_buffer
from serving.telemetry.drift import DriftCounts, expected_fractions, psi_family
from serving.telemetry.prediction_log import PredictionLog
from serving.telemetry.logs import configure_logging

__version__ = "0.1.0"
SERVER_NAME = "softserve"


def _check_handlers(handlers: Handlers) -> None:
    """Every endpoint of the route table has a handler, and every handler a route.

    Raises RuntimeError naming the difference (a programming error, caught at start-up).
    """
    endpoints = {route.endpoint for route in ROUTES}
    if missing := endpoints - set(handlers):
        raise RuntimeError(f"routes without a handler: {sorted(missing)}")
    if unrouted := set(handlers) - endpoints:
        raise RuntimeError(f"handlers without a route: {sorted(unrouted)}")


def _loop(config: Config, repository: ModelRepository, telemetry: Telemetry | None
          ) -> tuple[DriftCounts | None, PredictionLog | None]:
    """What flows back from serving: drift counts (with metrics) and the prediction log."""
    drift = None
    if telemetry is not None and config.drift_sample > 0:
        drift = DriftCounts(config.drift_sample)
        telemetry.add_source(drift.flush)

        def expected(name: str, version: str) -> dict[str, list[float]] | None:
            state = repository.models.get(name)
            number = int(version) if version.isdigit() else None
            loaded = state.loaded.get(number) if state and number is not None else None
            return expected_fractions(loaded.metadata) if loaded is not None else None

        telemetry.prometheus.exposition_filters.append(
            lambda families: psi_family(families, expected))
    prediction_log = None
    if config.prediction_log is not None:
        prediction_log = PredictionLog(config.prediction_log, config.prediction_log_sample,
                                       config.prediction_log_file_bytes,
                                       config.prediction_log_max_bytes)
        if telemetry is not None:
            telemetry.add_source(prediction_log.add_counts)
    return drift, prediction_log


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the application: configuration, the repository (scanned now, then watched), routes.

    ``test_config`` overrides settings by field name (see ``serving.config.Config``).
    Raises ConfigError for a bad setting.
    """
    config = Config.load(overrides=test_config)
    configure_logging(config.log_level)
    app = Flask(__name__, static_folder=None)
    app.url_map.converters["model"] = ModelNameConverter
    # No 308 redirects for '//' in a path: they are built from the client's Host header.
    app.url_map.merge_slashes = False
    # The inference handlers enforce the body limit themselves (routes/inference.read_body);
    # this holds it for anything else that would read a body through werkzeug.
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    telemetry = Telemetry(config.metrics_flush_seconds) if config.metrics else None
    repository = ModelRepository(config.model_repository, config.keep_versions, telemetry,
                                 config.default_model, cache_dir=config.cache_dir)
    repository.scan()
    repository.watch(config.poll_seconds)
    if telemetry is not None:
        # Here, not in gunicorn's post_worker_init: create_app already runs in each worker after
        # the fork (preload_app = False), and in-process use (test client, bench) gets it too.
        telemetry.start()
    app.extensions["softserve"] = repository  # for in-process tools (bench/micro.py)
    app.extensions["softserve.telemetry"] = telemetry  # closed by gunicorn.conf's worker_exit
    register_error_handlers(app)
    app.before_request(name_flask_route)  # the route label of what Flask answers
    drift, prediction_log = _loop(config, repository, telemetry)
    inference = Inference(config, repository, drift, prediction_log)
    handlers: Handlers = {**ops.handlers(config, repository), **v1.handlers(repository),
                          **v2.handlers(repository), **metrics.handlers(repository, telemetry),
                          **docs.handlers(), **inference.handlers(),
                          **ui.handlers(repository, telemetry),
                          **feedback.handlers(config, repository, prediction_log, telemetry)}
    _check_handlers(handlers)
    # The route table is the URL map: Flask gets every route but the hot ones, which the hot
    # path answers whole (every method) in front of it.
    for route in ROUTES:
        if not route.hot:
            app.add_url_rule(route.rule, route.endpoint, handlers[route.endpoint],
                             methods=list(route.methods))
    access_log = config.access_log and \
        logging.getLevelName(config.log_level.upper()) <= logging.INFO
    # Outermost first: observe everything; answer inference POSTs without Flask's machinery.
    observed = ObservedApp(FastPath(app.wsgi_app, [r for r in ROUTES if r.hot], handlers),
                           telemetry, access_log)
    app.wsgi_app = observed  # type: ignore[method-assign]
    # gunicorn's worker gets this Flask app, not the middleware: offer it the access-log buffer.
    offer_access_log_buffer(app, observed)
    logging.getLogger("softserve").info(
        "serving %s: %s", repository.store or config.model_repository,
        ", ".join(f"{n} v{m.serving.version}" if m.serving else f"{n} (no valid version)"
                  for n, m in repository.models.items()) or "no models")
    return app
