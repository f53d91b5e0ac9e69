"""The hand-written parts of the OpenAPI 3.0.3 document: schemas, parameters, headers, and the
helpers the route table (``serving.routes.table``) describes its operations with.

Written by hand from what the routes and ``serving.codecs`` do: they carry exact constraints and
examples. ``tests/serving/test_openapi.py`` checks them against real responses.

OpenAPI 3.0.3 rather than 3.1: the Swagger UI that ``/docs`` serves (swagger-ui-bundle 1.1.0,
Swagger UI 4.15) renders 3.0 only. Schemas therefore use no 3.1/JSON Schema 2020-12 keywords.
"""


from __future__ import annotations

from typing import Any

from modelrepo import (CLASS, INPUT_NAME, IRIS_CLASSES, IRIS_FEATURES, MAX_CLASSES, MAX_FEATURES,
                       PLATFORM, PROBABILITIES)
from serving.routes.metrics import PROMETHEUS_CONTENT_TYPE
from serving.codecs import (
    BINARY_CONTENT_TYPE,
    HEADER_LENGTH_HEADER,
    INPUT_DATATYPES,
    JSON_CONTENT_TYPE,
    SERVER_EXTENSIONS,
    V2_DATATYPES,
)

REQUEST_ID_HEADER = "X-Request-ID"
# /metrics' media type (its parameters, the exposition format's version, are in the prose).
PROMETHEUS_MEDIA_TYPE = PROMETHEUS_CONTENT_TYPE.partition(";")[0]
# The Swagger UI files GET /docs/{asset} serves, with their content types.
DOCS_ASSET_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
    ".map": "application/json",
}

Json = dict[str, Any]

_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
_FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")  # iris's, as examples
# Every model has its own shape, F features and K classes (its V2 metadata's ``inputs`` and
# ``outputs``): the schemas allow any, the examples are Iris's (4 features, 3 classes).
_SHAPES = (f"Each model has its own number of features F (1 to {MAX_FEATURES}) and classes K "
           f"(2 to {MAX_CLASSES}), shown by `GET /v2/models/{{name}}`; the examples are "
           f"iris's, F = {IRIS_FEATURES} and K = {IRIS_CLASSES}.")
_ACCEPTED = sorted(INPUT_DATATYPES)
# V2's datatypes, accepted ones first, in the order the protocol lists them otherwise.
_DATATYPES = _ACCEPTED + sorted(V2_DATATYPES - set(INPUT_DATATYPES))


def ref(kind: str, name: str) -> Json:
    return {"$ref": f"#/components/{kind}/{name}"}


def schema(name: str) -> Json:
    return ref("schemas", name)


# ------------------------------------------------------------------------------- schemas

