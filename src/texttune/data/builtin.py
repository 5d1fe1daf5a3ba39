"""Built-in datasets, read from a prepared-data folder (the layout of ``../shared/data``).

A prepared dataset is ``<data_dir>/<folder>/{train,validation,test}.parquet`` plus ``labels.txt``
(one label name per line, the ``label`` column indexes into it). When the folder is missing, the
dataset is fetched from its Hugging Face Hub copy into that layout (see ``texttune.data.hub``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from texttune.data.dataset import SPLITS, Task, TextDataset
from texttune.data.files import encode_labels, read_labels_file, read_table, select_columns
from texttune.errors import DataError
from texttune.registry import Registry


@dataclass(frozen=True)
class HubSource:
    """Where a built-in lives on the Hugging Face Hub and how its columns map onto ours."""

    repo_id: str
    config: str = "default"
    columns: dict[str, str] = field(default_factory=dict)  # hub column -> our column
    label_feature: str = "label"  # hub column whose ClassLabel names become labels.txt
    skip_splits: tuple[str, ...] = ()  # e.g. GLUE test splits have no labels


@dataclass(frozen=True)
class BuiltinDataset:
    name: str
    folder: str
    task: Task
    description: str
    label_column: str | None = "label"
    labels_file: str | None = "labels.txt"
    text_pair: bool = False
    extra_columns: tuple[str, ...] = ()
    hub: HubSource | None = None
    default_test_size: float | int | None = None  # carve used when the dataset has no test split
    default_validation_size: float | int | None = None
    default_validation_carve: str = "rows"  # data.validation_carve's default: rows, or spans (phrase data)
    rename_splits: tuple[tuple[str, str], ...] = ()  # (official name, texttune name)
    notes: tuple[str, ...] = ()


DATASETS: Registry[BuiltinDataset] = Registry("dataset")


def _add(spec: BuiltinDataset) -> None:
    DATASETS.add(spec.name, spec)


_add(BuiltinDataset(
    "ag_news", "ag_news", "classification",
    "AG News topics (World, Sports, Business, Sci/Tech); title + description",
    hub=HubSource("fancyzhx/ag_news"),
    default_test_size=1600,
    notes=(
        "Only the official test split (7,600 rows) is in the prepared data: the official train split "
        "(120,000 rows) was not available offline. texttune carves a stratified test split of 1,600 "
        "rows from it and uses the other 6,000 as train (the validation split is then carved from "
        "that train). Set data.test_size to change the carve.",
    ),
))
_add(BuiltinDataset(
    "imdb", "imdb", "classification", "IMDB movie reviews, sentiment (neg, pos)",
    hub=HubSource("stanfordnlp/imdb", "plain_text", skip_splits=("unsupervised",)),
))
_add(BuiltinDataset(
    "trec", "trec", "classification", "TREC question classification, 6 coarse classes",
    hub=HubSource("CogComp/trec", columns={"coarse_label": "label", "fine_label": "label_fine"},
                  label_feature="coarse_label"),
))
_add(BuiltinDataset(
    "trec_fine", "trec", "classification", "TREC question classification, 50 fine classes",
    label_column="label_fine", labels_file="labels_fine.txt",
    hub=HubSource("CogComp/trec", columns={"coarse_label": "label", "fine_label": "label_fine"},
                  label_feature="fine_label"),
))
_add(BuiltinDataset(
    "sst2", "sst2", "classification", "SST-2 movie-review phrases, sentiment (GLUE)",
    hub=HubSource("stanfordnlp/sst2", columns={"sentence": "text"}, skip_splits=("test",)),
    rename_splits=(("validation", "test"),),
    default_validation_size=872,
    default_validation_carve="spans",
    notes=(
        "The GLUE test split has no labels and is not in the prepared data, so the official "
        "validation split (872 rows, the 'GLUE dev' set results are reported on) is texttune's test "
        "split, and a validation split of 872 rows is carved from train for model selection: "
        "selecting on the reported split would overstate the result.",
        "The train rows are the phrases of each sentence's parse tree. The carved validation holds "
        "whole sentences only (texts no other row contains), and the phrases of those sentences leave "
        "train (data.validation_carve: spans): otherwise validation scores remembered phrases "
        "(0.93 for a CNN that reaches 0.80 on the official sentences). data.validation_carve=rows "
        "restores the plain carve.",
    ),
))
_add(BuiltinDataset(
    "mrpc", "mrpc", "pair_classification", "MRPC paraphrase sentence pairs (GLUE)",
    text_pair=True,
    hub=HubSource("nyu-mll/glue", "mrpc", columns={"sentence1": "text", "sentence2": "text_pair"}),
))
_add(BuiltinDataset(
    "gutenberg", "gutenberg", "corpus",
    "Unlabelled paragraphs of 15 public-domain books (masked-LM pre-training corpus)",
    label_column=None, labels_file=None, extra_columns=("source",),
))
_add(BuiltinDataset(
    "lima", "lima", "instructions",
    "LIMA instruction conversations in the '### Human: ... ### Assistant: ...' layout",
    label_column=None, labels_file=None, extra_columns=("num_turns",),
))


def split_files(folder: Path) -> dict[str, Path]:
    return {s: folder / f"{s}.parquet" for s in SPLITS if (folder / f"{s}.parquet").is_file()}


def load_builtin(name: str, data_dir: Path, hub_fallback: bool = True) -> TextDataset:
    """Read a built-in dataset from ``data_dir``, fetching it from the Hub first when missing."""
    spec = DATASETS.get(name)
    folder = Path(data_dir) / spec.folder
    if not split_files(folder):
        from texttune.data.hub import fetch_from_hub

        fetch_from_hub(spec, folder, enabled=hub_fallback)
    files = split_files(folder)
    label_names = None
    if spec.labels_file is not None:
        labels_path = folder / spec.labels_file
        if not labels_path.is_file():
            raise DataError(f"{labels_path}: label names file not found (one label name per line)")
        label_names = read_labels_file(labels_path)
    splits: dict[str, pd.DataFrame] = {}
    for split, path in files.items():
        raw = read_table(path, "parquet")
        frame = select_columns(
            raw, path, "text", "text_pair" if spec.text_pair else None, spec.label_column
        )
        for column in spec.extra_columns:
            if column in raw.columns:
                frame[column] = raw[column]
        if label_names is not None:
            frame["label"] = encode_labels(frame["label_raw"], label_names)
        splits[split] = frame
    provenance = {split: "official" for split in splits}
    for official, ours in spec.rename_splits:
        if official in splits:
            splits[ours] = splits.pop(official)
            files[ours] = files.pop(official)
            provenance.pop(official)
            provenance[ours] = f"the official {official} split"
    return TextDataset(
        name=name,
        splits=splits,
        label_names=label_names,
        task=spec.task,
        provenance=provenance,
        files={split: str(path) for split, path in files.items()},
        notes=list(spec.notes),
        label_source=str(labels_path) if label_names is not None else None,
    )
