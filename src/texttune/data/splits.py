"""Carving missing splits and taking subsets, stratified and seeded.

Rows keep their source index, and every carve or subset is written into the dataset's provenance,
so a run record says exactly how its splits were formed.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from texttune.data.dataset import TextDataset
from texttune.errors import DataError

log = logging.getLogger("texttune")


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


# Enumerating word spans costs memory per span: above this many in a split a "spans" carve is refused
# (SST-2's 67k phrases have 5.5 M, IMDB's 25k reviews ~1.5 billion).
MAX_SPANS = 20_000_000


def _span_keys(words: list[str]) -> set[int]:
    """Hashes of every contiguous word span of ``words`` (the text itself included)."""
    n = len(words)
    return {hash(" ".join(words[i:j])) for i in range(n) for j in range(i + 1, n + 1)}


def split_off_whole(
    df: pd.DataFrame, size: float | int, seed: int, what: str
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Like ``split_off``, for data whose rows include word spans of other rows (SST-2's phrases are
    the nodes of each sentence's parse tree): the carved rows are *whole* texts (no other row contains
    them as a span of words), and every row that is a word span of a carved text, copies included,
    leaves the rest. Without this a carved sentence's phrases stay in train, and validation rewards
    remembering them (SST-2: 0.93 on carved phrases against 0.80 on the official sentences)."""
    words = [str(t).split() for t in df["text"].tolist()]
    total = sum(len(w) * (len(w) + 1) // 2 for w in words)
    if total > MAX_SPANS:  # refused before any span is built: bounded time and memory
        raise DataError(
            f"{what}: data.validation_carve=spans enumerates the word spans of the training texts; this "
            f"split has {total:,} (texts of up to {max(map(len, words), default=0):,} words), more than "
            f"{MAX_SPANS:,}: it is meant for phrase data such as SST-2; use data.validation_carve=rows"
        )
    keys = [hash(" ".join(w)) for w in words]  # each text as a span key
    order = sorted(range(len(df)), key=lambda i: -len(words[i]))  # longest first: containers come first
    # A text is whole when no longer one contains it; containment is transitive, so the spans of the
    # whole texts found so far decide it (each copy after the first of a text counts as contained).
    covered: set[int] = set()
    whole = np.zeros(len(df), dtype=bool)
    for i in order:
        if keys[i] in covered:
            continue
        covered |= _span_keys(words[i])
        whole[i] = True
    candidates = df.iloc[np.flatnonzero(whole)]
    rest, carved, how = split_off(candidates, size, seed, what)
    carved_spans: set[int] = set()
    for i in df.index.get_indexer(carved.index):
        carved_spans |= _span_keys(words[i])
    inside = np.fromiter((key in carved_spans for key in keys), dtype=bool, count=len(df))
    keep = ~inside
    return (df.iloc[np.flatnonzero(keep)], carved,
            f"{how}, whole texts only (of {len(candidates):,} whole among {len(df):,}); "
            f"{int(inside.sum()) - len(carved):,} train rows that are word spans of a carved text dropped")


def carve_splits(
    ds: TextDataset, validation_size: float | int, test_size: float | int | None, seed: int,
    validation_carve: str = "rows",
) -> TextDataset:
    """Add the test and validation splits a dataset lacks, carved from train.

    A dataset with only a test split (ag_news here) first gets its train carved out of that test
    split: ``test_size`` rows stay test, the rest becomes train. ``validation_carve`` "spans" carves
    validation with ``split_off_whole`` (whole texts; their word spans leave train).
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
        carve = split_off_whole if validation_carve == "spans" else split_off
        splits["train"], splits["validation"], how = carve(
            source, validation_size, seed + 1, f"{_source(ds, 'train')}: data.validation_size"
        )
        provenance["validation"] = (
            f"carved from train ({len(source):,} rows): {len(splits['validation']):,} rows, {how}"
        )
        if "train" in files:
            files["validation"] = files["train"]
        provenance["train"] = (f"{provenance.get('train', 'official')}, minus the carved validation"
                               + (" and its word spans" if validation_carve == "spans" else ""))
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


def few_shot_sample(ds: TextDataset, per_class: int, seed: int) -> TextDataset:
    """``data.few_shot``: ``per_class`` training rows of each class, drawn without replacement by a seeded
    generator (source order kept); a class with fewer keeps all its rows and a note says so. Validation and
    test are untouched: they were carved before, so the sample never decides what the model is scored on."""
    if "train" not in ds.splits or "label" not in ds.splits["train"].columns:
        raise DataError("data.few_shot samples labelled training rows; this dataset has none")
    if ds.multi_label:
        raise DataError("data.few_shot: N examples per class is not defined for label sets (data.multi_label)")
    source = ds.splits["train"]
    labels = source["label"].to_numpy()
    rng = np.random.default_rng(seed)
    chosen, short = [], []
    for label in range(ds.num_labels):  # label order, so the draw does not depend on row order per class
        rows = np.flatnonzero(labels == label)
        if len(rows) < per_class:
            short.append(f"{ds.label_names[label]!r} ({len(rows)})")
        chosen.append(rows if len(rows) <= per_class else rng.choice(rows, size=per_class, replace=False))
    sample = source.iloc[np.sort(np.concatenate(chosen))]
    provenance = dict(ds.provenance)
    provenance["train"] = (f"{provenance.get('train', 'official')}; few-shot sample of {per_class} per class: "
                           f"{len(sample):,} of {len(source):,} rows (seed {seed})")
    out = _replace(ds, {**ds.splits, "train": sample}, provenance)
    if short:
        note = (f"data.few_shot.per_class={per_class}: {len(short)} class(es) have fewer training rows and keep "
                f"all of them: {', '.join(short)}")
        log.warning("%s", note)
        out.notes.append(note)
    return out


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


# --------------------------------------------------------------------------- k-fold (data.cv)


def duplicate_groups(df: pd.DataFrame) -> np.ndarray:
    """One group id per row: rows whose text (and pair) are equal once case, whitespace and punctuation
    are normalised -- as the data checks compare them -- share an id; a blank text is a group of its own."""
    from texttune.data.checks import _normalize  # the checks' normalisation: what they call a duplicate

    keys = [_normalize(str(t)) for t in df["text"].fillna("")]
    if "text_pair" in df.columns:
        keys = [f"{k}\x00{_normalize(str(p))}" for k, p in zip(keys, df["text_pair"].fillna(""))]
    codes = pd.factorize(pd.Series(keys, dtype=object))[0].astype(np.int64)
    blank = np.asarray([not k.strip("\x00 ") for k in keys], dtype=bool)
    codes[blank] = codes.max(initial=0) + 1 + np.flatnonzero(blank)
    return codes


def fold_positions(df: pd.DataFrame, folds: int, seed: int, group_duplicates: bool = False) -> list[np.ndarray]:
    """The sorted row positions of each of ``folds`` stratified folds of ``df``: disjoint, together every
    row once. Stratified on ``label`` (StratifiedKFold: class counts per fold within one row); with
    ``group_duplicates`` the copies of a text stay in one fold (StratifiedGroupKFold, stratified as far as
    the groups allow)."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    labels = df["label"].to_numpy() if "label" in df.columns else np.zeros(len(df), dtype=np.int64)
    groups = duplicate_groups(df) if group_duplicates else None
    units = len(np.unique(groups)) if groups is not None else len(df)
    if units < folds:
        what = "distinct texts" if group_duplicates else "rows"
        raise DataError(f"data.cv.folds: {folds} folds need at least {folds} {what}, the data has {units}")
    if groups is not None:
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        parts = splitter.split(np.zeros(len(df)), labels, groups)
    else:
        parts = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(df)), labels)
    with warnings.catch_warnings():  # "the least populated class has fewer members than n_splits": fine
        warnings.simplefilter("ignore", UserWarning)
        return [np.sort(test) for _, test in parts]