def schema_components() -> dict[str, Json]:
    number = {"type": "number", "format": "float"}
    value = {**number, "nullable": True,
             "description": "A number; null (a missing value) only for a model that imputes."}
    return {
        "Error": {
            "type": "object",
            "description": "Every error answer: what was wrong and what is expected.",
            "required": ["error"],
            "additionalProperties": False,
            "properties": {"error": {"type": "string"}},
        },
        # ---- simple JSON and KServe V1
        "InstancesRequest": {
            "type": "object",
            "description": (
                "A batch of rows, TF-Serving style. Every row takes the same form: a list of "
                "the model's F numbers in feature order, or an object keyed exactly by the "
                "model's feature names (`feature_names` in its metadata.json; for iris "
                f"{', '.join(_FEATURES)}). Values must be finite numbers within float32's range; "
                "strings, booleans, NaN and Infinity are refused (400), and so is null unless "
                "the model imputes missing values (`missing_values: impute` in its "
                "metadata.json), where null is a missing value. More rows than "
                f"`SOFTSERVE_MAX_BATCH_ROWS` is a 413. {_SHAPES}"
            ),
            "required": ["instances"],
            "additionalProperties": False,
            "properties": {
                "instances": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"oneOf": [schema("InstanceRow"), schema("InstanceObject")]},
                },
            },
            "example": {"instances": _ROWS},
        },
        "InstanceRow": {
            "type": "array",
            "description": "One row: the model's F numbers in its feature order.",
            "minItems": 1,
            "maxItems": MAX_FEATURES,
            "items": value,
            "example": _ROWS[0],
        },
        "InstanceObject": {
            "type": "object",
            "description": "One row keyed exactly by the model's feature names (no more, no "
                           "fewer).",
            "minProperties": 1,
            "maxProperties": MAX_FEATURES,
            "additionalProperties": value,
            "example": dict(zip(_FEATURES, _ROWS[0])),
        },
        "PredictResponse": {
            "type": "object",
            "required": ["model_name", "model_version", "predictions"],
            "additionalProperties": False,
            "properties": {
                "model_name": {"type": "string", "example": "iris"},
                "model_version": {"type": "string", "example": "1"},
                "predictions": {
                    "type": "array",
                    "description": "One per row, in request order.",
                    "items": schema("Prediction"),
                },
            },
        },
        "Prediction": {
            "type": "object",
            "required": ["class", "label", "probabilities"],
            "additionalProperties": False,
            "properties": {
                "class": {"type": "integer", "minimum": 0, "maximum": MAX_CLASSES - 1,
                          "description": "Index of the most probable class, 0 to K - 1."},
                "label": {"type": "string", "description": "That class's label.",
                          "example": "setosa"},
                "probabilities": {
                    "type": "array",
                    "description": "Softmax probability of each of the model's K classes, in "
                                   "class order (float32).",
                    "minItems": 2,
                    "maxItems": MAX_CLASSES,
                    "items": number,
                },
            },
            "example": {"class": 0, "label": "setosa",
                        "probabilities": [0.99, 0.0098, 4.6e-9]},
        },
        "V1ModelStatus": {
            "type": "object",
            "required": ["name", "ready", "versions"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "example": "iris"},
                "ready": {"type": "boolean", "enum": [True],
                          "description": "A version of the model is being served."},
                "versions": {"type": "array", "items": {"type": "string"},
                             "description": "The versions loaded, oldest first.",
                             "example": ["1", "2"]},
            },
        },
        "V1ModelNotReady": {
            "type": "object",
            "description": "An Error body with the model's status: no version can serve.",
            "required": ["name", "ready", "versions", "error"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "example": "iris"},
                "ready": {"type": "boolean", "enum": [False]},
                "versions": {"type": "array", "items": {"type": "string"}, "maxItems": 0},
                "error": {"type": "string"},
            },
        },
        "ApiIndex": {
            "type": "object",
            "description": "Where to start: the server's metadata, its models, the model "
                           "behind /predict and the main endpoints.",
            "required": ["name", "version", "extensions", "models", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "example": "softserve"},
                "version": {"type": "string", "example": "0.1.0"},
                "extensions": {"type": "array", "items": {"type": "string"}},
                "models": {"type": "array", "items": {"type": "string"}, "example": ["iris"]},
                "predict_model": {"type": "string", "example": "iris",
                                  "description": "The model behind POST /predict: "
                                                 "SOFTSERVE_DEFAULT_MODEL, else the first "
                                                 "published; absent with no model."},
                "endpoints": {"type": "object", "additionalProperties": {"type": "string"},
                              "example": {"docs": "GET /docs", "predict": "POST /predict"}},
            },
        },
        # ---- Triton's model-repository (index only) and model-configuration extensions
        "RepositoryIndexRequest": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"ready": {"type": "boolean", "description": "Only READY versions."}},
            "example": {"ready": True},
        },
        "RepositoryIndex": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "state", "reason"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string"},
                    "version": {"type": "string", "description": "Absent for a model with no "
                                                                 "version directory."},
                    "state": {"type": "string", "enum": ["READY", "UNAVAILABLE"]},
                    "reason": {"type": "string", "description": "Why it is UNAVAILABLE; "
                                                                "empty when READY."},
                },
            },
            "example": [{"name": "iris", "version": "1", "state": "READY", "reason": ""}],
        },
        "ModelConfig": {
            "type": "object",
            "description": "Triton's ModelConfig as JSON (config.pbtxt's content).",
            "required": ["name", "platform", "backend", "max_batch_size", "version_policy",
                         "input", "output"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string"},
                "platform": {"type": "string", "enum": [PLATFORM]},
                "backend": {"type": "string", "enum": ["onnxruntime"]},
                "max_batch_size": {"type": "integer", "enum": [0],
                                   "description": "0: the graph's own -1 dimension batches."},
                "version_policy": {"type": "object"},
                "input": {"type": "array", "items": schema("ConfigTensor")},
                "output": {"type": "array", "items": schema("ConfigTensor")},
            },
        },
        "ConfigTensor": {
            "type": "object",
            "required": ["name", "data_type", "dims"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string"},
                "data_type": {"type": "string", "example": "TYPE_FP32"},
                "dims": {"type": "array", "items": {"type": "integer", "minimum": -1}},
            },
        },
        # ---- V2 metadata and health
        "V2ServerMetadata": {
            "type": "object",
            "required": ["name", "version", "extensions"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "example": "softserve"},
                "version": {"type": "string", "example": "0.1.0"},
                "extensions": {"type": "array", "items": {"type": "string"},
                               "description": '"statistics" only while metrics are on '
                                              "(SOFTSERVE_METRICS).",
                               "example": [*SERVER_EXTENSIONS, "model_repository",
                                           "model_configuration", "statistics"]},
            },
        },
        "V2ModelMetadata": {
            "type": "object",
            "required": ["name", "versions", "platform", "inputs", "outputs"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "example": "iris"},
                "versions": {
                    "type": "array", "items": {"type": "string"},
                    "description": "The versions loaded (oldest first); only the one asked for "
                                   "on the versioned path.",
                    "example": ["1"],
                },
                "platform": {"type": "string", "example": PLATFORM},
                "inputs": {"type": "array", "items": schema("TensorMetadata")},
                "outputs": {"type": "array", "items": schema("TensorMetadata")},
            },
            "example": {
                "name": "iris", "versions": ["1"], "platform": PLATFORM,
                "inputs": [{"name": INPUT_NAME, "datatype": "FP32",
                            "shape": [-1, IRIS_FEATURES]}],
                "outputs": [
                    {"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, IRIS_CLASSES]},
                    {"name": CLASS, "datatype": "INT64", "shape": [-1]},
                ],
            },
        },
        "TensorMetadata": {
            "type": "object",
            "required": ["name", "datatype", "shape"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string"},
                "datatype": {"type": "string", "enum": _DATATYPES},
                "shape": {"type": "array", "items": {"type": "integer", "minimum": -1},
                          "description": "-1 marks a variable dimension (the batch)."},
            },
        },
        # ---- feedback (softserve's extension; serving/routes/feedback.py)
        "FeedbackItem": {
            "type": "object",
            "description": "The true label of a served prediction, by the request id it was "
                           "answered with (its X-Request-ID header). An id that matches no "
                           "logged prediction is accepted (counted as unmatched by "
                           "`python -m modelrepo report`).",
            "required": ["id", "label"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "string", "minLength": 1, "maxLength": 200,
                       "example": "3f2a9c1e5b7d4a60000000000000002a"},
                "label": {"type": "string", "description": "One of the model's labels.",
                          "example": "setosa"},
                "row": {"type": "integer", "minimum": 0, "default": 0,
                        "description": "The row of a multi-row request."},
                "model_version": {"type": "string", "pattern": "^[1-9][0-9]*$",
                                  "description": "The version that answered (with `class`: "
                                                 "counted in softserve_feedback_total).",
                                  "example": "1"},
                "class": {"oneOf": [{"type": "string"}, {"type": "integer", "minimum": 0}],
                          "description": "The label (or class index) the client received.",
                          "example": "versicolor"},
            },
        },
        "FeedbackRequest": {
            "description": "One feedback item or a list of them (at most "
                           "SOFTSERVE_FEEDBACK_MAX_ITEMS, else 413).",
            "oneOf": [schema("FeedbackItem"),
                      {"type": "array", "minItems": 1, "items": schema("FeedbackItem")}],
            "example": [{"id": "3f2a9c1e5b7d4a60000000000000002a", "label": "setosa",
                         "model_version": "1", "class": "setosa"}],
        },
        "FeedbackAccepted": {
            "type": "object",
            "required": ["accepted", "logged"],
            "additionalProperties": False,
            "properties": {
                "accepted": {"type": "integer", "minimum": 1, "example": 1},
                "logged": {"type": "boolean", "description": "Written to the prediction log "
                           "(false when SOFTSERVE_PREDICTION_LOG is not set: counted only).",
                           "example": True},
            },
        },
        "Live": {
            "type": "object",
            "required": ["live"],
            "additionalProperties": False,
            "properties": {"live": {"type": "boolean", "enum": [True]}},
        },
        "Ready": {
            "type": "object",
            "required": ["ready"],
            "additionalProperties": False,
            "properties": {"ready": {"type": "boolean", "enum": [True]},
                           "details": {"type": "string", "description":
                                       "Present when serving goes on despite a problem, e.g. "
                                       "the model store unreachable: the versions loaded "
                                       "keep serving."}},
        },
        "NotReady": {
            "type": "object",
            "description": "An Error body with `\"ready\": false`: why the server cannot serve.",
            "required": ["ready", "error"],
            "additionalProperties": False,
            "properties": {
                "ready": {"type": "boolean", "enum": [False]},
                "error": {"type": "string"},
            },
            "example": {"ready": False, "error": "not ready: no model in the repository "
                                                 "artifacts"},
        },
        "ModelReady": {
            "type": "object",
            "required": ["name", "version", "ready"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "example": "iris"},
                "version": {"type": "string", "example": "1",
                            "description": "The version that answers (the latest, or the one "
                                           "asked for)."},
                "ready": {"type": "boolean", "enum": [True]},
            },
        },
        "ModelNotReady": {
            "type": "object",
            "description": "An Error body with the model's name and `\"ready\": false`.",
            "required": ["name", "ready", "error"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "example": "iris"},
                "ready": {"type": "boolean", "enum": [False]},
                "error": {"type": "string"},
            },
            "example": {"name": "iris", "ready": False,
                        "error": "model 'iris' version 2 is broken and not served: sha256 of "
                                 "model.onnx does not match metadata.json"},
        },
        # ---- V2 inference
        "V2InferRequest": {
            "type": "object",
            "description": (
                "A V2 (Open Inference Protocol) inference request. As the JSON part of a binary "
                f"request, the first `{HEADER_LENGTH_HEADER}` bytes of the body."
            ),
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string", "description": "Echoed in the response."},
                "parameters": {
                    "type": "object",
                    "properties": {
                        "binary_data_output": {
                            "type": "boolean", "default": False,
                            "description": "Return every output as binary tensor data "
                                           "(unless the output says otherwise).",
                        },
                    },
                },
                "inputs": {
                    "type": "array",
                    "description": f'Exactly one tensor, named "{INPUT_NAME}".',
                    "minItems": 1,
                    "maxItems": 1,
                    "items": schema("V2RequestInput"),
                },
                "outputs": {
                    "type": "array",
                    "description": "The outputs to return, in this order; all of them, in "
                                   "model order, when absent or empty. Each at most once.",
                    "items": schema("V2RequestOutput"),
                },
            },
            "example": {
                "id": "42",
                "inputs": [{"name": INPUT_NAME, "shape": [2, IRIS_FEATURES], "datatype": "FP32",
                            "data": [v for row in _ROWS for v in row]}],
            },
        },
        "V2RequestInput": {
            "type": "object",
            "description": (
                'The values come either in `data` or, with the binary tensor data extension, as '
                "`parameters.binary_data_size` raw little-endian bytes after the JSON part of "
                "the body — never both."
            ),
            "required": ["name", "shape", "datatype"],
            "properties": {
                "name": {"type": "string", "enum": [INPUT_NAME]},
                "shape": {
                    "type": "array",
                    "description": "[N, F]: N rows (1 <= N <= SOFTSERVE_MAX_BATCH_ROWS, more "
                                   "is a 413) of the model's F features (for iris, 4). In "
                                   "`data`, null is a missing value for a model that imputes "
                                   "(in binary data, NaN); any other model refuses both.",
                    "minItems": 2,
                    "maxItems": 2,
                    "items": {"type": "integer", "minimum": 1},
                    "example": [1, IRIS_FEATURES],
                },
                "datatype": {
                    "type": "string",
                    "enum": _DATATYPES,
                    "description": (
                        f"{', '.join(_ACCEPTED)}: accepted and converted to FP32, the model's "
                        "input type (INT data must be whole numbers within the type). Every "
                        "other V2 datatype is valid in the protocol but unsupported here: 400."
                    ),
                },
                "data": schema("V2TensorData"),
                "parameters": {
                    "type": "object",
                    "properties": {
                        "binary_data_size": {
                            "type": "integer", "minimum": 0,
                            "description": "Binary tensor data extension: the input's values "
                                           "are this many bytes after the JSON part (N x 4 x "
                                           "the datatype's size).",
                        },
                    },
                },
            },
        },
        "V2TensorData": {
            "type": "array",
            "description": (
                "The input's N x 4 values, row-major: flat, or nested as the shape. Finite "
                "numbers within float32's range; null, booleans, strings, NaN and Infinity are "
                "refused (400)."
            ),
            "items": {"oneOf": [{"type": "number"}, schema("V2TensorData")]},
            "example": _ROWS[0],
        },
        "V2RequestOutput": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "enum": [PROBABILITIES, CLASS]},
                "parameters": {
                    "type": "object",
                    "properties": {
                        "binary_data": {
                            "type": "boolean",
                            "description": "Return this output as binary tensor data "
                                           "(default: the request's binary_data_output).",
                        },
                        "classification": {
                            "type": "integer", "minimum": 0, "maximum": MAX_CLASSES,
                            "default": 0,
                            "description": (
                                f"Classification extension, on `{PROBABILITIES}` only: return "
                                "the top k (1 to the model's K) classes of each row as BYTES "
                                '`"<probability>:<index>:<label>"`, shape [N, k]. 0: the raw '
                                "tensor."
                            ),
                        },
                    },
                },
            },
        },
        "V2InferResponse": {
            "type": "object",
            "description": (
                "The JSON answer, or the JSON part of a binary answer (the first "
                f"`{HEADER_LENGTH_HEADER}` bytes of the body)."
            ),
            "required": ["model_name", "model_version", "outputs"],
            "additionalProperties": False,
            "properties": {
                "model_name": {"type": "string", "example": "iris"},
                "model_version": {"type": "string", "example": "1"},
                "id": {"type": "string", "description": "The request's id, if it had one."},
                "outputs": {"type": "array", "items": schema("V2ResponseOutput")},
            },
            "example": {
                "model_name": "iris", "model_version": "1", "id": "42",
                "outputs": [
                    {"name": PROBABILITIES, "datatype": "FP32", "shape": [2, IRIS_CLASSES],
                     "data": [0.99, 0.0098, 4.6e-9, 1.1e-5, 0.12, 0.88]},
                    {"name": CLASS, "datatype": "INT64", "shape": [2], "data": [0, 2]},
                ],
            },
        },
        "V2ResponseOutput": {
            "type": "object",
            "description": (
                f"`{PROBABILITIES}` FP32 [N, K] (the model's K classes), `{CLASS}` INT64 [N], "
                "or with "
                f"classification k `{PROBABILITIES}` BYTES [N, k]. The values are in `data` "
                "(flat, row-major) or, for a binary output, `parameters.binary_data_size` raw "
                "little-endian bytes after the JSON part, in output order (BYTES elements each "
                "prefixed by a 4-byte little-endian length)."
            ),
            "required": ["name", "datatype", "shape"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "enum": [PROBABILITIES, CLASS]},
                "datatype": {"type": "string", "enum": ["FP32", "INT64", "BYTES"]},
                "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                "data": {
                    "type": "array",
                    "items": {"oneOf": [{"type": "number"}, {"type": "string"}]},
                },
                "parameters": {
                    "type": "object",
                    "required": ["binary_data_size"],
                    "additionalProperties": False,
                    "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
                },
            },
        },
        "V2BinaryInferRequest": {
            "type": "string",
            "format": "binary",
            "description": (
                "Binary tensor data extension: a V2InferRequest JSON document of "
                f"`{HEADER_LENGTH_HEADER}` bytes, immediately followed by the input's raw "
                "little-endian values (`parameters.binary_data_size` bytes). The JSON part "
                "alone (no binary input) is also accepted."
            ),
        },
        "V2BinaryInferResponse": {
            "type": "string",
            "format": "binary",
            "description": (
                "Sent when any output is binary: a V2InferResponse JSON document of "
                f"`{HEADER_LENGTH_HEADER}` bytes, followed by the binary outputs' raw bytes in "
                "output order."
            ),
        },
        # ---- statistics and metrics
        "V2ModelStatistics": {
            "type": "object",
            "description": "Triton's statistics extension, summed over every worker since "
                           "the server started. A loaded version that has not answered yet "
                           "is listed with zeros.",
            "required": ["model_stats"],
            "properties": {
                "model_stats": {"type": "array", "items": schema("V2ModelStat")},
            },
        },
        "V2ModelStat": {
            "type": "object",
            "required": ["name", "version", "last_inference", "inference_count",
                         "execution_count", "inference_stats"],
            "properties": {
                "name": {"type": "string", "example": "iris"},
                "version": {"type": "string", "example": "1"},
                "last_inference": {
                    "type": "integer", "minimum": 0,
                    "description": "When the last inference happened, in milliseconds since "
                                   "the epoch; 0 if never.",
                },
                "inference_count": {"type": "integer", "minimum": 0,
                                    "description": "Rows inferred (each row of a batch counts)."},
                "execution_count": {"type": "integer", "minimum": 0,
                                    "description": "Model executions (one per request)."},
                "inference_stats": schema("V2InferStats"),
                "batch_stats": {"type": "array", "items": {"type": "object"},
                                "description": "Always empty: the server does not batch "
                                               "requests together."},
            },
        },
        "V2InferStats": {
            "type": "object",
            "description": (
                "`success` and `fail`: inference requests that reached the model, by outcome, "
                "and their total time; `compute_input`, `compute_infer`, `compute_output`: "
                "decoding the request, running the model, encoding the answer; `queue` is "
                "always 0 ns (a worker takes a request straight away); `cache_hit` and "
                "`cache_miss` are always 0 (no response cache)."
            ),
            "required": ["success", "fail", "queue", "compute_input", "compute_infer",
                         "compute_output"],
            "properties": {
                "success": schema("V2StatDuration"),
                "fail": schema("V2StatDuration"),
                "queue": schema("V2StatDuration"),
                "compute_input": schema("V2StatDuration"),
                "compute_infer": schema("V2StatDuration"),
                "compute_output": schema("V2StatDuration"),
                "cache_hit": schema("V2StatDuration"),
                "cache_miss": schema("V2StatDuration"),
            },
        },
        "V2StatDuration": {
            "type": "object",
            "required": ["count", "ns"],
            "properties": {
                "count": {"type": "integer", "minimum": 0},
                "ns": {"type": "integer", "minimum": 0,
                       "description": "Total time of those events, in nanoseconds."},
            },
        },
        "PrometheusText": {
            "type": "string",
            "description": "Prometheus text exposition format (version 0.0.4).",
            "example": "# HELP ...\n# TYPE ...\n",
        },
    }


