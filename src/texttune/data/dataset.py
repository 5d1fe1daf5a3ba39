"""The in-memory dataset every data source produces and every later stage consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pandas as pd

Task = Literal["classification", "pair_classification", "corpus", "instructions"]

SPLITS = ("train", "validation", "test")

# Label value used for a row whose label is missing (NaN/empty) or not in the label set. Such rows
# are kept by the readers so that the data checks can report all of them at once (with their rows)
# instead of the reader stopping at the first one; the checks then fail or drop them.
MISSING_LABEL = -1
UNKNOWN_LABEL = -2


@dataclass
class TextDataset:
    """Splits of one dataset with a shared label set.

    Each split is a DataFrame with columns ``text`` (str), optionally ``text_pair`` (str) and, for
    labelled data, ``label`` (int64 index into ``label_names``; ``MISSING_LABEL``/``UNKNOWN_LABEL``
    for bad rows, with the raw value in ``label_raw``). The DataFrame index is the 0-based row number
    in the source file, so messages can point at the row a user sees. Other columns of the source
    (e.g. ``source`` in gutenberg) are kept.
    """

    name: str
    splits: dict[str, pd.DataFrame]
    label_names: list[str] | None = None
    task: Task = "classification"
    # Where each split came from: {"train": "official", "test": "carved from train: 10% ..."}.
    provenance: dict[str, str] = field(default_factory=dict)
    # The file behind each split (for messages): {"train": "/data/trec/train.parquet"}.
    files: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Where label_names came from ("/data/labels.txt", "data.label_names", ...), for messages.
    label_source: str | None = None
    # data.multi_label: each split also has ``label_set`` (a tuple of label indices per row, maybe
    # empty) and ``label`` is only a stratification key (the smallest index; 0 for an empty set).
    multi_label: bool = False

    @property
    def has_labels(self) -> bool:
        return self.label_names is not None

    @property
    def has_pairs(self) -> bool:
        return any("text_pair" in df.columns for df in self.splits.values())

    @property
    def num_labels(self) -> int:
        return len(self.label_names or [])

    def split_names(self) -> list[str]:
        return [s for s in SPLITS if s in self.splits] + [s for s in self.splits if s not in SPLITS]

    def where(self, split: str) -> str:
        """A human description of a split's origin for messages: its file, or the dataset name."""
        return self.files.get(split, f"{self.name}/{split}")
