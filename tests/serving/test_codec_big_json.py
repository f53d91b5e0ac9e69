"""Big V2 JSON bodies (issue 20): their flat ``"data"`` is read a chunk at a time straight into
the float32 array, never as one list of Python floats.

The answer must be the one the full parse gives, for good bodies and for every bad one (the
bad ones fall back to the full parse, which words the problem); and a real worker's peak memory
during a big request must stay within a few copies of the body (it was ~7 with the full parse).
"""

from __future__ import annotations

import http.client
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from serving.codecs import ModelShape, checks, decode_infer, decode_instances, instances, v2_json
from serving.errors import SoftserveError
from tests.support.models import feature_names, publish_linear_model
from tests.support.processes import proc_status
from tests.support.server import start_server

F = 8
ROWS = 8000  # ~0.4 MB of JSON: over the threshold, and several chunks
SHAPE = ModelShape("wide", feature_names(F), 3, False)
IMPUTING = ModelShape("wide", feature_names(F), 3, True)


def _values(rows: int = ROWS) -> np.ndarray:
    return np.random.default_rng(7).normal(0, 1e3, (rows, F)).round(3)


def _text(values: list[str]) -> bytes:
    return ",".join(values).encode()


def _body(data: bytes, datatype: str = "FP32", rows: int = ROWS, extra: bytes = b"") -> bytes:
    return (b'{"id":"big","inputs":[{"name":"input","shape":[%d,%d],"datatype":"%s","data":['
            % (rows, F, datatype.encode()) + data + b"]" + extra + b"}]}")


def _numbers(rows: int = ROWS) -> list[str]:
    return [repr(v) for v in _values(rows).reshape(-1).tolist()]


def _outcome(body: bytes, shape: ModelShape = SHAPE) -> tuple[str, object]:
    try:
        request = decode_infer(body, None, shape, 100_000)
    except SoftserveError as exc:
        return type(exc).__name__, str(exc)
    return "ok", (request.id, request.inputs.shape, request.inputs.tobytes(), request.outputs)


def _full_parse(body: bytes, shape: ModelShape, monkeypatch: pytest.MonkeyPatch
                ) -> tuple[str, object]:
    with monkeypatch.context() as patch:
        patch.setattr(v2_json, "BIG_BODY", len(body) + 1)  # below the threshold: full parse
        return _outcome(body, shape)


def test_a_big_body_is_read_by_chunks() -> None:
    body = _body(_text(_numbers()))
    assert len(body) > checks.BIG_BODY > checks.CHUNK_BYTES
    assert checks._list_span(body, b'"data"') is not None
    request = decode_infer(body, None, SHAPE, 100_000)
    expected = _values().astype(np.float32)
    assert request.inputs.dtype == np.float32 and request.inputs.flags.c_contiguous
    assert np.array_equal(request.inputs, expected)
    assert request.id == "big"


def _cases() -> dict[str, tuple[bytes, ModelShape]]:
    good = _numbers()
    cases = {
        "integers and exponents": [str(i) if i % 3 else f"{i}e-2" for i in range(ROWS * F)],
        "spaces": [f" {v}\n" for v in good],
        "trailing comma": [*good, ""],
        "empty value": [*good[:100], "", *good[101:]],
        "one value too many": [*good, "1"],
        "one value short": good[:-1],
        "true": [*good[:-1], "true"],
        "false": [*good[:-1], "false"],
        "null": [*good[:-1], "null"],
        "NaN": [*good[:-1], "NaN"],
        "Infinity": ["-Infinity", *good[1:]],
        "a quoted number": [*good[:-1], '"1.5"'],
        "out of float32's range": [*good[:5000], "1e39", *good[5001:]],
        "a huge integer": [*good[:-1], str(2**70)],
        "an object": [*good[:-1], '{"a":1}'],
        "a leading zero": [*good[:-1], "01"],
        "a plus sign": [*good[:-1], "+1"],
    }
    out = {name: (_body(_text(values)), SHAPE) for name, values in cases.items()}
    rows = [_text(good[i * F:(i + 1) * F]) for i in range(ROWS)]
    out["nested rows"] = (_body(b"[" + b"],[".join(rows) + b"]"), SHAPE)
    integers = [str(i % 100 + 100_000) for i in range(ROWS * F)]
    out["INT32 data"] = (_body(_text(integers), "INT32"), SHAPE)
    out["FP64 data"] = (_body(_text(good), "FP64"), SHAPE)
    out["null for a model that imputes"] = (_body(_text([*good[:-1], "null"])), IMPUTING)
    out["a second data key"] = (_body(_text(good), extra=b',"parameters":{"data":[1]}'), SHAPE)
    out["data under another key"] = (
        _body(b"1", extra=b',"\\"data":[' + _text(good) + b"]").replace(b'"data":[1]', b'"x":1'),
        SHAPE)
    out["binary size and data"] = (
        _body(_text(good), extra=b',"parameters":{"binary_data_size":4}'), SHAPE)
    out["not UTF-8 after the data"] = (_body(_text(good), extra=b',"x":"\xff"'), SHAPE)
    out["the placeholder itself"] = (
        _body(_text(good)).replace(b'"big"', orjson.dumps(checks.PLACEHOLDER)), SHAPE)
    return out


