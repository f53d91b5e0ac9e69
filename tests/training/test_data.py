"""Datasets: the bundled ones, good CSVs, every kind of bad CSV (exit 2, nothing published),
separators, and data too small for a validation split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import modelrepo
from tests.support.models import train
from training.data import IRIS_CSV, MIN_ROWS_PER_CLASS, DataError, iris, read_csv, toy

GOOD = "a,b,c,d,label\n1,2,3,4,x\n2,3,4,5,y\n3,4,5,6,z\n"


def test_iris_is_the_classic_data_set() -> None:
    ds = iris()
    assert ds.features.shape == (150, 4) and ds.features.dtype == np.float32
    assert ds.feature_names == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert ds.class_labels == ["setosa", "versicolor", "virginica"]
    assert np.bincount(ds.labels).tolist() == [50, 50, 50]
    assert ds.features[0].tolist() == pytest.approx([5.1, 3.5, 1.4, 0.2])
    assert ds.source == "iris"


def test_toy_is_the_tutorials_eight_rows() -> None:
    ds = toy()
    assert ds.features.tolist()[3] == [4, 1, 5, 5]
    assert ds.labels.tolist() == [2, 2, 2, 1, 1, 1, 0, 0]
    assert ds.feature_names == ["x1", "x2", "x3", "x4"] and ds.class_labels == ["0", "1", "2"]


def test_csv_header_names_features_and_labels_sort(tmp_path: Path) -> None:
    path = tmp_path / "flowers.csv"
    path.write_text("w,x,y,z,kind\n1,2,3,4,b\n2,3,4,5,c\n3,4,5,6,a\n")
    ds = read_csv(path)
    assert ds.feature_names == ["w", "x", "y", "z"]
    assert ds.class_labels == ["a", "b", "c"]
    assert ds.labels.tolist() == [1, 2, 0]


def test_integer_labels_sort_numerically(tmp_path: Path) -> None:
    path = tmp_path / "n.csv"
    path.write_text("a,b,c,d,y\n1,1,1,1,10\n1,1,1,1,2\n1,1,1,1,1\n")
    ds = read_csv(path)
    assert ds.class_labels == ["1", "2", "10"]
    assert ds.labels.tolist() == [2, 1, 0]


def test_label_column_can_be_chosen(tmp_path: Path) -> None:
    path = tmp_path / "first.csv"
    path.write_text("label,a,b,c,d\nx,1,2,3,4\ny,2,3,4,5\nz,3,4,5,6\n")
    ds = read_csv(path, label_column="label")
    assert ds.feature_names == ["a", "b", "c", "d"]
    assert ds.features[0].tolist() == [1, 2, 3, 4]


BAD = {
    "one class": ("a,b,c,label\n1,2,3,x\n2,3,4,x\n", "column 'label'",
                  "every row has the label 'x'; a classifier needs at least 2 classes"),
    "one column": ("label\nx\ny\n", "row 1 (header): 1 columns", "expected at least 2"),
    "repeated name": ("a,b,a,label\n1,2,3,x\n", "row 1 (header)",
                      "column name 'a' repeats (columns 1 and 3)"),
    "text feature": ("a,city,b,label\n1,Paris,2,x\n2,Oslo,3,y\n", "row 2, column 'city'",
                     "'Paris' is not a number; column 'city' holds no number at all: it looks "
                     "like the labels (the label column is 'label', by default the last column); "
                     "--label-column city chooses it, or, if it is text to leave out, --ignore "
                     "city (or --features to list the feature columns)"),
    "short row": (GOOD + "1,2,3,x\n", "row 5", "4 columns"),
    "non-numeric": (GOOD + "1,two,3,4,x\n", "row 5, column 'b'", "not a number"),
    "empty cell": (GOOD + "1,,3,4,x\n", "row 5, column 'b'", "empty cell: a missing value"),
    "nan": (GOOD + "1,2,nan,4,x\n", "row 5, column 'c'", "'nan': a missing value; expected a "
            "number; --impute mean or --impute median fills missing values"),
    "NA": (GOOD + "1,2,NA,4,x\n", "row 5, column 'c'", "'NA': a missing value"),
    "inf": (GOOD + "1,2,3,inf,x\n", "row 5, column 'd'", "not a finite"),
    "overflows float32": (GOOD + "1e39,2,3,4,x\n", "row 5, column 'a'", "not a finite"),
    "empty file": ("", "empty", "header"),
    "header only": ("a,b,c,d,label\n", "no data rows", ""),
    "empty label": (GOOD + "1,2,3,4,\n", "row 5, column 'label'", "empty label"),
    "not a csv": ('{"instances": [[1, 2, 3, 4]]}\n', "no data rows", ""),
    "binary": ("\x00\x01\x02PK", "not a CSV", "NUL"),
    "labels not last": ("kind,a,b,c,d\nx,1,2,3,4\ny,2,3,4,5\nz,3,4,5,6\n", "row 2, column 'kind'",
                        "'x' is not a number; column 'kind' holds no number at all: it looks "
                        "like the labels (the label column is 'd', by default the last column); "
                        "--label-column kind chooses it"),
    "a typo is no label column": (GOOD + "1,two,3,4,x\n", "column 'b'", "'two' is not a number\n"),
    "pandas index": (",a,b,c,d,label\n0,1,2,3,4,x\n1,2,3,4,5,y\n", "row 1 (header): column 1 "
                     "has no name",
                     "looks like a pandas index column (written by DataFrame.to_csv() without "
                     "index=False): delete that column, or save the file again with "
                     "to_csv(..., index=False)"),
    "pandas index, 5 columns": (",a,b,c,label\n0,1,2,3,x\n", "column 1 has no name",
                                "looks like a pandas index column"),
    "another separator": ("a|b|c|d|label\n1|2|3|4|x\n", "1 columns",
                          "no ',', ';' or tab separates its cells: if another character does, "
                          "give --delimiter CHAR"),
    "ambiguous separator": ("a;a,b;b,c;c,d;d,e;e\n1;1,2;2,3;3,4;4,5;5\n", "cannot tell the "
                            "separator", "splits evenly on ',' (5 columns) and ';' (6 columns); "
                            "give --delimiter"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_csv_exits_2_names_file_row_column_and_publishes_nothing(
        case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text, where, what = BAD[case]
    path = tmp_path / "bad.csv"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(DataError):
        read_csv(path)
    repository = tmp_path / "repository"
    assert train(repository, "--data", str(path)) == 2
    err = capsys.readouterr().err
    assert str(path) in err and where in err and what in err
    assert err.count("\n") == 1, "one clear message"
    assert not repository.exists() or not any(repository.rglob("model.onnx"))


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train(tmp_path / "r", "--data", str(tmp_path / "nope.csv")) == 2
    assert "nope.csv" in capsys.readouterr().err


def test_unknown_label_column_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ok.csv"
    path.write_text(GOOD)
    assert train(tmp_path / "r", "--data", str(path), "--label-column", "species") == 2
    assert "no label column 'species'" in capsys.readouterr().err


@pytest.mark.parametrize("separator", [";", "\t"], ids=["semicolon", "tab"])
def test_semicolon_and_tab_separated_files_are_detected(separator: str, tmp_path: Path) -> None:
    path = tmp_path / "flowers.csv"
    path.write_text(IRIS_CSV.read_text().replace(",", separator))
    ds, reference = read_csv(path), read_csv(IRIS_CSV)
    assert ds.feature_names == reference.feature_names
    assert ds.class_labels == reference.class_labels
    assert np.array_equal(ds.features, reference.features)
    assert np.array_equal(ds.labels, reference.labels)


def test_a_separator_inside_quotes_does_not_confuse_detection(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text('a,b,c,d,"kind; of thing"\n1,2,3,4,"x;1"\n2,3,4,5,"y;2"\n3,4,5,6,z\n')
    assert read_csv(path).class_labels == ["x;1", "y;2", "z"]


def test_delimiter_can_be_given(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pipes.csv"
    path.write_text(GOOD.replace(",", "|"))
    assert read_csv(path, delimiter="|").feature_names == ["a", "b", "c", "d"]
    # The CLI passes it on: these 3 rows are read, then refused as too few to validate on.
    assert train(tmp_path / "r", "--data", str(path), "--delimiter", "|") == 2
    assert "3 rows (class 'x' has 1) is below the minimum" in capsys.readouterr().err
    semicolons = tmp_path / "semi.csv"
    semicolons.write_text(GOOD.replace(",", ";"))
    assert train(tmp_path / "r", "--data", str(semicolons), "--delimiter", ",") == 2
    assert "(the separator given by --delimiter, ',', separates none of its cells)" in \
        capsys.readouterr().err
    for bad in ("ab", "", '"'):
        with pytest.raises(SystemExit) as exc:
            train(tmp_path / "r", "--data", str(path), "--delimiter", bad)
        assert exc.value.code == 2
    assert "--delimiter" in capsys.readouterr().err


def tiny_csv(path: Path) -> Path:
    """Five Iris rows: 2 setosa, 2 versicolor, 1 virginica."""
    lines = IRIS_CSV.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[1], lines[2], lines[60], lines[61], lines[120]]))
    return path


def test_data_too_small_for_a_validation_split_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert MIN_ROWS_PER_CLASS == 10
    path = tiny_csv(tmp_path / "tiny.csv")
    assert train(tmp_path / "r", "--data", str(path)) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {path}: 5 rows (class 'virginica' has 1) is below the minimum of 10 "
                   "rows per class for a validation split; give --no-validation to train "
                   "without one\n")
    assert not (tmp_path / "r").exists()
    # Enough rows, but a fraction so small that a class gets no validation row.
    assert train(tmp_path / "r", "--data", str(IRIS_CSV), "--val-fraction", "0.01") == 2
    assert "--val-fraction 0.01 holds out no row of class 'setosa' (50 rows)" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        train(tmp_path / "r", "--data", str(path), "--no-validation", "--val-fraction", "0.2")
    assert exc.value.code == 2


def test_no_validation_trains_small_data_on_every_row(tmp_path: Path) -> None:
    path = tiny_csv(tmp_path / "tiny.csv")
    assert train(tmp_path / "r", "--data", str(path), "--no-validation", "--epochs", "10") == 0
    meta = json.loads((tmp_path / "r" / "tiny" / "1" / "metadata.json").read_text())
    assert meta["data"]["train_rows"] == 5 and meta["data"]["validation_rows"] == 0
    assert meta["metrics"]["validation"] is None
    assert sorted(modelrepo.version_dirs(tmp_path / "r" / "tiny")) == [1]
