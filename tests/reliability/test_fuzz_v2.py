"""Property-based fuzzing of V2 inference bodies, JSON and binary, against the live server.

Hypothesis builds requests from the protocol's own pieces — shapes, datatypes, data flat or
nested, binary tensor lengths, ``Inference-Header-Content-Length`` values, outputs and their
parameters, ids, request headers — mostly close to valid (so they reach deep into the codecs),
sometimes anything JSON can hold. Each is sent on its own connection. Properties: the answer is
200, 400, 404 or 413 (never 5xx); a 4xx is JSON ``{"error": text}``; a 200 is a well-formed V2
answer (JSON, or JSON header + binary outputs whose sizes add up, ``probabilities`` of the
model's K columns); no worker crashes or hangs. It runs against iris (4 x 3) on the audited
server, and against models of other shapes — "wine" (13 x 2) and "census" (13 x 3, imputing
missing values) — on the session's server of many shapes.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.codecs import HEADER_LENGTH_HEADER, V2_DATATYPES
from tests.reliability.conftest import (Audited, assert_json_error, budget, count_case,
                                        http_request, log_problems, raw_exchange, worker_pids)
from tests.support.models import SHAPES
from tests.support.server import Server

EXAMPLES = budget(60)
ACCEPTED = {"FP32": "<f4", "FP64": "<f8", "INT32": "<i4", "INT64": "<i8"}

# --- strategies ---------------------------------------------------------------------------------

numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**31), 2**31),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, -0.0, 3.4e38, 3.5e38, -3.5e38, 1e308, 5e-324, 2**63, 2**64]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=8))
anything = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=16)
datatypes = st.one_of(st.sampled_from(sorted(ACCEPTED)), st.sampled_from(sorted(V2_DATATYPES)),
                      st.sampled_from(["fp32", "FLOAT", "", "STRING"]), anything)


def shapes(width: int) -> st.SearchStrategy[Any]:
    """Tensor shapes, mostly [N, F] or near it, for a model of F = ``width`` features."""
    return st.one_of(
        st.tuples(st.integers(1, 6), st.sampled_from([width, width - 1, width + 1, 4])).map(list),
        st.lists(st.integers(-3, 10**6), max_size=3),
        st.lists(st.one_of(st.integers(0, 2**64), st.floats(0, 10), st.booleans()), max_size=3),
        anything,
    )


classification = st.one_of(st.integers(-2, 5), anything)
outputs = st.one_of(
    st.none(),
    st.lists(st.fixed_dictionaries(
        {"name": st.one_of(st.sampled_from(["probabilities", "class", "nope"]), anything)},
        optional={"parameters": st.fixed_dictionaries({}, optional={
            "classification": classification, "binary_data": st.one_of(st.booleans(), anything)})}),
        max_size=3),
    anything,
)


def _packed(values: list[Any], dtype: np.dtype[Any]) -> bytes:
    """Values as raw little-endian bytes; out-of-range ones overflow, as a client's would."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.array(values, dtype=np.float64).astype(dtype).tobytes()


MUTATIONS = ("shape", "datatype", "name", "data", "value", "binary_size", "binary_bytes",
             "header_length", "no_header_length", "outputs", "id", "parameters", "extra_input",
             "inputs", "tensor_parameters", "data_and_binary", "not_utf8", "nan", "truncate",
             "path", "content_type")