# --------------------------------------------------------------- parameters and headers

def parameter_components() -> dict[str, Json]:
    return {
        "RequestId": {
            "name": REQUEST_ID_HEADER,
            "in": "header",
            "required": False,
            "description": "Any printable string of at most 200 characters naming the request, "
                           "for the access log; the response's X-Request-ID header echoes it. "
                           "Without it (or with another value) the server generates one.",
            "schema": {"type": "string", "maxLength": 200},
        },
        "ModelName": {
            "name": "name",
            "in": "path",
            "required": True,
            "description": "A model in the repository.",
            "schema": {"type": "string", "example": "iris"},
        },
        "ModelVersion": {
            "name": "version",
            "in": "path",
            "required": True,
            "description": "A version number (a positive integer), or an alias of the "
                           "model's traffic policy (e.g. production, candidate); anything "
                           "else, or a version not loaded, is a 404.",
            "schema": {"type": "string", "example": "1"},
        },
        "InferenceHeaderContentLength": {
            "name": HEADER_LENGTH_HEADER,
            "in": "header",
            "required": False,
            "description": "Binary tensor data extension: the size in bytes of the JSON part at "
                           "the start of the body; the rest is raw tensor data. Without it the "
                           "whole body is JSON.",
            "schema": {"type": "integer", "minimum": 0},
        },
    }


