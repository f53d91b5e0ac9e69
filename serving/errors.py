"""One error base with a status code, and the one place errors become HTTP responses.

Every error response is ``{"error": "<what was wrong and what is expected>"}`` with
``Content-Type: application/json`` — ours (``SoftserveError``), werkzeug's own HTTP errors
(unknown route, wrong method, body too large, ...) and unexpected exceptions alike.

Status table:

=====  ==========================================================================
400    ``BadRequest``: the request body or a parameter is malformed
404    ``ModelNotFound``: unknown model or version; werkzeug's unknown route
405    werkzeug's wrong method (the ``Allow`` header is kept)
413    ``PayloadTooLarge``: too many rows; werkzeug's body over ``MAX_CONTENT_LENGTH``
415    werkzeug's unsupported media type
500    anything unexpected: logged with its traceback, answered ``"internal error"``
503    ``ModelNotReady``: the model exists but no version can serve right now
=====  ==========================================================================
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import flask
import orjson
from werkzeug.exceptions import HTTPException

logger = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/json"


class SoftserveError(Exception):
    """Base of every error the server answers on purpose; ``status_code`` is the HTTP status."""

    status_code: int = 400

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
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


def json_response(
    obj: Any,
    status: int = 200,
    headers: Mapping[str, str] | list[tuple[str, str]] | None = None,
) -> flask.Response:
    """A JSON response made with orjson; numpy arrays and scalars serialize natively.

    Raises orjson.JSONEncodeError (a TypeError) if ``obj`` holds something orjson cannot encode.
    """
    body = orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
    return flask.Response(body, status=status, headers=headers, mimetype=JSON_CONTENT_TYPE)


def error_body(message: str) -> bytes:
    """The one error body: ``{"error": message}``."""
    return orjson.dumps({"error": message})


def _error_response(
    message: str, status: int, headers: list[tuple[str, str]] | None = None
) -> flask.Response:
    return flask.Response(error_body(message), status=status, headers=headers,
                          mimetype=JSON_CONTENT_TYPE)


def _http_exception_message(exc: HTTPException) -> str:
    """A sentence saying what was wrong with the request, for one of werkzeug's HTTP errors."""
    # A description passed to abort()/the constructor was written for this case: keep it.
    if exc.description and exc.description != type(exc).description:
        return str(exc.description)
    request = flask.request
    if exc.code == 404:
        return f"no route matches {request.method} {request.path}; see the README for the API"
    if exc.code == 405:
        allowed = ", ".join(getattr(exc, "valid_methods", None) or [])
        return (
            f"method {request.method} is not allowed for {request.path}"
            + (f"; allowed: {allowed}" if allowed else "")
        )
    if exc.code == 413:
        limit = request.max_content_length  # the app's MAX_CONTENT_LENGTH unless overridden
        too_large = f"larger than the limit of {limit} bytes" if limit else "too large"
        return f"request body is {too_large}: send fewer rows per request"
    if exc.code == 415:
        return "unsupported media type: send the request body as JSON (or V2 binary tensor data)"
    # werkzeug's default descriptions are plain sentences ("The server could not ...").
    return f"{exc.name}: {exc.description}" if exc.description else str(exc.name)


def _handle_softserve_error(exc: SoftserveError) -> flask.Response:
    return _error_response(exc.message, exc.status_code)


def _handle_http_exception(exc: HTTPException) -> flask.Response | HTTPException:
    if exc.code is None:  # not an error response (Flask passes these through itself)
        return exc
    if exc.response is not None:  # abort(response): the caller built the exact response
        return exc.response
    # Keep every header but werkzeug's HTML content type (e.g. 405's Allow, 401's auth).
    headers = [
        (name, value)
        for name, value in exc.get_headers()
        if name.lower() not in ("content-type", "content-length")
    ]
    if exc.code >= 500:
        logger.error("HTTP %s on %s %s: %s", exc.code, flask.request.method,
                     flask.request.path, exc.description)
        return _error_response("internal error", exc.code, headers)
    return _error_response(_http_exception_message(exc), exc.code, headers)


def _handle_unexpected(exc: Exception) -> flask.Response:
    # A bug, not a bad request: keep the traceback in the log, say nothing internal to clients.
    logger.exception("unhandled error on %s %s", flask.request.method, flask.request.path)
    return _error_response("internal error", 500)


def register_error_handlers(app: flask.Flask) -> None:
    """Answer every error raised while handling a request as ``{"error": ...}`` JSON."""
    app.register_error_handler(SoftserveError, _handle_softserve_error)
    app.register_error_handler(HTTPException, _handle_http_exception)
    app.register_error_handler(Exception, _handle_unexpected)
