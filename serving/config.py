"""Configuration: defaults, then ``SOFTSERVE_*`` environment variables, then a test dict.

Read once, at application start-up; nothing reads the environment per request.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

PREFIX = "SOFTSERVE_"


class ConfigError(Exception):
    """A setting with a value that cannot be used; the message names the variable."""


@dataclass(frozen=True)
class Config:
    model_repository: Path = Path("./artifacts")
    default_model: str | None = None  # the model behind /predict; None: the first published
    max_batch_rows: int = 100_000
    max_body_bytes: int = 16 * 1024 * 1024
    poll_seconds: float = 2.0  # 0 turns the repository watcher off
    keep_versions: int = 3
    log_level: str = "INFO"
    metrics: bool = True  # Prometheus /metrics and V2 statistics
    metrics_flush_seconds: float = 1.0  # how stale another worker's figures may be
    access_log: bool = True  # one JSON line per request on stdout (at log level INFO or lower)
    # softserve's gunicorn worker: how long a client may take to send a request once it has
    # begun, and may stall while taking its answer
    request_timeout: float = 10.0
    # softserve's gunicorn worker: a worker holding more kept-alive connections than the
    # least loaded live worker + 1 (or + a quarter) leaves new ones to the others (worker.py)
    balance_connections: bool = True
    # The prediction log (serving/telemetry/prediction_log.py): a directory to write what was
    # served and the feedback received (None: off), the share of inferences logged, the size
    # at which a worker starts a new file, and the cap on the directory's total size.
    prediction_log: Path | None = None
    prediction_log_sample: float = 1.0
    prediction_log_file_bytes: int = 64 * 1024 * 1024
    prediction_log_max_bytes: int = 1024 * 1024 * 1024
    # Drift counting (serving/telemetry/drift.py): the share of inference requests whose rows
    # are counted into the training bins (0 turns it off); needs metrics.
    drift_sample: float = 1.0
    # POST /v2/models/<name>/feedback: the most items one request may carry.
    feedback_max_items: int = 1000
    # An s3:// model repository: where a server keeps the versions it downloaded (None:
    # $XDG_CACHE_HOME/softserve, ~/.cache/softserve, else the temporary directory).
    cache_dir: Path | None = None

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None,
             overrides: Mapping[str, Any] | None = None) -> Config:
        """Build the configuration. Raises ConfigError naming the bad variable or key."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _convert(f.name, raw)
        unknown = set(overrides or {}) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown configuration keys: {sorted(unknown)}")
        config = replace(cls(), **{**values, **dict(overrides or {})})
        config = replace(config, model_repository=Path(config.model_repository))
        if config.cache_dir is not None:
            config = replace(config, cache_dir=Path(config.cache_dir))
        if config.prediction_log is not None:
            config = replace(config, prediction_log=Path(config.prediction_log))
        config.check()
        return config

    def check(self) -> None:
        if self.max_batch_rows < 1:
            raise ConfigError(f"{PREFIX}MAX_BATCH_ROWS must be >= 1, not {self.max_batch_rows}")
        if self.max_body_bytes < 1024:
            raise ConfigError(f"{PREFIX}MAX_BODY_BYTES must be >= 1024, not {self.max_body_bytes}")
        if self.poll_seconds < 0:
            raise ConfigError(f"{PREFIX}POLL_SECONDS must be >= 0, not {self.poll_seconds}")
        if self.metrics_flush_seconds <= 0:
            raise ConfigError(f"{PREFIX}METRICS_FLUSH_SECONDS must be > 0, not "
                              f"{self.metrics_flush_seconds}")
        if not self.request_timeout > 0:
            raise ConfigError(f"{PREFIX}REQUEST_TIMEOUT must be > 0, not {self.request_timeout}")
        if self.keep_versions < 1:
            raise ConfigError(f"{PREFIX}KEEP_VERSIONS must be >= 1, not {self.keep_versions}")
        for name in ("prediction_log_sample", "drift_sample"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{PREFIX}{name.upper()} must be between 0 and 1, not "
                                  f"{getattr(self, name)}")
        if self.prediction_log_file_bytes < 4096:
            raise ConfigError(f"{PREFIX}PREDICTION_LOG_FILE_BYTES must be >= 4096, not "
                              f"{self.prediction_log_file_bytes}")
        if self.prediction_log_max_bytes < self.prediction_log_file_bytes:
            raise ConfigError(f"{PREFIX}PREDICTION_LOG_MAX_BYTES ({self.prediction_log_max_bytes}"
                              f") must be at least {PREFIX}PREDICTION_LOG_FILE_BYTES "
                              f"({self.prediction_log_file_bytes})")
        if self.feedback_max_items < 1:
            raise ConfigError(f"{PREFIX}FEEDBACK_MAX_ITEMS must be >= 1, not "
                              f"{self.feedback_max_items}")
        if not isinstance(logging.getLevelName(self.log_level.upper()), int):
            raise ConfigError(f"{PREFIX}LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, "
                              f"not {self.log_level!r}")


def _convert(name: str, raw: str) -> Any:
    kind = {f.name: f.type for f in fields(Config)}[name]
    if kind == "bool":
        value = raw.strip().lower()
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{PREFIX}{name.upper()}={raw!r} is not a boolean (use 1 or 0)")
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ConfigError(f"{PREFIX}{name.upper()}={raw!r} is not a {kind}") from None
    return raw