def header_components() -> dict[str, Json]:
    return {
        "RequestId": {
            "description": "The request's X-Request-ID, or one the server generated (also in "
                           "the access log line of the request).",
            "required": True,
            "schema": {"type": "string"},
        },
        "InferenceHeaderContentLength": {
            "description": "With application/octet-stream only: the size in bytes of the JSON "
                           "part at the start of the body.",
            "required": False,
            "schema": {"type": "integer", "minimum": 0},
        },
        "Allow": {
            "description": "The methods this path accepts.",
            "required": True,
            "schema": {"type": "string", "example": "OPTIONS, POST"},
        },
    }


# ------------------------------------------------------------------------------ responses

def response(description: str, content: dict[str, Json] | None = None,
             headers: dict[str, Json] | None = None) -> Json:
    answer: Json = {
        "description": description,
        "headers": {REQUEST_ID_HEADER: ref("headers", "RequestId"), **(headers or {})},
    }
    if content:
        answer["content"] = content
    return answer


def json_media(schema_name: str, **media: Any) -> dict[str, Json]:
    return {JSON_CONTENT_TYPE: {"schema": schema(schema_name), **media}}


def error(description: str, example: Any, schema_name: str = "Error",
          headers: dict[str, Json] | None = None) -> Json:
    return response(description, json_media(schema_name, example=example), headers)


