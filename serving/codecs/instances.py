"""Simple ``/predict`` and KServe V1 ``:predict``: ``{"instances": [...]}`` in, predictions out.

Rows are lists of 4 numbers, ``{"instances": [[5.1, 3.5, 1.4, 0.2], ...]}``, or objects keyed
exactly by the model's 4 feature names; the answer is ``{"model_name", "model_version",
"predictions": [{"class", "label", "probabilities"}]}``.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from modelrepo import N_FEATURES
from serving.codecs.checks import (
    _SMALL_VALUES,
    _first_out_of_float32,
    _holds_booleans,
    _json_kind,
    _load_json,
    _show,
    _small_float32,
    _to_float32,
    _value_problem,
)
from serving.errors import BadRequest, PayloadTooLarge

_INSTANCES_EXAMPLE = '{"instances": [[5.1, 3.5, 1.4, 0.2]]}'


def decode_instances(body: bytes, feature_names: Sequence[str], max_rows: int) -> np.ndarray:
    """Decode ``{"instances": [...]}`` (simple ``/predict`` and KServe V1 ``:predict``).

    Rows are lists of 4 numbers, or objects keyed exactly by ``feature_names``; all rows of a
    batch take the same form. Returns a C-contiguous float32 array of shape (N, 4).

    Raises BadRequest (400) for anything but such a body: not UTF-8 JSON, not an object, keys
    other than ``instances``, an empty batch, rows of the wrong length or form, values that are
    not finite numbers within float32's range (strings, null, booleans, lists, 1e39).
    Raises PayloadTooLarge (413) for more than ``max_rows`` rows.
    """
    doc = _load_json(body, "request body", _INSTANCES_EXAMPLE)
    if type(doc) is not dict:
        raise BadRequest(
            f"request body must be a JSON object such as {_INSTANCES_EXAMPLE}, "
            f"got {_json_kind(doc)}"
        )
    if "instances" not in doc or len(doc) != 1:
        unexpected = sorted(k for k in doc if k != "instances")
        found = f"unexpected keys {_show(unexpected)}" if unexpected else 'no "instances" key'
        raise BadRequest(
            f'request body has {found}: expected exactly one key, "instances", '
            f"such as {_INSTANCES_EXAMPLE}"
        )
    rows = doc["instances"]
    if type(rows) is not list:
        raise BadRequest(
            f'"instances" must be a list of rows such as {_INSTANCES_EXAMPLE}, '
            f"got {_json_kind(rows)}"
        )
    if not rows:
        raise BadRequest(
            f'"instances" is empty: send at least one row, such as {_INSTANCES_EXAMPLE}'
        )
    if len(rows) > max_rows:
        raise PayloadTooLarge(
            f'"instances" has {len(rows)} rows, more than the {max_rows} allowed per request: '
            "split the batch"
        )
    keyed = type(rows[0]) is dict
    if keyed:
        rows = _rows_from_objects(rows, feature_names)
    if len(rows) * N_FEATURES <= _SMALL_VALUES and all(type(r) is list for r in rows):
        small = _small_float32(rows, len(rows))
        if small is not None:
            return small
    try:
        array = np.array(rows)
    except (ValueError, TypeError):  # ragged rows, or nesting deeper than numpy's 64 dimensions
        array = None
    if array is None or array.dtype.kind not in "fiu" or array.shape != (len(rows), N_FEATURES):
        raise _instances_problem(rows, feature_names, keyed)
    if _holds_booleans(rows, array):
        raise _instances_problem(rows, feature_names, keyed)
    if _first_out_of_float32(array.reshape(-1)) is not None:
        raise _instances_problem(rows, feature_names, keyed)
    return _to_float32(array, len(rows))


def _rows_from_objects(rows: list[Any], names: Sequence[str]) -> list[Any]:
    """Rows given as objects, as tuples of values in feature order. Raises BadRequest."""
    expected = set(names)
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
                f"{_show(list(names))}"
            )
    return list(map(operator.itemgetter(*names), rows))


def _instances_problem(rows: list[Any], names: Sequence[str], keyed: bool) -> BadRequest:
    """The error naming the first bad row or value of a batch known to be bad."""
    expected = (
        f"every row must be a list of {N_FEATURES} numbers ({', '.join(names)}) "
        "or an object with those keys"
    )
    for i, row in enumerate(rows):
        if type(row) is dict:  # only reached when instances[0] is a list
            return BadRequest(
                f"instances[{i}] is an object but instances[0] is a list: "
                f"give every row the same form; {expected}"
            )
        if type(row) not in (list, tuple):
            return BadRequest(f"instances[{i}] is {_json_kind(row)}: {expected}")
        for j, value in enumerate(row):
            problem = _value_problem(value)
            if problem is not None:
                where = f"instances[{i}][{_show(names[j])}]" if keyed else f"instances[{i}][{j}]"
                return BadRequest(f"{where} {problem}")
        if len(row) != N_FEATURES:
            return BadRequest(f"instances[{i}] has {len(row)} values: {expected}")
    return BadRequest(f'"instances" could not be read as numbers: {expected}')  # pragma: no cover


def encode_predictions(
    model_name: str,
    version: str,
    probabilities: np.ndarray,
    classes: np.ndarray,
    labels: Sequence[str],
) -> bytes:
    """The simple/V1 answer: ``{"model_name", "model_version", "predictions": [...]}``.

    Each prediction is ``{"class": int, "label": str, "probabilities": [p0, p1, p2]}``, the
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
