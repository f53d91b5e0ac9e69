"""The WSGI middleware that sees every request: request id, timing, metrics, the access log.

It also defines how softserve's gunicorn worker (serving/worker.py) may hold access-log lines
until it is about to wait for events: the app handed to gunicorn carries an ``AccessLogBuffer``
under the attribute ``ACCESS_LOG_BUFFER`` (``create_app`` puts its ``ObservedApp`` there, through
``offer_access_log_buffer``), and the worker finds it with ``access_log_buffer(app)``. Any other
WSGI app has none, and its worker writes nothing of the kind.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import orjson

from serving.telemetry.record import RECORD_KEY, RequestRecord
from serving.telemetry.recording import Telemetry

ACCESS_LOG_BUFFER = "access_log_buffer"

log = logging.getLogger("softserve.after")


@runtime_checkable
class AccessLogBuffer(Protocol):
    """What a worker may ask of the app it serves about its access log."""

    def buffer_access_log(self) -> Callable[[], None]:
        """From now on, hold access-log lines — and the work requests left for after their
        answer (``RequestRecord.after_answer``) — until the returned function is called (the
        worker calls it before each wait for events, so after the answers went out). The
        returned function raises nothing of the tasks'. Raises nothing."""
        ...


def offer_access_log_buffer(app: object, buffer: AccessLogBuffer) -> None:
    """Let a worker serving ``app`` find ``buffer`` (see the module docstring)."""
    setattr(app, ACCESS_LOG_BUFFER, buffer)


def access_log_buffer(app: object) -> AccessLogBuffer | None:
    """The buffer ``app`` offers its worker, None if it offers none."""
    buffer = getattr(app, ACCESS_LOG_BUFFER, None)
    return buffer if isinstance(buffer, AccessLogBuffer) else None


