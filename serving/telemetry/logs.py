"""softserve's own logs: one JSON object a line on stderr, with the same keys as the access log
(access_log.py writes that one itself, to stdout)."""

from __future__ import annotations

import datetime as dt
import logging

import orjson


class JsonFormatter(logging.Formatter):
    """Log records as one JSON object a line, with the same keys as the access log."""

    def format(self, record: logging.LogRecord) -> str:
        data = {"time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc)
                .isoformat(timespec="milliseconds"), "level": record.levelname,
                "logger": record.name, "pid": record.process, "message": record.getMessage()}
        for key in ("model", "version", "reason", "path"):
            if hasattr(record, key):
                data[key] = getattr(record, key)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(data).decode()


def configure_logging(level: str) -> None:
    """The "softserve" loggers at ``level``, in JSON on stderr; done once per process (a second
    call only changes the level). Raises ValueError for an unknown level name."""
    logger = logging.getLogger("softserve")
    logger.setLevel(level.upper())
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
        logger.propagate = False
