"""``training.data.from_log``: the training set built from the prediction log and its feedback
(the log written by the server's own writer), with the original data or without."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from serving.telemetry.prediction_log import PredictionLog
from serving.telemetry.record import RequestRecord
from training.data import DataError, from_log, read_csv

NAMES = ["a", "b"]
LABELS = ["no", "yes"]


def write_log(directory: Path, rows: list[list[float | None]], truths: list[str | None],
              model: str = "m") -> None:
    """One logged single-row request per row (ids r0, r1, ...), feedback where truth is given,
    and one feedback item for a request never logged."""
    log = PredictionLog(directory)
    for i, row in enumerate(rows):
        record = RequestRecord("POST", route="/predict", model=model, version="1")
        record.request_id = f"r{i}"
        log.prediction(record, NAMES, LABELS,
                       np.asarray([[np.nan if v is None else v for v in row]], dtype=np.float32),
                       np.asarray([[0.5, 0.5]], dtype=np.float32), np.zeros(1, dtype=np.int64))
    log.feedback([{"model": model, "request_id": f"r{i}", "row": 0, "label": t}
                  for i, t in enumerate(truths) if t is not None]
                 + [{"model": model, "request_id": "never", "row": 0, "label": "yes"}])
    log.close()


def test_labelled_rows_join_the_original_data_and_say_where_they_came_from(
        tmp_path: Path) -> None:
    write_log(tmp_path / "log", [[1, 2], [3, 4], [5, 6]], ["yes", None, "no"])
    original = tmp_path / "original.csv"
    original.write_text("b,a,label\n20,10,no\n40,30,yes\n")  # other column order
    dataset = from_log(tmp_path / "log", "m", {"feature_names": NAMES, "class_labels": LABELS},
                       read_csv(original))
    assert dataset.feature_names == NAMES and dataset.class_labels == LABELS
    assert dataset.features.tolist() == [[10, 20], [30, 40], [1, 2], [5, 6]]
    assert [LABELS[i] for i in dataset.labels] == ["no", "yes", "yes", "no"]
    assert dataset.provenance is not None
    assert dataset.provenance["log"]["rows"] == 2
    assert dataset.provenance["log"]["unmatched_feedback"] == 1
    assert dataset.provenance["data"]["rows"] == 2
    assert dataset.source.startswith("log ") and str(original) in dataset.source


def test_a_log_without_labels_or_with_gaps_is_refused_with_the_fix(tmp_path: Path) -> None:
    write_log(tmp_path / "unlabelled", [[1, 2]], [None])
    with pytest.raises(DataError, match="POST /v2/models/m/feedback"):
        from_log(tmp_path / "unlabelled", "m")
    write_log(tmp_path / "gaps", [[1, None], [2, 3]], ["yes", "no"])
    with pytest.raises(DataError, match="--impute"):
        from_log(tmp_path / "gaps", "m")
    assert from_log(tmp_path / "gaps", "m", impute=True).missing == 1
    other = tmp_path / "other.csv"
    other.write_text("a,c,label\n1,2,no\n3,4,yes\n")
    with pytest.raises(DataError, match="no column 'b'"):
        from_log(tmp_path / "gaps", "m", None, read_csv(other), impute=True)
    with pytest.raises(DataError, match="cannot read the prediction log"):
        from_log(tmp_path / "nowhere", "m")