MODEL_NOT_READY = ("model 'iris' has no valid version: version 1: sha256 of model.onnx does not "
                   "match metadata.json")
# Per status: what it means, and an answer the server gives (its message, from the code).
_ERROR_DEFAULTS: dict[int, tuple[str, Any]] = {
    400: ("Bad input; the message says what was wrong and what is expected.",
          {"error": "instances[0] has 3 values: every row must be a list of 4 numbers, the "
                    "features of model iris (sepal_length, sepal_width, petal_length, "
                    "petal_width), or an object with those keys"}),
    403: ("The model repository is read-only over HTTP.",
          {"error": "the model repository is read-only over HTTP: publish a version with "
                    "`python -m training` (or retire one with `python -m modelrepo`) and every "
                    "worker loads it within SOFTSERVE_POLL_SECONDS"}),
    404: ("Unknown model or version.", {"error": "unknown model 'nope'; models served: iris"}),
    413: ("Too large: more rows than SOFTSERVE_MAX_BATCH_ROWS, or a body over "
          "SOFTSERVE_MAX_BODY_BYTES (refused from its Content-Length, unread).",
          {"error": '"instances" has 100001 rows, more than the 100000 allowed per request: '
                    "split the batch"}),
    500: ("A bug: logged with its traceback, answered `internal error`.",
          {"error": "internal error"}),
    503: ("The model exists but none of its versions can serve (all broken).",
          {"error": MODEL_NOT_READY}),
}


