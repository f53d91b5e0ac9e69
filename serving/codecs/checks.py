"""What more than one wire format needs: JSON loading, value checks, the float32 input.

Pure functions over bytes, parsed JSON and numpy arrays, and the constants they share (the JSON
content type, float32's range, V2's datatype tables, read by both V2 modules). The protocol
modules (``instances``, ``v2_json``, ``v2_binary``) import from here, never the reverse. Names
with a leading underscore are private to the ``serving.codecs`` package.

Speed: a batch is parsed by orjson and checked as whole numpy arrays; the per-value Python work
(naming the exact bad value) only runs once a batch is known to be bad. Booleans, which numpy
silently reads as 1 and 0, are looked for only among the values equal to 0 or 1.
"""

from __future__ import annotations

import itertools
import operator
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import orjson

from modelrepo import INPUT_NAME
from serving.errors import BadRequest


FLOAT32_MAX = float(np.finfo(np.float32).max)

# V2 datatypes the model accepts for its input, with their (little-endian) wire dtype; all of
# them are converted to float32, the model's input type.
INPUT_DATATYPES: dict[str, np.dtype[Any]] = {
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
}
# Every datatype the Open Inference Protocol defines: the others are valid but not accepted.
V2_DATATYPES = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
     "FP16", "FP32", "FP64", "BF16", "BYTES"}
)
# How messages name the model's one V2 input tensor, whether its values come as JSON or binary.
_INPUT = f'input "{INPUT_NAME}"'
# Values for example rows in messages: Iris's first row, then a few more.
_EXAMPLE_VALUES = ("5.1", "3.5", "1.4", "0.2", "1.0", "0.5", "2.0", "0.0")


class ModelShape:
    """What the codecs need to know of one model version, worked out once when it is loaded.

    ``n_features`` F (the length of ``feature_names``), ``n_classes`` K (the bound of
    classification), whether its graph imputes missing values (then JSON null and binary NaN
    are accepted and passed on as NaN), and the texts its error messages use.
    """

    __slots__ = ("model", "feature_names", "feature_set", "n_features", "n_classes", "impute",
                 "names_text", "expected_rows", "row_example", "instances_example", "input_spec",
                 "tensor_example", "infer_example", "row_values")

    def __init__(self, model: str, feature_names: Sequence[str], n_classes: int,
                 impute: bool = False) -> None:
        self.model = model
        self.feature_names: tuple[str, ...] = tuple(feature_names)
        self.feature_set = frozenset(self.feature_names)  # the keys a row object must have
        self.n_features = width = len(self.feature_names)
        self.n_classes = n_classes
        self.impute = impute
        names = self.feature_names
        shown = names if width <= 10 else (*names[:4], "…", names[-1])
        self.names_text = ", ".join(shown)
        # The row values of a keyed row, in feature order, always as a tuple.
        self.row_values: Callable[[dict[str, Any]], tuple[Any, ...]] = (
            operator.itemgetter(*names) if width > 1 else lambda row: (row[names[0]],))
        self.expected_rows = (
            f"every row must be a list of {width} number{'s' if width != 1 else ''}, the "
            f"features of model {model} ({self.names_text}), or an object with those keys")
        if width <= len(_EXAMPLE_VALUES):
            self.row_example = "[" + ", ".join(_EXAMPLE_VALUES[:width]) + "]"
        else:
            self.row_example = "[" + ", ".join(_EXAMPLE_VALUES[:3]) + f", … ({width} numbers)]"
        self.instances_example = f'{{"instances": [{self.row_example}]}}'
        self.input_spec = f'one input tensor named "{INPUT_NAME}", FP32, shape [N, {width}]'
        self.tensor_example = (f'{{"name": "{INPUT_NAME}", "shape": [1, {width}], '
                               f'"datatype": "FP32", "data": {self.row_example}}}')
        self.infer_example = f'{{"inputs": [{self.tensor_example}]}}'

    def __repr__(self) -> str:
        return (f"ModelShape({self.model!r}, {self.n_features} features, "
                f"{self.n_classes} classes{', imputes' if self.impute else ''})")


