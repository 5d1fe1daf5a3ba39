"""Carving missing splits and taking subsets, stratified and seeded.

Rows keep their source index, and every carve or subset is written into the dataset's provenance,
so a run record says exactly how its splits were formed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from texttune.data.dataset import TextDataset
from texttune.errors import DataError


def _stratify_labels(df: pd.DataFrame, size: int) -> np.ndarray | None:
    """Labels to stratify on, or None when stratification is impossible (too few per class)."""
    if "label" not in df.columns:
        return None
    labels = df["label"].to_numpy()
    counts = pd.Series(labels).value_counts()
    n_classes = len(counts)
    if counts.min() < 2 or size < n_classes or len(df) - size < n_classes:
        return None
    return labels


def _size(size: float | int, total: int, what: str) -> int:
    rows = int(round(size * total)) if isinstance(size, float) and size < 1 else int(size)
    if rows <= 0 or rows >= total:
        raise DataError(
            f"{what}: cannot carve {size} out of {total} rows (need at least 1 row on each side)"
        )
    return rows


def split_off(df: pd.DataFrame, size: float | int, seed: int, what: str) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Split ``df`` into (rest, carved) with ``size`` rows (or share) carved. Both keep source order."""
    rows = _size(size, len(df), what)
    stratify = _stratify_labels(df, rows)
    rest_idx, carved_idx = train_test_split(
        np.arange(len(df)), test_size=rows, random_state=seed, stratify=stratify
    )
    how = "stratified" if stratify is not None else "random"
    return df.iloc[np.sort(rest_idx)], df.iloc[np.sort(carved_idx)], f"{how}, seed {seed}"


def carve_splits(
    ds: TextDataset, validation_size: float | int, test_size: float | int | None, seed: int
) -> TextDataset:
    """Add the test and validation splits a dataset lacks, carved from train.

    A dataset with only a test split (ag_news here) first gets its train carved out of that test
    split: ``test_size`` rows stay test, the rest becomes train.
    """
    splits = dict(ds.splits)
    provenance = dict(ds.provenance)
    files = dict(ds.files)
    test_size = test_size if test_size is not None else 0.1
    if "train" not in splits:
        if "test" not in splits:
            raise DataError(f"dataset '{ds.name}' has neither a train nor a test split")
        source = splits.pop("test")
        train, test, how = split_off(source, test_size, seed, f"{_source(ds, 'test')}: data.test_size")
        splits["train"], splits["test"] = train, test
        if "test" in files:
            files["train"] = files["test"]
        provenance["train"] = f"carved from the official test split ({len(source):,} rows): {len(train):,} rows, {how}"
        provenance["test"] = f"carved from the official test split ({len(source):,} rows): {len(test):,} rows, {how}"
    elif "test" not in splits and test_size != 0:
        source = splits["train"]
        what = f"{_source(ds, 'train')}: data.test_size"
        splits["train"], splits["test"], how = split_off(source, test_size, seed, what)
        provenance["test"] = f"carved from train ({len(source):,} rows): {len(splits['test']):,} rows, {how}"
        if "train" in files:
            files["test"] = files["train"]
        provenance["train"] = f"{provenance.get('train', 'official')}, minus the carved test"
    if "validation" not in splits:
        source = splits["train"]
        splits["train"], splits["validation"], how = split_off(
            source, validation_size, seed + 1, f"{_source(ds, 'train')}: data.validation_size"
        )
        provenance["validation"] = (
            f"carved from train ({len(source):,} rows): {len(splits['validation']):,} rows, {how}"
        )
        if "train" in files:
            files["validation"] = files["train"]
        provenance["train"] = f"{provenance.get('train', 'official')}, minus the carved validation"
    ordered = {s: splits[s] for s in ("train", "validation", "test") if s in splits}
    return _replace(ds, ordered, provenance, files)


def _source(ds: TextDataset, split: str) -> str:
    """What a carving message names: the split's file (the user's own data), else the dataset."""
    return ds.files.get(split, ds.name)


def take_subsets(ds: TextDataset, limits: dict[str, int | None], seed: int) -> TextDataset:
    """Stratified subsets of at most ``limits[split]`` rows (source order kept)."""
    splits = dict(ds.splits)
    provenance = dict(ds.provenance)
    for split, limit in limits.items():
        if limit is None or split not in splits or len(splits[split]) <= limit:
            continue
        source = splits[split]
        _, subset, how = split_off(source, int(limit), seed, f"data.max_{split}_samples")
        splits[split] = subset
        provenance[split] = f"{provenance.get(split, 'official')}; subset of {len(subset):,} rows ({how})"
    return _replace(ds, splits, provenance)


def _replace(
    ds: TextDataset,
    splits: dict[str, pd.DataFrame],
    provenance: dict[str, str],
    files: dict[str, str] | None = None,
) -> TextDataset:
    return TextDataset(
        name=ds.name, splits=splits, label_names=ds.label_names, task=ds.task,
        provenance=provenance, files=dict(files if files is not None else ds.files),
        notes=list(ds.notes), label_source=ds.label_source, multi_label=ds.multi_label,
    )
