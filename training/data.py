"""Datasets: the bundled Iris CSV, the tutorial's toy rows, or a user's CSV (any width).

Every loader returns a validated :class:`Dataset`; a bad file raises :class:`DataError` naming
the file, row and column.

A CSV is read twice at most. First by pyarrow's CSV reader (multithreaded C++, ~20x faster than
the csv module on a million rows, and it never holds the file as Python strings); whenever it
refuses the file, or finds anything a message must point at (a missing value, a non-finite
number, an empty label), the standard library's csv module reads it again, row by row, for the
message with the row and column, or for the spellings of a number only Python accepts.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import math
import shlex
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

IRIS_CSV = Path(__file__).parent / "data" / "iris.csv"

# The fewest rows a class may have for a validation split (training.train checks it). With the
# default fraction 0.2 that holds out 2 rows of each class (6 for 3 classes) and trains on 8 of
# each: fewer, and one row decides the validation accuracy (1 row a class: 0, 1/3, 2/3 or 1)
# and the 0.9 gate means nothing; the rounding also leaves classes of 1-2 rows with no
# validation row at all.
MIN_ROWS_PER_CLASS = 10

# The documented limits of a model's shape (README, --help): inputs of up to MAX_FEATURES
# numbers, up to MAX_CLASSES labels.
MAX_FEATURES = 4096
MAX_CLASSES = 1000

# Training options, here so that ``--help`` needs no torch (training.train uses them).
# Training splits up to FULL_BATCH_ROWS rows train full batch (the tutorial's way) unless
# --batch-size says otherwise; larger ones in mini-batches of DEFAULT_BATCH_SIZE rows, so an
# epoch over a million rows is ~1,500 steps rather than one.
FULL_BATCH_ROWS = 10_000
DEFAULT_BATCH_SIZE = 512
IMPUTE_STRATEGIES = ("mean", "median")
CLASS_WEIGHTS = ("none", "balanced")

# Cells that mean "no value" (compared stripped and lower-cased), besides anything float()
# reads as NaN: what pandas, R and spreadsheets write for one.
MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?", "#n/a"})
# The same, as pyarrow's null_values (exact, case-sensitive spellings).
ARROW_NULLS = ["", "NA", "N/A", "n/a", "na", "NaN", "nan", "null", "NULL", "Null", "None",
               "none", "?", "#N/A"]
FLOAT32_MAX = float(np.finfo(np.float32).max)

TOY_X = [[1, 2, 1, 1], [2, 1, 3, 2], [3, 1, 3, 4], [4, 1, 5, 5],
         [1, 7, 5, 5], [1, 2, 5, 6], [1, 6, 6, 6], [1, 7, 7, 7]]
TOY_Y = [2, 2, 2, 1, 1, 1, 0, 0]


class DataError(Exception):
    """A dataset that cannot be trained on; the message names file, row and column."""


@dataclass(frozen=True)
class Dataset:
    features: np.ndarray  # float32 (N, F); NaN only where a value is missing (--impute)
    labels: np.ndarray  # int64 (N,), indices into class_labels
    feature_names: list[str]
    class_labels: list[str]
    source: str  # "iris", "toy" or the CSV's path
    sha256: str  # of the file's bytes, or of the toy rows' canonical text
    missing: int = 0  # cells without a value (only with impute)
    reader: str = field(default="builtin", compare=False)  # "pyarrow" or "csv" for a CSV
    # How many rows came from where, when not all from one file (--from-log): metadata.json
    # records it under data.provenance.
    provenance: dict[str, Any] | None = field(default=None, compare=False)

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
    return Dataset(**{**dataset.__dict__, "source": "iris", "reader": "builtin"})


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


def column_list(text: str, option: str) -> list[str]:
    """``--features``/``--ignore``'s value: column names separated by commas, CSV-quoted when
    a name holds a comma (``'"a, b",c'``). Raises ValueError."""
    try:
        names = next(csv.reader([text]), [])
    except csv.Error as exc:
        raise ValueError(f"{option} {text!r}: {exc}") from None
    names = [n.strip() for n in names]
    if not names or not all(names):
        raise ValueError(f"{option} {text!r}: give column names separated by commas")
    return names


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


def _is_missing(cell: str) -> bool:
    """A stripped cell that holds no value: empty, NA, NaN, null, ... (see MISSING)."""
    if cell.lower() in MISSING:
        return True
    try:
        return math.isnan(float(cell))
    except ValueError:
        return False


INDEX_HINT = ("; a first column without a name looks like a pandas index column (written by "
              "DataFrame.to_csv() without index=False): delete that column, or save the file "
              "again with to_csv(..., index=False)")
IMPUTE_HINT = ("; --impute mean or --impute median fills missing values with the training "
               "split's statistics (also when serving), or remove the row")


@dataclass(frozen=True)
class _Columns:
    """Which columns of the header a dataset takes: label and features, by position."""

    header: list[str]  # stripped names
    raw_header: list[str]  # as written (pyarrow's column names)
    label_at: int
    feature_at: list[int]
    label_given: bool


def _file_bytes(path: Path, name: str) -> bytes:
    """The file's text bytes, gunzipped when it is a gzip file. Raises DataError."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"{name}: cannot read the file: {exc.strerror}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{name}: not a valid gzip file: {exc}") from None
    return raw


