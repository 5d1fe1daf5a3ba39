"""The seam between the loop and what it trains: the loop batches, computes the loss and evaluates
only through a ``LoopTask``. Classification (``tasks/classify.py``), masked-LM pre-training
(``tasks/mlm.py``) and instruction tuning (``tasks/sft.py``) each implement it; the loop knows none
of them."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn

from texttune.data.tokenize import Encoded


class LoopTask(Protocol):
    def collate(self, data: Encoded, indices: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
        """The batch of examples ``indices`` of ``data``: tensors on the CPU."""

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor], accelerator: Accelerator) -> torch.Tensor:
        """The scalar training loss of one batch (forward under ``accelerator.autocast()``)."""

    def evaluate(self, model: nn.Module, data: Encoded, pad_id: int, batch_size: int,
                 accelerator: Accelerator) -> dict[str, Any]:
        """Metrics on ``data``; ``train.metric`` names the one that selects the best checkpoint."""
