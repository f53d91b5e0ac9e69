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
from serving.errors import register_error_handlers
from serving.repository import ModelRepository
from serving.routes import ops, simple, v1, v2

__version__ = "0.1.0"
SERVER_NAME = "softserve"


def _configure_logging(level: str) -> None:
    logger = logging.getLogger("softserve")
    logger.setLevel(level.upper())
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the application: configuration, the repository (scanned now, then watched), routes.

    ``test_config`` overrides settings by field name (see ``serving.config.Config``).
    Raises ConfigError for a bad setting.
    """
    config = Config.load(overrides=test_config)
    _configure_logging(config.log_level)
    app = Flask(__name__)
    # Werkzeug refuses a larger body (413) from its Content-Length, without reading it, and
    # stops a chunked one at the limit.
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    repository = ModelRepository(config.model_repository, config.keep_versions)
    repository.scan()
    repository.watch(config.poll_seconds)
    app.extensions["softserve"] = repository
    register_error_handlers(app)
    for module in (ops, simple, v1, v2):
        app.register_blueprint(module.blueprint(config, repository))
    logging.getLogger("softserve").info(
        "serving %s: %s", config.model_repository,
        ", ".join(f"{n} v{m.latest.version}" if m.latest else f"{n} (no valid version)"
                  for n, m in repository.models.items()) or "no models")
    return app