@st.composite
def infer_requests(draw: st.DrawFn, model: str = "iris",
                   width: int = 4) -> tuple[str, bytes, dict[str, str], list[str]]:
    """(path, body, headers, mutations): a valid V2 request to ``model`` (of ``width``
    features), then 0-3 mutations of it."""
    binary = draw(st.booleans())
    rows = draw(st.integers(1, 6))
    datatype = draw(st.sampled_from(sorted(ACCEPTED)))
    dtype = np.dtype(ACCEPTED[datatype])
    element = st.integers(-100, 100) if datatype.startswith("INT") else \
        st.floats(-1e6, 1e6, width=32)
    values = draw(st.lists(element, min_size=rows * width, max_size=rows * width))
    tensor: dict[str, Any] = {"name": "input", "shape": [rows, width], "datatype": datatype}
    raw = b""
    if binary:
        raw = _packed(values, dtype)
        tensor["parameters"] = {"binary_data_size": len(raw)}
    elif draw(st.booleans()):
        tensor["data"] = [values[i:i + width] for i in range(0, rows * width, width)]
    else:
        tensor["data"] = values
    doc: dict[str, Any] = {"inputs": [tensor]}
    if draw(st.booleans()):
        doc["id"] = draw(st.text(max_size=10))
    if draw(st.booleans()):
        doc["outputs"] = draw(st.lists(st.fixed_dictionaries(
            {"name": st.sampled_from(["probabilities", "class"])},
            optional={"parameters": st.fixed_dictionaries({}, optional={
                "binary_data": st.booleans()})}), max_size=2, unique_by=lambda o: o["name"]))
    if draw(st.booleans()):
        doc["parameters"] = {"binary_data_output": draw(st.booleans())}
    path = f"/v2/models/{model}/infer" if draw(st.booleans()) else \
        f"/v2/models/{model}/versions/1/infer"
    headers: dict[str, str] = {}
    allow_nan = False
    header_length: str | None = None
    mutations = draw(st.lists(st.sampled_from(MUTATIONS), max_size=3)) \
        if draw(st.integers(0, 3)) else []
    for mutation in mutations:
        if mutation == "shape":
            tensor["shape"] = draw(shapes(width))
        elif mutation == "datatype":
            tensor["datatype"] = draw(datatypes)
        elif mutation == "name":
            tensor["name"] = draw(st.one_of(st.text(max_size=6), anything))
        elif mutation == "data":
            tensor["data"] = draw(st.one_of(anything,
                                            st.lists(numbers, max_size=rows * width + 2)))
        elif mutation == "value" and isinstance(tensor.get("data"), list) and tensor["data"]:
            flat = [v for row in tensor["data"] for v in (row if isinstance(row, list) else [row])]
            flat[draw(st.integers(0, len(flat) - 1))] = draw(st.one_of(scalars, anything))
            tensor["data"] = flat
        elif mutation == "binary_size":
            tensor.setdefault("parameters", {})["binary_data_size"] = draw(st.one_of(
                st.integers(-4, len(raw) + 9), anything))
        elif mutation == "binary_bytes":
            raw = draw(st.one_of(st.binary(min_size=len(raw), max_size=len(raw)),
                                 st.binary(max_size=len(raw) + 9)))
        elif mutation == "header_length":
            header_length = draw(st.one_of(st.integers(-3, 400).map(str),
                                           st.text(alphabet="0123456789 -+x", max_size=20)))
        elif mutation == "no_header_length":
            header_length = ""
        elif mutation == "outputs":
            doc["outputs"] = draw(outputs)
        elif mutation == "id":
            doc["id"] = draw(anything)
        elif mutation == "parameters":
            doc["parameters"] = draw(st.one_of(anything, st.fixed_dictionaries(
                {"binary_data_output": anything})))
        elif mutation == "extra_input":
            doc["inputs"].append(draw(st.one_of(anything, st.just(dict(tensor)))))
        elif mutation == "inputs":
            doc["inputs"] = draw(anything)
        elif mutation == "tensor_parameters":
            tensor["parameters"] = draw(st.dictionaries(st.sampled_from(
                ["shared_memory_region", "binary_data_size", "x"]), anything, max_size=2))
        elif mutation == "data_and_binary":
            tensor["data"] = values
            tensor.setdefault("parameters", {})["binary_data_size"] = len(raw) or 16
        elif mutation == "nan":
            allow_nan = True
            if isinstance(tensor.get("data"), list):
                tensor["data"] = [float("nan")] + values[1:]
        elif mutation == "path":
            path = draw(st.sampled_from([f"/v2/models/{model}/versions/2/infer",
                                         "/v2/models/nope/infer", f"/v2/models/{model}/infer/",
                                         f"/v2/models/{model}/versions/0/infer"]))
        elif mutation == "content_type":
            headers["Content-Type"] = draw(st.sampled_from(
                ["application/json", "application/octet-stream", "text/plain", "", "x/y; q=1"]))
    header = json.dumps(doc, allow_nan=allow_nan).encode()
    if "not_utf8" in mutations:
        header = draw(st.binary(min_size=1, max_size=40)) + header[: draw(
            st.integers(0, len(header)))]
    body = header + raw
    if "truncate" in mutations:
        body = body[: draw(st.integers(0, len(body)))]
    if header_length is None and (binary or raw):
        header_length = str(len(header))
    if header_length:
        headers[HEADER_LENGTH_HEADER] = header_length
    if draw(st.integers(0, 4)) == 0:
        headers["X-Request-ID"] = draw(st.text(
            alphabet=st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"),
            max_size=250))
    return path, body, headers, mutations


