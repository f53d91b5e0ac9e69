"""THE route table: every route once — rule, methods, endpoint, whether the hot path answers it,
and its documentation.

Generated from it: Flask's URL map (``serving.create_app``), the hot path's dispatch (regexes
compiled from the rules at start-up, ``serving.fastpath``), the metrics' route labels (the rule
strings) and the OpenAPI ``paths`` (``serving.openapi``). The hand-written schemas stay in
``serving.openapi.components``: they carry exact constraints and examples.

Adding a route, or a field to one, is one entry here plus its handler in ``serving.routes``:
a module's ``handlers(...)`` returns ``{endpoint: function}``, and ``create_app`` refuses to start
if an endpoint of the table has no handler or a handler no route.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from modelrepo import MODEL_NAME_PATTERN
from serving.codecs import BINARY_CONTENT_TYPE, HEADER_LENGTH_HEADER, JSON_CONTENT_TYPE
from serving.openapi.components import (
    DOCS_ASSET_TYPES,
    INFER_BAD,
    INFER_BAD_EXAMPLE,
    METRICS_OFF,
    METRICS_OFF_EXAMPLE,
    MODEL_NOT_READY,
    NO_CONTENT_TYPE,
    PROMETHEUS_MEDIA_TYPE,
    Json,
    infer_body,
    instances_body,
    json_media,
    ref,
    feedback_body,
    response,
    schema,
)
from serving.routes.metrics import PROMETHEUS_CONTENT_TYPE

SIMPLE, V2_HEALTH, V2_MODELS, V2_INFER, STATS, DOCS = (
    "Simple JSON and KServe V1", "V2 health and metadata", "V2 model metadata", "V2 inference",
    "Statistics and metrics", "Documentation")
FEEDBACK = "Feedback"
TAGS = (SIMPLE, V2_HEALTH, V2_MODELS, V2_INFER, STATS, DOCS, FEEDBACK)


@dataclass(frozen=True)
class Doc:
    """A route's OpenAPI operation: what ``serving.openapi`` needs beyond the rule and method."""

    operation_id: str
    tag: str
    summary: str
    description: str
    ok: Json | None  # the 200 answer; None for a route that never answers 200
    errors: tuple[int, ...]  # documented error statuses (500 is added to every operation)
    request_body: Json | None = None
    parameters: tuple[Json, ...] = ()  # header parameters; path ones come from the rule
    more: dict[str, Json] = field(default_factory=dict)  # other answers (304, 308)
    descriptions: dict[int, str] = field(default_factory=dict)
    examples: dict[int, Any] = field(default_factory=dict)
    not_ready_schema: str = "Error"


@dataclass(frozen=True)
class Route:
    rule: str  # werkzeug's syntax; the metrics' route label
    methods: tuple[str, ...]
    endpoint: str  # the handler's name in ``serving.routes``' handler tables
    doc: Doc
    hot: bool = False  # answered by the hot path (``serving.fastpath``), never by Flask


# ------------------------------------------------------------------------ the rules' parts

# Converter -> the regex the hot path matches it with, and the OpenAPI path parameter.
_PARAMETERS: dict[str, tuple[str, Json]] = {
    "name": (MODEL_NAME_PATTERN, ref("parameters", "ModelName")),
    "version": ("[^/]+", ref("parameters", "ModelVersion")),
    "asset": ("[^/]+", {
        "name": "asset", "in": "path", "required": True,
        "description": "A file of the documentation page (Swagger UI's).",
        "schema": {"type": "string", "example": "swagger-ui.css"},
    }),
    "ui_asset": ("[^/]+", {
        "name": "ui_asset", "in": "path", "required": True,
        "description": "A file of the page for people (its stylesheet, script or icon).",
        "schema": {"type": "string", "example": "ui.css"},
    }),
}
_VARIABLE = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")


def openapi_path(rule: str) -> str:
    """``/v2/models/<model:name>/infer`` -> ``/v2/models/{name}/infer``."""
    return _VARIABLE.sub(r"{\1}", rule)


def path_parameters(rule: str) -> list[Json]:
    return [_PARAMETERS[name][1] for name in _VARIABLE.findall(rule)]