def errors(path: str, method: str, allowed: list[str], *statuses: int,
           descriptions: dict[int, str] | None = None, examples: dict[int, Any] | None = None,
           not_ready_schema: str = "Error") -> dict[str, Json]:
    """The error responses of ``method path`` for ``statuses``, and 500, which any can answer.

    ``allowed``: the methods the path's routes take (its 405 example names them and one other).
    """
    descriptions = descriptions or {}
    examples = examples or {}
    out: dict[str, Json] = {}
    for status in (*statuses, 500):
        if status == 405:
            other = "GET" if "GET" not in allowed else "DELETE"
            example_path = path.replace("{name}", "iris").replace("{version}", "1").replace(
                "{asset}", "swagger-ui.css")
            out["405"] = error(
                "Another method than this path allows (OPTIONS and, with GET, HEAD are always "
                "allowed); the Allow header lists them.",
                examples.get(405, {"error": f"method {other} is not allowed for {example_path}; "
                                            f"allowed: {', '.join(allowed)}"}),
                headers={"Allow": ref("headers", "Allow")})
            continue
        description, example = _ERROR_DEFAULTS[status]
        out[str(status)] = error(descriptions.get(status, description),
                                 examples.get(status, example),
                                 not_ready_schema if status == 503 else "Error")
    return out




