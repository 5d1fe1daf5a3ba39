"""PNG plots of a run: learning curves, confusion matrix, reliability diagram.

Every function takes plain records (the dicts of ``metrics.jsonl`` / ``metrics.json``), writes one PNG
atomically and returns its path. Figures are always closed, so a long sweep does not leak memory.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: no display on training machines; must precede the pyplot import

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from texttune.evaluation.confusion import SparseConfusion, read_confusion  # noqa: E402
from texttune.io import atomic_write_bytes  # noqa: E402

DPI = 110
ANNOTATE_MAX_CLASSES = 15  # past this, cell text is unreadable: colours alone carry the matrix
# Past PLOT_MAX_CLASSES a full matrix is no longer readable at page width (and drawing thousands of
# ticks takes minutes): only the PLOT_TOP_CLASSES most confused classes are drawn.
PLOT_MAX_CLASSES = 50
PLOT_TOP_CLASSES = 30
LABEL_MAX_CHARS = 18
TRAIN_COLOR, EVAL_COLOR, F1_COLOR = "#1f77b4", "#d62728", "#2ca02c"


def _save(fig: Figure, path: str | Path) -> Path:
    """Render ``fig`` to PNG in memory, close it, and write the bytes atomically."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
    return atomic_write_bytes(Path(path), buffer.getvalue())


def _floats(values: Sequence[Any]) -> np.ndarray:
    """Floats with ``None`` (empty bins, missing values) as NaN, so matplotlib leaves gaps."""
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average; the first points average over what exists so far (no lag-in zeros)."""
    sums = np.cumsum(np.insert(values, 0, 0.0))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def _note(ax: plt.Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")


def _series(records: list[dict[str, Any]], kind: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [r for r in records if r.get("type") == kind and r.get(key) is not None and "step" in r]
    if kind == "eval":  # the curves follow validation; a final test eval must not be plotted as one
        rows = [r for r in rows if r.get("split", "validation") == "validation"]
    return np.array([r["step"] for r in rows], dtype=float), _floats([r[key] for r in rows])


def _plot_losses(ax: plt.Axes, records: list[dict[str, Any]]) -> None:
    steps, loss = _series(records, "train", "loss")
    eval_steps, eval_loss = _series(records, "eval", "loss")
    if len(steps):
        window = max(1, len(steps) // 20)
        if window > 1:  # under 40 points, the "smoothed" line would only repeat the raw one
            ax.plot(steps, loss, color=TRAIN_COLOR, alpha=0.25, lw=1, label="train loss (raw)")
        label = f"train loss (mean of {window})" if window > 1 else "train loss"
        ax.plot(steps, _smooth(loss, window), color=TRAIN_COLOR, lw=2,
                marker="o" if len(steps) == 1 else None, label=label)
    if len(eval_steps):
        ax.plot(eval_steps, eval_loss, color=EVAL_COLOR, lw=2, marker="o", ms=4, label="validation loss")
    if not len(steps) and not len(eval_steps):
        _note(ax, "no loss records")
    else:
        _legend_outside(ax)
    ax.set_ylabel("loss")
    ax.set_title("Loss")
    ax.grid(alpha=0.3)


def _plot_scores(ax: plt.Axes, records: list[dict[str, Any]]) -> None:
    drawn = False
    for key, color in (("accuracy", EVAL_COLOR), ("f1_macro", F1_COLOR)):
        steps, values = _series(records, "eval", key)
        if len(steps):
            ax.plot(steps, values, color=color, lw=2, marker="o", ms=4, label=f"validation {key}")
            drawn = True
    if drawn:
        _legend_outside(ax)
    else:
        _note(ax, "no evaluation records")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("score")
    ax.set_title("Validation scores")
    ax.grid(alpha=0.3)


def _legend_outside(ax: plt.Axes) -> None:
    """The legend right of the axes: inside, any corner can cover points (a score that climbs to the
    top right, a loss that plateaus low right) however "best" its place is."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8, frameon=False)