@pytest.mark.parametrize("case", sorted(_cases()))
def test_the_answer_is_the_full_parse_s(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    body, shape = _cases()[case]
    assert len(body) > checks.BIG_BODY
    assert _outcome(body, shape) == _full_parse(body, shape, monkeypatch)


def test_every_bad_case_is_refused_with_a_400() -> None:
    good = {"integers and exponents", "spaces", "nested rows", "INT32 data", "FP64 data",
            "null for a model that imputes", "the placeholder itself", "a huge integer",
            "a second data key"}
    for name, (body, shape) in _cases().items():
        kind, _ = _outcome(body, shape)
        assert kind == ("ok" if name in good else "BadRequest"), (name, kind)


def settle(pid: int) -> None:
    """Until the worker's RSS stops changing (it frees a request's buffers after answering)."""
    last = proc_status(pid)["VmRSS"]
    for _ in range(50):
        time.sleep(0.02)
        now = proc_status(pid)["VmRSS"]
        if now == last:
            return
        last = now


def _instances(rows: list[bytes], extra: bytes = b"") -> bytes:
    return b'{"instances":[' + b",".join(rows) + b"]" + extra + b"}"


def _predict_outcome(body: bytes, shape: ModelShape, max_rows: int) -> tuple[str, object]:
    try:
        array = decode_instances(body, shape, max_rows)
    except SoftserveError as exc:
        return type(exc).__name__, str(exc)
    return "ok", (array.shape, array.dtype.str, array.flags.c_contiguous, array.tobytes())


def _instances_cases() -> dict[str, tuple[bytes, ModelShape, int]]:
    good = _numbers()
    rows = [b"[" + _text(good[i * F:(i + 1) * F]) + b"]" for i in range(ROWS)]
    short = b"[" + _text(good[:F - 1]) + b"]"
    return {
        "rows of numbers": (_instances(rows), SHAPE, 100_000),
        "spaces in rows": (_instances([r.replace(b",", b", ") for r in rows]), SHAPE, 100_000),
        "spaces between rows": (b'{"instances":[' + b", ".join(rows) + b"]}", SHAPE, 100_000),
        "a short row": (_instances([*rows[:-1], short]), SHAPE, 100_000),
        "a long row": (_instances([*rows[:-1], rows[0][:-1] + b",1]"]), SHAPE, 100_000),
        "a nested row": (_instances([*rows[:-1], b"[" + rows[0] + b"]"]), SHAPE, 100_000),
        "a bare number": (_instances([*rows[:-1], b"1"]), SHAPE, 100_000),
        "a trailing comma": (_instances([*rows, b""]), SHAPE, 100_000),
        "true": (_instances([*rows[:-1], rows[0].replace(b"[", b"[true,", 1)]), SHAPE, 100_000),
        "null": (_instances([*rows[:-1], rows[0].replace(b"[", b"[null,", 1)[:-1]
                             .rsplit(b",", 1)[0] + b"]"]), SHAPE, 100_000),
        "null for a model that imputes": (
            _instances([rows[0].replace(b"[", b"[null,", 1)[:-1].rsplit(b",", 1)[0] + b"]",
                        *rows[1:]]), IMPUTING, 100_000),
        "1e39": (_instances([*rows[:-1], rows[0].replace(b"[", b"[1e39,", 1)[:-1]
                             .rsplit(b",", 1)[0] + b"]"]), SHAPE, 100_000),
        "too many rows": (_instances(rows), SHAPE, ROWS - 1),
        "another key": (_instances(rows, b',"x":1'), SHAPE, 100_000),
        "rows as objects": (
            b'{"instances":[' + b",".join(
                orjson.dumps(dict(zip(feature_names(F), _values(1)[0].tolist())))
                for _ in range(ROWS)) + b"]}", SHAPE, 100_000),
    }


@pytest.mark.parametrize("case", sorted(_instances_cases()))
def test_predict_answers_as_the_full_parse_does(case: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    body, shape, max_rows = _instances_cases()[case]
    assert len(body) > checks.BIG_BODY
    fast = _predict_outcome(body, shape, max_rows)
    with monkeypatch.context() as patch:
        patch.setattr(instances, "BIG_BODY", len(body) + 1)
        assert fast == _predict_outcome(body, shape, max_rows)
    good = {"rows of numbers", "spaces in rows", "spaces between rows",
            "null for a model that imputes", "rows as objects"}
    expected = "ok" if case in good else \
        "PayloadTooLarge" if case == "too many rows" else "BadRequest"
    assert fast[0] == expected, fast


def test_predict_rows_are_read_by_chunks() -> None:
    body, shape, max_rows = _instances_cases()["rows of numbers"]
    assert checks._list_span(body, b'"instances"', nested=True) == (len(b'{"instances":'),
                                                                     len(body) - 1)
    assert np.array_equal(decode_instances(body, shape, max_rows),
                          _values().astype(np.float32))


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("route", ["v2", "predict"])
def test_a_worker_holds_few_copies_of_a_big_json_body(route: str, tmp_path: Path) -> None:
    """The worker's peak RSS while it answers a ~10 MB JSON request (V2 "data" or /predict
    "instances") grows by less than four times the body: the body as the worker buffers it,
    the float32 input, the answer. Reading the values as lists of Python floats made it ~7."""
    repository = tmp_path / "repository"
    repository.mkdir()
    width, rows = 64, 20_000
    publish_linear_model(repository, "big", width, 10)
    values = np.char.mod("%.4f", np.random.default_rng(1).normal(0, 1, (rows, width)))
    if route == "v2":
        path = "/v2/models/big/infer"
        body = (b'{"inputs":[{"name":"input","shape":[%d,%d],"datatype":"FP32","data":['
                % (rows, width) + ",".join(values.reshape(-1).tolist()).encode() + b"]}]}")
    else:
        path = "/predict"
        body = b'{"instances":[[' + "],[".join(",".join(r) for r in values.tolist()).encode() \
            + b"]]}"
    # glibc hands large freed buffers back at once, so each request's peak shows in VmHWM.
    env = {"SOFTSERVE_MAX_BODY_BYTES": str(4 * len(body)), "MALLOC_MMAP_THRESHOLD_": "65536"}
    with start_server(repository, tmp_path, workers=1, env=env) as server:
        (pid,) = server.worker_pids()
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        try:
            increases = []
            for _ in range(3):
                settle(pid)  # the last request's buffers freed
                Path(f"/proc/{pid}/clear_refs").write_text("5")
                before = proc_status(pid)["VmRSS"]
                conn.request("POST", path, body, {"Content-Type": "application/json"})
                reply = conn.getresponse()
                answer = orjson.loads(reply.read())
                assert reply.status == 200, answer
                assert len(answer["predictions"] if route == "predict"
                           else answer["outputs"][1]["data"]) == rows
                increases.append((proc_status(pid)["VmHWM"] - before) * 1024)
        finally:
            conn.close()
    assert min(increases) < 4 * len(body), [i / len(body) for i in increases]
