"""Classification metrics computed in a stream, with memory that does not grow with the data.

The training loop calls ``MetricAccumulator.update`` once per evaluation batch and ``compute`` once at
the end. scikit-learn's metric functions need every prediction at once, so instead we keep sufficient
statistics: the non-zero cells of the C×C confusion matrix (all of accuracy/precision/recall/F1 follow
from it; kept sparse, so memory grows with the cells seen rather than with C²), the summed
negative log-likelihood, per-bin ECE sums, and a bounded heap of the most confidently wrong examples.
The F1 family is derived from the confusion matrix by hand, because scikit-learn has no function that
takes one; the formulas match ``sklearn.metrics`` with ``labels=range(C)`` and ``zero_division=0``,
which ``tests/unit/test_metrics.py`` checks. Past 100 classes the confusion matrix is recorded as its
non-zero cells (``texttune.evaluation.confusion``), so a result stays small with thousands of classes.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from texttune.evaluation.calibration import bin_edges, bin_statistics, ece_from_bins
from texttune.evaluation.confusion import SparseConfusion, confusion_record

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

# A heap entry: (confidence, -position, id, true label, predicted label). Ties on confidence keep the
# example seen first (larger -position), so the kept set does not depend on how data was batched.
_WorstEntry = tuple[float, int, int, int, int]


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


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Elementwise numerator / denominator with 0 where the denominator is 0 (sklearn's zero_division=0)."""
    out = np.zeros(np.broadcast(numerator, denominator).shape, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _scores_from_confusion(cells: SparseConfusion) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 and support from a confusion matrix's cells (rows = true)."""
    c, diagonal = cells.size, cells.rows == cells.cols
    tp = np.bincount(cells.rows[diagonal], weights=cells.counts[diagonal], minlength=c)  # (C,) float64
    support = cells.true_totals()  # (C,) true count per class
    predicted = np.bincount(cells.cols, weights=cells.counts, minlength=c).astype(np.int64)  # (C,)
    # F1 as 2tp / (support + predicted) = 2tp / (2tp + fp + fn), the form sklearn uses: it is 0 (not
    # undefined) when precision is undefined but recall is 0, exactly like zero_division=0.
    return {
        "precision": _safe_divide(tp, predicted),
        "recall": _safe_divide(tp, support),
        "f1": _safe_divide(2 * tp, support + predicted),
        "support": support,
        "tp": tp,
    }


def _averaged_scores(scores: dict[str, np.ndarray]) -> dict[str, float]:
    """Accuracy and the macro / micro / weighted averages of the per-class scores."""
    support = scores["support"]
    accuracy = float(scores["tp"].sum() / support.sum())
    return {
        "accuracy": accuracy,
        "f1_macro": float(scores["f1"].mean()),
        # Single-label, all classes counted: every error is one micro FP and one micro FN, so micro
        # precision = recall = F1 = accuracy.
        "f1_micro": accuracy,
        "f1_weighted": float(np.average(scores["f1"], weights=support)) if support.sum() else 0.0,
        "precision_macro": float(scores["precision"].mean()),
        "recall_macro": float(scores["recall"].mean()),
    }


class MetricAccumulator:
    """Streams (logits, labels) batches into classification metrics; state size is independent of N.

    ``num_labels`` classes named ``label_names`` (default "0", "1", ...); ``n_bins`` equal-width
    confidence bins for ECE and the reliability diagram; ``keep_worst`` > 0 keeps that many most
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
        b = self.n_bins
        # The non-zero confusion cells, {true * C + predicted: count}: a dense C×C matrix would be 200 MB
        # at 5,000 classes (and as much again per batch to update it), however few examples there are.
        self._cells: dict[int, int] = {}
        self.nll_sum = 0.0
        self.bin_count = np.zeros(b, dtype=np.int64)
        self.bin_conf_sum = np.zeros(b, dtype=np.float64)
        self.bin_correct_sum = np.zeros(b, dtype=np.float64)
        self.loss_sum = 0.0
        self.num_examples = 0
        # None until the first update decides whether batches come with a loss; mixing is refused.
        self._with_loss: bool | None = None
        self._worst: list[_WorstEntry] = []  # min-heap, at most keep_worst entries

    @property
    def confusion(self) -> np.ndarray:
        """The dense (C, C) confusion matrix, rows = true, columns = predicted (C² memory)."""
        return self.confusion_cells().dense()

    def confusion_cells(self) -> SparseConfusion:
        """The confusion matrix's non-zero cells in row-major order."""
        keys = np.fromiter(self._cells.keys(), np.int64, len(self._cells))
        counts = np.fromiter(self._cells.values(), np.int64, len(self._cells))
        order = np.argsort(keys)
        keys, counts = keys[order], counts[order]
        return SparseConfusion(self.num_labels, keys // self.num_labels, keys % self.num_labels, counts)

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
        logits64 = logits.detach().to("cpu", torch.float64)  # (B, C); float64 so NLL sums stay exact
        targets = labels.detach().to("cpu")  # (B,)
        self._check_batch(logits64, targets, loss_sum, ids)
        targets = targets.long()
        log_probs = torch.log_softmax(logits64, dim=-1)  # (B, C)
        top_log_prob, preds = log_probs.max(dim=-1)  # (B,), (B,); ties go to the first class, as argmax
        confidence = top_log_prob.exp().numpy()  # (B,)
        correct = (preds == targets).numpy()  # (B,)
        cells, counts = np.unique(targets.numpy() * self.num_labels + preds.numpy(), return_counts=True)
        for cell, count in zip(cells.tolist(), counts.tolist()):  # at most B distinct cells
            self._cells[cell] = self._cells.get(cell, 0) + count
        self.nll_sum -= float(log_probs.gather(1, targets[:, None]).sum())
        count, conf_sum, correct_sum = bin_statistics(confidence, correct, self.n_bins)
        self.bin_count += count
        self.bin_conf_sum += conf_sum
        self.bin_correct_sum += correct_sum
        self._with_loss = loss_sum is not None
        self.loss_sum += float(loss_sum or 0.0)
        if self.keep_worst:
            self._push_worst(confidence, correct, targets.numpy(), preds.numpy(), ids)
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

    def _push_worst(
        self,
        confidence: np.ndarray,
        correct: np.ndarray,
        labels: np.ndarray,
        preds: np.ndarray,
        ids: Sequence[int] | None,
    ) -> None:
        """Offer this batch's confidently wrong examples to the bounded heap."""
        wrong = np.flatnonzero(~correct)  # (W,)
        # Only the batch's own top keep_worst can enter the heap; a stable sort keeps ties in order.
        order = np.argsort(-confidence[wrong], kind="stable")[: self.keep_worst]
        for i in wrong[order]:
            position = self.num_examples + int(i)
            name = position if ids is None else int(ids[i])
            entry = (float(confidence[i]), -position, name, int(labels[i]), int(preds[i]))
            if len(self._worst) < self.keep_worst:
                heapq.heappush(self._worst, entry)
            elif entry > self._worst[0]:
                heapq.heapreplace(self._worst, entry)

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
        # Shift other's positions after ours so tie-breaking still prefers the earlier example.
        shifted = [(c, p - self.num_examples, i, t, y) for c, p, i, t, y in other._worst]
        self._worst = heapq.nlargest(self.keep_worst, self._worst + shifted)
        heapq.heapify(self._worst)
        for cell, count in other._cells.items():
            self._cells[cell] = self._cells.get(cell, 0) + count
        self.nll_sum += other.nll_sum
        self.bin_count += other.bin_count
        self.bin_conf_sum += other.bin_conf_sum
        self.bin_correct_sum += other.bin_correct_sum
        self.loss_sum += other.loss_sum
        self.num_examples += other.num_examples
        self._with_loss = self._with_loss if other._with_loss is None else other._with_loss
        return self

    def compute(self) -> dict[str, Any]:
        """All metrics as plain Python numbers (JSON-serialisable); see the module docstring."""
        if self.num_examples == 0:
            raise ValueError("no examples to evaluate: update() was never given a non-empty batch")
        cells = self.confusion_cells()
        scores = _scores_from_confusion(cells)
        log_loss = self.nll_sum / self.num_examples
        result: dict[str, Any] = _averaged_scores(scores)
        if self.num_labels == 2:
            result["f1"] = float(scores["f1"][1])  # positive class = label 1, like sklearn's default
        result["per_class"] = {
            name: {
                "precision": float(scores["precision"][k]),
                "recall": float(scores["recall"][k]),
                "f1": float(scores["f1"][k]),
                "support": int(scores["support"][k]),
            }
            for k, name in enumerate(self.label_names)
        }
        result["confusion_matrix"] = confusion_record(cells)
        result["log_loss"] = log_loss
        result["ece"] = ece_from_bins(self.bin_count, self.bin_conf_sum, self.bin_correct_sum)
        result["reliability"] = self._reliability()
        result["num_examples"] = self.num_examples
        result["loss"] = self.loss_sum / self.num_examples if self._with_loss else log_loss
        result["worst"] = self._worst_examples()
        return result

    def _reliability(self) -> dict[str, list]:
        """Per-bin accuracy and mean confidence (None for an empty bin) for a reliability diagram."""
        def per_bin(sums: np.ndarray) -> list[float | None]:
            return [float(s / n) if n else None for s, n in zip(sums, self.bin_count)]

        return {
            "bin_edges": bin_edges(self.n_bins).tolist(),
            "accuracy": per_bin(self.bin_correct_sum),
            "confidence": per_bin(self.bin_conf_sum),
            "count": self.bin_count.tolist(),
        }

    def _worst_examples(self) -> list[dict[str, Any]]:
        """The kept confidently wrong examples, most confident first."""
        return [
            {
                "id": name,
                "label": label,
                "predicted": pred,
                "label_name": self.label_names[label],
                "predicted_name": self.label_names[pred],
                "confidence": confidence,
            }
            for confidence, _, name, label, pred in sorted(self._worst, reverse=True)
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
