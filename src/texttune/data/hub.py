"""Fetch a built-in dataset from the Hugging Face Hub into texttune's prepared layout.

This is the path for online users whose data folder lacks a built-in. It downloads the Hub's
Parquet export of the dataset (revision ``refs/convert/parquet``, which exists for every public
dataset, script-based ones included), renames columns, writes ``labels.txt`` from the ClassLabel
names stored in the Parquet metadata, and writes ``<split>.parquet`` files. Offline it fails with one
message saying where to put the files instead.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from texttune.errors import DataError
from texttune.io import apply_umask

if TYPE_CHECKING:
    from texttune.data.builtin import BuiltinDataset

HUB_SPLITS = {"train": "train", "validation": "validation", "test": "test", "dev": "validation"}


def _where_to_put(spec: BuiltinDataset, folder: Path) -> str:
    return (
        f"put the prepared files ({{train,validation,test}}.parquet and labels.txt, see the README's "
        f"'Data' section) in {folder}/, or point TEXTTUNE_DATA_DIR (or data.data_dir) at a folder "
        f"that holds '{spec.folder}/'"
    )


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on") or \
        os.environ.get("HF_DATASETS_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def fetch_from_hub(spec: BuiltinDataset, folder: Path, enabled: bool = True) -> None:
    missing = f"dataset '{spec.name}' is not in the data folder ({folder} has no split files)"
    if spec.hub is None:
        raise DataError(f"{missing} and it has no Hugging Face Hub source; {_where_to_put(spec, folder)}")
    if not enabled:
        raise DataError(f"{missing} and data.hub_fallback is off; {_where_to_put(spec, folder)}")
    if _offline():
        raise DataError(
            f"{missing}, and downloading '{spec.hub.repo_id}' from the Hugging Face Hub is not "
            f"possible offline (HF_HUB_OFFLINE is set); {_where_to_put(spec, folder)}"
        )
    try:
        from huggingface_hub import snapshot_download

        snapshot = snapshot_download(
            spec.hub.repo_id,
            repo_type="dataset",
            revision="refs/convert/parquet",
            allow_patterns=[f"{spec.hub.config}/*", f"{spec.hub.config}/**"],
        )
    except Exception as err:  # network, auth, missing repo: all end the same way for the user
        raise DataError(
            f"{missing}, and downloading '{spec.hub.repo_id}' from the Hugging Face Hub failed "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
            f"{_where_to_put(spec, folder)}"
        ) from None
    convert_hub_export(spec, Path(snapshot) / spec.hub.config, folder)


def _split_of(path: Path, root: Path) -> str | None:
    parts = path.relative_to(root).parts
    for part in parts[:-1]:
        if part in HUB_SPLITS:
            return HUB_SPLITS[part]
    stem = path.stem  # older exports: "<dataset>-train.parquet" or "train-00000-of-00001.parquet"
    for token in stem.replace("_", "-").split("-"):
        if token in HUB_SPLITS:
            return HUB_SPLITS[token]
    return None


def convert_hub_export(spec: BuiltinDataset, export_dir: Path, folder: Path) -> None:
    """Turn a Hub Parquet export into ``folder/<split>.parquet`` + label files, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    assert spec.hub is not None
    by_split: dict[str, list[Path]] = {}
    for path in sorted(export_dir.rglob("*.parquet")):
        split = _split_of(path, export_dir)
        if split is not None and split not in spec.hub.skip_splits:
            by_split.setdefault(split, []).append(path)
    if "train" not in by_split and "test" not in by_split:
        raise DataError(f"{export_dir}: the Hub export of '{spec.hub.repo_id}' has no train/test Parquet files")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.folder}-", dir=folder.parent))
    try:
        label_files: dict[str, list[str]] = {}
        for split, paths in by_split.items():
            table = pa.concat_tables([pq.read_table(p) for p in paths])
            label_files.update(_class_names(paths[0], spec))
            renames = {old: new for old, new in spec.hub.columns.items() if old in table.column_names}
            table = table.rename_columns([renames.get(c, c) for c in table.column_names])
            pq.write_table(table, staging / f"{split}.parquet", compression="zstd")
        for hub_column, names in label_files.items():
            our_column = spec.hub.columns.get(hub_column, hub_column)
            name = "labels.txt" if our_column == "label" else f"labels_{our_column.removeprefix('label_')}.txt"
            (staging / name).write_text("\n".join(names) + "\n", encoding="utf-8")
        apply_umask(staging)  # mkdtemp's 0700 would become the dataset folder's mode
        if folder.exists():  # a partial folder without split files: keep it, never delete user files
            for item in staging.iterdir():
                target = folder / item.name
                if not target.exists():
                    os.replace(item, target)
        else:
            os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _class_names(path: Path, spec: BuiltinDataset) -> dict[str, list[str]]:
    """ClassLabel names of every label column, from the ``huggingface`` Parquet schema metadata."""
    import pyarrow.parquet as pq

    metadata = pq.read_schema(path).metadata or {}
    raw = metadata.get(b"huggingface")
    if not raw:
        return {}
    features = json.loads(raw).get("info", {}).get("features", {})
    names = {}
    for column, feature in features.items():
        if isinstance(feature, dict) and feature.get("_type") == "ClassLabel" and feature.get("names"):
            names[column] = list(feature["names"])
    return names
