"""The hot path: the inference routes of the route table, answered around Flask.

Flask's request and app contexts, URL matching, Response object and error-handler lookup cost
about 40 µs a request — as much as decoding, running and encoding a single row together. This
WSGI layer owns the table's hot routes (``Route.hot``) outright: it matches them with regexes
compiled from their rules at start-up (werkzeug's matcher costs ~9 µs a request, a compiled
regex ~0.2 µs), calls their handlers, and answers their wrong methods (405, OPTIONS) itself, so
Flask never sees them. Every other request goes to Flask unchanged. Errors are rendered by
``serving.errors.error_answer``, as Flask's handlers render them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from serving.errors import SoftserveError, error_answer, status_line
from serving.routes import Handlers
from serving.routes.table import Route, allowed_methods, rule_regex
from serving.telemetry.record import RECORD_KEY

# One hot route as dispatched: its rule's literal prefix (a cheap test before the regex), the
# compiled rule, the route, its handler, and its Allow header.
_Dynamic = tuple[str, Any, Route, Callable[..., Any], str]
# A path matched: the route, its handler, its Allow header and the URL arguments (not to be
# changed: one dictionary per path, shared by its requests).
_Match = tuple[Route, Callable[..., Any], str, dict[str, str]]
_NO_ARGS: dict[str, str] = {}
_UNSEEN: Any = object()
MATCHED_PATHS = 256


class FastPath:
    def __init__(self, app: Callable[..., Iterable[bytes]], routes: Sequence[Route],
                 handlers: Handlers) -> None:
        self.app = app
        self.routes = tuple(routes)
        self._static: dict[str, tuple[Route, Callable[..., Any], str]] = {}
        self._dynamic: list[_Dynamic] = []
        self._matched: dict[str, _Match | None] = {}  # path -> what it matched, None: no hot route
        for route in routes:
            allow = ", ".join(allowed_methods(route.rule))
            if "<" not in route.rule:
                self._static[route.rule] = (route, handlers[route.endpoint], allow)
            else:
                prefix = route.rule[:route.rule.index("<")]
                self._dynamic.append((prefix, rule_regex(route.rule), route,
                                      handlers[route.endpoint], allow))

    def _match(self, path: str) -> _Match | None:
        """The hot route ``path`` names, with its handler, Allow header and URL arguments."""
        found = self._static.get(path)
        if found is not None:
            return (*found, _NO_ARGS)
        for prefix, regex, route, handler, allow in self._dynamic:
            if path.startswith(prefix) and (match := regex.fullmatch(path)):
                return route, handler, allow, match.groupdict()
        return None

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        # Matching /v2/models/<name>/infer costs ~1-2 µs (prefix tests and regexes), a look-up
        # of the paths seen before ~0.1 µs; at most MATCHED_PATHS of them are kept (paths
        # are the clients' to choose), whether a hot route or not.
        found = self._matched.get(path, _UNSEEN)
        if found is _UNSEEN:
            found = self._match(path)
            if len(self._matched) < MATCHED_PATHS:
                self._matched[path] = found
        if found is None:
            return self.app(environ, start_response)
        route, handler, allow, args = found
        method = environ.get("REQUEST_METHOD", "")
        if method not in route.methods:
            return self._other_method(method, path, allow, start_response)
        environ[RECORD_KEY].route = route.rule
        try:
            body, headers = handler(environ, **args)
            status = 200
        except Exception as exc:  # noqa: BLE001 — every error becomes its JSON answer
            status, headers, body = error_answer(exc, f"{method} {path}")
        start_response(status_line(status), [*headers, ("Content-Length", str(len(body)))])
        return [body]

    @staticmethod
    def _other_method(method: str, path: str, allow: str,
                      start_response: Callable[..., Any]) -> Iterable[bytes]:
        """OPTIONS lists the methods; any other method is a 405, as Flask answers them."""
        if method == "OPTIONS":
            start_response(status_line(200), [("Allow", allow), ("Content-Length", "0")])
            return [b""]
        status, headers, body = error_answer(SoftserveError(
            f"method {method} is not allowed for {path}; allowed: {allow}", 405,
            [("Allow", allow)]))
        start_response(status_line(status), [*headers, ("Content-Length", str(len(body)))])
        return [body]
