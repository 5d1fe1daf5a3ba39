"""Classification metrics of a stream of evaluation batches, computed by scikit-learn.

The training loop calls ``MetricAccumulator.update`` once per evaluation batch and ``compute`` once at
the end. ``update`` reduces each batch's (B, C) logits to one row per example (true label, predicted
label, top-label confidence, negative log-likelihood, id: 40 bytes an example, whatever C is), so the
logits themselves are never kept; ``compute`` hands the rows to ``sklearn.metrics`` (accuracy, the
precision / recall / F1 family with ``labels=range(C)`` and ``zero_division=0``, the confusion matrix).

Hand-written, because the libraries lack it:

- the log-loss is the mean of torch's ``cross_entropy`` per example, not ``sklearn.metrics.log_loss``:
  that one needs the (N, C) probabilities (we keep no logits) and clips them to [eps, 1 - eps], which
  caps a confidently wrong example's loss at -log(eps) = 36 instead of its real NLL, the quantity we
  train on;
- ECE and the reliability bins (``evaluation.calibration``): scikit-learn has no ECE;
- past ``DENSE_MAX_CLASSES`` classes the confusion matrix is counted as its non-zero cells:
  ``sklearn.metrics.confusion_matrix`` only returns the dense (C, C) array (200 MB at 5,000 classes);
- the most confidently wrong examples (a stable sort of the rows).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from texttune.evaluation.calibration import bin_edges, bin_statistics, ece_from_bins
from texttune.evaluation.confusion import DENSE_MAX_CLASSES, SparseConfusion, confusion_record

# Which way is better for each metric compute() returns (early stopping, best-checkpoint selection).
METRIC_DIRECTIONS: dict[str, str] = {
    "accuracy": "max",
    "f1": "max",
    "f1_macro": "max",
    "f1_micro": "max",
    "f1_weighted": "max",
    "precision_macro": "max",
    "recall_macro": "max",
    "loss": "min",
    "log_loss": "min",
    "ece": "min",
}

# What update() keeps of each example.
ROW = np.dtype([("label", np.int64), ("predicted", np.int64), ("confidence", np.float64),
                ("nll", np.float64), ("id", np.int64)])


def is_better(metric: str, new: float, best: float | None, min_delta: float = 0.0) -> bool:
    """Whether ``new`` beats ``best`` by more than ``min_delta`` in ``metric``'s direction.

    ``best`` of None (nothing seen yet) is always beaten; a NaN ``new`` (a diverged run) never wins.
    """
    if metric not in METRIC_DIRECTIONS:
        raise ValueError(f"unknown metric {metric!r}; known metrics: {', '.join(sorted(METRIC_DIRECTIONS))}")
    if math.isnan(new):
        return False
    if best is None or math.isnan(best):
        return True
    if METRIC_DIRECTIONS[metric] == "max":
        return new > best + min_delta
    return new < best - min_delta


def _label_scores(labels: np.ndarray, predicted: np.ndarray, num_labels: int
                  ) -> tuple[dict[str, float], tuple]:
    """scikit-learn's accuracy and averaged precision / recall / F1 over all ``num_labels`` classes (0
    where undefined), and its per-class (precision, recall, f1, support), each a (C,) array."""
    # Imported here: sklearn.metrics adds seconds to the start-up of everything importing the loop.
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    def scores(average: str | None) -> tuple:
        return precision_recall_fscore_support(labels, predicted, labels=np.arange(num_labels),
                                               average=average, zero_division=0)

    macro, micro, weighted = scores("macro"), scores("micro"), scores("weighted")
    averaged = {
        "accuracy": float(accuracy_score(labels, predicted)),
        "f1_macro": float(macro[2]),
        "f1_micro": float(micro[2]),
        "f1_weighted": float(weighted[2]),
        "precision_macro": float(macro[0]),
        "recall_macro": float(macro[1]),
    }
    return averaged, scores(None)


class MetricAccumulator:
    """Collects (logits, labels) batches as one row per example and computes classification metrics.

    ``num_labels`` classes named ``label_names`` (default "0", "1", ...); ``n_bins`` equal-width
    confidence bins for ECE and the reliability diagram; ``keep_worst`` > 0 reports that many most
    confidently wrong examples.
    """

    def __init__(
        self, num_labels: int, label_names: list[str] | None = None, n_bins: int = 15, keep_worst: int = 0
    ) -> None:
        if num_labels < 2:
            raise ValueError(f"num_labels must be at least 2, got {num_labels}")
        names = [str(i) for i in range(num_labels)] if label_names is None else list(label_names)
        if len(names) != num_labels or len(set(names)) != num_labels:
            raise ValueError(f"label_names must be {num_labels} distinct names, got {names}")
        if keep_worst < 0:
            raise ValueError(f"keep_worst must be >= 0, got {keep_worst}")
        bin_edges(n_bins)  # validates n_bins
        self.num_labels = num_labels
        self.label_names = names
        self.n_bins = n_bins
        self.keep_worst = keep_worst
        self.reset()

    def reset(self) -> None:
        """Forget everything seen, keeping the configuration (reuse across evaluations)."""
        self._batches: list[np.ndarray] = []  # ROW arrays, one per update, in stream order
        self.loss_sum = 0.0
        self.num_examples = 0
        # None until the first update decides whether batches come with a loss; mixing is refused.
        self._with_loss: bool | None = None

    def rows(self) -> np.ndarray:
        """Every example seen, in stream order, as a (N,) ``ROW`` array."""
        return np.concatenate(self._batches) if self._batches else np.empty(0, ROW)

    @property
    def confusion(self) -> np.ndarray:
        """The dense (C, C) confusion matrix, rows = true, columns = predicted (C² memory)."""
        from sklearn.metrics import confusion_matrix

        if self.num_examples == 0:  # sklearn refuses empty input
            return np.zeros((self.num_labels, self.num_labels), dtype=np.int64)
        rows = self.rows()
        return confusion_matrix(rows["label"], rows["predicted"], labels=np.arange(self.num_labels))

    def confusion_cells(self) -> SparseConfusion:
        """The confusion matrix's non-zero cells in row-major order; memory grows with the cells, not C²
        (``sklearn.metrics.confusion_matrix`` has no sparse output)."""
        rows = self.rows()
        cells, counts = np.unique(rows["label"] * self.num_labels + rows["predicted"], return_counts=True)
        return SparseConfusion(self.num_labels, cells // self.num_labels, cells % self.num_labels,
                               counts.astype(np.int64))

    def update(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        loss_sum: float | None = None,
        ids: Sequence[int] | None = None,
    ) -> None:
        """Add one batch: ``logits`` (B, C), integer ``labels`` (B,).

        ``loss_sum`` is the batch's *summed* training-objective loss (e.g. ``loss.item() * B`` for a
        mean-reduced loss); give it for every batch or none. ``ids`` name the examples in ``worst``;
        without them an example is named by its position in this accumulator's stream.
        """
        logits64 = logits.detach().to("cpu", torch.float64)  # (B, C); float64 so the NLL stays exact
        targets = labels.detach().to("cpu")  # (B,)
        self._check_batch(logits64, targets, loss_sum, ids)
        targets = targets.long()
        batch = np.empty(len(targets), ROW)
        top_log_prob, predicted = torch.log_softmax(logits64, dim=-1).max(dim=-1)  # (B,); ties: first class
        batch["label"], batch["predicted"] = targets.numpy(), predicted.numpy()
        batch["confidence"] = top_log_prob.exp().numpy()
        batch["nll"] = F.cross_entropy(logits64, targets, reduction="none").numpy()
        batch["id"] = np.arange(self.num_examples, self.num_examples + len(targets)) if ids is None else ids
        self._batches.append(batch)
        self._with_loss = loss_sum is not None
        self.loss_sum += float(loss_sum or 0.0)
        self.num_examples += len(targets)

    def _check_batch(
        self, logits: torch.Tensor, labels: torch.Tensor, loss_sum: float | None, ids: Sequence[int] | None
    ) -> None:
        """Refuse malformed batches before any state changes, naming what is wrong."""
        if logits.ndim != 2 or logits.shape[1] != self.num_labels:
            raise ValueError(f"logits must be (B, {self.num_labels}), got {tuple(logits.shape)}")
        if labels.shape != (logits.shape[0],):
            raise ValueError(
                f"labels must be ({logits.shape[0]},) to match logits, got {tuple(labels.shape)}")
        if labels.is_floating_point() or labels.is_complex():
            raise ValueError(f"labels must be integer class ids, got dtype {labels.dtype}")
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= self.num_labels):
            raise ValueError(
                f"labels must lie in [0, {self.num_labels}), got {int(labels.min())}..{int(labels.max())}")
        if ids is not None and len(ids) != len(labels):
            raise ValueError(f"ids has {len(ids)} entries for a batch of {len(labels)}")
        if self._with_loss is not None and self._with_loss != (loss_sum is not None):
            raise ValueError("loss_sum must be given for every batch or for none")

    def merge(self, other: MetricAccumulator) -> MetricAccumulator:
        """Add ``other``'s examples to this accumulator (as if streamed after ours); returns self.

        Pass ``ids`` to ``update`` when merging: default ids are stream positions, which repeat across
        accumulators.
        """
        same = (self.num_labels, self.label_names, self.n_bins, self.keep_worst) == (
            other.num_labels, other.label_names, other.n_bins, other.keep_worst)
        if not same:
            raise ValueError(
                "can only merge accumulators with the same num_labels, label_names, n_bins, keep_worst")
        if None not in (self._with_loss, other._with_loss) and self._with_loss != other._with_loss:
            raise ValueError("cannot merge an accumulator given loss_sum with one that was not")
        self._batches += other._batches
        self.loss_sum += other.loss_sum
        self.num_examples += other.num_examples
        self._with_loss = self._with_loss if other._with_loss is None else other._with_loss
        return self

    def compute(self) -> dict[str, Any]:
        """All metrics as plain Python numbers (JSON-serialisable); see the module docstring."""
        if self.num_examples == 0:
            raise ValueError("no examples to evaluate: update() was never given a non-empty batch")
        rows = self.rows()
        averaged, (precision, recall, f1, support) = _label_scores(
            rows["label"], rows["predicted"], self.num_labels)
        result: dict[str, Any] = averaged
        if self.num_labels == 2:
            result["f1"] = float(f1[1])  # positive class = label 1, like sklearn's default
        result["per_class"] = {
            name: {
                "precision": float(precision[k]),
                "recall": float(recall[k]),
                "f1": float(f1[k]),
                "support": int(support[k]),
            }
            for k, name in enumerate(self.label_names)
        }
        result["confusion_matrix"] = (self.confusion.tolist() if self.num_labels <= DENSE_MAX_CLASSES
                                      else confusion_record(self.confusion_cells()))
        log_loss = float(rows["nll"].mean())
        result["log_loss"] = log_loss
        bins = bin_statistics(rows["confidence"], rows["label"] == rows["predicted"], self.n_bins)
        result["ece"] = ece_from_bins(*bins)
        result["reliability"] = self._reliability(*bins)
        result["num_examples"] = self.num_examples
        result["loss"] = self.loss_sum / self.num_examples if self._with_loss else log_loss
        result["worst"] = self._worst_examples(rows)
        return result

    def _reliability(self, count: np.ndarray, conf_sum: np.ndarray, correct_sum: np.ndarray
                     ) -> dict[str, list]:
        """Per-bin accuracy and mean confidence (None for an empty bin) for a reliability diagram."""
        def per_bin(sums: np.ndarray) -> list[float | None]:
            return [float(s / n) if n else None for s, n in zip(sums, count)]

        return {
            "bin_edges": bin_edges(self.n_bins).tolist(),
            "accuracy": per_bin(correct_sum),
            "confidence": per_bin(conf_sum),
            "count": count.tolist(),
        }

    def _worst_examples(self, rows: np.ndarray) -> list[dict[str, Any]]:
        """The ``keep_worst`` most confidently wrong examples, most confident first; a stable sort keeps
        the example seen first among equal confidences, so batching does not change the choice."""
        wrong = rows[rows["label"] != rows["predicted"]]
        worst = wrong[np.argsort(-wrong["confidence"], kind="stable")[: self.keep_worst]]
        return [
            {
                "id": int(row["id"]),
                "label": int(row["label"]),
                "predicted": int(row["predicted"]),
                "label_name": self.label_names[row["label"]],
                "predicted_name": self.label_names[row["predicted"]],
                "confidence": float(row["confidence"]),
            }
            for row in worst
        ]


def classification_metrics(
    y_true: torch.Tensor | np.ndarray | Sequence[int],
    logits: torch.Tensor | np.ndarray,
    label_names: list[str] | None = None,
    n_bins: int = 15,
) -> dict[str, Any]:
    """``MetricAccumulator.compute()`` for all of ``logits`` (N, C) against ``y_true`` (N,) at once."""
    logits_t = torch.as_tensor(logits)  # (N, C)
    if logits_t.ndim != 2:
        raise ValueError(f"logits must be (N, C), got {tuple(logits_t.shape)}")
    accumulator = MetricAccumulator(logits_t.shape[1], label_names=label_names, n_bins=n_bins)
    accumulator.update(logits_t, torch.as_tensor(y_true))
    return accumulator.compute()