READ_CHUNK = 1 << 24


def _scan(path: Path, name: str) -> tuple[str, bool, bytes]:
    """One pass over the file without holding it: the sha256 of the file as stored, whether
    it is gzipped (its magic number, not its name), and its first lines (the header and
    SNIFF_LINES more, uncompressed). Raises DataError for an unreadable file, a broken gzip
    stream or NUL bytes (no text file has them)."""
    digest = hashlib.sha256()
    head = b""
    try:
        with open(path, "rb") as f:
            first = f.read(READ_CHUNK)
            gz = first[:2] == b"\x1f\x8b"
            unzip = zlib.decompressobj(16 + zlib.MAX_WBITS) if gz else None
            chunk = first
            while chunk:
                digest.update(chunk)
                try:
                    text = unzip.decompress(chunk) if unzip else chunk
                except zlib.error as exc:
                    raise DataError(f"{name}: not a valid gzip file: {exc}") from None
                if b"\x00" in text:
                    raise DataError(f"{name}: not a CSV text file (contains NUL bytes)")
                if head.count(b"\n") <= SNIFF_LINES:
                    head += text
                chunk = f.read(READ_CHUNK)
    except OSError as exc:
        raise DataError(f"{name}: cannot read the file: {exc.strerror}") from None
    if unzip is not None and not unzip.eof:
        raise DataError(f"{name}: not a valid gzip file: it ends before its end")
    end = 0
    for _ in range(SNIFF_LINES + 1):
        at = head.find(b"\n", end)
        if at < 0:
            end = len(head)
            break
        end = at + 1
    return digest.hexdigest(), gz, head[:end]


def _decode(data: bytes, name: str) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{name}: not a CSV text file (not UTF-8 at byte {exc.start})") from None
    return text


def _choose_columns(header_row: list[str], name: str, delimiter: str, detected: bool,
                    label_column: str | None, features: list[str] | None,
                    ignore: list[str] | None) -> _Columns:
    """The label and feature columns of the header. Raises DataError."""
    header = [h.strip() for h in header_row]
    index_hint = INDEX_HINT if len(header) > 1 and not header[0] else ""
    where = f"{name}: row 1 (header)"
    if len(header) < 2:
        other = ""
        separator = DELIMITERS.get(delimiter, repr(delimiter))
        if len(header) == 1:  # nothing separated the cells: perhaps another separator
            other = (" (no ',', ';' or tab separates its cells: if another character does, "
                     "give --delimiter CHAR)" if detected else
                     f" (the separator given by --delimiter, {separator}, separates none of "
                     "its cells)")
        raise DataError(f"{where}: {len(header)} columns {header}; expected at least 2: "
                        f"numeric feature columns and one label column{other}")
    if any(not h for h in header):
        raise DataError(f"{where}: column {header.index('') + 1} has no name{index_hint}")
    seen: dict[str, int] = {}
    for i, h in enumerate(header):
        if h in seen:
            raise DataError(f"{where}: column name {h!r} repeats (columns {seen[h] + 1} and "
                            f"{i + 1}); give every column its own name")
        seen[h] = i
    label_given = label_column is not None
    label_column = header[-1] if label_column is None else label_column.strip()
    if label_column not in seen:
        raise DataError(f"{where}: no label column {label_column!r} in {header}")
    label_at = seen[label_column]
    for option, names in (("--features", features), ("--ignore", ignore)):
        unknown = [n for n in names or [] if n not in seen]
        if unknown:
            raise DataError(f"{where}: {option}: no column {unknown[0]!r} in {header}")
        if names and label_column in names:
            raise DataError(f"{where}: {option} names the label column {label_column!r}")
        if names and len(set(names)) != len(names):
            raise DataError(f"{where}: {option} names a column twice")
    if features:
        feature_at = [seen[n] for n in features]
    else:
        left_out = {seen[n] for n in ignore or []}
        feature_at = [i for i in range(len(header)) if i != label_at and i not in left_out]
    if not feature_at:
        raise DataError(f"{where}: no feature column is left besides the label column "
                        f"{label_column!r}")
    if len(feature_at) > MAX_FEATURES:
        raise DataError(f"{where}: {len(feature_at)} feature columns; at most {MAX_FEATURES} "
                        "(choose some with --features or --ignore)")
    return _Columns(header, [h for h in header_row], label_at, feature_at, label_given)


