"""The OpenAPI 3.0.3 description of softserve's HTTP API, as a plain dict.

``openapi_document(version)`` is served as ``GET /openapi.json`` and rendered by ``GET /docs``
(see ``serving.routes.docs``). Its ``paths`` are generated from the route table
(``serving.routes.table``); its schemas, parameters and headers are written by hand
(``serving.openapi.components``). ``tests/serving/test_openapi.py`` checks it against the app's
routes and real responses.
"""

from __future__ import annotations

from typing import Any

from serving.codecs import HEADER_LENGTH_HEADER
from serving.openapi.components import (
    REQUEST_ID_HEADER,
    Json,
    errors,
    header_components,
    parameter_components,
    ref,
    schema_components,
)
from serving.routes.table import ROUTES, TAGS, Doc, allowed_methods, openapi_path, path_parameters

def _operation(path: str, method: str, allowed: list[str], doc: Doc) -> Json:
    operation: Json = {
        "operationId": doc.operation_id,
        "tags": [doc.tag],
        "summary": doc.summary,
        "description": doc.description,
        "parameters": [ref("parameters", "RequestId"), *doc.parameters],
    }
    if doc.request_body is not None:
        operation["requestBody"] = doc.request_body
    operation["responses"] = {
        **({"200": doc.ok} if doc.ok is not None else {}), **doc.more,
        **errors(path, method, allowed, *doc.errors, descriptions=doc.descriptions,
                 examples=doc.examples, not_ready_schema=doc.not_ready_schema)}
    return operation


def _paths() -> dict[str, Json]:
    """One path item per rule of the route table, one operation per method."""
    paths: dict[str, Json] = {}
    for route in ROUTES:
        path = openapi_path(route.rule)
        item = paths.setdefault(path, {})
        if parameters := path_parameters(route.rule):
            item["parameters"] = parameters
        for method in route.methods:
            item[method.lower()] = _operation(path, method.lower(),
                                              allowed_methods(route.rule), route.doc)
    return paths


_DESCRIPTION = f"""\
Serves softmax classifiers exported to ONNX from a model repository (Triton's layout), over three
protocols:

- **Simple JSON and KServe V1 / TF-Serving**: `POST /predict` (the default model) and
  `POST /v1/models/{{name}}:predict` take `{{"instances": [[5.1, 3.5, 1.4, 0.2], ...]}}` (rows as
  lists of the model's F numbers or objects keyed by its feature names) and answer the class,
  label and probabilities of each row. Each model has its own shape, F features and K classes
  (its `inputs` and `outputs` in `GET /v2/models/{{name}}`); models of different shapes are
  served side by side. The examples are iris's (4 features, 3 classes).
- **V2 Open Inference Protocol** (KServe V2 / Triton): health, server and model metadata, and
  `POST /v2/models/{{name}}[/versions/{{version}}]/infer` with the **binary tensor data**
  extension (`{HEADER_LENGTH_HEADER}` splits a JSON part from raw little-endian tensors, in
  requests and responses) and the **classification** extension. `tritonclient[http]` works
  unmodified.
- **Statistics and metrics**: Triton's statistics extension (`/v2/models/stats`) and Prometheus
  text at `/metrics`.

The server reads request bodies whatever their Content-Type; none is required. Every error is
JSON, `{{"error": "<what was wrong and what is expected>"}}`: 400 bad input, 404 unknown model,
version or route, 405 wrong method, 413 too large, 503 not ready, 500 a bug. Every response
carries an `{REQUEST_ID_HEADER}` header: the request's own, or one the server generated.
"""


def openapi_document(server_version: str) -> dict[str, Any]:
    """The OpenAPI 3.0.3 description of the API, for a server of version ``server_version``."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "softserve",
            "version": server_version,
            "description": _DESCRIPTION,
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": tag} for tag in TAGS],
        "paths": _paths(),
        "components": {
            "schemas": schema_components(),
            "parameters": parameter_components(),
            "headers": header_components(),
        },
    }
