"""Streaming evaluation of a classifier on a tokenized split."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from texttune.data.tokenize import Encoded, collate, eval_batches
from texttune.evaluation.metrics import MetricAccumulator
from texttune.models.long_text import document_logits


def map_sharded(compute: Callable[[Any], Any], items: Iterable[Any], accelerator=None) -> Iterator[Any]:
    """``compute(item)`` for every item, in the items' order, whatever the process count.

    Under N processes every process goes through all the items (so work done while producing them,
    such as seeded masking, stays in step with one process) and computes every N-th; the results are
    gathered as objects (nothing padded, no item twice), so every process gets those of one process."""
    if accelerator is None or accelerator.num_processes == 1:
        yield from map(compute, items)
        return
    rank, n = accelerator.process_index, accelerator.num_processes
    mine = [(i, compute(item)) for i, item in enumerate(items) if i % n == rank]
    gathered = accelerator.gather_for_metrics(mine, use_gather_object=True)  # every rank's, on every rank
    for _, result in sorted(gathered, key=lambda item: item[0]):
        yield result


def iter_logits(model, data: Encoded, pad_id: int, batch_size: int, device: torch.device, autocast=None,
                accelerator=None, batch_tokens: int | None = None, window_pool: str = "mean"):
    """Yield (indices, logits (B, C) float32 on CPU) over ``data`` in length-sorted batches (of
    ``batch_size`` examples, or of ``batch_tokens`` padded tokens); one row per document, a windowed
    document's windows pooled by ``window_pool`` (``model.long_text.pool``).

    The batches and their order are those of one process whatever the process count
    (``map_sharded``), so metrics are those of a 1-process evaluation."""
    def forward(indices: np.ndarray):
        batch = collate(data, indices, pad_id)
        batch.pop("labels")
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with autocast() if autocast is not None else nullcontext():
            return indices, document_logits(model, batch, window_pool).float().cpu()

    model.eval()
    with torch.inference_mode():
        yield from map_sharded(forward, eval_batches(data.lengths, batch_size, batch_tokens), accelerator)


def evaluation_model(model, accelerator):
    """The bare module to evaluate: a DDP wrapper would sync buffers at each forward, and ranks
    evaluate different numbers of batches."""
    return accelerator.unwrap_model(model) if accelerator is not None else model


CALIBRATED_KEYS = ("log_loss", "ece", "reliability")


def evaluate(
    model,
    data: Encoded,
    label_names: list[str],
    pad_id: int,
    batch_size: int,
    accelerator=None,
    keep_worst: int = 0,
    collect_logits: bool = False,
    temperature: float | None = None,
    batch_tokens: int | None = None,
    window_pool: str = "mean",
) -> tuple[dict[str, Any], torch.Tensor | None]:
    """Metrics of ``model`` on ``data`` in one pass; memory stays constant in the number of examples
    unless ``collect_logits`` (used to fit temperature scaling on validation) asks for the (N, C)
    logits. With ``temperature`` the metrics also hold ``calibrated`` log-loss/ECE/reliability of
    logits / temperature, from the same forward pass. ``batch_tokens`` (``train.eval_batch_tokens``)
    batches by padded tokens instead of ``batch_size`` examples."""
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    autocast = accelerator.autocast if accelerator is not None else None
    model = evaluation_model(model, accelerator)
    raw = MetricAccumulator(len(label_names), label_names, keep_worst=keep_worst)
    scaled = MetricAccumulator(len(label_names), label_names) if temperature is not None else None
    collected = torch.empty((len(data), len(label_names))) if collect_logits else None
    for indices, logits in iter_logits(model, data, pad_id, batch_size, device, autocast, accelerator,
                                       batch_tokens, window_pool):
        labels = torch.tensor(data.labels[indices])
        raw.update(logits, labels, ids=data.rows[indices].tolist())
        if scaled is not None:
            scaled.update(logits / temperature, labels)
        if collected is not None:
            collected[torch.from_numpy(np.asarray(indices))] = logits
    metrics = raw.compute()
    if scaled is not None:
        calibrated = scaled.compute()
        metrics["calibrated"] = {"temperature": temperature, **{k: calibrated[k] for k in CALIBRATED_KEYS}}
    return metrics, collected


def calibrated_from_logits(logits: torch.Tensor, labels: np.ndarray, label_names: list[str],
                           temperature: float) -> dict[str, Any]:
    """Calibrated metrics of already collected logits (no second forward pass)."""
    accumulator = MetricAccumulator(len(label_names), label_names)
    accumulator.update(logits / temperature, torch.tensor(labels))
    metrics = accumulator.compute()
    return {"temperature": temperature, **{k: metrics[k] for k in CALIBRATED_KEYS}}


def metrics_of_logits(logits: torch.Tensor, labels: np.ndarray, label_names: list[str], rows: np.ndarray,
                      keep_worst: int = 0, temperature: float | None = None) -> dict[str, Any]:
    """``evaluate``'s metrics for logits computed elsewhere (the classic baselines score texts with
    scikit-learn, not through a forward pass over token ids)."""
    accumulator = MetricAccumulator(len(label_names), label_names, keep_worst=keep_worst)
    accumulator.update(logits, torch.tensor(np.asarray(labels)), ids=np.asarray(rows).tolist())
    metrics = accumulator.compute()
    if temperature is not None:
        metrics["calibrated"] = calibrated_from_logits(logits, labels, label_names, temperature)
    return metrics


def worst_with_text(worst: list[dict[str, Any]], frame) -> list[dict[str, Any]]:
    """The most confidently wrong examples with their texts (``frame``: the split they came from)."""
    out = []
    for item in worst:
        row = frame.loc[item["id"]]
        entry = {"row": int(item["id"]), "text": row["text"], "label": item["label_name"],
                 "predicted": item["predicted_name"], "confidence": item["confidence"]}
        if "text_pair" in frame.columns:
            entry["text_pair"] = row["text_pair"]
        out.append(entry)
    return out
