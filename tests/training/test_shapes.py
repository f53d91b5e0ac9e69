"""Any tabular classifier: F features and K classes from the user's own data (issue 14).

Every shape is trained, exported and checked for parity here (none of that touches the model
repository's contract). Publishing is tested end to end for 4 x 3 data; test_publish_any_shape
publishes another shape once modelrepo's contract takes any shape (the shape-serve branch).
"""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import modelrepo
from tests.support.models import train
from training.data import (MAX_CLASSES, MAX_FEATURES, DataError, Dataset, _choose_columns,
                           _read_fast, _read_slow, read_csv)
from training.export import check_parity, export_onnx
from training.train import TrainConfig, fit


def synthetic(n_features: int, n_classes: int, rows: int, seed: int = 0) -> Dataset:
    """Gaussian blobs, one per class, every class with rows // n_classes rows or more."""
    rng = np.random.default_rng(seed)
    y = np.arange(rows) % n_classes
    centres = rng.normal(0, 3, (n_classes, n_features))
    x = (centres[y] + rng.normal(0, 1, (rows, n_features))).astype(np.float32)
    return Dataset(x, y.astype(np.int64), [f"f{i}" for i in range(n_features)],
                   [f"c{k}" for k in range(n_classes)], "synthetic", "0" * 64)