def read_csv(path: Path, label_column: str | None = None, delimiter: str | None = None,
             features: list[str] | None = None, ignore: list[str] | None = None,
             impute: bool = False) -> Dataset:
    """Load a CSV (or a gzipped one) with a header, numeric feature columns and a label column.

    ``label_column`` defaults to the last column; the features are every other column, or
    ``features`` (in that order), or every other column but ``ignore``. ``delimiter`` defaults
    to the one :func:`detect_delimiter` finds (comma, semicolon or tab). Missing values (an
    empty cell, NA, NaN, null, ...) are refused unless ``impute``; they are NaN then.

    Raises DataError for an unreadable or empty file, an ambiguous separator, a header of
    fewer than two columns, a column without a name or with a repeated one, an unknown
    column, a row of the wrong length, a missing value (without ``impute``), a non-numeric
    or non-finite feature, an empty label, fewer than 2 or more than MAX_CLASSES classes;
    the message hints at the likely cause (a pandas index column, labels in another column,
    a text column, another separator).
    """
    name = str(path)
    digest, gz, head_bytes = _scan(path, name)
    head = _decode(head_bytes, name)
    detected = delimiter is None
    if delimiter is None:
        delimiter = detect_delimiter(head.splitlines(), name)
    try:
        header_row = next(csv.reader(head.splitlines(), delimiter=delimiter))
    except StopIteration:
        raise DataError(f"{name}: the file is empty; expected a header row and data rows") from None
    except csv.Error as exc:
        raise DataError(f"{name}: row 1: not valid CSV: {exc}") from None
    columns = _choose_columns(header_row, name, delimiter, detected, label_column, features,
                              ignore)
    found = _read_fast(path, gz, delimiter, columns, impute)
    reader = "pyarrow"
    if found is None:
        found = _read_slow(_file_bytes(path, name), name, delimiter, columns, impute)
        reader = "csv"
    if not len(found.codes):
        raise DataError(f"{name}: no data rows after the header")
    stripped = [label.strip() for label in found.distinct]
    classes = _class_order(set(stripped))
    label_name = columns.header[columns.label_at]
    if len(classes) < 2:
        raise DataError(f"{name}: column {label_name!r}: every row has the label {classes[0]!r}; "
                        "a classifier needs at least 2 classes (is this the label column? "
                        "--label-column chooses another)")
    if len(classes) > MAX_CLASSES:
        raise DataError(f"{name}: column {label_name!r}: {len(classes)} distinct labels; at "
                        f"most {MAX_CLASSES} (is it the label column? --label-column chooses "
                        "another)")
    index = {label: i for i, label in enumerate(classes)}
    class_of = np.asarray([index[s] for s in stripped], dtype=np.int64)
    return Dataset(
        features=found.values,
        labels=class_of[found.codes],
        feature_names=[columns.header[i] for i in columns.feature_at],
        class_labels=classes,
        source=name,
        sha256=digest,
        missing=int(np.isnan(found.values).sum()) if impute else 0,
        reader=reader,
    )


@dataclass(frozen=True)
class _Found:
    """What a reader found: the features, the labels' distinct raw spellings, and per row the
    index of its label among them."""

    values: np.ndarray  # float32 (N, F)
    distinct: list[str]
    codes: np.ndarray  # int64 (N,)


