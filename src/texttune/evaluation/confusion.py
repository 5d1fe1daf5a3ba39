"""The confusion matrix as ``metrics.json`` stores it, and the one reader of both stored forms.

Up to ``DENSE_MAX_CLASSES`` classes the matrix is stored as it always was, a list of C rows of C
counts. Past that it is stored as its non-zero cells::

    {"format": "sparse", "shape": [C, C], "rows": [...], "cols": [...], "counts": [...]}

because the dense list grows as C² (5,000 classes: 25 million cells, over 500 MB of JSON) while an
evaluation of N examples fills at most N cells. Rows are true labels, columns predictions. This module
needs only numpy, so the reports can read records without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

DENSE_MAX_CLASSES = 100
SPARSE_FORMAT = "sparse"


@dataclass(frozen=True)
class SparseConfusion:
    """A C×C confusion matrix as its non-zero cells: ``counts[k]`` examples of true class ``rows[k]``
    predicted as ``cols[k]``."""

    size: int  # C
    rows: np.ndarray  # (K,) int64
    cols: np.ndarray  # (K,) int64
    counts: np.ndarray  # (K,) int64

    def dense(self) -> np.ndarray:
        """The (C, C) int64 array; C² memory, so only for small C or a selected block."""
        out = np.zeros((self.size, self.size), dtype=np.int64)
        np.add.at(out, (self.rows, self.cols), self.counts)
        return out

    def true_totals(self) -> np.ndarray:
        """(C,) examples per true class (the row sums)."""
        return np.bincount(self.rows, weights=self.counts, minlength=self.size).astype(np.int64)

    def errors_per_class(self) -> np.ndarray:
        """(C,) misclassified examples a class takes part in, as the true or the predicted class."""
        off = self.rows != self.cols
        weights = self.counts[off]
        return (np.bincount(self.rows[off], weights=weights, minlength=self.size)
                + np.bincount(self.cols[off], weights=weights, minlength=self.size)).astype(np.int64)


def confusion_record(cells: SparseConfusion) -> list[list[int]] | dict[str, Any]:
    """What ``metrics.json`` holds for a confusion matrix: dense lists up to ``DENSE_MAX_CLASSES``
    classes, else the sparse triplets (in the cells' order)."""
    if cells.size <= DENSE_MAX_CLASSES:
        return cells.dense().tolist()
    return {"format": SPARSE_FORMAT, "shape": [cells.size, cells.size], "rows": cells.rows.tolist(),
            "cols": cells.cols.tolist(), "counts": cells.counts.tolist()}


def read_confusion(record: Any, dense: bool = True) -> np.ndarray | SparseConfusion:
    """A stored confusion matrix (either form) as a dense (C, C) array, or as ``SparseConfusion``
    with ``dense=False`` (memory bounded by the non-zero cells). ``ValueError`` when malformed."""
    if isinstance(record, dict):
        cells = _sparse_from_record(record)
    else:
        matrix = np.asarray(record, dtype=np.int64)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"a confusion matrix must be square, got shape {matrix.shape}")
        if not dense:
            rows, cols = np.nonzero(matrix)
            return SparseConfusion(matrix.shape[0], rows, cols, matrix[rows, cols])
        return matrix
    return cells.dense() if dense else cells


def _sparse_from_record(record: dict[str, Any]) -> SparseConfusion:
    if record.get("format") != SPARSE_FORMAT:
        raise ValueError(f"unknown confusion matrix format {record.get('format')!r}")
    shape = record.get("shape")
    if not (isinstance(shape, list) and len(shape) == 2 and shape[0] == shape[1] and int(shape[0]) >= 0):
        raise ValueError(f"a sparse confusion matrix needs a square 'shape', got {shape!r}")
    size = int(shape[0])
    rows, cols, counts = (np.asarray(record.get(k, []), dtype=np.int64) for k in ("rows", "cols", "counts"))
    if not (rows.ndim == cols.ndim == counts.ndim == 1 and len(rows) == len(cols) == len(counts)):
        raise ValueError("a sparse confusion matrix needs 'rows', 'cols' and 'counts' of one length")
    if len(rows) and (min(rows.min(), cols.min()) < 0 or max(rows.max(), cols.max()) >= size):
        raise ValueError(f"a sparse confusion matrix has a cell outside its shape {shape}")
    return SparseConfusion(size, rows, cols, counts)
