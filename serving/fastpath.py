"""Inference POSTs dispatched straight to their handlers, around Flask.

Flask's request and app contexts, URL matching, Response object and error-handler lookup cost
about 40 µs a request — as much as decoding, running and encoding a single row together. This
WSGI layer recognises the three inference routes by path and calls the same handlers the
blueprints call (``serving.routes.inference``), so behaviour and errors are identical; every
other request, and every inference path with another method, goes to Flask unchanged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

from modelrepo import MODEL_NAME_PATTERN
from serving.errors import SoftserveError, error_body
from serving.routes.inference import Answer, Inference
from serving.telemetry.record import RECORD_KEY

log = logging.getLogger("softserve.fastpath")

_STATUS = {200: "200 OK", 400: "400 BAD REQUEST", 404: "404 NOT FOUND",
           413: "413 REQUEST ENTITY TOO LARGE", 500: "500 INTERNAL SERVER ERROR",
           503: "503 SERVICE UNAVAILABLE"}
_V1 = re.compile(rf"/v1/models/({MODEL_NAME_PATTERN}):predict")
_V2 = re.compile(rf"/v2/models/({MODEL_NAME_PATTERN})(?:/versions/([^/]+))?/infer")
# Route labels exactly as Flask's rules name them, so metrics do not depend on the path taken.
_V1_ROUTE = "/v1/models/<model:name>:predict"
_V2_ROUTE = "/v2/models/<model:name>/infer"
_V2_VERSION_ROUTE = "/v2/models/<model:name>/versions/<version>/infer"


class FastPath:
    def __init__(self, app: Callable[..., Iterable[bytes]], inference: Inference) -> None:
        self.app = app
        self.inference = inference

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        path = environ.get("PATH_INFO", "")
        handler: Callable[[], Answer]
        if path == "/predict":
            route, handler = "/predict", lambda: self.inference.predict(environ)
        elif path.startswith("/v2/") and (m := _V2.fullmatch(path)):
            name, version = m.groups()
            route = _V2_ROUTE if version is None else _V2_VERSION_ROUTE
            handler = lambda: self.inference.infer(environ, name, version)  # noqa: E731
        elif path.startswith("/v1/") and (m := _V1.fullmatch(path)):
            name = m.group(1)
            route, handler = _V1_ROUTE, lambda: self.inference.predict(environ, name)
        else:
            return self.app(environ, start_response)
        environ[RECORD_KEY].route = route
        try:
            body, headers = handler()
            status = 200
        except SoftserveError as exc:
            status, body = exc.status_code, error_body(exc.message)
            headers = [("Content-Type", "application/json")]
        except Exception:
            log.exception("unhandled error on POST %s", path)
            status, body = 500, error_body("internal error")
            headers = [("Content-Type", "application/json")]
        start_response(_STATUS.get(status) or f"{status} ERROR",
                       [*headers, ("Content-Length", str(len(body)))])
        return [body]