def _show(value: Any, limit: int = 60) -> str:
    """A value as JSON text, shortened, for error messages."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json_kind(value: Any) -> str:
    """What a parsed JSON value is, in words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {_show(value)}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _value_problem(value: Any) -> str | None:
    """Why one parsed JSON value cannot be a feature value, or None if it can."""
    kind = type(value)
    if kind is float or kind is int:
        if abs(value) <= FLOAT32_MAX:
            return None
        return f"is {value!r}, outside the float32 range (magnitude at most 3.4e38)"
    if kind is str:
        return f"is the string {_show(value)}: expected a number (numbers must not be quoted)"
    if value is None:
        return "is null: expected a number (this model does not accept missing values)"
    return f"is {_json_kind(value)}: expected a number"


def _load_json(body: bytes, what: str, example: str, after_json: str = "") -> Any:
    """Parse a UTF-8 JSON document. Raises BadRequest saying why it is not one, and where.

    ``after_json``, if given, is the advice for a body whose start is a whole JSON document
    followed by more bytes (the V2 binary data sent without its header length).
    """
    head = bytes(body[:4])
    # orjson would reject these too, but with a puzzling message: say what it is.
    if head[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in head:
        raise BadRequest(
            f"{what} looks like UTF-16 or UTF-32: send JSON encoded as UTF-8, such as {example}"
        )
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if not body:
            raise BadRequest(f"{what} is empty: expected a JSON object such as {example}") from None
        raise BadRequest(_json_problem(bytes(body), exc, what, example, after_json)) from None


def _json_problem(
    body: bytes, exc: orjson.JSONDecodeError, what: str, example: str, after_json: str
) -> str:
    """The message for a body orjson refused, naming the byte offset where it goes wrong.

    orjson reports every invalid UTF-8 sequence at "char 0", and other errors at a position
    counted in characters, not bytes: both are recomputed here (only once a body has failed).
    """
    try:
        text = body.decode()
    except UnicodeDecodeError as bad:
        offset = bad.start
        where = f"byte 0x{body[offset]:02X} at offset {offset} (line {_line(body, offset)})"
        if bad.reason == "unexpected end of data":
            problem = (
                f"{what} is not UTF-8: {where} begins a character cut short by the end of the "
                f"{what}"
            )
        else:
            problem = f"{what} is not UTF-8: {where} does not begin a valid UTF-8 character"
        if after_json and _whole_document_before(body, offset):
            return f"{problem}; {after_json}"
        return f"{problem}; send JSON encoded as UTF-8, such as {example}"
    offset = len(text[: exc.pos].encode())
    problem = (
        f"{what} is not valid UTF-8 JSON: {exc.msg} at byte offset {offset} "
        f"(line {_line(body, offset)})"
    )
    if after_json and exc.msg == _AFTER_DOCUMENT:
        return f"{problem}; {after_json}"
    if b"NaN" in body or b"Infinity" in body:
        problem += " (NaN and Infinity are not JSON numbers: every value must be finite)"
    return f"{problem}; expected a JSON object such as {example}"


# orjson's message for bytes after a complete document.
_AFTER_DOCUMENT = "unexpected content after document"


def _line(body: bytes, offset: int) -> int:
    """The line number (from 1) of byte ``offset`` of ``body``."""
    return body.count(b"\n", 0, offset) + 1


def _whole_document_before(body: bytes, offset: int) -> bool:
    """Whether ``body[:offset]`` starts with a whole JSON document (anything may follow)."""
    try:
        orjson.loads(body[:offset])
    except orjson.JSONDecodeError as exc:
        return exc.msg == _AFTER_DOCUMENT
    return True


def _leaves(nested: list[Any], depth: int) -> Iterable[Any]:
    """The values of a rectangular nested list ``depth`` levels deep, without a Python loop."""
    values: Iterable[Any] = nested
    for _ in range(depth - 1):
        values = itertools.chain.from_iterable(values)
    return values


def _holds_booleans(nested: list[Any], array: np.ndarray) -> bool:
    """Whether the JSON values ``array`` was built from include true or false.

    numpy reads true and false as 1 and 0 without a word. Only values equal to 0 or 1 can have
    been booleans, so only those few are looked up in the parsed lists; a batch with many of
    them is checked in one C-level pass over the value types instead.
    """
    flat = array.reshape(-1)
    candidates = np.flatnonzero((flat == 0) | (flat == 1))
    if len(candidates) == 0:
        return False
    # Looking one value up costs about as much as four or five values in the pass over all types.
    if len(candidates) * 4 > flat.size:
        return bool in set(map(type, _leaves(nested, array.ndim)))
    for position in zip(*(axis.tolist() for axis in np.unravel_index(candidates, array.shape))):
        value: Any = nested
        for index in position:
            value = value[index]
        if type(value) is bool:
            return True
    return False


def _first_out_of_float32(flat: np.ndarray, allow_nan: bool = False) -> int | None:
    """Index of the first value that is NaN (unless ``allow_nan``), infinite or beyond
    float32's range, else None."""
    if flat.dtype.kind != "f":
        return None  # integers up to 2**64 are all within float32's range
    # min/max propagate NaN, and NaN fails both comparisons: one pass each, no temporaries.
    if flat.min() >= -FLOAT32_MAX and flat.max() <= FLOAT32_MAX:
        return None
    bad = ~(np.abs(flat) <= FLOAT32_MAX)
    if allow_nan:  # a missing value, for a model that imputes
        bad &= ~np.isnan(flat)
    found = np.flatnonzero(bad)
    return int(found[0]) if len(found) else None


# Up to this many values, checking them one by one in Python is cheaper than numpy's
# whole-array checks (four array operations cost ~25 µs with the caches cold under load).
_SMALL_VALUES = 64


def _small_float32(values: list[Any], rows: int, width: int,
                   impute: bool = False) -> np.ndarray | None:
    """Rows (lists of ``width``) or a flat list of plain, in-range numbers as (rows, width)
    float32; with ``impute``, null too (as NaN).

    None when anything is unusual (booleans, strings, nesting, out of range, wrong length):
    the caller's whole-array path then finds and words the problem.
    """
    for value in values:
        kind = type(value)
        if kind is list:
            if len(value) != width:
                return None
            for item in value:
                item_kind = type(item)
                if (item_kind is not float and item_kind is not int) or \
                        not -FLOAT32_MAX <= item <= FLOAT32_MAX:
                    if item is None and impute:
                        continue
                    return None
        elif (kind is not float and kind is not int) or not -FLOAT32_MAX <= value <= FLOAT32_MAX:
            if value is None and impute:
                continue
            return None
    try:
        array = np.array(values, dtype=np.float32)
    except ValueError:  # rows and bare numbers mixed: not rectangular
        return None
    return array.reshape(rows, width) if array.size == rows * width else None


def _to_float32(array: np.ndarray, rows: int, width: int) -> np.ndarray:
    """The (rows, width) float32 C-contiguous array holding ``array``'s values."""
    out = array.astype(np.float32, copy=False).reshape(rows, width)
    if not out.flags.aligned or not out.flags.c_contiguous:
        # Binary data starts wherever the JSON header ends; onnxruntime reads the buffer
        # directly, so hand it an aligned copy (a few kB) rather than unaligned floats.
        out = np.array(out, dtype=np.float32, order="C")
    return out


# Big JSON bodies (issue 20): from this size up, the one list of numbers in a body ("data" of
# V2 JSON, "instances" of /predict) is cut out of the document and read a chunk at a time
# straight into a float32 array, so that its values never all exist as Python floats at once
# (~32 bytes each, ~4 times the text). Anything unusual is left to the full parse.
BIG_BODY = 256 * 1024
CHUNK_BYTES = 64 * 1024
# Stands for the list cut out of a big body; no client sends it (it holds a random part).
PLACEHOLDER = f"softserve-list-{uuid.uuid4().hex}"
_PLACEHOLDER_JSON = orjson.dumps(PLACEHOLDER)
_JSON_SPACE = b" \t\r\n"
# None of these in a list of JSON numbers: strings, objects, true, false, null (and NaN,
# Infinity, which are not JSON).
_NOT_NUMBERS = (b'"', b"{", b"t", b"f", b"n", b"N", b"I")


def _list_span(body: bytes, key: bytes, nested: bool = False) -> tuple[int, int] | None:
    """Where the list value of ``key`` (quoted, such as ``b'"data"'``) lies in a JSON body,
    from its ``[`` to just after its end (the first ``]``, or ``]]`` when ``nested``), if the
    body holds ``key`` exactly once and a list follows it; else None.

    Only a key can be followed by a colon, and the quoted key cannot lie inside a string (its
    closing quote would end the string), so the list found is the value of the one key of that
    name, or of a key that ends with an escaped quote and that name: the caller tells those
    apart by looking for :data:`PLACEHOLDER` where it expects the list in the document
    :func:`without_list` gives.
    """
    at = body.find(key)
    if at < 0 or body.find(key, at + len(key)) >= 0:
        return None
    i, n = at + len(key), len(body)
    while i < n and body[i] in _JSON_SPACE:
        i += 1
    if i >= n or body[i] != 0x3A:  # ":"
        return None
    i += 1
    while i < n and body[i] in _JSON_SPACE:
        i += 1
    if i >= n or body[i] != 0x5B:  # "["
        return None
    end = body.find(b"]]" if nested else b"]", i)
    return None if end < 0 else (i, end + (2 if nested else 1))


def without_list(body: bytes, span: tuple[int, int]) -> bytes:
    """The body with the list at ``span`` replaced by :data:`PLACEHOLDER` (a JSON string)."""
    return b"".join((body[:span[0]], _PLACEHOLDER_JSON, body[span[1]:]))


def _chunked_numbers(body: bytes, span: tuple[int, int], width: int, rows: int | None,
                     nested: bool, max_rows: int | None = None) -> np.ndarray | None:
    """The (rows, width) float32 array of the list of numbers ``body[span[0]:span[1]]``, read
    a chunk at a time: flat (``rows`` × ``width`` numbers), or ``nested`` rows of ``width``
    numbers (at most ``max_rows`` of them).

    None if the list is anything else, or holds anything but finite JSON numbers within
    float32's range: the caller then reads it the usual way, which words the problem.
    """
    start, end = span[0] + 1, span[1] - 1  # inside the outer brackets
    separator = b"],[" if nested else b","
    # Written in place, chunk by chunk: nothing but the chunk being read is kept meanwhile.
    # Nested, each row opens one "[": that many rows at most (and max_rows).
    capacity = (rows or 0) * width if not nested \
        else min(body.count(b"[", start, end), max_rows or 0) * width
    out = np.empty(capacity, dtype=np.float32)
    count = 0
    while start < end:
        cut = body.find(separator, min(start + CHUNK_BYTES, end), end)
        stop = end if cut < 0 else cut + (1 if nested else 0)  # a row keeps its "]"
        chunk = body[start:stop]
        if any(mark in chunk for mark in _NOT_NUMBERS) or (not nested and b"[" in chunk):
            return None
        try:
            values = orjson.loads(b"[" + chunk + b"]")
        except orjson.JSONDecodeError:
            return None
        del chunk
        if not values:
            return None
        try:
            part = np.array(values)
        except ValueError:  # ragged rows
            return None
        del values
        if part.dtype.kind not in "fi" or part.ndim != (2 if nested else 1) \
                or (nested and part.shape[1] != width) \
                or _first_out_of_float32(part.reshape(-1)) is not None:
            return None  # ragged or deeper rows, booleans in disguise, huge numbers
        if count + part.size > capacity:
            return None
        out[count:count + part.size] = part.reshape(-1)
        count += part.size
        if stop >= end - 1 and cut >= 0:  # a separator right before the closing bracket
            return None
        start = stop + 1  # past the comma
    if count == 0 or (not nested and count != capacity) or count % width:
        return None
    if count != capacity:  # fewer rows than "[" (cannot happen once the chunks parsed)
        out = out[:count].copy()
    return out.reshape(count // width, width)
