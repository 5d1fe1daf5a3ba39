"""One entry point from a ``DataConfig`` to checked, split data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from texttune.config import DataConfig, default_data_dir
from texttune.data.builtin import DATASETS, load_builtin
from texttune.data.dataset import TextDataset
from texttune.data.files import load_files
from texttune.data.splits import carve_splits, cv_splits, few_shot_sample, take_subsets
from texttune.errors import DataError

# data.min_rows_per_label (default 2): under two training rows per label on average, most labels have a
# single example -- the label column is then almost surely an id or free text, and every record that
# scales with the classes (metrics, plots) grows with the rows instead.


def data_dir_of(cfg: DataConfig) -> Path:
    return Path(cfg.data_dir).expanduser() if cfg.data_dir else default_data_dir()


def load_dataset(cfg: DataConfig, carve: bool = True) -> TextDataset:
    """Read the source (built-in or files), carve missing splits, take subsets. No checks yet.

    ``carve=False`` returns the splits as the source has them (what ``data check`` looks at by
    default, so its counts match the dataset's own documentation).
    """
    if cfg.dataset is not None:
        ds = load_builtin(cfg.dataset, data_dir_of(cfg), cfg.hub_fallback)
        spec = DATASETS.get(cfg.dataset)
        default_test, default_validation = spec.default_test_size, spec.default_validation_size
        default_carve = spec.default_validation_carve
    else:
        ds = load_files(cfg)
        default_test = default_validation = None
        default_carve = "rows"
    if cfg.clean_text:
        ds = repair_texts(ds)
    if not carve:
        return ds
    test_size = cfg.test_size if cfg.test_size is not None else default_test
    validation_size = cfg.validation_size if cfg.validation_size is not None else default_validation
    if cfg.cv is not None:  # fold data.cv.fold is the test split; validation is carved below as ever
        ds = cv_splits(ds, cfg.cv.folds, cv_fold(cfg), cv_seed(cfg), cfg.cv.group_duplicates)
    ds = carve_splits(ds, validation_size or 0.1, test_size, cfg.split_seed,
                      cfg.validation_carve or default_carve)
    ds = take_subsets(
        ds,
        {"train": cfg.max_train_samples, "validation": cfg.max_validation_samples,
         "test": cfg.max_test_samples},
        cfg.split_seed,
    )
    if cfg.few_shot is not None:
        seed = cfg.few_shot.seed if cfg.few_shot.seed is not None else cfg.split_seed
        ds = few_shot_sample(ds, cfg.few_shot.per_class, seed)
    return ds


def cv_seed(cfg: DataConfig) -> int:
    """The seed of the folds: data.cv.seed, else data.split_seed."""
    return cfg.cv.seed if cfg.cv.seed is not None else cfg.split_seed


def cv_fold(cfg: DataConfig) -> int:
    if cfg.cv.fold is None:
        raise DataError(f"data.cv.fold: a run trains on one fold: set data.cv.fold (0..{cfg.cv.folds - 1}); "
                        "texttune compare without it runs every fold")
    return cfg.cv.fold


def cv_record(cfg: DataConfig) -> dict | None:
    """What data.json records of the k-fold protocol (None without data.cv)."""
    if cfg.cv is None:
        return None
    return {"fold": cfg.cv.fold, "folds": cfg.cv.folds, "seed": cv_seed(cfg),
            "group_duplicates": cfg.cv.group_duplicates}


def repair_texts(ds: TextDataset) -> TextDataset:
    """``data.clean_text``: every text (and pair) with its entity remnants and mojibake repaired, before
    anything reads it (checks, carving, the vocabulary); a note says how many changed."""
    from texttune.data.text_damage import repair_column

    splits, changed = {}, 0
    for name, frame in ds.splits.items():
        frame = frame.copy()
        for column in ("text", "text_pair"):
            if column in frame.columns:
                frame[column], count = repair_column(frame[column])
                changed += count
        splits[name] = frame
    note = f"data.clean_text repaired HTML entities or mojibake in {changed:,} texts"
    return replace(ds, splits=splits, notes=[*ds.notes, note] if changed else list(ds.notes))


def prepare_data(cfg: DataConfig, announce: Callable[[str], None] | None = None):
    """Load, then run the data checks and apply the configured policy (warn, drop or fail); ``announce``
    hears each step as it starts (-> tuple[TextDataset, CheckReport, dict])."""
    from texttune.data.checks import apply_policy, run_checks

    announce = announce or (lambda message: None)
    announce(f"loading data: {describe_source(cfg)} ...")
    ds = load_dataset(cfg)
    sizes = ", ".join(f"{split} {len(ds.splits[split]):,}" for split in ds.split_names())
    announce(f"checking data: {sizes} rows (policy {cfg.checks.policy}) ...")
    report = run_checks(ds, cfg.checks)
    ds, dropped = apply_policy(ds, report, cfg.checks)
    check_trainable(ds, cfg)
    return ds, report, dropped


def describe_source(cfg: DataConfig) -> str:
    """The data a config names, for messages: a built-in's name or the training file."""
    return cfg.dataset if cfg.dataset is not None else str(cfg.train_file)


def check_trainable(ds: TextDataset, cfg: DataConfig) -> None:
    """Refuse a training split no classifier can be trained and evaluated on, before any training:
    a single label (the first evaluation would fail), or far more labels than rows."""
    if not ds.has_labels or "train" not in ds.splits:
        return
    for split in ("train", "validation"):  # the drop policy can empty a split
        if split in ds.splits and len(ds.splits[split]) == 0:
            raise DataError(f"{ds.where(split)}: no {split} rows left after the data checks (policy "
                            f"{cfg.checks.policy}); texttune data check shows what they found")
    train = ds.splits["train"]
    labels = train["label"].to_numpy()
    if ds.multi_label:  # every label present in some training row: label_set, not the stratification key
        labels = np.asarray(sorted({i for labels in train["label_set"] for i in labels}), dtype=np.int64)
    present = np.unique(labels[labels >= 0])  # missing/unknown (< 0) stopped or dropped by the checks
    where, subset = ds.where("train"), _subset_note(ds, cfg)
    if len(present) == 1:
        only = ds.label_names[int(present[0])]
        raise DataError(f"{where}: the training split has only one label ({only!r}){subset}; "
                        "a classifier needs at least two")
    minimum = cfg.min_rows_per_label
    if minimum and len(train) < minimum * ds.num_labels:
        column = f" ('{cfg.label_column}')" if cfg.train_file is not None else ""
        override = "data.min_rows_per_label=0 to train anyway"
        advice = (f"raise data.max_train_samples, or set {override}" if subset
                  else f"is the label column{column} an id or free text? Set {override}")
        raise DataError(f"{where}: {ds.num_labels:,} labels for {len(train):,} training rows{subset}, fewer "
                        f"than {minimum:g} rows per label on average: {advice}")


def _subset_note(ds: TextDataset, cfg: DataConfig) -> str:
    subset = cfg.max_train_samples is not None and "subset" in ds.provenance.get("train", "")
    return f" (after data.max_train_samples={cfg.max_train_samples})" if subset else ""
