"""Flask's side of answers: JSON responses; every error raised in a Flask view rendered by
``serving.errors.error_answer`` — werkzeug's own HTTP errors (unknown route, wrong method, body
too large, ...) first turned into a SoftserveError that says what was wrong; and the hook that
names the route of what Flask answers in the request record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flask
import orjson
from werkzeug.exceptions import HTTPException
from werkzeug.sansio.response import Response as WerkzeugResponse

from serving.errors import JSON_CONTENT_TYPE, SoftserveError, error_answer
from serving.telemetry.record import RECORD_KEY


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


def _response(exc: BaseException, status: int | None = None) -> flask.Response:
    request = flask.request
    answered, headers, body = error_answer(exc, f"{request.method} {request.path}")
    return flask.Response(body, status=status or answered, headers=headers)


def _handle_http_exception(exc: HTTPException) -> WerkzeugResponse | HTTPException:
    if exc.code is None:  # not an error response (Flask passes these through itself)
        return exc
    if exc.response is not None:  # abort(response): the caller built the exact response
        return exc.response
    if exc.code >= 500:  # logged as a bug, its status kept
        return _response(RuntimeError(f"HTTP {exc.code}: {exc.description}"), exc.code)
    # Keep every header but werkzeug's HTML content type (e.g. 405's Allow, 401's auth).
    headers = [(name, value) for name, value in exc.get_headers()
               if name.lower() not in ("content-type", "content-length")]
    return _response(SoftserveError(_http_exception_message(exc), exc.code, headers))


def register_error_handlers(app: flask.Flask) -> None:
    """Answer every error raised while handling a request as ``{"error": ...}`` JSON."""
    app.register_error_handler(SoftserveError, _response)
    app.register_error_handler(HTTPException, _handle_http_exception)
    app.register_error_handler(Exception, _response)


def name_flask_route() -> None:
    """Flask ``before_request`` hook: the rule Flask matched names the route (a request Flask
    could not route keeps ``UNMATCHED``). Flask matched the URL before calling it. Raises
    nothing."""
    # One look-up through the context-local proxy: each attribute read through it costs ~1 µs.
    # So the hook costs ~1 µs in all, Flask's call included (a Request subclass that left itself
    # in the environ cost ~0.5 µs), on routes Flask answers in ~50 µs; the inference POSTs,
    # answered by serving.fastpath, never get here.
    current = flask.request._get_current_object()  # type: ignore[attr-defined]
    if current.url_rule is not None:
        current.environ[RECORD_KEY].route = current.url_rule.rule