# --------------------------------------------------------------------- request bodies

NO_CONTENT_TYPE = (
    " The server reads the raw body whatever the Content-Type (none is needed)."
)


def instances_body() -> Json:
    return {
        "required": True,
        "description": "UTF-8 JSON." + NO_CONTENT_TYPE,
        "content": json_media("InstancesRequest", examples={
            "lists": {"summary": "rows as lists", "value": {"instances": _ROWS}},
            "objects": {"summary": "rows keyed by feature name",
                        "value": {"instances": [dict(zip(_FEATURES, row)) for row in _ROWS]}},
        }),
    }


def infer_body() -> Json:
    return {
        "required": True,
        "description": (
            "JSON, or with the binary tensor data extension a JSON part of "
            f"`{HEADER_LENGTH_HEADER}` bytes followed by raw little-endian tensor data. "
            "The server tells them apart by that header, not by the Content-Type (which it "
            "ignores; tritonclient sends none)."
        ),
        "content": {
            JSON_CONTENT_TYPE: {
                "schema": schema("V2InferRequest"),
                "examples": {
                    "flat": {"summary": "two rows, flat data", "value": {
                        "id": "42",
                        "inputs": [{"name": INPUT_NAME, "shape": [2, IRIS_FEATURES],
                                    "datatype": "FP32",
                                    "data": [v for row in _ROWS for v in row]}],
                    }},
                    "classification": {"summary": "nested data, top-2 classification", "value": {
                        "inputs": [{"name": INPUT_NAME, "shape": [1, IRIS_FEATURES],
                                    "datatype": "FP32", "data": [_ROWS[0]]}],
                        "outputs": [{"name": PROBABILITIES,
                                     "parameters": {"classification": 2}}],
                    }},
                },
            },
            BINARY_CONTENT_TYPE: {"schema": schema("V2BinaryInferRequest")},
        },
    }


INFER_BAD = (
    "Bad input: not a UTF-8 JSON object; not exactly one input named "
    f'"{INPUT_NAME}"; a shape other than [N, F] (the model\'s F features); an unsupported or '
    "unknown datatype; data that disagrees with the shape or is not finite numbers within "
    "float32's range (null and NaN: unless the model imputes missing values); a bad "
    f"`{HEADER_LENGTH_HEADER}` or binary sizes that disagree with the shape or the body; unknown "
    f"or repeated outputs; classification other than 1..K (the model's classes) on "
    f"`{PROBABILITIES}`; "
    "shared memory."
)
INFER_BAD_EXAMPLE = {
    "error": f'input "{INPUT_NAME}" has unsupported datatype BOOL: send FP32 (or FP64, INT32, '
             "INT64)"
}
def feedback_body() -> Json:
    return {"required": True, "description": "UTF-8 JSON." + NO_CONTENT_TYPE,
            "content": json_media("FeedbackRequest")}


METRICS_OFF = "Metrics are turned off (SOFTSERVE_METRICS=0)."
METRICS_OFF_EXAMPLE = {"error": "metrics are turned off (SOFTSERVE_METRICS=0)"}