def rule_regex(rule: str) -> re.Pattern[str]:
    """The rule as a compiled regex with one named group per variable (for ``fullmatch``)."""
    parts = _VARIABLE.split(rule)  # literal, name, literal, name, ..., literal
    return re.compile("".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>{_PARAMETERS[part][0]})"
        for i, part in enumerate(parts)))


# ------------------------------------------------------------------------------- the table

_NAME_PATHS = ("/v2/models/<model:name>", "/v2/models/<model:name>/versions/<version>")
_PREDICTED = response("One prediction per row.", json_media("PredictResponse"))
_INFERRED = response(
    "The outputs asked for. application/json, or application/octet-stream (JSON part "
    f"plus raw bytes, its size in `{HEADER_LENGTH_HEADER}`) when any output is binary.",
    {JSON_CONTENT_TYPE: {"schema": schema("V2InferResponse")},
     BINARY_CONTENT_TYPE: {"schema": schema("V2BinaryInferResponse")}},
    {HEADER_LENGTH_HEADER: ref("headers", "InferenceHeaderContentLength")},
)


_HTML_PAGE = response("An HTML page.", {"text/html": {"schema": {"type": "string"}}})

ROUTES: tuple[Route, ...] = (
    # ---- the index
    Route("/", ("GET",), "api_index", Doc(
        "apiIndex", V2_HEALTH, "API index",
        "The server's metadata, its models, the model behind /predict and where to start. "
        "A browser (an Accept header that prefers text/html to JSON) is sent to the page for "
        "people, /ui.",
        response("The index.", json_media("ApiIndex")), (405,),
        more={"303": response("To the page for people (/ui): the client prefers HTML.",
                              headers={"Location": {"schema": {"type": "string",
                                                               "example": "/ui"}}})})),

    # ---- simple JSON and KServe V1
    Route("/predict", ("POST",), "predict", Doc(
        "predict", SIMPLE, "Predict with the default model",
        "The default model: SOFTSERVE_DEFAULT_MODEL, else the first model published (a model "
        "published later never takes /predict over; `GET /` names it)." + NO_CONTENT_TYPE,
        _PREDICTED, (400, 404, 405, 413, 503), request_body=instances_body(),
        descriptions={404: "No model in the repository, or SOFTSERVE_DEFAULT_MODEL names a "
                           "model it does not have."},
        examples={404: {"error": "no model in the model repository (SOFTSERVE_MODEL_REPOSITORY): "
                                 "publish one with `python -m training`"}}), hot=True),
    Route("/v1/models/<model:name>", ("GET",), "v1_model_status", Doc(
        "v1ModelStatus", SIMPLE, "Model status (KServe V1)",
        "Whether the model is being served, and its loaded versions. One rule with V2's ready "
        "routes: a model that cannot serve answers 503.",
        response("The model is served.", json_media("V1ModelStatus")), (404, 405, 503),
        descriptions={404: "Unknown model.", 503: "The model has no valid version."},
        examples={503: {"name": "iris", "ready": False, "versions": [],
                        "error": MODEL_NOT_READY}},
        not_ready_schema="V1ModelNotReady")),
    Route("/v1/models/<model:name>:predict", ("POST",), "v1_predict", Doc(
        "v1Predict", SIMPLE, "Predict (KServe V1 / TF-Serving)",
        "The model's latest version." + NO_CONTENT_TYPE,
        _PREDICTED, (400, 404, 405, 413, 503), request_body=instances_body(),
        descriptions={404: "Unknown model."},
        examples={405: {"error": "method GET is not allowed for /v1/models/iris:predict; "
                                 "allowed: OPTIONS, POST"}}), hot=True),
    # TF Serving's forms naming a version, or an alias ("label") of the traffic policy
    *(Route(rule, ("POST",), endpoint, Doc(
        operation_id, SIMPLE, summary, description + NO_CONTENT_TYPE,
        _PREDICTED, (400, 404, 405, 413, 503), request_body=instances_body(),
        descriptions={404: "Unknown model, version or alias."}), hot=True)
      for rule, endpoint, operation_id, summary, description in (
        ("/v1/models/<model:name>/versions/<version>:predict", "v1_version_predict",
         "v1VersionPredict", "Predict with a version (TF-Serving)",
         "One version of the model, by number (an alias is accepted too)."),
        ("/v1/models/<model:name>/labels/<version>:predict", "v1_label_predict",
         "v1LabelPredict", "Predict with an alias (TF-Serving labels)",
         "The version an alias of the model's traffic policy names (`python -m modelrepo "
         "alias`), e.g. production or candidate (a version number is accepted too)."))),

    # ---- V2 health and metadata
    Route("/v2", ("GET",), "server_metadata", Doc(
        "v2ServerMetadata", V2_HEALTH, "Server metadata",
        "Name, version and the V2 extensions implemented.",
        response("The server's metadata.", json_media("V2ServerMetadata")), (405,))),
    Route("/v2/health/live", ("GET",), "live", Doc(
        "v2Live", V2_HEALTH, "Liveness", "The process answers.",
        response("Live.", json_media("Live")), (405,))),
    Route("/v2/health/ready", ("GET",), "ready", Doc(
        "v2Ready", V2_HEALTH, "Readiness",
        "Ready once the repository is scanned and at least one model serves a version.",
        response("Ready.", json_media("Ready")), (405, 503),
        descriptions={503: "Not ready, with the reason (no model, or every version broken)."},
        examples={503: {"ready": False, "error": "not ready: no model in the model repository "
                                                 "(SOFTSERVE_MODEL_REPOSITORY)"}},
        not_ready_schema="NotReady")),

    # ---- V2 model metadata, readiness and configuration (Triton's extension)
    *(Route(rule, ("GET",), "model_metadata", Doc(
        operation_id, V2_MODELS, summary, description,
        response("The model's metadata.", json_media("V2ModelMetadata")), (404, 405, 503)))
      for rule, operation_id, summary, description in (
        (_NAME_PATHS[0], "v2ModelMetadata", "Model metadata",
         "Platform, loaded versions, input and output tensors of the latest version."),
        (_NAME_PATHS[1], "v2ModelVersionMetadata", "Model version metadata",
         "Platform, input and output tensors of one version."))),
    *(Route(rule + "/ready", ("GET",), "model_ready", Doc(
        operation_id, V2_MODELS, summary, description,
        response("The model (version) can serve.", json_media("ModelReady")), (404, 405, 503),
        descriptions={503: "Not ready: the model has no valid version (or this version "
                           "is broken)."},
        examples={503: {"name": "iris", "ready": False, "error": MODEL_NOT_READY}},
        not_ready_schema="ModelNotReady"))
      for rule, operation_id, summary, description in (
        (_NAME_PATHS[0], "v2ModelReady", "Model readiness",
         "Whether the model's latest version can serve."),
        (_NAME_PATHS[1], "v2ModelVersionReady", "Model version readiness",
         "Whether this version can serve (503 if it is broken)."))),
    *(Route(rule + "/config", ("GET",), "model_config", Doc(
        operation_id, V2_MODELS, summary, description,
        response("The configuration.", json_media("ModelConfig")), (404, 405, 503)))
      for rule, operation_id, summary, description in (
        (_NAME_PATHS[0], "v2ModelConfig", "Model configuration",
         "Triton's model configuration of the latest version, as JSON."),
        (_NAME_PATHS[1], "v2ModelVersionConfig", "Model version configuration",
         "Triton's model configuration of one version, as JSON."))),

    # ---- Triton's model-repository extension, read-only
    Route("/v2/repository/index", ("POST",), "repository_index", Doc(
        "v2RepositoryIndex", V2_MODELS, "Repository index",
        "Every model and version directory with its state (READY or UNAVAILABLE and why). "
        "The body is empty or `{\"ready\": true}` for READY versions only.",
        response("The index.", json_media("RepositoryIndex")), (400, 405),
        request_body={"required": False, "content": json_media("RepositoryIndexRequest")},
        descriptions={400: "A body that is not empty nor `{\"ready\": <boolean>}`."},
        examples={400: {"error": "the repository index request takes one optional key, "
                                 "\"ready\", a boolean; got '{\"ready\": 1}'"}})),
    *(Route(f"/v2/repository/models/<model:name>/{action}", ("POST",), "repository_refused",
            Doc(f"v2Repository{action.title()}", V2_MODELS, f"Model {action} (refused)",
                "The repository is read-only over HTTP: versions are published by training "
                "and loaded by every worker within SOFTSERVE_POLL_SECONDS.", None, (403, 405)))
      for action in ("load", "unload")),

    # ---- V2 inference
    *(Route(rule + "/infer", ("POST",), "v2_infer", Doc(
        operation_id, V2_INFER, summary, description, _INFERRED, (400, 404, 405, 413, 503),
        request_body=infer_body(), parameters=(ref("parameters", "InferenceHeaderContentLength"),),
        descriptions={400: INFER_BAD}, examples={400: INFER_BAD_EXAMPLE}), hot=True)
      for rule, operation_id, summary, description in (
        (_NAME_PATHS[0], "v2Infer", "Inference", "Run the model's latest version."),
        (_NAME_PATHS[1], "v2VersionInfer", "Inference with a version",
         "Run one version of the model."))),

    # ---- feedback: true labels for what was served (a softserve extension)
    Route("/v2/models/<model:name>/feedback", ("POST",), "feedback", Doc(
        "feedback", FEEDBACK, "Feedback: true labels of served predictions",
        "One item or a list of `{\"id\": \"<request id>\", \"label\": \"<true label>\"}` "
        "(optionally `row`, and the `model_version` and `class` the client received). Written "
        "to the prediction log (SOFTSERVE_PREDICTION_LOG) as feedback events, joined with the "
        "predictions by `python -m modelrepo report` and `python -m training --from-log`; with "
        "`model_version` and `class`, counted in softserve_feedback_total. Without a prediction "
        "log, accepted and counted only (`logged: false`)." + NO_CONTENT_TYPE,
        None, (400, 404, 405, 413, 503), request_body=feedback_body(),
        more={"202": response("Accepted.", json_media("FeedbackAccepted"))},
        descriptions={400: "Not JSON, not an item or a list of items, an unknown key, or a "
                           "label (or class) that is not one of the model's.",
                      413: "More items than SOFTSERVE_FEEDBACK_MAX_ITEMS, or a body over "
                           "SOFTSERVE_MAX_BODY_BYTES.",
                      503: "The model has no valid version (its labels are unknown)."},
        examples={400: {"error": "feedback[0]: \"label\" 'rose' is not a label of model "
                                 "'iris' version 1 ('setosa', 'versicolor', 'virginica') nor a "
                                 "class index 0 to 2"},
                  413: {"error": "1001 feedback items, more than the 1000 allowed per request "
                                 "(SOFTSERVE_FEEDBACK_MAX_ITEMS): split them"}})),

    # ---- statistics and metrics
    Route("/v2/models/stats", ("GET",), "statistics", Doc(
        "v2Statistics", STATS, "Statistics of every model",
        "Triton's statistics extension, for every loaded version of every model.",
        response("The statistics.", json_media("V2ModelStatistics")), (404, 405),
        descriptions={404: METRICS_OFF}, examples={404: METRICS_OFF_EXAMPLE})),
    *(Route(rule + "/stats", ("GET",), "statistics", Doc(
        operation_id, STATS, summary, description,
        response("The statistics.", json_media("V2ModelStatistics")), statuses,
        descriptions={404: "Unknown model, or a version that is not a directory of the "
                           "model; or metrics are turned off (SOFTSERVE_METRICS=0).",
                      503: "The version is broken and not served (as its ready route says)."}))
      for rule, operation_id, summary, description, statuses in (
        (_NAME_PATHS[0], "v2ModelStatistics", "Statistics of a model",
         "Triton's statistics extension, for the model's loaded versions.", (404, 405)),
        (_NAME_PATHS[1], "v2ModelVersionStatistics", "Statistics of a version",
         "Triton's statistics extension, for one version (a version on disk but not loaded "
         "is listed with zeros; a broken one answers 503).", (404, 405, 503)))),
    Route("/metrics", ("GET",), "metrics", Doc(
        "metrics", STATS, "Prometheus metrics",
        "Requests by route, method, model and status; latencies and sizes; inference times "
        "and rows; model loads and loaded versions; drift (PSI and out-of-range values per "
        "feature against the training data), the prediction log and feedback; summed over "
        "every worker. Served as "
        f"`{PROMETHEUS_CONTENT_TYPE}`.",
        response("Prometheus text.",
                 {PROMETHEUS_MEDIA_TYPE: {"schema": schema("PrometheusText")}}),
        (404, 405), descriptions={404: METRICS_OFF}, examples={404: METRICS_OFF_EXAMPLE})),

    # ---- documentation
    Route("/openapi.json", ("GET",), "openapi_json", Doc(
        "openapi", DOCS, "This document", "The OpenAPI description of the API.",
        response("The OpenAPI document.", {JSON_CONTENT_TYPE: {"schema": {"type": "object"}}}),
        (405,))),
    Route("/docs", ("GET",), "docs_page", Doc(
        "docs", DOCS, "API documentation page",
        "This document rendered by Swagger UI, served entirely by this server.",
        response("An HTML page.", {"text/html": {"schema": {"type": "string"}}}), (405,))),
    Route("/docs/", ("GET",), "docs_slash", Doc(
        "docsSlash", DOCS, "API documentation page (redirect)",
        "Redirects to /docs (the page's relative links need that address).", None, (405,),
        more={"308": response("To /docs.", headers={"Location": {
            "schema": {"type": "string", "example": "../docs"}}})})),
    Route("/docs/<asset>", ("GET",), "docs_asset", Doc(
        "docsAsset", DOCS, "Documentation page asset",
        "The scripts, stylesheet and icons /docs uses (cacheable for an hour; ETag and "
        "Last-Modified for conditional requests; no range requests).",
        response("The file.", {media: {"schema": {"type": "string", "format": "binary"}}
                               for media in dict.fromkeys(DOCS_ASSET_TYPES.values())}),
        (404, 405),
        more={"304": response("Not modified (If-None-Match or If-Modified-Since): no body.")},
        descriptions={404: "Not a file of the documentation page."},
        examples={404: {"error": "no documentation asset 'nope.js': the API documentation is "
                                 "at /docs"}})),

    # ---- the page for people (serving/ui): HTML, read-only, never on the hot path
    Route("/ui", ("GET",), "ui_index", Doc(
        "ui", DOCS, "The page for people",
        "Every model with its versions (live, broken with the reason, not loaded, retired), "
        "their validation accuracy and training data, and live request figures. Rendered by "
        "the server; every asset comes from this server.", _HTML_PAGE, (405,))),
    Route("/ui/models/<model:name>", ("GET",), "ui_model", Doc(
        "uiModel", DOCS, "The page of one model",
        "Every loaded version's metrics, loss curve, confusion matrix, per-class figures and "
        "parity; drift per feature where recorded; a form that tries the model through "
        "the V2 inference API.", _HTML_PAGE, (404, 405),
        descriptions={404: "Unknown model."})),
    Route("/ui/models/<model:name>/compare", ("GET",), "ui_compare", Doc(
        "uiCompare", DOCS, "Two versions side by side",
        "Metrics, loss curves, confusion matrices and per-class figures of two loaded "
        "versions (by default the live one and the one before it).", _HTML_PAGE,
        (400, 404, 405, 503),
        parameters=tuple({"name": side, "in": "query", "required": False,
                          "description": f"A loaded version ({which}).",
                          "schema": {"type": "string", "example": "1"}}
                         for side, which in (("a", "default: the one before the live one"),
                                             ("b", "default: the live one"))),
        descriptions={400: "a or b is not a version number.",
                      404: "Unknown model, a version that is not loaded, or fewer than two "
                           "loaded versions and no a and b.",
                      503: "A version that is broken and not served."})),
    Route("/ui/static/<ui_asset>", ("GET",), "ui_asset", Doc(
        "uiAsset", DOCS, "Page asset",
        "The stylesheet, script and icon of the page (cacheable for an hour; ETag for "
        "conditional requests).",
        response("The file.", {media: {"schema": {"type": "string", "format": "binary"}}
                               for media in ("text/css", "text/javascript", "image/svg+xml")}),
        (404, 405),
        more={"304": response("Not modified (If-None-Match or If-Modified-Since): no body.")},
        descriptions={404: "Not a file of the page."},
        examples={404: {"error": "no page asset 'nope.js': the page is at /ui"}})),
)


def allowed_methods(rule: str) -> list[str]:
    """Every method a rule answers, as its 405's Allow header lists them (Flask's and the hot
    path's alike): the routes' own, OPTIONS, and HEAD with GET; sorted."""
    methods = {m for r in ROUTES if r.rule == rule for m in r.methods} | {"OPTIONS"}
    return sorted(methods | ({"HEAD"} if "GET" in methods else set()))
