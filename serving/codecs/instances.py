"""Simple ``/predict`` and KServe V1 ``:predict``: ``{"instances": [...]}`` in, predictions out.

Rows are lists of the model's F numbers, ``{"instances": [[5.1, 3.5, 1.4, 0.2], ...]}`` for
Iris, or objects keyed exactly by the model's F feature names; the answer is
``{"model_name", "model_version", "predictions": [{"class", "label", "probabilities"}]}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from serving.codecs.checks import (
    BIG_BODY,
    PLACEHOLDER,
    _SMALL_VALUES,
    ModelShape,
    _chunked_numbers,
    _first_out_of_float32,
    _holds_booleans,
    _json_kind,
    _list_span,
    _load_json,
    _show,
    _small_float32,
    _to_float32,
    _value_problem,
    without_list,
)
from serving.errors import BadRequest, PayloadTooLarge


def decode_instances(body: bytes, shape: ModelShape, max_rows: int) -> np.ndarray:
    """Decode ``{"instances": [...]}`` (simple ``/predict`` and KServe V1 ``:predict``).

    Rows are lists of ``shape.n_features`` numbers, or objects keyed exactly by
    ``shape.feature_names``; all rows of a batch take the same form. Returns a C-contiguous
    float32 array of shape (N, F); null values become NaN when ``shape.impute``.

    Raises BadRequest (400) for anything but such a body: not UTF-8 JSON, not an object, keys
    other than ``instances``, an empty batch, rows of the wrong length or form, values that are
    not finite numbers within float32's range (strings, booleans, lists, 1e39; null unless the
    model imputes). Raises PayloadTooLarge (413) for more than ``max_rows`` rows.
    """
    if len(body) >= BIG_BODY:
        chunked = _big_instances(body, shape, max_rows)
        if chunked is not None:
            return chunked
    example = shape.instances_example
    doc = _load_json(body, "request body", example)
    if type(doc) is not dict:
        raise BadRequest(
            f"request body must be a JSON object such as {example}, got {_json_kind(doc)}"
        )
    if "instances" not in doc or len(doc) != 1:
        unexpected = sorted(k for k in doc if k != "instances")
        found = f"unexpected keys {_show(unexpected)}" if unexpected else 'no "instances" key'
        raise BadRequest(
            f'request body has {found}: expected exactly one key, "instances", such as {example}'
        )
    rows = doc["instances"]
    if type(rows) is not list:
        raise BadRequest(
            f'"instances" must be a list of rows such as {example}, got {_json_kind(rows)}'
        )
    if not rows:
        raise BadRequest(f'"instances" is empty: send at least one row, such as {example}')
    if len(rows) > max_rows:
        raise PayloadTooLarge(
            f'"instances" has {len(rows)} rows, more than the {max_rows} allowed per request: '
            "split the batch"
        )
    width = shape.n_features
    keyed = type(rows[0]) is dict
    if keyed:
        rows = _rows_from_objects(rows, shape)
    if len(rows) * width <= _SMALL_VALUES and all(type(r) is list for r in rows):
        small = _small_float32(rows, len(rows), width, shape.impute)
        if small is not None:
            return small
    try:
        array = np.array(rows)
    except (ValueError, TypeError):  # ragged rows, or nesting deeper than numpy's 64 dimensions
        array = None
    if array is not None and array.dtype.kind == "O" and shape.impute \
            and array.shape == (len(rows), width):
        # null among the values: each one was checked on the way, the rest are numbers.
        problem = _instances_problem(rows, shape, keyed)
        if problem is not None:
            raise problem
        return _to_float32(np.array(rows, dtype=np.float64), len(rows), width)
    if array is None or array.dtype.kind not in "fiu" or array.shape != (len(rows), width) \
            or _holds_booleans(rows, array) \
            or _first_out_of_float32(array.reshape(-1)) is not None:
        raise _instances_problem(rows, shape, keyed) or BadRequest(  # pragma: no cover
            f'"instances" could not be read as numbers: {shape.expected_rows}')
    return _to_float32(array, len(rows), width)


def _big_instances(body: bytes, shape: ModelShape, max_rows: int) -> np.ndarray | None:
    """A big body's rows read a chunk at a time (``checks._chunked_numbers``), if the body is
    ``{"instances": [[numbers], ...]}`` with at most ``max_rows`` rows of F finite numbers
    within float32's range; else None, for the full parse to read or word."""
    span = _list_span(body, b'"instances"', nested=True)
    if span is None:
        return None
    try:
        doc = orjson.loads(without_list(body, span))
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict or len(doc) != 1 or doc.get("instances") != PLACEHOLDER:
        return None
    return _chunked_numbers(body, span, shape.n_features, None, True, max_rows)


def _rows_from_objects(rows: list[Any], shape: ModelShape) -> list[Any]:
    """Rows given as objects, as tuples of values in feature order. Raises BadRequest."""
    names = shape.feature_names
    expected = shape.feature_set
    for i, row in enumerate(rows):
        if type(row) is not dict:
            raise BadRequest(
                f"instances[{i}] is {_json_kind(row)} but instances[0] is an object: "
                f"give every row as an object with the keys {_show(list(names))}"
            )
        if row.keys() != expected:
            missing = [n for n in names if n not in row]
            extra = [k for k in row if k not in expected]
            found = "; ".join(
                part
                for part in (
                    f"lacks {_show(missing)}" if missing else "",
                    f"has unknown keys {_show(extra)}" if extra else "",
                )
                if part
            )
            raise BadRequest(
                f"instances[{i}] {found}: every row object needs exactly the keys "
                f"{_show(list(names))} (the {len(names)} features of model {shape.model})"
            )
    return list(map(shape.row_values, rows))


def _instances_problem(rows: list[Any], shape: ModelShape, keyed: bool) -> BadRequest | None:
    """The error naming the first bad row or value of a batch; None if there is none (rows of
    numbers, and null for a model that imputes)."""
    expected = shape.expected_rows
    names = shape.feature_names
    impute = shape.impute
    for i, row in enumerate(rows):
        if type(row) is dict:  # only reached when instances[0] is a list
            return BadRequest(
                f"instances[{i}] is an object but instances[0] is a list: "
                f"give every row the same form; {expected}"
            )
        if type(row) not in (list, tuple):
            return BadRequest(f"instances[{i}] is {_json_kind(row)}: {expected}")
        for j, value in enumerate(row):
            if value is None and impute:
                continue
            problem = _value_problem(value)
            if problem is not None:
                where = f"instances[{i}][{_show(names[j])}]" if keyed else f"instances[{i}][{j}]"
                return BadRequest(f"{where} {problem}")
        if len(row) != len(names):
            return BadRequest(f"instances[{i}] has {len(row)} values: {expected}")
    return None


def encode_predictions(
    model_name: str,
    version: str,
    probabilities: np.ndarray,
    classes: np.ndarray,
    labels: Sequence[str],
) -> bytes:
    """The simple/V1 answer: ``{"model_name", "model_version", "predictions": [...]}``.

    Each prediction is ``{"class": int, "label": str, "probabilities": [p0, …, pK-1]}``, the
    probabilities printed as the shortest text that reads back as the same float32.
    Raises IndexError if a class is not an index into ``labels``.
    """
    probabilities = np.ascontiguousarray(probabilities, dtype=np.float32)
    predictions = [
        {"class": c, "label": labels[c], "probabilities": row}
        for c, row in zip(np.asarray(classes).tolist(), probabilities)
    ]
    return orjson.dumps(
        {"model_name": model_name, "model_version": version, "predictions": predictions},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