def write_csv(path: Path, header: list[str], rows: list[list[object]],
              delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=delimiter, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def dataset_csv(path: Path, ds: Dataset, delimiter: str = ",") -> Path:
    rows = [[*map(repr, map(float, x)), ds.class_labels[y]]
            for x, y in zip(ds.features, ds.labels)]
    return write_csv(path, [*ds.feature_names, "label"], rows, delimiter)


def run_onnx(model_bytes: bytes, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    probabilities, classes = session.run(["probabilities", "class"],
                                         {"input": np.ascontiguousarray(x, dtype=np.float32)})
    return probabilities, classes


# --- every shape: train, export, parity ------------------------------------------------------

@pytest.mark.parametrize("n_classes", [2, 3, 10, 100])
@pytest.mark.parametrize("n_features", [1, 4, 13, 64, 784])
def test_every_shape_trains_exports_and_keeps_parity(n_features: int, n_classes: int) -> None:
    ds = synthetic(n_features, n_classes, rows=max(3 * n_classes, 60), seed=n_features)
    result = fit(TrainConfig(epochs=3, val_fraction=0, standardize=True), ds)
    assert result.model.classifier.describe() == f"nn.Linear({n_features}, {n_classes})"
    model_bytes = export_onnx(result.model)
    report = check_parity(result.model, model_bytes, ds.features, seed=1)
    assert report["passed"] and set(report["rows"]) == {"data", "random_data_range"} | (
        {"random_pm1e3"} if n_features == 4 else set())
    assert report["batch_sizes"][:4] == [1, 3, 7, 1000]
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert session.get_inputs()[0].shape == ["batch", n_features]
    assert [o.name for o in session.get_outputs()] == ["probabilities", "class"]
    probabilities, classes = run_onnx(model_bytes, ds.features[:5])
    assert probabilities.shape == (5, n_classes) and classes.shape == (5,)
    assert classes.dtype == np.int64


@pytest.mark.parametrize(("n_features", "n_classes"), [(MAX_FEATURES, 2), (3, MAX_CLASSES)])
def test_the_documented_limits_train(n_features: int, n_classes: int) -> None:
    ds = synthetic(n_features, n_classes, rows=max(n_classes, 20))
    result = fit(TrainConfig(epochs=1, val_fraction=0, standardize=True), ds)
    model_bytes = export_onnx(result.model)
    assert check_parity(result.model, model_bytes, ds.features)["passed"]


def test_beyond_the_limits_is_refused(tmp_path: Path) -> None:
    wide = write_csv(tmp_path / "wide.csv", [f"f{i}" for i in range(MAX_FEATURES + 1)]
                     + ["label"], [[1] * (MAX_FEATURES + 1) + ["a"]])
    with pytest.raises(DataError, match=f"{MAX_FEATURES + 1} feature columns; at most "
                       f"{MAX_FEATURES}"):
        read_csv(wide)
    many = write_csv(tmp_path / "many.csv", ["x", "label"],
                     [[i, f"c{i}"] for i in range(MAX_CLASSES + 1)])
    with pytest.raises(DataError, match=f"{MAX_CLASSES + 1} distinct labels; at most"):
        read_csv(many)


def rings(rows: int = 400, seed: int = 0) -> Dataset:
    """Two concentric rings: no straight line separates them."""
    rng = np.random.default_rng(seed)
    y = np.arange(rows) % 2
    angle = rng.uniform(0, 2 * np.pi, rows)
    radius = np.where(y == 0, 1.0, 3.0) + rng.normal(0, 0.2, rows)
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1).astype(np.float32)
    return Dataset(x, y.astype(np.int64), ["x", "y"], ["inner", "outer"], "rings", "0" * 64)


def test_hidden_layers_separate_what_a_linear_model_cannot() -> None:
    ds = rings()
    config = TrainConfig(epochs=300, val_fraction=0.2, standardize=True)
    linear = fit(config, ds)
    mlp = fit(TrainConfig(**{**config.__dict__, "hidden": (64, 32)}), ds)
    assert linear.metrics["validation"]["accuracy"] < 0.75
    assert mlp.metrics["validation"]["accuracy"] >= 0.95
    assert mlp.model.classifier.describe() == "MLP 2 -> 64 -> 32 -> 2 (ReLU)"
    model_bytes = export_onnx(mlp.model)  # still one graph with the same outputs
    assert check_parity(mlp.model, model_bytes, ds.features)["passed"]
    ops = {node.op_type for node in onnx.load_from_string(model_bytes).graph.node}
    assert "Relu" in ops
    assert [o.name for o in onnx.load_from_string(model_bytes).graph.output] == [
        "probabilities", "class"]


def test_hidden_option_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = dataset_csv(tmp_path / "rings.csv", rings())
    assert train(tmp_path / "r", "--data", str(path), "--hidden", "64,32", "--epochs", "300",
                 "--dry-run") == 0
    out = capsys.readouterr().out
    assert "Model MLP 2 -> 64 -> 32 -> 2 (ReLU), full batch" in out and "Dry run" in out
    for bad in ("0", "a,b", "", "64,,32"):
        with pytest.raises(SystemExit):
            train(tmp_path / "r", "--data", str(path), "--hidden", bad)


def test_class_weight_balanced_raises_the_minority_recall() -> None:
    rng = np.random.default_rng(3)
    y = (np.arange(1000) % 20 == 0).astype(np.int64)  # 5% of rows are class "rare"
    x = (rng.normal(0, 1, (1000, 2)) + y[:, None] * 1.2).astype(np.float32)
    ds = Dataset(x, y, ["a", "b"], ["common", "rare"], "imbalanced", "0" * 64)
    plain = fit(TrainConfig(epochs=200, val_fraction=0.2, standardize=True), ds)
    balanced = fit(TrainConfig(epochs=200, val_fraction=0.2, standardize=True,
                               class_weight="balanced"), ds)

    def rare_recall(result: object) -> float:
        return result.metrics["per_class"]["classes"][1]["recall"]  # type: ignore[attr-defined]

    assert rare_recall(plain) < 0.2 < 0.6 < rare_recall(balanced)
    assert balanced.class_weights == pytest.approx([800 / (2 * 760), 800 / (2 * 40)])


def test_mini_batches_for_large_data_full_batch_for_small() -> None:
    small = fit(TrainConfig(epochs=1, val_fraction=0), synthetic(3, 2, 100))
    assert small.batch_size == 100
    large = fit(TrainConfig(epochs=2, val_fraction=0.2, standardize=True),
                synthetic(5, 4, 20_000))
    assert large.batch_size == 512 and len(large.history) == 3
    assert large.metrics["validation"]["accuracy"] > 0.9
    given = fit(TrainConfig(epochs=1, val_fraction=0, batch_size=32), synthetic(3, 2, 100))
    assert given.batch_size == 32


def test_metrics_have_per_class_figures_and_a_labelled_confusion_matrix() -> None:
    ds = synthetic(4, 3, 150)
    metrics = fit(TrainConfig(epochs=100, val_fraction=0.2, standardize=True), ds).metrics
    cm = metrics["confusion_matrix"]
    assert cm["labels"] == ["c0", "c1", "c2"] and cm["split"] == "validation"
    classes = metrics["per_class"]["classes"]
    assert [c["label"] for c in classes] == ["c0", "c1", "c2"]
    matrix = np.array(cm["matrix"])
    for i, c in enumerate(classes):
        assert c["support"] == matrix[i].sum()
        assert c["recall"] == pytest.approx(matrix[i, i] / matrix[i].sum())
        assert c["precision"] == pytest.approx(matrix[i, i] / matrix[:, i].sum())
        assert c["f1"] == pytest.approx(2 * c["precision"] * c["recall"]
                                        / (c["precision"] + c["recall"]))
    assert metrics["macro_f1"] == pytest.approx(np.mean([c["f1"] for c in classes]))


# --- CSV edge cases ----------------------------------------------------------------------------

@pytest.mark.parametrize("delimiter", [",", ";", "\t"], ids=["comma", "semicolon", "tab"])
def test_each_delimiter_reads_the_same_wide_binary_data(delimiter: str, tmp_path: Path) -> None:
    ds = synthetic(6, 2, 40)
    read = read_csv(dataset_csv(tmp_path / "d.csv", ds, delimiter))
    assert read.feature_names == ds.feature_names and read.class_labels == ["c0", "c1"]
    assert np.array_equal(read.features, ds.features) and np.array_equal(read.labels, ds.labels)


def test_quoted_headers_unicode_labels_and_a_label_column_in_the_middle(tmp_path: Path) -> None:
    header = ["width, cm", "petal length", "kind of flower", "Höhe (m)"]
    rows = [[1.5, 2, "Ωmega class", 3], [2.5, 3, "日本 の 花", 4], [3.5, 4, "café au lait", 5],
            [4.5, 5, "Ωmega class", 6]]
    path = write_csv(tmp_path / "quoted.csv", header, rows)
    ds = read_csv(path, label_column="kind of flower")
    assert ds.feature_names == ["width, cm", "petal length", "Höhe (m)"]
    assert ds.class_labels == sorted(["Ωmega class", "日本 の 花", "café au lait"])
    assert ds.features[1].tolist() == [2.5, 3, 4]
    chosen = read_csv(path, label_column="kind of flower", features=["Höhe (m)", "width, cm"])
    assert chosen.feature_names == ["Höhe (m)", "width, cm"]
    assert chosen.features[0].tolist() == [3, 1.5]


def test_features_and_ignore_choose_columns_through_the_cli(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = synthetic(3, 2, 40)
    rows = [[i, f"2024-01-{i % 28 + 1:02d}", *map(float, x), ds.class_labels[y]]
            for i, (x, y) in enumerate(zip(ds.features, ds.labels))]
    path = write_csv(tmp_path / "indexed.csv", ["id", "date", "a, b", "c", "d", "label"], rows)
    common = ["--data", str(path), "--epochs", "50", "--dry-run", "--no-validation"]
    # The date column is text: refused, naming it and the options that help.
    assert train(tmp_path / "r", *common) == 2
    err = capsys.readouterr().err
    assert "column 'date'" in err and "--ignore date" in err and "--features" in err
    assert train(tmp_path / "r", *common, "--ignore", "id,date") == 0
    assert "3 features ['a, b', 'c', 'd'], 2 classes" in capsys.readouterr().out
    assert train(tmp_path / "r", *common, "--features", '"a, b",d') == 0
    assert "2 features ['a, b', 'd']" in capsys.readouterr().out
    assert train(tmp_path / "r", *common, "--features", "a,nope") == 2
    assert "--features: no column 'a'" in capsys.readouterr().err
    assert train(tmp_path / "r", *common, "--ignore", "label") == 2
    assert "--ignore names the label column 'label'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train(tmp_path / "r", *common, "--ignore", "id", "--features", "c")


def test_gzipped_csv_is_read_as_is(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain = dataset_csv(tmp_path / "plain.csv", synthetic(4, 3, 60))
    packed = tmp_path / "packed.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    a, b = read_csv(plain), read_csv(packed)
    assert np.array_equal(a.features, b.features) and a.class_labels == b.class_labels
    assert b.sha256 != a.sha256  # of the file as stored
    assert train(tmp_path / "r", "--data", str(packed), "--epochs", "20", "--dry-run") == 0
    assert "would publish packed to" in capsys.readouterr().out
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(gzip.compress(plain.read_bytes())[:40])
    with pytest.raises(DataError, match="not a valid gzip file"):
        read_csv(broken)


def test_a_class_with_one_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = synthetic(2, 2, 40)
    rows = [[*map(float, x), ds.class_labels[y]] for x, y in zip(ds.features, ds.labels)]
    path = write_csv(tmp_path / "lonely.csv", ["a", "b", "label"], [*rows, [0.5, 0.5, "only"]])
    assert read_csv(path).class_labels == ["c0", "c1", "only"]
    assert train(tmp_path / "r", "--data", str(path), "--dry-run") == 2
    assert "class 'only' has 1) is below the minimum" in capsys.readouterr().err
    assert train(tmp_path / "r", "--data", str(path), "--dry-run", "--no-validation",
                 "--epochs", "20") == 0


def test_both_readers_agree(tmp_path: Path) -> None:
    """pyarrow reads what the csv module reads (which stays for messages and odd spellings)."""
    text = ('\ufeffid;"a; x";b;label\n1; 1.5 ;+3;" Ω "\n2;.5;5.;beta\n\n3;1e-50;-0;beta\n'
            '4;"2";7;" Ω "\n')
    path = tmp_path / "odd.csv"
    path.write_bytes(text.encode())
    header = ["id", "a; x", "b", "label"]
    columns = _choose_columns(header, "odd.csv", ";", True, None, None, ["id"])
    fast = _read_fast(path, False, ";", columns, impute=False)
    slow = _read_slow(path.read_bytes(), "odd.csv", ";", columns, impute=False)
    assert fast is not None
    assert np.array_equal(fast.values, slow.values)
    assert [fast.distinct[c].strip() for c in fast.codes] == \
        [slow.distinct[c].strip() for c in slow.codes]
    ds = read_csv(path, ignore=["id"])
    assert ds.reader == "pyarrow" and ds.class_labels == ["beta", "Ω"]
    # A spelling only Python reads: the csv module takes over, same numbers.
    path.write_bytes(text.replace("+3", "1_000").encode())
    ds = read_csv(path, ignore=["id"])
    assert ds.reader == "csv" and ds.features[0].tolist() == [1.5, 1000]


# --- missing values ---------------------------------------------------------------------------

def holey_csv(path: Path, rows: int = 90) -> Path:
    """Four features, three classes, a few missing cells (empty, NA, nan)."""
    ds = synthetic(4, 3, rows, seed=5)
    out = [[*map(float, x), ds.class_labels[y]] for x, y in zip(ds.features, ds.labels)]
    out[3][1], out[10][2], out[50][0] = "", "NA", "nan"
    return write_csv(path, ["a", "b", "c", "d", "label"], out)


def test_missing_values_are_refused_by_default_naming_row_and_column(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = holey_csv(tmp_path / "holey.csv")
    assert train(tmp_path / "r", "--data", str(path)) == 2
    err = capsys.readouterr().err
    assert "row 5, column 'b': empty cell: a missing value" in err and "--impute" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("strategy", ["mean", "median"])
def test_impute_fills_from_the_training_split_inside_the_graph(strategy: str,
                                                               tmp_path: Path) -> None:
    ds = read_csv(holey_csv(tmp_path / "holey.csv"), impute=True)
    assert ds.missing == 3 and np.isnan(ds.features).sum() == 3
    result = fit(TrainConfig(epochs=50, val_fraction=0.2, standardize=True, impute=strategy), ds)
    train_rows = ds.features[result.split.train]
    expected = (np.nanmean if strategy == "mean" else np.nanmedian)(train_rows, axis=0)
    np.testing.assert_allclose(result.model.fill.numpy(), expected, rtol=1e-5)
    model_bytes = export_onnx(result.model)
    report = check_parity(result.model, model_bytes, ds.features)
    assert "random_missing" in report["rows"]
    row = np.array([[np.nan, 1.0, np.nan, 2.0]], dtype=np.float32)
    filled = np.where(np.isnan(row), expected, row).astype(np.float32)
    holes, _ = run_onnx(model_bytes, row)
    full, _ = run_onnx(model_bytes, filled)
    assert np.isfinite(holes).all()
    np.testing.assert_allclose(holes, full, atol=1e-6)


def test_imputing_model_publishes_and_says_so(tmp_path: Path) -> None:
    path = holey_csv(tmp_path / "holey.csv")
    assert train(tmp_path / "r", "--data", str(path), "--impute", "median", "--epochs", "200",
                 "--min-accuracy", "0") == 0
    meta, model_bytes = modelrepo.read_version(tmp_path / "r" / "holey" / "1")
    assert meta["missing_values"] == "impute"
    imputation = meta["training"]["imputation"]
    assert imputation["strategy"] == "median" and len(imputation["values"]) == 4
    assert imputation["missing_cells"] == 3
    probabilities, _ = run_onnx(model_bytes, np.full((1, 4), np.nan, dtype=np.float32))
    assert np.isfinite(probabilities).all()


def test_a_model_without_impute_keeps_refusing_missing_values(iris_repository: Path) -> None:
    meta, model_bytes = modelrepo.read_version(iris_repository / "iris" / "1")
    assert meta["missing_values"] == "refuse" and "imputation" not in meta["training"]
    ops = {node.op_type for node in onnx.load_from_string(model_bytes).graph.node}
    assert "IsNaN" not in ops  # a NaN goes through as NaN; the server refuses it first


def test_a_feature_with_no_value_in_the_training_split_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_csv(tmp_path / "empty.csv", ["a", "b", "label"],
                     [[i, "", "xy"[i % 2]] for i in range(30)])
    assert train(tmp_path / "r", "--data", str(path), "--impute", "mean",
                 "--no-validation") == 2
    assert "column 'b' has no value in the training split" in capsys.readouterr().err


# --- the command end to end ------------------------------------------------------------------

def test_large_csv_takes_the_fast_reader_and_mini_batches(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = dataset_csv(tmp_path / "large.csv", synthetic(4, 3, 20_000, seed=2))
    assert train(tmp_path / "r", "--data", str(path), "--epochs", "2") == 0
    out = capsys.readouterr().out
    assert "(read by pyarrow)" in out and "mini-batches of 512 rows" in out
    assert "Stage times: read " in out and " train " in out and " publish " in out
    meta = json.loads((tmp_path / "r" / "large" / "1" / "metadata.json").read_text())
    assert meta["training"]["batch_size"] == 512
    assert meta["training"]["optimizer"].startswith("SGD (mini-batches of 512 rows")
    assert meta["metrics"]["validation"]["accuracy"] > 0.9
    assert meta["missing_values"] == "refuse"


def test_printed_summary_and_plot_show_metrics(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = dataset_csv(tmp_path / "blobs.csv", synthetic(4, 3, 150))
    assert train(tmp_path / "r", "--data", str(path), "--epochs", "100") == 0
    out = capsys.readouterr().out
    assert "Per-class metrics on the validation split (macro F1" in out
    assert "precision  recall      f1  support" in out
    assert "Confusion matrix (validation; rows: true class, columns: predicted):" in out
    meta = json.loads((tmp_path / "r" / "blobs" / "1" / "metadata.json").read_text())
    assert set(meta["loss_curve"][0]) == {"epoch", "loss", "validation_loss",
                                          "validation_accuracy"}
    assert len(meta["metrics"]["per_class"]["classes"]) == 3


@pytest.mark.parametrize("loader", ["load_wine", "load_breast_cancer", "load_digits"])
def test_scikit_learn_datasets_through_the_cli(loader: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    datasets = pytest.importorskip("sklearn.datasets")
    bunch = getattr(datasets, loader)()
    names = [str(n) for n in getattr(bunch, "feature_names", [])]
    labels = [str(bunch.target_names[t]) for t in bunch.target]
    path = write_csv(tmp_path / f"{loader[5:]}.csv", [*names, "target"],
                     [[*map(float, x), label] for x, label in zip(bunch.data, labels)])
    # The default gate: validation accuracy at least 0.9.
    assert train(tmp_path / "r", "--data", str(path), "--dry-run") == 0, \
        capsys.readouterr().err
    out = capsys.readouterr().out
    n_features, n_classes = bunch.data.shape[1], len(bunch.target_names)
    assert f"Model nn.Linear({n_features}, {n_classes}), full batch" in out
    assert "Dry run" in out


# --- the repository: promotion and publish ----------------------------------------------------

def test_a_retrain_that_changes_the_shape_is_refused_with_a_clear_message(
        repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = (Path(__file__).parents[2] / "training" / "data" / "iris.csv").read_text()
    wider = tmp_path / "wider.csv"
    wider.write_text("\n".join(f"{line.rsplit(',', 1)[0]},{'extra' if i == 0 else '1'},"
                               f"{line.rsplit(',', 1)[1]}"
                               for i, line in enumerate(source.splitlines())))
    assert train(repository, "--data", str(wider), "--model-name", "iris",
                 "--min-accuracy", "0") == 1
    err = capsys.readouterr().err
    assert ("feature names differ from version 1's: 5 features instead of 4, new 'extra'"
            in err)
    assert "publish it under a new --model-name, or --force overrides" in err
    assert sorted(modelrepo.version_dirs(repository / "iris")) == [1]


def test_publish_any_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = synthetic(13, 5, 200, seed=7)
    path = dataset_csv(tmp_path / "wide.csv", ds)
    repository = tmp_path / "r"
    code = train(repository, "--data", str(path), "--epochs", "100", "--impute", "mean")
    assert code == 0, capsys.readouterr().err
    meta, model_bytes = modelrepo.read_version(repository / "wide" / "1")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 13]}]
    assert meta["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 5]},
        {"name": "class", "datatype": "INT64", "shape": [-1]}]
    assert meta["feature_names"] == ds.feature_names and meta["class_labels"] == ds.class_labels
    assert meta["missing_values"] == "impute"
    assert 'dims: [ -1, 13 ]' in (repository / "wide" / "config.pbtxt").read_text()
    probabilities, classes = run_onnx(model_bytes, ds.features)
    assert probabilities.shape == (200, 5)
    assert np.mean(classes == ds.labels) > 0.9