def cv_splits(ds: TextDataset, folds: int, fold: int, seed: int, group_duplicates: bool = False) -> TextDataset:
    """Train and test of fold ``fold``: the labelled data (train, and validation when the source has one)
    cut into ``folds`` folds; ``fold`` is the test split, the others are train (validation is carved from
    them afterwards, as for any dataset without one). A source with an official test split is refused:
    k-fold is for data without one, and training on an official test split would spoil it."""
    if "test" in ds.splits:
        where = ds.files.get("test", f"dataset '{ds.name}'")
        raise DataError(f"data.cv: {where} is an official test split ({len(ds.splits['test']):,} rows); k-fold is "
                        "for data without one: score on that test split (unset data.cv), or give all the "
                        "labelled data as data.train_file")
    if "train" not in ds.splits:
        raise DataError(f"data.cv: dataset '{ds.name}' has no train split to cut into folds")
    pooled, what = _pool(ds)
    parts = fold_positions(pooled, folds, seed, group_duplicates)
    test = np.zeros(len(pooled), dtype=bool)
    test[parts[fold]] = True
    how = (f"{'stratified-group (duplicates kept together)' if group_duplicates else 'stratified'} {folds}-fold, "
           f"seed {seed}")
    splits = {"train": pooled.iloc[~test], "test": pooled.iloc[test]}
    provenance = {"train": f"k-fold over {what} ({len(pooled):,} rows): the folds but {fold} of {folds} ({how}): "
                           f"{int((~test).sum()):,} rows",
                  "test": f"k-fold over {what} ({len(pooled):,} rows): fold {fold} of {folds} ({how}): "
                          f"{int(test.sum()):,} rows"}
    files = {k: v for k, v in ds.files.items() if k != "validation"}
    if "train" in files:
        files["test"] = files["train"]
    return _replace(ds, splits, provenance, files)


def _pool(ds: TextDataset) -> tuple[pd.DataFrame, str]:
    """All labelled rows (train, then validation) with distinct indices: validation rows are numbered on
    after train's, so every example keeps one id across folds (the leaderboard pools by it)."""
    train = ds.splits["train"]
    if "validation" not in ds.splits:
        return train, "train"
    validation = ds.splits["validation"].copy()
    start = int(train.index.max()) + 1 if len(train) else 0
    validation.index = pd.RangeIndex(start, start + len(validation))
    return pd.concat([train, validation]), f"train + validation (validation rows numbered from {start:,})"
