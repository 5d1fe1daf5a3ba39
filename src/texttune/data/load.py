"""One entry point from a ``DataConfig`` to checked, split data."""

from __future__ import annotations

from pathlib import Path

from texttune.config import DataConfig, default_data_dir
from texttune.data.builtin import DATASETS, load_builtin
from texttune.data.dataset import TextDataset
from texttune.data.files import load_files
from texttune.data.splits import carve_splits, take_subsets


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
    else:
        ds = load_files(cfg)
        default_test = default_validation = None
    if not carve:
        return ds
    test_size = cfg.test_size if cfg.test_size is not None else default_test
    validation_size = cfg.validation_size if cfg.validation_size is not None else default_validation
    ds = carve_splits(ds, validation_size or 0.1, test_size, cfg.split_seed)
    return take_subsets(
        ds,
        {"train": cfg.max_train_samples, "validation": cfg.max_validation_samples,
         "test": cfg.max_test_samples},
        cfg.split_seed,
    )


def prepare_data(cfg: DataConfig):  # -> tuple[TextDataset, CheckReport, dict]
    """Load, then run the data checks and apply the configured policy (warn, drop or fail)."""
    from texttune.data.checks import apply_policy, run_checks

    ds = load_dataset(cfg)
    report = run_checks(ds, cfg.checks)
    ds, dropped = apply_policy(ds, report, cfg.checks)
    return ds, report, dropped
