"""Streaming evaluation of a classifier on a tokenized split."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from texttune.data.tokenize import Encoded, collate, eval_batches
from texttune.evaluation.metrics import MetricAccumulator


def iter_logits(model, data: Encoded, pad_id: int, batch_size: int, device: torch.device, autocast=None):
    """Yield (indices, logits (B, C) float32 on CPU) over ``data`` in length-sorted batches."""
    model.eval()
    with torch.inference_mode():
        for indices in eval_batches(data.lengths, batch_size):
            batch = collate(data, indices, pad_id)
            batch.pop("labels")
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with autocast() if autocast is not None else nullcontext():
                logits = model(**batch).logits
            yield indices, logits.float().cpu()


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
) -> tuple[dict[str, Any], torch.Tensor | None]:
    """Metrics of ``model`` on ``data``; memory stays constant in the number of examples unless
    ``collect_logits`` (used to fit temperature scaling on validation) asks for the (N, C) logits.
    With ``temperature`` the metrics are those of logits / temperature (calibrated)."""
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    autocast = accelerator.autocast if accelerator is not None else None
    accumulator = MetricAccumulator(len(label_names), label_names, keep_worst=keep_worst)
    collected = torch.empty((len(data), len(label_names))) if collect_logits else None
    for indices, logits in iter_logits(model, data, pad_id, batch_size, device, autocast):
        if temperature is not None:
            logits = logits / temperature
        labels = torch.tensor(data.labels[indices])
        accumulator.update(logits, labels, ids=data.rows[indices].tolist())
        if collected is not None:
            collected[torch.from_numpy(np.asarray(indices))] = logits
    metrics = accumulator.compute()
    return metrics, collected