# --- the answer's own consistency ---------------------------------------------------------------


def check_success(body: bytes, headers: dict[str, str], model: str = "iris",
                  classes: int = 3) -> None:
    """A 200 answer is a V2 response of ``model``; with binary outputs, the sizes add up to the
    body; raw probabilities have the model's ``classes`` columns."""
    length = headers.get(HEADER_LENGTH_HEADER.lower())
    header = body[: int(length)] if length is not None else body
    doc = json.loads(header)
    assert doc["model_name"] == model and doc["outputs"], doc
    binary = 0
    for output in doc["outputs"]:
        assert output["name"] in ("probabilities", "class"), output
        if output["datatype"] == "FP32":
            assert output["shape"][1:] == [classes], output
        size = output.get("parameters", {}).get("binary_data_size")
        if size is not None:
            binary += size
        else:
            assert isinstance(output["data"], list), output
    assert len(body) == len(header) + binary, (len(body), len(header), binary)


# No worker crashed or restarted, and the log holds no traceback or 5xx, across the module.
pytestmark = pytest.mark.usefixtures("same_workers_and_clean_log")


def test_v2_inference_bodies(audited: Audited) -> None:
    fuzz(audited.server, "iris", 4, 3)


@pytest.mark.parametrize("model", ["wine", "census"])
def test_v2_inference_bodies_for_other_shapes(shapes_server: Server, model: str) -> None:
    before = worker_pids(shapes_server)
    width, classes, _ = SHAPES[model]
    fuzz(shapes_server, model, width, classes)
    assert worker_pids(shapes_server) == before, "a worker crashed or was restarted"
    assert not log_problems(shapes_server), log_problems(shapes_server)[:5]


def fuzz(server: Server, model: str, width: int, classes: int) -> None:
    """Send the generated requests to ``model`` (F = ``width``, K = ``classes``) on ``server``
    and check each answer."""
    seen: dict[int, int] = {}

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(request=infer_requests(model, width))
    def run(request: tuple[str, bytes, dict[str, str], list[str]]) -> None:
        path, body, headers, mutations = request
        response = raw_exchange(server.port, http_request("POST", path, body, headers),
                                timeout=60)
        count_case("v2 hypothesis requests")
        assert response.status is not None, response
        seen[response.status] = seen.get(response.status, 0) + 1
        if not mutations:
            assert response.status == 200, (response.status, response.body[:300])
        assert response.status in (200, 400, 404, 413), (response.status, response.body[:300])
        if response.status == 200:
            check_success(response.body, response.headers, model, classes)
        else:
            assert_json_error(response.status, response.body, response.headers)

    run()
    # The generator must reach both sides of the codecs, not only their first check.
    print(f"v2 statuses ({model})", seen)
    assert seen.get(200) and seen.get(400), seen
