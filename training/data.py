"""Datasets: the bundled Iris CSV, the tutorial's toy rows, or a user's CSV.

Every loader returns a validated :class:`Dataset`; a bad file raises :class:`DataError` naming
the file, row and column.
"""

from __future__ import annotations

import csv
import hashlib
import math
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelrepo import N_CLASSES, N_FEATURES

IRIS_CSV = Path(__file__).parent / "data" / "iris.csv"

# The fewest rows a class may have for a validation split (training.train checks it). With the
# default fraction 0.2 that holds out 2 rows of each class (6 for 3 classes) and trains on 8 of
# each: fewer, and one row decides the validation accuracy (1 row a class: 0, 1/3, 2/3 or 1)
# and the 0.9 gate means nothing; the rounding also leaves classes of 1-2 rows with no
# validation row at all.
MIN_ROWS_PER_CLASS = 10

TOY_X = [[1, 2, 1, 1], [2, 1, 3, 2], [3, 1, 3, 4], [4, 1, 5, 5],
         [1, 7, 5, 5], [1, 2, 5, 6], [1, 6, 6, 6], [1, 7, 7, 7]]
TOY_Y = [2, 2, 2, 1, 1, 1, 0, 0]


class DataError(Exception):
    """A dataset that cannot be trained on; the message names file, row and column."""


@dataclass(frozen=True)
class Dataset:
    features: np.ndarray  # float32 (N, 4)
    labels: np.ndarray  # int64 (N,), indices into class_labels
    feature_names: list[str]
    class_labels: list[str]
    source: str  # "iris", "toy" or the CSV's path
    sha256: str  # of the file's bytes, or of the toy rows' canonical text

    @property
    def rows(self) -> int:
        return len(self.labels)


def toy() -> Dataset:
    """The tutorial's eight rows (features x1..x4, labels "0", "1", "2")."""
    text = repr((TOY_X, TOY_Y)).encode()
    return Dataset(
        features=np.asarray(TOY_X, dtype=np.float32),
        labels=np.asarray(TOY_Y, dtype=np.int64),
        feature_names=["x1", "x2", "x3", "x4"],
        class_labels=["0", "1", "2"],
        source="toy",
        sha256=hashlib.sha256(text).hexdigest(),
    )


def iris() -> Dataset:
    """The bundled Iris data (150 rows, 3 species)."""
    dataset = read_csv(IRIS_CSV)
    return Dataset(**{**dataset.__dict__, "source": "iris"})


def _class_order(labels: set[str]) -> list[str]:
    """Sorted labels; numerically when every label is an integer."""
    try:
        return sorted(labels, key=lambda s: (int(s), s))
    except ValueError:
        return sorted(labels)


# The separators detect_delimiter recognizes, by the name a message gives them.
DELIMITERS = {",": "','", ";": "';'", "\t": "a tab"}
DELIMITER_NAMES = {"comma": ",", "semicolon": ";", "tab": "\t"}
SNIFF_LINES = 20  # header and first data lines looked at to tell the separator


def delimiter_from_option(text: str) -> str:
    """``--delimiter``'s value as one character: ``,`` ``;`` ``tab`` or any single character
    but a quote or a line break (``comma``, ``semicolon`` and ``\\t`` are understood too).
    Raises ValueError."""
    value = DELIMITER_NAMES.get(text.lower(), "\t" if text == "\\t" else text)
    if len(value) != 1 or value in "\"\r\n":
        raise ValueError(f"--delimiter {text!r}: give one character, e.g. ',', ';' or tab")
    return value


def detect_delimiter(lines: list[str], name: str) -> str:
    """The separator of a CSV: ``,``, ``;`` or tab, from its first non-blank lines.

    A separator qualifies when it splits every sampled line into the same number (>1) of
    cells. One qualifying separator is the answer. None qualifying (a ragged or one-column
    file) falls back to the one splitting the header most, comma first, so the row checks
    report the real problem. More than one is ambiguous. Raises DataError then, saying what
    the file looks like and offering ``--delimiter``.
    """
    sample = [line for line in lines if line.strip()][:SNIFF_LINES]
    if not sample:
        return ","
    consistent: dict[str, int] = {}
    header_cells: dict[str, int] = {}
    for delimiter in DELIMITERS:
        try:
            widths = [len(row) for row in csv.reader(sample, delimiter=delimiter)]
        except csv.Error:
            continue
        header_cells[delimiter] = widths[0]
        if widths[0] > 1 and all(w == widths[0] for w in widths):
            consistent[delimiter] = widths[0]
    if len(consistent) == 1:
        return next(iter(consistent))
    if len(consistent) > 1:
        looks = " and ".join(f"{DELIMITERS[d]} ({w} columns)" for d, w in consistent.items())
        raise DataError(
            f"{name}: cannot tell the separator: every one of the first {len(sample)} lines "
            f"splits evenly on {looks}; give --delimiter (e.g. --delimiter ';')"
        )
    return max(DELIMITERS, key=lambda d: header_cells.get(d, 0))  # ties: the first, ","


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


INDEX_HINT = ("; a first column without a name looks like a pandas index column (written by "
              "DataFrame.to_csv() without index=False): delete that column, or save the file "
              "again with to_csv(..., index=False)")


