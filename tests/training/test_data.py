"""Datasets: the bundled ones, good CSVs, and every kind of bad CSV (exit 2, nothing published)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support.models import train
from training.data import DataError, iris, read_csv, toy

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
    "missing column": ("a,b,c,label\n1,2,3,x\n", "row 1", "expected 5"),
    "extra column": ("a,b,c,d,e,label\n1,2,3,4,5,x\n", "row 1", "expected 5"),
    "short row": (GOOD + "1,2,3,x\n", "row 5", "4 columns"),
    "non-numeric": (GOOD + "1,two,3,4,x\n", "row 5, column 'b'", "not a number"),
    "empty cell": (GOOD + "1,,3,4,x\n", "row 5, column 'b'", "empty cell"),
    "nan": (GOOD + "1,2,nan,4,x\n", "row 5, column 'c'", "not a finite"),
    "inf": (GOOD + "1,2,3,inf,x\n", "row 5, column 'd'", "not a finite"),
    "overflows float32": (GOOD + "1e39,2,3,4,x\n", "row 5, column 'a'", "not a finite"),
    "two classes": ("a,b,c,d,label\n1,2,3,4,x\n2,3,4,5,y\n", "column 'label'", "2 distinct"),
    "four classes": (GOOD + "4,5,6,7,w\n", "column 'label'", "4 distinct"),
    "empty file": ("", "empty", "header"),
    "header only": ("a,b,c,d,label\n", "no data rows", ""),
    "empty label": (GOOD + "1,2,3,4,\n", "row 5, column 'label'", "empty label"),
    "not a csv": ('{"instances": [[1, 2, 3, 4]]}\n', "row 1", "expected 5"),
    "binary": ("\x00\x01\x02PK", "not a CSV", "NUL"),
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
