"""The page for people: ``GET /ui`` (every model, its versions and their health),
``GET /ui/models/<name>`` (one model: every loaded version's figures and charts, drift, a form
to try it), ``GET /ui/models/<name>/compare?a=&b=`` (two versions side by side) and
``GET /ui/static/<asset>`` (the page's stylesheet, script and icon).

Server-rendered with Jinja (Flask's own template engine; no build step), read-only: it reads the
repository this worker serves and the telemetry every worker writes, and writes nothing. The
"try it" form calls the public V2 inference API from the browser like any client: the page never
runs a model itself. Everything the page loads comes from this server, and its
Content-Security-Policy forbids anything else.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jinja2
from flask import Response, request, send_file
from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Response as WerkzeugResponse

import modelrepo
from serving.errors import BadRequest, ModelNotFound
from serving.repository import ModelRepository
from serving.routes import Handlers
from serving.telemetry import Telemetry
from serving.ui.charts import HEAT_LEVELS
from serving.ui.views import (FLOAT32_LIMIT, Figures, Views, compare_defaults, compare_rows,
                              fmt)

_HERE = Path(__file__).parent
ASSET_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
# Only these files are served: no path from the URL reaches the disk.
ASSETS = ("ui.css", "ui.js", "icon.svg")
_ASSET_MAX_AGE = 3600  # seconds; the page links them with ?v=<server version>

# Inline SVG is markup, not a style or a script: the policy forbids every inline style and
# script, and every origin but this server's.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def environment() -> jinja2.Environment:
    """The page's templates (autoescaped HTML), compiled once per worker."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_HERE / "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["fmt"] = fmt
    env.globals.update(float32_limit=FLOAT32_LIMIT, heat_levels=HEAT_LEVELS)
    return env


def _version_number(text: str | None, what: str) -> int | None:
    """A compare query parameter as a version number (None if absent).

    Raises BadRequest for anything but a version number."""
    if text is None or text == "":
        return None
    number = modelrepo.parse_version(text)
    if number is None:
        raise BadRequest(f"{what} must be a version number (1, 2, ...), not {text[:40]!r}")
    return number


def handlers(repository: ModelRepository, telemetry: Telemetry | None) -> Handlers:
    """The page's handlers, by endpoint.

    Raises RuntimeError if one of the page's files is missing from the package."""
    from serving import __version__

    env = environment()
    views = Views(repository, telemetry)
    files = {name: _HERE / "static" / name for name in ASSETS}
    missing = [name for name, path in files.items() if not path.is_file()]
    if missing:
        raise RuntimeError(f"the page's files are missing from serving/ui/static: {missing}")

    def page(template: str, title: str, started: float, **context: Any) -> Response:
        base = request.script_root  # the app may be mounted under a prefix
        html = env.get_template(template).render(
            base=base, title=title, version=__version__, metrics=telemetry is not None,
            predict_model=repository.predict_model, **context)
        return Response(html, mimetype="text/html", headers={
            "Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-store",
            # what building the page cost (view-model and template), for bench.ui and people
            "Server-Timing": f"render;dur={(time.perf_counter() - started) * 1e3:.2f}"})

    def ui_index() -> Response:
        started = time.perf_counter()
        return page("index.html", "softserve", started, models=views.index(),
                    ready=repository.ready())

    def ui_model(name: str) -> Response:
        started = time.perf_counter()
        state = repository.state(name)  # 404 for an unknown model
        figures, drift = views.read([name], drift_model=name)
        return page("model.html", f"{name} · softserve", started,
                    model=views.model(state, figures, details=True, drift=drift))

    def ui_compare(name: str) -> Response:
        started = time.perf_counter()
        state = repository.state(name)
        a = _version_number(request.args.get("a"), "a")
        b = _version_number(request.args.get("b"), "b")
        loaded = sorted(state.loaded, reverse=True)
        if len(loaded) < 2 and (a is None or b is None):
            raise ModelNotFound(f"model {name!r} has {len(loaded)} loaded version(s): nothing "
                                "to compare; name two with ?a=<version>&b=<version>")
        defaults = compare_defaults(state)
        if defaults is not None:  # else both are named (above)
            a = defaults[0] if a is None else a
            b = defaults[1] if b is None else b
        # 404 for a version not loaded, 503 with the reason for a broken one
        first, second = repository.get(name, str(a)), repository.get(name, str(b))
        figures = views.figures([name])
        pair = [views.detail(first), views.detail(second)]
        quiet = Figures(0, 0, None, "")  # metrics on, no request yet
        live = [None, None] if figures is None else \
            [figures.get((name, str(v)), quiet) for v in (a, b)]
        return page("compare.html", f"{name} v{a} vs v{b} · softserve", started, name=name,
                    versions=loaded, pair=pair, figures=live,
                    glance=compare_rows(pair[0], pair[1], live[0], live[1]))

    def ui_asset(ui_asset: str) -> WerkzeugResponse:
        path = files.get(ui_asset)
        if path is None:
            raise NotFound(f"no page asset {ui_asset!r}: the page is at /ui")
        response = send_file(path, mimetype=ASSET_TYPES[path.suffix], max_age=_ASSET_MAX_AGE,
                             conditional=False, etag=True)
        return response.make_conditional(request, accept_ranges=False)

    return {"ui_index": ui_index, "ui_model": ui_model, "ui_compare": ui_compare,
            "ui_asset": ui_asset}
