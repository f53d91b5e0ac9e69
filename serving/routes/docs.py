"""API documentation: ``GET /openapi.json``, and ``GET /docs``, the same rendered by Swagger UI.

Swagger UI comes from the ``swagger-ui-bundle`` package and is served from its directory by
``GET /docs/<asset>``: the page fetches nothing from anywhere but this server (no CDN), and its
Content-Security-Policy forbids the browser to. Only the files listed in ``_PACKAGE_ASSETS``
(and our own start-up script) are served; any other name is a JSON 404.
"""

from __future__ import annotations

from pathlib import Path

import orjson
from flask import Response, request, send_file
from swagger_ui_bundle import swagger_ui_path
from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Response as WerkzeugResponse

from serving.errors import JSON_CONTENT_TYPE
from serving.openapi.components import DOCS_ASSET_TYPES
from serving.openapi.document import openapi_document
from serving.routes import Handlers

# The Swagger UI files the page uses, and their source maps (requested by browser dev tools).
_PACKAGE_ASSETS = (
    "swagger-ui-bundle.js",
    "swagger-ui-bundle.js.map",
    "swagger-ui.css",
    "swagger-ui.css.map",
    "favicon-32x32.png",
    "favicon-16x16.png",
)
# Our own script that starts Swagger UI: a served file rather than inline, so that the page's
# Content-Security-Policy can forbid inline scripts.
_INIT_SCRIPT = "softserve-docs.js"
_ASSET_MAX_AGE = 3600  # seconds; the files change only with the swagger-ui-bundle version

# Relative URLs: from /docs, "docs/x" is /docs/x and "openapi.json" is /openapi.json — and they
# stay right when the app is mounted under a prefix.
_PAGE = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>softserve API</title>
<link rel="stylesheet" href="docs/swagger-ui.css">
<link rel="icon" type="image/png" href="docs/favicon-32x32.png" sizes="32x32">
<link rel="icon" type="image/png" href="docs/favicon-16x16.png" sizes="16x16">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/swagger-ui-bundle.js"></script>
<script src="docs/{init_script}"></script>
</body>
</html>
""".format(init_script=_INIT_SCRIPT)

_INIT_JS = """\
// Starts Swagger UI on this server's own OpenAPI document; served by softserve.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    // Swagger UI would otherwise send the document to validator.swagger.io for a badge.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    defaultModelsExpandDepth: 1,
    displayRequestDuration: true
  });
});
"""

# Swagger UI styles elements inline and draws its icons as data: SVGs; everything else comes
# from this server.
_PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def handlers() -> Handlers:
    """The documentation handlers, by endpoint.

    Raises RuntimeError if swagger-ui-bundle's directory lacks one of the files the page uses.
    """
    from serving import __version__

    document = orjson.dumps(openapi_document(__version__))
    package_dir = Path(str(swagger_ui_path))
    files = {name: package_dir / name for name in _PACKAGE_ASSETS}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise RuntimeError(f"swagger-ui-bundle is incomplete, missing: {', '.join(missing)}")

    def openapi_json() -> Response:
        return Response(document, mimetype=JSON_CONTENT_TYPE)

    def docs_page() -> Response:
        return Response(_PAGE, mimetype="text/html",
                        headers={"Content-Security-Policy": _PAGE_CSP})

    def docs_slash() -> Response:
        # Relative, so it stays right under a path prefix; the page's own links are relative
        # to /docs and would break if it were served here.
        return Response(status=308, headers={"Location": "../docs"})

    def docs_asset(asset: str) -> WerkzeugResponse:
        if asset == _INIT_SCRIPT:
            return Response(_INIT_JS, mimetype="text/javascript")
        path = files.get(asset)  # only known names: no path from the URL reaches the disk
        if path is None:
            raise NotFound(f"no documentation asset {asset!r}: the API documentation is at /docs")
        response = send_file(path, mimetype=DOCS_ASSET_TYPES[path.suffix],
                             max_age=_ASSET_MAX_AGE, conditional=False, etag=True)
        # 304 for a cached copy, but no range requests (send_file's own conditional handling
        # would add 206 and 416 answers): browsers fetch these files whole.
        return response.make_conditional(request, accept_ranges=False)

    return {"openapi_json": openapi_json, "docs_page": docs_page, "docs_slash": docs_slash,
            "docs_asset": docs_asset}