def learning_curves_figure(records: list[dict[str, Any]]) -> Figure:
    """Train loss (raw + smoothed) and validation loss; validation accuracy and macro F1; by step."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    _plot_losses(top, records)
    _plot_scores(bottom, records)
    bottom.xaxis.set_tick_params(labelbottom=True)
    fig.tight_layout()
    return fig


def plot_learning_curves(records: list[dict[str, Any]], path: str | Path) -> Path:
    """``learning_curves_figure`` as a PNG at ``path``."""
    return _save(learning_curves_figure(records), path)


def _short_label(label: str) -> str:
    label = str(label)
    return label if len(label) <= LABEL_MAX_CHARS else label[: LABEL_MAX_CHARS - 1] + "…"


def _annotate(ax: plt.Axes, counts: np.ndarray, shares: np.ndarray, fontsize: float) -> None:
    for i, j in np.ndindex(counts.shape):
        color = "white" if shares[i, j] > 0.5 else "black"
        ax.text(j, i, f"{counts[i, j]:,}\n{100 * shares[i, j]:.0f}%", ha="center", va="center",
                fontsize=fontsize, color=color)


def plot_confusion_matrix(
    matrix: Any, label_names: Sequence[str], path: str | Path, normalize: bool = True
) -> Path:
    """Rows are true labels, columns predictions; colour is the row share (``normalize``) or the count.

    ``matrix`` is either stored form (dense lists or sparse triplets, ``texttune.evaluation.confusion``).
    Cells carry the count and the row percentage up to ``ANNOTATE_MAX_CLASSES`` classes. Past
    ``PLOT_MAX_CLASSES`` only the ``PLOT_TOP_CLASSES`` most confused classes are drawn (row shares still
    out of each class's whole row), so time and memory stay bounded with thousands of classes.
    """
    cells = read_confusion(matrix, dense=False)
    n = len(label_names)
    if cells.size != n:
        raise ValueError(f"a {cells.size}x{cells.size} confusion matrix for {n} label names")
    totals = cells.true_totals()[:, None]  # (C, 1)
    title = f"Confusion matrix ({int(totals.sum()):,} examples)"
    if n <= PLOT_MAX_CLASSES:
        counts, names = cells.dense(), list(label_names)
    else:
        shown = _most_confused(cells, PLOT_TOP_CLASSES)
        counts, names, totals = _block(cells, shown), [label_names[i] for i in shown], totals[shown]
        title = (f"Confusion matrix: the {len(shown)} most confused of {n:,} classes\n"
                 f"({int(cells.counts.sum()):,} examples; row shares are of all predictions for the class)")
    shares = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)
    return _draw_confusion(counts, shares, names, title, normalize, path)


def _most_confused(cells: SparseConfusion, k: int) -> np.ndarray:
    """``k`` classes: both ends of the largest off-diagonal cells first (who is taken for whom), then
    the classes in the most errors, then the largest; ties by index, so the choice is deterministic."""
    off = cells.rows != cells.cols
    rows, cols, counts = cells.rows[off], cells.cols[off], cells.counts[off]
    order = np.lexsort((cols, rows, -counts))[:k]  # the last key sorts first
    pairs = np.column_stack((rows[order], cols[order])).ravel()  # (2k,) true, predicted, true, ...
    errors, support = cells.errors_per_class(), cells.true_totals()
    rest = np.lexsort((np.arange(cells.size), -support, -errors))
    chosen = dict.fromkeys(int(i) for i in np.concatenate((pairs, rest[: 2 * k])))
    return np.array(list(chosen)[:k], dtype=np.int64)


def _block(cells: SparseConfusion, classes: np.ndarray) -> np.ndarray:
    """The dense (k, k) block of ``classes`` (in that order), from the non-zero cells only."""
    position = np.full(cells.size, -1, dtype=np.int64)
    position[classes] = np.arange(len(classes))
    rows, cols = position[cells.rows], position[cells.cols]
    keep = (rows >= 0) & (cols >= 0)
    block = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(block, (rows[keep], cols[keep]), cells.counts[keep])
    return block


def _draw_confusion(
    counts: np.ndarray, shares: np.ndarray, label_names: Sequence[str], title: str, normalize: bool,
    path: str | Path,
) -> Path:
    n = len(label_names)
    # Capped so the PNG still reads at page width in the report (~1100 px) with 50+ classes.
    side = min(max(4.5, 0.55 * n + 2.0), 14.0)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(shares if normalize else counts, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    legend = "share of true class" if normalize else "count"
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=legend)
    if n <= ANNOTATE_MAX_CLASSES:
        _annotate(ax, counts, shares, fontsize=9 if n <= 8 else 7)
    names = [_short_label(name) for name in label_names]
    tick_size = 9 if n <= 15 else 8 if n <= 30 else 7 if n <= 60 else 5
    rotation = 90 if n > ANNOTATE_MAX_CLASSES else 45 if n > 4 else 0
    ax.set_xticks(range(n), names, rotation=rotation, ha="right" if rotation else "center",
                  va="center" if rotation == 90 else "top", rotation_mode="anchor", fontsize=tick_size)
    ax.set_yticks(range(n), names, fontsize=tick_size)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _save(fig, path)


def plot_reliability(reliability: dict[str, Any], path: str | Path, ece: float | None = None) -> Path:
    """Reliability diagram (accuracy per confidence bin against the diagonal) over a confidence histogram."""
    edges = _floats(reliability["bin_edges"])
    accuracy, confidence = _floats(reliability["accuracy"]), _floats(reliability["confidence"])
    count = _floats(reliability["count"])
    centers, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    accuracy[count == 0] = np.nan  # an empty bin has no accuracy, whatever placeholder was stored
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 7), sharex=True, height_ratios=(3, 1))
    top.plot([0, 1], [0, 1], ls="--", color="gray", label="perfect calibration")
    top.bar(centers, np.nan_to_num(accuracy), width=widths, edgecolor="black", color=TRAIN_COLOR,
            alpha=0.8, label="accuracy")
    top.plot(confidence, accuracy, "o", color=EVAL_COLOR, ms=4, label="accuracy at the bin's mean confidence")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    title = "Reliability diagram" + ("" if ece is None or math.isnan(ece) else f" (ECE {ece:.4f})")
    top.set_title(title)
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    bottom.bar(centers, count, width=widths, edgecolor="black", color="#7f7f7f")
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("examples")
    bottom.xaxis.set_tick_params(labelbottom=True)
    fig.tight_layout()
    return _save(fig, path)
