"""One error base with a status code, and the one function that turns any error into an answer.

Every error response is ``{"error": "<what was wrong and what is expected>"}`` with
``Content-Type: application/json`` — ours (``SoftserveError``), werkzeug's own HTTP errors
(unknown route, wrong method, body too large, ...), the worker's framing errors and unexpected
exceptions alike. ``error_answer`` renders all of them; the hot path, the Flask handlers
(``serving.routes.errors``) and the worker use it. This module imports no web framework.

Status table:

=====  ==========================================================================
400    ``BadRequest``: the request body or a parameter is malformed
403    a repository load/unload: the repository is read-only over HTTP
404    ``ModelNotFound``: unknown model or version; werkzeug's unknown route
405    werkzeug's wrong method (the ``Allow`` header is kept)
408    the worker: a request not whole within SOFTSERVE_REQUEST_TIMEOUT
413    ``PayloadTooLarge``: too many rows; a body over ``MAX_CONTENT_LENGTH``
415    werkzeug's unsupported media type
500    anything unexpected: logged with its traceback, answered ``"internal error"``
503    ``ModelNotReady``: the model exists but no version can serve right now
=====  ==========================================================================
"""

from __future__ import annotations

import logging
from http import HTTPStatus

import orjson

logger = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/json"
JSON_HEADERS: list[tuple[str, str]] = [("Content-Type", JSON_CONTENT_TYPE)]
# An answer as WSGI hands it over: status, headers (Content-Type included), body.
Answer = tuple[int, list[tuple[str, str]], bytes]


class SoftserveError(Exception):
    """Base of every error the server answers on purpose; ``status_code`` is the HTTP status."""

    status_code: int = 400

    def __init__(self, message: str, status_code: int | None = None,
                 headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or []  # e.g. a 405's Allow
        if status_code is not None:
            self.status_code = status_code


class BadRequest(SoftserveError):
    """The request is malformed; the message says what was wrong and what is expected."""

    status_code = 400


class ModelNotFound(SoftserveError):
    """No such model, or no such version of it."""

    status_code = 404


class PayloadTooLarge(SoftserveError):
    """The request asks for more than the server accepts (e.g. too many rows)."""

    status_code = 413


class ModelNotReady(SoftserveError):
    """The model is known but cannot answer now (not loaded yet, or every version broken)."""

    status_code = 503


def error_body(message: str) -> bytes:
    """The one error body: ``{"error": message}``."""
    return orjson.dumps({"error": message})


def status_line(status: int) -> str:
    """``"404 Not Found"``: the status and its phrase, from ``http.HTTPStatus``."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Error"


def error_answer(exc: BaseException, where: str = "") -> Answer:
    """The answer to any error: a SoftserveError as it says; anything else is a bug, logged
    with its traceback (``where`` names the request) and answered ``internal error``."""
    if isinstance(exc, SoftserveError):
        return exc.status_code, [*JSON_HEADERS, *exc.headers], error_body(exc.message)
    logger.error("unhandled error on %s", where or "a request", exc_info=exc)
    return 500, list(JSON_HEADERS), error_body("internal error")
