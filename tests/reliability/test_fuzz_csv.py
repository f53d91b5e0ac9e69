"""Property-based fuzzing of training's CSV input.

``read_csv`` gets hypothesis-built files — headers of any width, quoted and unquoted cells,
numbers in every spelling Python's float() knows (and some it does not), NaN/Infinity, float32
overflow, empty cells, BOMs, CRLF, blank lines, NUL bytes, bytes that are not UTF-8, commas,
semicolons or tabs between cells — and must either return a dataset the model can train on or
raise ``DataError``; never anything else. A few generated files also go through the real CLI:
exit 0 publishes a version that reads back valid, exit 2 (bad data) or 1 (a gate) publishes
nothing; data too small for a validation split is refused unless the split is turned off.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import modelrepo
from tests.support.models import train
from tests.reliability.conftest import budget, count_case
from training.data import MAX_CLASSES, MAX_FEATURES, MIN_ROWS_PER_CLASS, DataError, read_csv

EXAMPLES = budget(150)
# Each CLI example trains and exports a model (~2 s): a tenth of the budget, at least 3.
CLI_EXAMPLES = max(3, budget(3) // 10)

number_text = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.integers(-10**6, 10**6).map(str),
    st.sampled_from(["1e39", "-1e39", "3.4028235e38", "nan", "NaN", "inf", "-Infinity", "1_000",
                     "0x10", "١٢", " 2.5 ", "+3", ".5", "5.", "1e-50", "--1", "1,5", "", " "]),
    st.text(max_size=6),
)
label_text = st.one_of(st.sampled_from(["a", "b", "c", "setosa", "0", "1", "2", " c ", ""]),
                       st.text(max_size=5))


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    width = draw(st.sampled_from([5, 5, 5, 4, 6, 1, 0]))
    header = draw(st.one_of(
        st.just(["f1", "f2", "f3", "f4", "label"][:width] + [f"x{i}" for i in range(width - 5)]),
        st.lists(st.text(max_size=6), min_size=width, max_size=width)))
    rows = draw(st.lists(
        st.one_of(
            st.tuples(number_text, number_text, number_text, number_text, label_text).map(list),
            st.lists(st.one_of(number_text, label_text), max_size=7)),
        max_size=12))
    if draw(st.booleans()):  # enough well-formed rows of three classes to be trainable
        rows += [[str(i), str(i * 2), "0.5", "1", "abc"[i % 3]] for i in range(6)]
    out = io.StringIO()
    if draw(st.booleans()):
        writer = csv.writer(out, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
        writer.writerow(header)
        writer.writerows(rows)
        text = out.getvalue()
    else:  # naive joining: quotes and commas inside cells break the columns
        text = "\n".join(",".join(r) for r in [header, *rows])
    data = text.encode()
    if draw(st.integers(0, 5)) == 0:
        data = b"\xef\xbb\xbf" + data  # a UTF-8 BOM
    if draw(st.integers(0, 7)) == 0:
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] + draw(st.binary(min_size=1, max_size=4)) + data[cut:]
    return data


@st.composite
def trainable_csv_files(draw: st.DrawFn) -> bytes:
    """Three-class data a model can be fitted on, in the spellings a CSV may use."""
    n = draw(st.integers(6, 30))
    values = draw(st.lists(st.floats(-1e3, 1e3, width=32), min_size=n * 4, max_size=n * 4))
    labels = [draw(st.sampled_from(["red", "green", "blue"])) for _ in range(n - 3)]
    labels += ["red", "green", "blue"]
    label_at = draw(st.integers(0, 4))
    header = ["a", "b", "c", "d"]
    header.insert(label_at, "kind")
    separator = draw(st.sampled_from([",", ",", ";", "\t"]))  # read_csv detects which
    rows = []
    for i in range(n):
        cells = [draw(st.sampled_from(["{!r}", " {!r} ", '"{!r}"'])).format(v)
                 for v in values[i * 4:i * 4 + 4]]
        cells.insert(label_at, labels[i])
        rows.append(separator.join(cells))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    text = newline.join([separator.join(header), *rows]) + newline * draw(st.integers(0, 2))
    return (b"\xef\xbb\xbf" if draw(st.booleans()) else b"") + text.encode()


def label_column(data: bytes) -> str | None:
    """The label column the generated file names (trainable_csv_files' "kind"), else the last."""
    return "kind" if b"kind" in data else None


def check_dataset(path: Path, label: str | None) -> bool:
    """read_csv's result is trainable, or it raised DataError. True if it was trainable."""
    try:
        dataset = read_csv(path, label)
    except DataError as exc:
        assert str(path) in str(exc), exc  # the message names the file
        return False
    assert dataset.features.dtype == np.float32 and dataset.features.ndim == 2
    n_features, n_classes = len(dataset.feature_names), len(dataset.class_labels)
    assert dataset.features.shape == (dataset.rows, n_features) and dataset.rows >= 1
    assert np.isfinite(dataset.features).all()
    assert dataset.labels.dtype == np.int64
    assert set(dataset.labels.tolist()) == set(range(n_classes))  # every class has a row
    assert 2 <= n_classes <= MAX_CLASSES and len(set(dataset.class_labels)) == n_classes
    assert 1 <= n_features <= MAX_FEATURES and all(dataset.feature_names)
    assert len(set(dataset.feature_names)) == n_features
    assert all(math.isfinite(v) for v in dataset.features.reshape(-1).tolist())
    return True


def test_read_csv_accepts_or_explains(tmp_path: Path) -> None:
    outcomes = {True: 0, False: 0}

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.one_of(csv_files(), trainable_csv_files()))
    def run(data: bytes) -> None:
        path = tmp_path / "data.csv"
        path.write_bytes(data)
        outcomes[check_dataset(path, label_column(data))] += 1
        count_case("csv read_csv files")

    run()
    assert outcomes[True] and outcomes[False], outcomes  # both sides were reached


def test_training_cli_on_generated_csv(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    published = 0

    @settings(max_examples=CLI_EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.one_of(trainable_csv_files(), csv_files()))
    def run(data: bytes) -> None:
        nonlocal published
        path = tmp_path / "fuzz.csv"
        path.write_bytes(data)
        label = label_column(data)
        label_args = ["--label-column", label] if label else []
        trainable = check_dataset(path, label)
        before = modelrepo.version_dirs(repository / "fuzz")
        if trainable and min(np.bincount(read_csv(path, label).labels)) < MIN_ROWS_PER_CLASS:
            # Too few rows of a class for the default validation split: refused, not trained.
            assert train(repository, "--data", str(path), *label_args) == 2
            assert modelrepo.version_dirs(repository / "fuzz") == before
        code = train(repository, "--data", str(path), "--epochs", "20", "--min-accuracy", "0",
                     "--force", "--val-fraction", "0", *label_args)
        count_case("csv training CLI runs")
        after = modelrepo.version_dirs(repository / "fuzz")
        if not trainable:
            assert code == 2 and after == before, code
        else:
            assert code in (0, 1), code
            assert len(after) == len(before) + (code == 0)
            published += code == 0
        for version_dir in after.values():
            modelrepo.read_version(version_dir)  # raises BrokenVersion if incomplete

    run()
    assert published, "no generated file was trained and published"
