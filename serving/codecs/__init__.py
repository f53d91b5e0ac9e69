"""Request and response encodings: simple and KServe V1 JSON, V2 JSON, V2 binary tensor data.

Every protocol detail lives here, as pure functions over bytes and numpy arrays: no Flask request
objects, no onnxruntime. Decoders take the model's ``ModelShape`` (its F features, K classes,
whether it imputes missing values), return a C-contiguous float32 array of shape (N, F) or raise
a ``SoftserveError`` (``BadRequest`` 400, ``PayloadTooLarge`` 413) whose message says what was
wrong and what is expected, in the model's terms.

Formats, one module each, all built on ``checks`` (JSON loading, value checks, the float32
input; data flows that way only):

- ``instances``: simple ``/predict`` and V1 ``:predict``, ``{"instances": [[5.1, 3.5, 1.4,
  0.2], ...]}`` (Iris), rows as lists of F numbers or objects keyed exactly by the model's F
  feature names; answered by ``{"model_name", "model_version", "predictions": [{"class", "label",
  "probabilities"}]}``.
- ``v2_json``: V2 (Open Inference Protocol, KServe/Triton) ``/infer`` request and response
  documents, with Triton's classification extension; it calls on
- ``v2_binary``: Triton's binary tensor data extension (``Inference-Header-Content-Length``
  splits JSON and raw bytes).

The names below are the package's API; callers import them from ``serving.codecs``.
"""

from serving.codecs.checks import FLOAT32_MAX, INPUT_DATATYPES, V2_DATATYPES, ModelShape
from serving.errors import JSON_CONTENT_TYPE  # the one definition, re-exported here
from serving.codecs.instances import decode_instances, encode_predictions
from serving.codecs.v2_binary import BINARY_CONTENT_TYPE, HEADER_LENGTH_HEADER, parse_header_length
from serving.codecs.v2_json import (
    OUTPUT_NAMES,
    SERVER_EXTENSIONS,
    InferRequest,
    RequestedOutput,
    classification_strings,
    decode_infer,
    encode_infer,
)

__all__ = [
    "BINARY_CONTENT_TYPE",
    "FLOAT32_MAX",
    "HEADER_LENGTH_HEADER",
    "INPUT_DATATYPES",
    "JSON_CONTENT_TYPE",
    "OUTPUT_NAMES",
    "SERVER_EXTENSIONS",
    "V2_DATATYPES",
    "InferRequest",
    "ModelShape",
    "RequestedOutput",
    "classification_strings",
    "decode_infer",
    "decode_instances",
    "encode_infer",
    "encode_predictions",
    "parse_header_length",
]
