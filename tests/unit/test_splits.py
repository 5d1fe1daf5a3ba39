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


# --------------------------------------------------------------------------- k-fold (data.cv)


def cv_frame(n_per_class=(31, 17, 12)) -> pd.DataFrame:
    labels = [i for i, n in enumerate(n_per_class) for _ in range(n)]
    return pd.DataFrame({"text": [f"text {i}" for i in range(len(labels))], "label": labels})


def test_folds_are_disjoint_cover_every_row_once_and_are_stratified():
    from texttune.data.splits import fold_positions

    frame = cv_frame()
    parts = fold_positions(frame, 5, seed=0)
    assert len(parts) == 5
    joined = sorted(int(i) for part in parts for i in part)
    assert joined == list(range(len(frame)))  # disjoint, and together every row exactly once
    for label, total in frame["label"].value_counts().items():
        counts = [int((frame["label"].iloc[part] == label).sum()) for part in parts]
        assert max(counts) - min(counts) <= 1 and sum(counts) == total  # class shares within one row


def test_folds_are_deterministic_per_seed():
    from texttune.data.splits import fold_positions

    a, b = fold_positions(cv_frame(), 4, seed=3), fold_positions(cv_frame(), 4, seed=3)
    c = fold_positions(cv_frame(), 4, seed=4)
    assert all((x == y).all() for x, y in zip(a, b))
    assert any(len(x) != len(y) or (x != y).any() for x, y in zip(a, c))


def test_group_duplicates_keeps_every_copy_of_a_text_in_one_fold():
    from texttune.data.splits import duplicate_groups, fold_positions

    frame = cv_frame()
    frame.loc[[0, 5, 40], "text"] = ["Same text", "same  text!", "SAME TEXT"]  # equal once normalised
    frame.loc[[1, 2], "text"] = ["twice", "twice"]
    groups = duplicate_groups(frame)
    assert groups[0] == groups[5] == groups[40] and groups[1] == groups[2] and groups[0] != groups[1]
    for seed in range(5):
        parts = fold_positions(frame, 3, seed=seed, group_duplicates=True)
        fold_of = {int(i): k for k, part in enumerate(parts) for i in part}
        assert len(fold_of) == len(frame)
        assert fold_of[0] == fold_of[5] == fold_of[40] and fold_of[1] == fold_of[2]


def test_cv_splits_make_the_fold_the_test_split_and_pool_train_with_validation():
    from texttune.data.splits import cv_splits

    ds = make((30, 30), splits=("train", "validation"))
    out = cv_splits(ds, folds=3, fold=2, seed=0)
    assert set(out.splits) == {"train", "test"}
    assert len(out.splits["test"]) == 40 and len(out.splits["train"]) == 80
    ids = list(out.splits["train"].index) + list(out.splits["test"].index)
    assert sorted(ids) == list(range(120))  # validation rows numbered on after train's: one id per example
    assert "fold 2 of 3" in out.provenance["test"] and "train + validation" in out.provenance["test"]
    carved = carve_splits(out, 0.1, None, seed=0)  # validation carved from the other folds, as ever
    assert {s: len(df) for s, df in carved.splits.items()} == {"train": 72, "validation": 8, "test": 40}


def test_cv_refuses_a_dataset_with_an_official_test_split():
    from texttune.data.splits import cv_splits

    with pytest.raises(DataError, match=r"data.cv: /data/test.csv is an official test split"):
        cv_splits(make(splits=("train", "test")), folds=3, fold=0, seed=0)


def test_cv_settings_are_checked_by_key():
    from pydantic import ValidationError

    from texttune.config import DataConfig

    with pytest.raises(ValidationError, match="fold 5 is not one of the 5 folds"):
        DataConfig(train_file="x.csv", cv={"folds": 5, "fold": 5})
    with pytest.raises(ValidationError, match="greater than or equal to 2"):
        DataConfig(train_file="x.csv", cv={"folds": 1})
    with pytest.raises(ValidationError, match="data.test_file cannot be set"):
        DataConfig(train_file="x.csv", test_file="y.csv", cv={"folds": 3, "fold": 0})


def phrase_data() -> TextDataset:
    """SST-2's shape: whole sentences plus phrases (word spans) of them, and one copy of a sentence."""
    sentences = [f"film {i} is {'good' if i % 2 else 'bad'} and {'fun' if i % 2 else 'dull'} ." for i in range(40)]
    rows, labels = [], []
    for i, s in enumerate(sentences):
        words = s.split()
        for text in (s, " ".join(words[:3]), " ".join(words[2:4]), words[3]):
            rows.append(text)
            labels.append(i % 2)
    rows.append(sentences[5])  # a copy of a whole sentence
    labels.append(1)
    frame = pd.DataFrame({"text": rows, "label": labels})
    return TextDataset(name="phrases", splits={"train": frame}, label_names=["neg", "pos"],
                       provenance={"train": "official"}, files={"train": "/data/train.csv"})


def test_spans_carve_takes_whole_texts_and_drops_their_phrases_from_train():
    ds = carve_splits(phrase_data(), validation_size=8, test_size=0, seed=0, validation_carve="spans")
    validation, train = ds.splits["validation"], ds.splits["train"]
    assert len(validation) == 8 and all(t.startswith("film ") and t.endswith(" .") for t in validation["text"])
    assert set(validation["label"]) == {0, 1}
    # No training row is a word span of a validation sentence (the copy of sentence 5 included) ...
    for sentence in validation["text"]:
        padded = f" {sentence} "
        assert not any(f" {t} " in padded for t in train["text"]), sentence
    # ... while the other sentences keep their phrases, and nothing is in two splits.
    assert set(train.index).isdisjoint(validation.index)
    assert len(train) < len(phrase_data().splits["train"]) - 8
    assert "whole texts only (of 40 whole among 161)" in ds.provenance["validation"]
    assert ds.provenance["train"].endswith("minus the carved validation and its word spans")


def test_rows_carve_keeps_phrases_of_validation_texts_in_train():
    ds = carve_splits(phrase_data(), validation_size=8, test_size=0, seed=0)
    validation, train = ds.splits["validation"], ds.splits["train"]
    assert len(train) + len(validation) == 161


def test_spans_carve_refuses_long_texts_by_key(monkeypatch):
    import texttune.data.splits as splits

    monkeypatch.setattr(splits, "MAX_SPANS", 100)
    with pytest.raises(DataError, match="data.validation_carve=spans .* use data.validation_carve=rows"):
        carve_splits(phrase_data(), validation_size=8, test_size=0, seed=0, validation_carve="spans")


def test_spans_carve_on_your_own_csv_through_the_data_config(tmp_path):
    """The README's promise as a user meets it: a CSV of sentences and their phrases, one key."""
    from texttune.config import DataConfig
    from texttune.data.load import load_dataset

    frame = phrase_data().splits["train"]
    path = tmp_path / "train.csv"
    frame.assign(label=frame["label"].map({0: "neg", 1: "pos"})).to_csv(path, index=False)
    ds = load_dataset(DataConfig(train_file=path, validation_size=8, test_size=0, validation_carve="spans"))
    validation, train = ds.splits["validation"], ds.splits["train"]
    assert len(validation) == 8 and all(t.endswith(" .") for t in validation["text"])
    assert not any(f" {t} " in f" {s} " for s in validation["text"] for t in train["text"])
    assert "whole texts only" in ds.provenance["validation"]
    plain = load_dataset(DataConfig(train_file=path, validation_size=8, test_size=0))
    assert len(plain.splits["train"]) + len(plain.splits["validation"]) == 161  # rows: the default for files