class _Clock:
    """ISO 8601 UTC timestamps with milliseconds, formatting the date-time part once a second
    (datetime.isoformat costs ~2 µs; a log line per request wants it cheaper)."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{int((now - second) * 1000):03d}+00:00"


class _RequestIds:
    """Unique request ids: a random per-process prefix and a counter (uuid4 costs ~2 µs)."""

    def __init__(self) -> None:
        self._fresh_prefix()
        os.register_at_fork(after_in_child=self._fresh_prefix)  # a new prefix in every worker

    def _fresh_prefix(self) -> None:
        self._prefix = uuid.uuid4().hex[:16]
        self._next = itertools.count(1).__next__  # thread-safe in CPython

    def new(self) -> str:
        return f"{self._prefix}{self._next():016x}"


_PIPE_BUF = 4096


def run_after_answer(tasks: list[Callable[[], None]]) -> None:
    """Run what requests left for after their answers; a task that raises is logged, and the
    others still run. Raises nothing."""
    for task in tasks:
        try:
            task()
        except Exception:  # noqa: BLE001 — never the client's business, never the worker's end
            log.exception("a task run after an answer failed")


class _Answered(list[bytes]):
    """An answer's body chunks whose ``close`` (called by the WSGI server once it has sent
    them) runs the request's after-answer tasks: for servers other than softserve's worker."""

    def __init__(self, chunks: list[bytes], tasks: list[Callable[[], None]]) -> None:
        super().__init__(chunks)
        self._tasks = tasks

    def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        run_after_answer(tasks)


def _write_all(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(1, view):]


class ObservedApp:
    """WSGI middleware: request id, timing, metrics and one JSON access-log line per request.

    It wraps the Flask app, so it sees every request, including werkzeug's own errors. The
    request's ``RequestRecord`` (record.py), which the stages inside fill in, is what it
    accounts and logs.
    """

    def __init__(self, app: Callable[..., Any], telemetry: Telemetry | None,
                 access_log: bool) -> None:
        self.app = app
        self.telemetry = telemetry
        self.access_log = access_log
        self._clock = _Clock()
        self._ids = _RequestIds()
        self._pending: list[bytes] | None = None  # access-log lines not yet written, if buffered
        self._tasks: list[Callable[[], None]] = []  # after-answer work, if buffered

    def buffer_access_log(self) -> Callable[[], None]:
        """Hold access-log lines and after-answer tasks until the returned function is called,
        instead of one write(2) per request (~10 µs here) and instead of running the tasks on
        the client's time. softserve's worker calls it before each wait for events, so the
        lines still go out as soon as the worker is idle for an instant."""
        self._pending = []
        return self.flush_access_log

    def flush_access_log(self) -> None:
        """Run the held after-answer tasks, then write the held access-log lines. Raises what
        writing to standard output raises, nothing of the tasks'."""
        if self._tasks:
            tasks, self._tasks = self._tasks, []
            run_after_answer(tasks)
        pending = self._pending
        if not pending:
            return
        self._pending = []
        # Writes of at most PIPE_BUF bytes, whole lines each: lines of concurrent workers never
        # interleave on a pipe (docker's log driver reads one).
        chunk: list[bytes] = []
        size = 0
        for line in pending:
            if size + len(line) > _PIPE_BUF and chunk:
                _write_all(b"".join(chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        _write_all(b"".join(chunk))

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        started = time.perf_counter()
        request_id = environ.get("HTTP_X_REQUEST_ID", "")
        if not request_id or len(request_id) > 200 or not request_id.isprintable():
            request_id = self._ids.new()
        record = environ[RECORD_KEY] = RequestRecord(environ.get("REQUEST_METHOD", ""))
        record.request_id = request_id
        status_line: list[str] = []

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers.append(("X-Request-ID", request_id))
            status_line.append(status)
            return start_response(status, headers, exc_info)

        telemetry = self.telemetry
        if telemetry is not None:
            telemetry.request_started()
        try:
            body = self.app(environ, start)
            if type(body) is list:  # the hot path's answers: one chunk, nothing to close
                chunks = body
            else:
                try:
                    chunks = list(body)  # our bodies are built whole; this only collects them
                finally:
                    close = getattr(body, "close", None)
                    if close is not None:
                        close()
        except BaseException:
            # Flask answers every exception itself; this only keeps the gauge honest.
            if telemetry is not None:
                telemetry.request_finished(RequestRecord("other"))
            raise
        record.seconds = seconds = time.perf_counter() - started
        record.status = code = int(status_line[-1][:3]) if status_line else 500
        record.response_bytes = response_bytes = \
            len(chunks[0]) if len(chunks) == 1 else sum(map(len, chunks))
        if telemetry is not None:
            try:
                record.request_bytes = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                pass
            telemetry.request_finished(record)
        if self.access_log:
            # duration_ms: to the µs, as round(x, 3) gives it in a quarter of the time
            line = orjson.dumps({
                "time": self._clock.now(), "level": "INFO", "logger": "softserve.access",
                "request_id": request_id, "method": record.method,
                "path": environ.get("PATH_INFO", ""), "route": record.route,
                "model": record.model, "version": record.version, "rows": record.rows,
                "status": code, "duration_ms": int(seconds * 1e6 + 0.5) / 1000,
                "response_bytes": response_bytes, "remote_addr": environ.get("REMOTE_ADDR")
            }) + b"\n"
            if self._pending is None:
                # One write(2) per line: lines of concurrent workers never interleave.
                os.write(1, line)
            else:
                self._pending.append(line)
        after = record.after
        if after is not None:
            # A task usually holds the record (a closure over it): taken out of the record, the
            # pair is no reference cycle, freed at once instead of left for the cyclic garbage
            # collector (11 objects a request with drift counting on, and the rows' arrays).
            record.after = None
            if self._pending is not None:  # softserve's worker: run before it next waits
                self._tasks += after
            else:
                return _Answered(chunks, after)
        return chunks
