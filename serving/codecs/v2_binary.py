"""Triton's binary tensor data extension of V2: the bytes after the JSON part of a body.

``Inference-Header-Content-Length`` gives the size of the JSON part at the start of the body;
the raw little-endian tensors follow it, in input (or output) order, each declared by
``parameters.binary_data_size``. The JSON documents themselves are read and written by
``serving.codecs.v2_json``, which calls the functions here.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from serving.codecs.checks import (
    _INPUT,
    INPUT_DATATYPES,
    ModelShape,
    _first_out_of_float32,
    _json_kind,
    _show,
    _to_float32,
)
from serving.errors import BadRequest

HEADER_LENGTH_HEADER = "Inference-Header-Content-Length"
BINARY_CONTENT_TYPE = "application/octet-stream"


def parse_header_length(value: str | None) -> int | None:
    """The ``Inference-Header-Content-Length`` header's value as an int; None if absent.

    Raises BadRequest if it is not a non-negative decimal integer.
    """
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise BadRequest(
            f"{HEADER_LENGTH_HEADER} must be a non-negative integer, the size in bytes of the "
            f"JSON part of the body; got {_show(value)}"
        )
    return int(text)


def _binary_input(
    body: bytes, header_length: int, size: Any, rows: int, datatype: str, shape: ModelShape
) -> np.ndarray:
    """The input tensor (rows, F) from the raw bytes after the JSON header; NaN is accepted
    for a model that imputes. Raises BadRequest."""
    dtype = INPUT_DATATYPES[datatype]
    width = shape.n_features
    count = rows * width
    if type(size) is not int or size < 0:
        raise BadRequest(
            f"{_INPUT} parameters.binary_data_size must be a non-negative integer, "
            f"got {_json_kind(size)}"
        )
    expected = count * dtype.itemsize
    if size != expected:
        raise BadRequest(
            f"{_INPUT} declares binary_data_size {size} but shape [{rows}, {width}] of "
            f"{datatype} takes {expected} bytes ({count} values of {dtype.itemsize} bytes)"
        )
    remaining = len(body) - header_length
    if remaining != size:
        raise BadRequest(
            f"the body holds {remaining} bytes after the {header_length}-byte JSON header, "
            f"but the inputs declare {size} bytes of binary data"
        )
    flat = np.frombuffer(body, dtype=dtype, count=count, offset=header_length)
    bad = _first_out_of_float32(flat, shape.impute)
    if bad is not None:
        value = flat[bad].item()
        missing = " (NaN, a missing value: this model does not accept missing values)" \
            if value != value else ""
        raise BadRequest(
            f"{_INPUT} binary value {bad} (row {bad // width}, column {bad % width}) "
            f"is {value!r}: every value must be a finite number within float32's range{missing}"
        )
    return _to_float32(flat, rows, width)


def _serialize_bytes(strings: Sequence[str]) -> bytes:
    """A BYTES tensor in binary form: each element a 4-byte little-endian length, then its bytes."""
    encoded = [s.encode() for s in strings]
    return b"".join(itertools.chain.from_iterable((struct.pack("<I", len(b)), b) for b in encoded))