def _read_fast(path: Path, gz: bool, delimiter: str, columns: _Columns,
               impute: bool) -> _Found | None:
    """The feature matrix and labels by pyarrow, or None whenever the csv module must look:
    pyarrow refused the file (or is not installed), or a value needs a message naming its row.

    The file is streamed in blocks, each converted to float32 at once: a million rows of 50
    features never exist as float64 (400 MB) nor as the file's bytes in memory.
    """
    try:
        import pyarrow as pa
        import pyarrow.csv as pacsv
    except ImportError:
        return None
    raw = columns.raw_header
    wanted = [raw[i] for i in columns.feature_at]
    label = raw[columns.label_at]
    blocks: list[np.ndarray] = []
    label_blocks = []
    try:
        with pacsv.open_csv(
            pa.input_stream(str(path), compression="gzip" if gz else None),
            read_options=pacsv.ReadOptions(block_size=READ_CHUNK),
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(
                column_types={**{n: pa.float64() for n in wanted}, label: pa.string()},
                include_columns=[*wanted, label], null_values=ARROW_NULLS,
                strings_can_be_null=False, quoted_strings_can_be_null=True),
        ) as stream:
            if stream.schema.names != [*wanted, label]:
                return None
            for batch in stream:
                block = np.empty((batch.num_rows, len(wanted)), dtype=np.float32)
                for j in range(len(wanted)):
                    column = batch.column(j).to_numpy(zero_copy_only=False)  # null: NaN
                    finite_or_nan = np.isnan(column) | (np.abs(column) <= FLOAT32_MAX)
                    if not finite_or_nan.all() or (not impute and np.isnan(column).any()):
                        return None
                    block[:, j] = column
                blocks.append(block)
                label_blocks.append(batch.column(len(wanted)))
    except (pa.ArrowException, ValueError, KeyError, OSError):
        return None
    values = (np.concatenate(blocks) if len(blocks) != 1 else blocks[0]) if blocks else \
        np.empty((0, len(wanted)), dtype=np.float32)
    del blocks
    if not label_blocks:
        return _Found(values, [], np.empty(0, dtype=np.int64))
    encoded = pa.chunked_array(label_blocks).combine_chunks().dictionary_encode()
    distinct = encoded.dictionary.to_pylist()
    if any(not s.strip() for s in distinct):
        return None
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return _Found(values, distinct, codes)


def _read_slow(data: bytes, name: str, delimiter: str, columns: _Columns,
               impute: bool) -> _Found:
    """The csv module's reading, cell by cell: a refusal names the row and column.

    Raises DataError."""
    text = _decode(data, name)
    reader = csv.reader(text.splitlines(), delimiter=delimiter)
    header, width = columns.header, len(columns.header)
    label_name = header[columns.label_at]
    rows: list[tuple[int, list[str]]] = []
    try:
        next(reader)
        for row in reader:
            rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise DataError(f"{name}: row {reader.line_num}: not valid CSV: {exc}") from None

    def text_hint(column: int) -> str:
        """Why a feature column holding no number at all is probably not a feature."""
        cells = [row[column].strip() for _, row in rows if len(row) == width]
        if any(_is_number(cell) for cell in cells if cell):
            return ""
        which = "given by --label-column" if columns.label_given else "by default the last column"
        quoted = shlex.quote(header[column])
        return (f"; column {header[column]!r} holds no number at all: it looks like the labels "
                f"(the label column is {label_name!r}, {which}); "
                f"--label-column {quoted} chooses it, or, if it is text to leave out, "
                f"--ignore {quoted} (or --features to list the feature columns)")

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
        for i in columns.feature_at:
            cell = row[i].strip()
            where = f"{name}: row {line_no}, column {header[i]!r}"
            if _is_missing(cell):
                if impute:
                    values.append(math.nan)
                    continue
                what = "empty cell" if not cell else f"{cell!r}"
                raise DataError(f"{where}: {what}: a missing value; expected a number"
                                f"{IMPUTE_HINT}")
            try:
                value = float(cell)
            except ValueError:
                raise DataError(f"{where}: {cell!r} is not a number{text_hint(i)}") from None
            if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
                raise DataError(f"{where}: {cell!r} is not a finite float32 number")
            values.append(value)
        label = row[columns.label_at].strip()
        if not label:
            raise DataError(f"{name}: row {line_no}, column {label_name!r}: empty label")
        features.append(values)
        labels.append(label)
    distinct = sorted(set(labels))
    position = {label: i for i, label in enumerate(distinct)}
    values = np.asarray(features, dtype=np.float32).reshape(len(features),
                                                             len(columns.feature_at))
    return _Found(values, distinct, np.asarray([position[s] for s in labels], dtype=np.int64))


