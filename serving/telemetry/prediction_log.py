"""The prediction log: what each worker served, and the feedback it was told, as JSON lines.

Opt-in with ``SOFTSERVE_PREDICTION_LOG=<directory>``. Each sampled inference
(``SOFTSERVE_PREDICTION_LOG_SAMPLE``) leaves one record, built after its answer was sent
(``RequestRecord.after_answer``) from the arrays the handler already had; each feedback item
(``POST /v2/models/<name>/feedback``) one more. A record is a CloudEvents 1.0 event in
structured mode, one JSON object a line (what KServe's payload logger emits, as HTTP events)::

    {"specversion": "1.0", "id": "<request id>", "source": "/softserve/<host>/<pid>",
     "type": "io.softserve.inference.response", "time": "2026-12-03T11:00:00.123+00:00",
     "datacontenttype": "application/json", "dataschema": "urn:softserve:prediction:1",
     "data": {"model": "iris", "version": "1", "route": "/predict",
              "feature_names": [...], "inputs": [[...], ...], "probabilities": [[...], ...],
              "class": [0, ...], "label": ["setosa", ...]}}

    {"specversion": "1.0", "id": "<new id>", "source": ..., "type": "io.softserve.feedback",
     "time": ..., "datacontenttype": "application/json", "dataschema": "urn:softserve:feedback:1",
     "data": {"model": "iris", "request_id": "<the prediction's id>", "row": 0,
              "label": "setosa", "model_version": "1", "class": "setosa"}}

(``model_version`` and ``class`` only when the client gave them.) The schema's version is the
number ending ``dataschema``; a change that removes or renames a field gets the next one.

One file per worker process, ``events-<start>-<pid>-<n>.jsonl`` (so lines never interleave),
a new one once a file reaches ``SOFTSERVE_PREDICTION_LOG_FILE_BYTES``; at each new file the
oldest files of the directory (any worker's, by modification time) are deleted until the
directory holds at most ``SOFTSERVE_PREDICTION_LOG_MAX_BYTES`` with room for the new one.
Records are held in memory and written in 64 KiB writes, or within a second (a flush thread),
or when the worker exits; at most that much is held. A directory that cannot be created or
written, or a full disk, drops the records held (``softserve_prediction_log_dropped_total``)
with one warning logged until a write succeeds again — never a failed request.
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import random
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from modelrepo.report import FEEDBACK_TYPE, PREDICTION_TYPE, SCHEMAS
from serving.telemetry.access_log import _Clock
from serving.telemetry.prometheus import PrometheusBridge
from serving.telemetry.record import RequestRecord

log = logging.getLogger("softserve.prediction_log")

SPEC_VERSION = "1.0"
# The event types and schemas, declared once with their reader (python -m modelrepo report).
PREDICTION_SCHEMA, FEEDBACK_SCHEMA = SCHEMAS[PREDICTION_TYPE], SCHEMAS[FEEDBACK_TYPE]
FILE_PREFIX = "events-"
FILE_SUFFIX = ".jsonl"
WRITE_BYTES = 64 * 1024  # write once this much is held
FLUSH_SECONDS = 1.0  # and at the latest this long after a record
_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE


class PredictionLog:
    """A worker's prediction log (see the module docstring). Thread-safe."""

    def __init__(self, directory: Path, sample: float = 1.0, file_bytes: int = 64 << 20,
                 max_bytes: int = 1 << 30, flush_seconds: float = FLUSH_SECONDS) -> None:
        self.directory = Path(directory)
        self.sample = sample
        self.file_bytes = file_bytes
        self.max_bytes = max_bytes
        self.flush_seconds = flush_seconds
        self._lock = threading.Lock()
        self._clock = _Clock()
        self._pid = -1
        self._held: list[tuple[str, bytes]] = []  # (kind, line)
        self._held_bytes = 0
        self._fd: int | None = None
        self._file: Path | None = None
        self._size = 0
        self._files_made = 0
        self._started = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        self._failing = False
        self.written: dict[str, int] = {}  # kind: records, since the last metrics flush
        self.dropped: dict[str, int] = {}
        self._stop = threading.Event()
        self.source = ""
        atexit.register(self.close)

    # --- recording (after the answer) -------------------------------------------------------

    def sampled(self) -> bool:
        """Whether to log this inference (``SOFTSERVE_PREDICTION_LOG_SAMPLE``)."""
        return self.sample >= 1.0 or random.random() < self.sample

    def prediction(self, record: RequestRecord, feature_names: list[str],
                   class_labels: list[str], rows: np.ndarray, probabilities: np.ndarray,
                   classes: np.ndarray) -> None:
        """Hold the record of one answered inference. Raises nothing of the disk's."""
        class_list = classes.tolist()
        self._hold("prediction", orjson.dumps({
            "specversion": SPEC_VERSION, "id": record.request_id, "source": self._source(),
            "type": PREDICTION_TYPE, "time": self._clock.now(),
            "datacontenttype": "application/json", "dataschema": PREDICTION_SCHEMA,
            "data": {"model": record.model, "version": record.version, "route": record.route,
                     "feature_names": feature_names, "inputs": rows,
                     "probabilities": probabilities, "class": classes,
                     "label": [class_labels[c] for c in class_list]},
        }, option=_OPTIONS))

    def feedback(self, items: list[dict[str, Any]]) -> None:
        """Hold one record per feedback item (``data`` as the module docstring shows it).
        Raises nothing of the disk's."""
        source, now = self._source(), self._clock.now()
        for item in items:
            self._hold("feedback", orjson.dumps({
                "specversion": SPEC_VERSION, "id": uuid.uuid4().hex, "source": source,
                "type": FEEDBACK_TYPE, "time": now, "datacontenttype": "application/json",
                "dataschema": FEEDBACK_SCHEMA, "data": item}, option=_OPTIONS))

    def _source(self) -> str:
        if self._pid != os.getpid():
            self._after_fork()
        return self.source

    def _after_fork(self) -> None:
        """This process's own state: a worker never writes its parent's file or records."""
        with self._lock:
            self._pid = os.getpid()
            self.source = f"/softserve/{socket.gethostname()}/{self._pid}"
            self._held, self._held_bytes = [], 0
            self._fd, self._file, self._size, self._files_made = None, None, 0, 0
            self._started = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        thread = threading.Thread(target=self._flush_loop, name="softserve-prediction-log",
                                  daemon=True)
        thread.start()

    def _hold(self, kind: str, line: bytes) -> None:
        with self._lock:
            self._held.append((kind, line))
            self._held_bytes += len(line)
            if self._held_bytes >= WRITE_BYTES:
                self._write_held()

    # --- writing ----------------------------------------------------------------------------

    def _flush_loop(self) -> None:
        pid = os.getpid()
        while not self._stop.wait(self.flush_seconds) and os.getpid() == pid:
            self.flush()

    def flush(self) -> None:
        """Write what is held. Raises nothing of the disk's (a failure drops and counts)."""
        with self._lock:
            if self._held and self._pid == os.getpid():
                self._write_held()

    def close(self) -> None:
        """Write what is held and close the file. Safe to call twice."""
        self._stop.set()
        self.flush()
        with self._lock:
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
                self._fd = None

    def _write_held(self) -> None:
        """Write the held lines to this worker's file (lock held). A failure drops them,
        counted by kind, and logs once."""
        held, self._held, self._held_bytes = self._held, [], 0
        data = b"".join(line for _, line in held)
        before: int | None = None
        try:
            if self._fd is None or (self._size > 0 and
                                    self._size + len(data) > self.file_bytes):
                self._new_file()
            assert self._fd is not None
            before = self._size
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                self._size += written
                view = view[written:]
        except OSError as exc:
            if self._fd is not None and before is not None and self._size != before:
                # no half line left behind
                try:
                    os.ftruncate(self._fd, before)
                    self._size = before
                except OSError:
                    self._close_file()
            self._drop(held, exc)
            return
        for kind, _ in held:
            self.written[kind] = self.written.get(kind, 0) + 1
        if self._failing:
            self._failing = False
            log.warning("prediction log: writing again to %s", self.directory)

    def _drop(self, held: list[tuple[str, bytes]], exc: OSError) -> None:
        for kind, _ in held:
            self.dropped[kind] = self.dropped.get(kind, 0) + 1
        if not self._failing:
            self._failing = True
            log.warning("prediction log: cannot write to %s (%s); records are dropped and "
                        "counted in softserve_prediction_log_dropped_total until it works",
                        self.directory, exc.strerror or exc)
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            self._close_file()  # an unusable file or directory: start a new one next time

    def _close_file(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def _new_file(self) -> None:
        """Open this worker's next file, having made room for it. Raises OSError."""
        self._close_file()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._make_room()
        self._files_made += 1
        name = f"{FILE_PREFIX}{self._started}-{self._pid}-{self._files_made:04d}{FILE_SUFFIX}"
        self._file = self.directory / name
        self._fd = os.open(self._file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                           0o644)
        self._size = os.fstat(self._fd).st_size

    def _make_room(self) -> None:
        """Delete the oldest log files until they leave room for a new full one under the
        total cap. Raises OSError if the directory cannot be listed."""
        files = []
        for entry in os.scandir(self.directory):
            if entry.name.startswith(FILE_PREFIX) and entry.name.endswith(FILE_SUFFIX):
                try:
                    st = entry.stat()
                except FileNotFoundError:  # another worker deleted it just now
                    continue
                files.append((st.st_mtime_ns, entry.name, st.st_size))
        total = sum(size for _, _, size in files)
        for _, name, size in sorted(files):
            if total + self.file_bytes <= self.max_bytes:
                break
            try:
                os.unlink(self.directory / name)
            except FileNotFoundError:
                pass
            total -= size

    # --- metrics ----------------------------------------------------------------------------

    def add_counts(self, bridge: PrometheusBridge) -> None:
        """Write what is held (the metrics flush runs at worker exit too), then hand the
        records written and dropped since the last call to prometheus-client."""
        self.flush()
        with self._lock:
            written, self.written = self.written, {}
            dropped, self.dropped = self.dropped, {}
        for kind, n in written.items():
            bridge.prediction_log_records.labels(kind).inc(n)
        for kind, n in dropped.items():
            bridge.prediction_log_dropped.labels(kind).inc(n)
