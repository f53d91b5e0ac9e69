"""Datasets: the bundled Iris CSV, the tutorial's toy rows, or a user's CSV.

Every loader returns a validated :class:`Dataset`; a bad file raises :class:`DataError` naming
the file, row and column.
"""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelrepo import N_CLASSES, N_FEATURES

IRIS_CSV = Path(__file__).parent / "data" / "iris.csv"

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


def read_csv(path: Path, label_column: str | None = None) -> Dataset:
    """Load a CSV with a header, four numeric feature columns and one label column.

    ``label_column`` defaults to the last column. Raises DataError for an unreadable or empty
    file, a header without exactly five columns, a missing label column, a row of the wrong
    length, an empty, non-numeric or non-finite feature, or a number of classes other than 3.
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
    reader = csv.reader(text.splitlines())
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{name}: the file is empty; expected a header row and data rows") from None
    except csv.Error as exc:
        raise DataError(f"{name}: row 1: not valid CSV: {exc}") from None
    header = [h.strip() for h in header]
    width = N_FEATURES + 1
    if len(header) != width:
        raise DataError(
            f"{name}: row 1 (header): {len(header)} columns {header}; expected {width}: "
            f"{N_FEATURES} numeric features and one label column"
        )
    if any(not h for h in header):
        raise DataError(f"{name}: row 1 (header): column {header.index('') + 1} has no name")
    if len(set(header)) != width:
        raise DataError(f"{name}: row 1 (header): column names repeat: {header}")
    label_column = header[-1] if label_column is None else label_column
    if label_column not in header:
        raise DataError(f"{name}: row 1 (header): no label column {label_column!r} in {header}")
    label_at = header.index(label_column)
    feature_at = [i for i in range(width) if i != label_at]

    features: list[list[float]] = []
    labels: list[str] = []
    try:
        for line_no, row in enumerate(reader, start=2):
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
                    raise DataError(f"{where}: {cell!r} is not a number") from None
                if not math.isfinite(value) or abs(value) > float(np.finfo(np.float32).max):
                    raise DataError(f"{where}: {cell!r} is not a finite float32 number")
                values.append(value)
            label = row[label_at].strip()
            if not label:
                raise DataError(f"{name}: row {line_no}, column {label_column!r}: empty label")
            features.append(values)
            labels.append(label)
    except csv.Error as exc:
        raise DataError(f"{name}: row {reader.line_num}: not valid CSV: {exc}") from None
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


def load(spec: str, label_column: str | None = None) -> Dataset:
    """``iris``, ``toy`` or a path to a CSV file. Raises DataError."""
    if spec == "iris":
        return iris()
    if spec == "toy":
        return toy()
    return read_csv(Path(spec), label_column)