def load(spec: str, label_column: str | None = None, delimiter: str | None = None,
         features: list[str] | None = None, ignore: list[str] | None = None,
         impute: bool = False) -> Dataset:
    """``iris``, ``toy`` or a path to a CSV file (the options: see read_csv). Raises
    DataError."""
    if spec == "iris":
        return iris()
    if spec == "toy":
        return toy()
    return read_csv(Path(spec), label_column, delimiter, features, ignore, impute)


def from_log(directory: Path, model: str, served: dict[str, Any] | None = None,
             original: Dataset | None = None, impute: bool = False) -> Dataset:
    """A dataset of the rows ``model`` served that have feedback labels (the prediction log in
    ``directory``, joined by request id), after ``original``'s rows if given.

    The features are ``served``'s (the metadata of the version served now) if given, else
    those of the latest labelled logged row; logged rows with other
    feature names are left out, and ``original``'s columns are taken by name. The class labels
    are ``served``'s, with any other label found appended. ``provenance`` says how many rows
    came from where. Raises DataError: an unreadable log, no labelled row, an original without
    the features, a missing value without ``impute``.
    """
    from modelrepo.report import LogError, read_log, training_rows

    name = str(directory)
    try:
        data = read_log(directory, model)
    except LogError as exc:
        raise DataError(str(exc)) from None
    labelled = data.labelled()
    if served is not None:
        feature_names = list(served["feature_names"])
    elif labelled:
        feature_names = labelled[-1][0].feature_names
    else:
        feature_names = list(original.feature_names) if original is not None else []
    rows, labels = training_rows(data, feature_names)
    if not len(labels):
        raise DataError(
            f"{name}: no logged prediction of model {model!r} has a feedback label "
            f"({len(data.predictions)} predictions, {data.feedback_items} feedback items, "
            f"{data.unmatched()} unmatched): send true labels to POST /v2/models/{model}/"
            "feedback with the request ids the predictions answered")
    features, all_labels = [rows], list(labels)
    original_rows = 0
    if original is not None:
        missing = [f for f in feature_names if f not in original.feature_names]
        if missing:
            raise DataError(f"{original.source}: no column {missing[0]!r}: the original data "
                            f"must have the served model's features {feature_names}")
        order = [original.feature_names.index(f) for f in feature_names]
        features.insert(0, original.features[:, order])
        all_labels = [original.class_labels[i] for i in original.labels.tolist()] + all_labels
        original_rows = original.rows
    values = np.concatenate(features).astype(np.float32)
    missing_cells = int(np.isnan(values).sum())
    if missing_cells and not impute:
        raise DataError(f"{name}: {missing_cells} missing values among the logged rows"
                        f"{IMPUTE_HINT}")
    classes = list(served["class_labels"]) if served is not None else []
    classes += _class_order(set(all_labels) - set(classes))
    if len(classes) < 2:
        raise DataError(f"{name}: every labelled row has the label {classes[0]!r}; a "
                        "classifier needs at least 2 classes")
    index = {label: i for i, label in enumerate(classes)}
    digest = hashlib.sha256(values.tobytes())
    digest.update("\n".join(all_labels).encode())
    provenance = {"log": {"directory": name, "rows": len(labels), "files": data.files,
                          "requests": len(data.predictions),
                          "feedback_items": data.feedback_items,
                          "unmatched_feedback": data.unmatched()}}
    if original is not None:
        provenance["data"] = {"source": original.source, "rows": original_rows,
                              "sha256": original.sha256}
    return Dataset(
        features=values,
        labels=np.asarray([index[label] for label in all_labels], dtype=np.int64),
        feature_names=feature_names,
        class_labels=classes,
        source=f"log {name} (model {model})" + (f" + {original.source}" if original else ""),
        sha256=digest.hexdigest(),
        missing=missing_cells,
        reader="prediction log",
        provenance=provenance,
    )
