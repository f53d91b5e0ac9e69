"""modelrepo.drift: training statistics, their check in metadata.json, bin counts and the PSI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import modelrepo
from modelrepo.drift import BinCounter, feature_statistics, psi, reading, statistics_of
from tests.support.models import linear_model_bytes, linear_metadata


def test_statistics_record_count_moments_range_and_decile_bins() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(5, 2, (1000, 2))
    x[:10, 1] = np.nan
    stats = feature_statistics(x, ["u", "v"])
    first, second = stats["features"]
    assert stats["rows"] == 1000 and stats["quantiles"] == 10
    assert first["name"] == "u" and first["count"] == 1000 and first["missing"] == 0
    assert second["count"] == 990 and second["missing"] == 10
    assert first["mean"] == pytest.approx(x[:, 0].mean()) and first["min"] == x[:, 0].min()
    assert len(first["edges"]) == 9 and first["edges"] == sorted(first["edges"])
    assert first["fractions"] == pytest.approx([0.1] * 10, abs=0.002)
    assert sum(second["fractions"]) == pytest.approx(1.0)
    json.dumps(stats, allow_nan=False)  # metadata.json holds no NaN


def test_a_feature_with_few_values_has_fewer_bins_and_an_empty_one_none() -> None:
    x = np.array([[0.0, np.nan], [1.0, np.nan], [1.0, np.nan], [1.0, np.nan]])
    binary, empty = feature_statistics(x, ["flag", "never"])["features"]
    assert binary["edges"] == [1.0] and binary["fractions"] == [0.25, 0.75]
    assert empty["count"] == 0 and empty["edges"] == [] and empty["fractions"] == [1.0]
    assert empty["mean"] is None and empty["min"] is None


def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    assert psi([0.5, 0.5], [50, 50]) == pytest.approx(0.0)
    assert psi([0.5, 0.5], [0, 0]) == 0.0
    # the textbook figure: 0.1 -> 0.2 and back over two bins
    assert psi([0.25, 0.75], [50, 50]) == pytest.approx(
        0.25 * math.log(0.5 / 0.25) + (-0.25) * math.log(0.5 / 0.75))
    assert psi([0.5, 0.5], [100, 0]) > 1  # an empty bin is floored, not infinite
    assert [reading(v) for v in (0.05, 0.1, 0.2, 0.3)] == \
        ["stable", "moderate", "moderate", "significant"]
    with pytest.raises(ValueError):
        psi([1.0], [1, 2])


def test_counter_counts_single_rows_as_batches_do_and_finds_the_shift() -> None:
    rng = np.random.default_rng(1)
    train = rng.normal(0, 1, (2000, 3)).astype(np.float32)
    stats = feature_statistics(train, ["a", "b", "c"])
    served = rng.normal(0, 1, (3000, 3)).astype(np.float32)
    served[:, 0] += 1.5  # a drifts
    served[5, 2] = np.nan
    one_by_one, batched = BinCounter(stats), BinCounter(stats)
    for i in range(len(served)):
        one_by_one.add(served[i:i + 1])
    batched.add(served)
    one_by_one.merge()
    assert (one_by_one.counts == batched.counts).all()
    assert (one_by_one.out_of_range == batched.out_of_range).all()
    assert one_by_one.rows == batched.rows == 3000
    assert batched.missing.tolist() == [0, 0, 1]
    a, b, c = batched.psi()
    assert a > 0.25 and b < 0.1 and c < 0.1, (a, b, c)
    assert batched.out_of_range[0] > batched.out_of_range[1]
    wide = feature_statistics(rng.normal(0, 1, (500, 64)), [f"f{i}" for i in range(64)])
    wide_counter = BinCounter(wide)  # wider than the scalar path: numpy even for one row
    wide_counter.add(np.zeros((1, 64), dtype=np.float32))
    assert wide_counter.rows == 1 and wide_counter.counts.sum() == 64


def test_metadata_check_accepts_statistics_and_refuses_broken_ones(tmp_path: Path) -> None:
    metadata = linear_metadata(2, 2)
    stats = feature_statistics(np.random.default_rng(2).normal(0, 1, (50, 2)), ["f0", "f1"])
    published = modelrepo.publish_version(tmp_path, "m", linear_model_bytes(2, 2),
                                          {**metadata, "data": {"statistics": stats}})
    read, _ = modelrepo.read_version(published.path)
    assert statistics_of(read) == stats
    assert statistics_of(metadata) is None  # versions from before have none: fine
    for broken in ({"features": stats["features"][:1]},
                   {"features": [{**stats["features"][0], "edges": [2.0, 1.0]},
                                 stats["features"][1]]},
                   {"features": [{**stats["features"][0], "fractions": [1.0]},
                                 stats["features"][1]]},
                   {"features": [stats["features"][1], stats["features"][0]]},
                   "deciles"):
        with pytest.raises(modelrepo.BrokenVersion, match="data.statistics"):
            modelrepo.check_metadata({**read, "data": {"statistics": broken}}, tmp_path)
