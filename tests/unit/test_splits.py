"""Carved splits and subsets: sizes, stratification, determinism, provenance."""

from __future__ import annotations

import pandas as pd
import pytest

from texttune.data.dataset import TextDataset
from texttune.data.splits import carve_splits, take_subsets
from texttune.errors import DataError


def make(n_per_class=(80, 20), splits=("train",)) -> TextDataset:
    labels = [i for i, n in enumerate(n_per_class) for _ in range(n)]
    frame = pd.DataFrame({"text": [f"text {i}" for i in range(len(labels))], "label": labels})
    return TextDataset(
        name="toy", splits={s: frame.copy() for s in splits}, label_names=["a", "b"][: len(n_per_class)],
        provenance={s: "official" for s in splits}, files={s: f"/data/{s}.csv" for s in splits},
    )


def test_carve_validation_and_test_from_train_stratified():
    ds = carve_splits(make(), validation_size=0.1, test_size=0.2, seed=0)
    sizes = {s: len(df) for s, df in ds.splits.items()}
    assert sizes == {"train": 72, "validation": 8, "test": 20}
    # Class shares hold in every split (80/20).
    assert ds.splits["test"]["label"].value_counts().to_dict() == {0: 16, 1: 4}
    assert ds.splits["validation"]["label"].value_counts().to_dict() == {0: 6, 1: 2} or \
        ds.splits["validation"]["label"].value_counts().to_dict() == {0: 7, 1: 1}
    # No row lands in two splits; together they are the source.
    indices = [set(df.index) for df in ds.splits.values()]
    assert sum(map(len, indices)) == 100 and len(set.union(*indices)) == 100
    assert "carved from train (100 rows): 20 rows, stratified, seed 0" in ds.provenance["test"]
    assert ds.files["validation"] == "/data/train.csv"


def test_carving_is_deterministic_and_seeded():
    a = carve_splits(make(), 0.1, 0.2, seed=1)
    b = carve_splits(make(), 0.1, 0.2, seed=1)
    c = carve_splits(make(), 0.1, 0.2, seed=2)
    assert list(a.splits["test"].index) == list(b.splits["test"].index)
    assert list(a.splits["test"].index) != list(c.splits["test"].index)
    # Source order is kept inside each split.
    assert list(a.splits["train"].index) == sorted(a.splits["train"].index)


def test_row_count_sizes_and_no_test_when_zero():
    ds = carve_splits(make(), validation_size=10, test_size=0, seed=0)
    assert set(ds.splits) == {"train", "validation"} and len(ds.splits["validation"]) == 10


def test_only_test_split_is_carved_into_train_and_test():
    ds = carve_splits(make(splits=("test",)), validation_size=0.1, test_size=30, seed=0)
    assert {s: len(df) for s, df in ds.splits.items()} == {"train": 63, "validation": 7, "test": 30}
    assert ds.provenance["test"].startswith("carved from the official test split (100 rows): 30 rows")
    assert ds.files["train"] == "/data/test.csv"


def test_existing_splits_are_kept_as_they_are():
    ds = carve_splits(make(splits=("train", "validation", "test")), 0.1, 0.1, seed=0)
    assert all(len(df) == 100 for df in ds.splits.values())
    assert ds.provenance == {"train": "official", "validation": "official", "test": "official"}


def test_too_large_carve_is_a_clear_error():
    with pytest.raises(DataError, match=r"^/data/train.csv: data.test_size: cannot carve 100 out of 100 rows"):
        carve_splits(make(), 0.1, 100, seed=0)


def test_rare_class_falls_back_to_random_split():
    ds = carve_splits(make(n_per_class=(99, 1)), 0.1, 0.1, seed=0)
    assert "random" in ds.provenance["test"]


def test_subsets_are_stratified_and_recorded():
    ds = take_subsets(make(), {"train": 10, "test": None}, seed=0)
    assert ds.splits["train"]["label"].value_counts().to_dict() == {0: 8, 1: 2}
    assert ds.provenance["train"] == "official; subset of 10 rows (stratified, seed 0)"
    unchanged = take_subsets(make(), {"train": 1000}, seed=0)
    assert len(unchanged.splits["train"]) == 100 and unchanged.provenance["train"] == "official"
