"""The no-op ceiling: a bare WSGI app that reads and discards the body and answers a tiny JSON.

``make bench`` serves it with exactly softserve's gunicorn configuration (the same
``-c serving/gunicorn.conf.py``, ``SOFTSERVE_WORKERS`` and extra flags, so the same worker class)
and sends it the single-row ``/predict`` request. What it costs is what gunicorn and the HTTP
round trip cost on their own; single-row ``/predict`` and V2 JSON are measured against it.

    gunicorn -c serving/gunicorn.conf.py bench.baselines.noop_wsgi:app
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

BODY = b'{"ok":true}'
HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))]
CHUNK = 64 * 1024


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Answer 200 ``{"ok":true}`` to any request, after reading its whole body."""
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    if length:
        remaining = int(length)
        while remaining > 0:
            chunk = stream.read(min(remaining, CHUNK))
            if not chunk:
                break
            remaining -= len(chunk)
    elif environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
        while stream.read(CHUNK):
            pass
    start_response("200 OK", HEADERS)
    return [BODY]