def read_csv(path: Path, label_column: str | None = None,
             delimiter: str | None = None) -> Dataset:
    """Load a CSV with a header, four numeric feature columns and one label column.

    ``label_column`` defaults to the last column. ``delimiter`` defaults to the one
    :func:`detect_delimiter` finds (comma, semicolon or tab). Raises DataError for an
    unreadable or empty file, an ambiguous separator, a header without exactly five columns,
    a missing label column, a row of the wrong length, an empty, non-numeric or non-finite
    feature, or a number of classes other than 3; the message hints at the likely cause
    (a pandas index column, labels in another column, another separator).
    """
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"{name}: cannot read the file: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{name}: not a CSV text file (not UTF-8 at byte {exc.start})") from None
    if "\x00" in text:
        raise DataError(f"{name}: not a CSV text file (contains NUL bytes)")
    lines = text.splitlines()
    detected = delimiter is None
    if delimiter is None:
        delimiter = detect_delimiter(lines, name)
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{name}: the file is empty; expected a header row and data rows") from None
    except csv.Error as exc:
        raise DataError(f"{name}: row 1: not valid CSV: {exc}") from None
    header = [h.strip() for h in header]
    width = N_FEATURES + 1
    index_hint = INDEX_HINT if len(header) > 1 and not header[0] else ""
    if len(header) != width:
        other = ""
        separator = DELIMITERS.get(delimiter, repr(delimiter))
        if len(header) == 1:  # nothing separated the cells: perhaps another separator
            other = (" (no ',', ';' or tab separates its cells: if another character does, "
                     "give --delimiter CHAR)" if detected else
                     f" (the separator given by --delimiter, {separator}, separates none of "
                     "its cells)")
        raise DataError(
            f"{name}: row 1 (header): {len(header)} columns {header}; expected {width}: "
            f"{N_FEATURES} numeric features and one label column{other}{index_hint}"
        )
    if any(not h for h in header):
        raise DataError(f"{name}: row 1 (header): column {header.index('') + 1} has no name"
                        f"{index_hint}")
    if len(set(header)) != width:
        raise DataError(f"{name}: row 1 (header): column names repeat: {header}")
    label_given = label_column is not None
    label_column = header[-1] if label_column is None else label_column
    if label_column not in header:
        raise DataError(f"{name}: row 1 (header): no label column {label_column!r} in {header}")
    label_at = header.index(label_column)
    feature_at = [i for i in range(width) if i != label_at]

    rows: list[tuple[int, list[str]]] = []
    try:
        for row in reader:
            rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise DataError(f"{name}: row {reader.line_num}: not valid CSV: {exc}") from None

    def labels_hint(column: int) -> str:
        """Why a feature column holding no number at all is probably the labels."""
        cells = [row[column].strip() for _, row in rows if len(row) == width]
        if any(_is_number(cell) for cell in cells if cell):
            return ""
        which = "given by --label-column" if label_given else "by default the last column"
        return (f"; column {header[column]!r} holds no number at all: it looks like the labels "
                f"(the label column is {label_column!r}, {which}); "
                f"--label-column {shlex.quote(header[column])} chooses it")

    features: list[list[float]] = []
    labels: list[str] = []
    for line_no, row in rows:
        if not row or all(not cell.strip() for cell in row):
            continue  # blank lines are not data
        if len(row) != width:
            raise DataError(
                f"{name}: row {line_no}: {len(row)} columns; expected {width} like the header"
            )
        values = []
        for i in feature_at:
            cell = row[i].strip()
            where = f"{name}: row {line_no}, column {header[i]!r}"
            if not cell:
                raise DataError(f"{where}: empty cell; expected a number")
            try:
                value = float(cell)
            except ValueError:
                raise DataError(f"{where}: {cell!r} is not a number{labels_hint(i)}") from None
            if not math.isfinite(value) or abs(value) > float(np.finfo(np.float32).max):
                raise DataError(f"{where}: {cell!r} is not a finite float32 number")
            values.append(value)
        label = row[label_at].strip()
        if not label:
            raise DataError(f"{name}: row {line_no}, column {label_column!r}: empty label")
        features.append(values)
        labels.append(label)
    if not labels:
        raise DataError(f"{name}: no data rows after the header")
    classes = _class_order(set(labels))
    if len(classes) != N_CLASSES:
        raise DataError(
            f"{name}: column {label_column!r}: {len(classes)} distinct labels {classes[:10]}; "
            f"expected exactly {N_CLASSES} (the model is Linear({N_FEATURES}, {N_CLASSES}))"
        )
    index = {label: i for i, label in enumerate(classes)}
    return Dataset(
        features=np.asarray(features, dtype=np.float32),
        labels=np.asarray([index[label] for label in labels], dtype=np.int64),
        feature_names=[header[i] for i in feature_at],
        class_labels=classes,
        source=name,
        sha256=hashlib.sha256(raw).hexdigest(),
    )


def load(spec: str, label_column: str | None = None, delimiter: str | None = None) -> Dataset:
    """``iris``, ``toy`` or a path to a CSV file (``delimiter``: see read_csv). Raises DataError."""
    if spec == "iris":
        return iris()
    if spec == "toy":
        return toy()
    return read_csv(Path(spec), label_column, delimiter)
