"""Kim (2014) CNN for sentence classification: parallel convolutions, max over time.

embedding → dropout → one ``Conv1d`` per kernel width → max over time (padding masked out) → ReLU →
concat. It pools itself: ``forward`` returns ``(B, len(kernel_sizes) * num_filters)``. Kim's 0.5
dropout on the pooled features is the head's ``dropout``; ``dropout`` here acts on the embeddings.

The convolutions are *wide* (``padding=k-1`` on both sides, as Kim's code zero-pads every sentence by
``k-1``): a sequence shorter than the widest kernel still has windows, and every window that covers
at least one real token exists whatever the batch's padded length, so appended padding cannot change
the result.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from texttune.errors import TexttuneError
from texttune.models.classifier import ENCODERS, resolve_config

DEFAULTS: dict[str, Any] = {
    "embedding_dim": 128,
    "kernel_sizes": [3, 4, 5],
    "num_filters": 100,
    "dropout": 0.1,
}




def _check_kernel_sizes(kernel_sizes: list[int]) -> None:
    if not kernel_sizes or any(int(k) < 1 for k in kernel_sizes):
        raise TexttuneError(f"cnn encoder config: kernel_sizes must be positive integers, got {kernel_sizes}")


class CNNEncoder(nn.Module):
    """Token ids → ``(B, len(kernel_sizes) * num_filters)`` max-over-time features."""

    pools_itself = True

    def __init__(self, encoder_config: dict[str, Any]) -> None:
        super().__init__()
        cfg = resolve_config(encoder_config, DEFAULTS, "cnn")
        _check_kernel_sizes(cfg["kernel_sizes"])
        self.encoder_config = cfg
        self.pad_id = int(cfg["pad_id"])
        dim, filters = int(cfg["embedding_dim"]), int(cfg["num_filters"])
        self.embedding = nn.Embedding(cfg["vocab_size"], dim, padding_idx=self.pad_id)
        self.dropout = nn.Dropout(cfg["dropout"])
        self.kernel_sizes = [int(k) for k in cfg["kernel_sizes"]]  # kept here: LoRA may wrap the convs
        self.convs = nn.ModuleList(nn.Conv1d(dim, filters, k, padding=k - 1) for k in self.kernel_sizes)
        self.hidden_size = filters * len(self.convs)
        self._init()

    def _init(self) -> None:
        nn.init.normal_(self.embedding.weight, std=0.1)
        with torch.no_grad():
            self.embedding.weight[self.pad_id].zero_()
        for conv in self.convs:
            conv = getattr(conv, "base_layer", conv)
            nn.init.kaiming_uniform_(conv.weight, nonlinearity="relu")  # ReLU follows
            nn.init.zeros_(conv.bias)

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        real = attention_mask.unsqueeze(1).float()  # (B, 1, T)
        # Zero the padding explicitly: the pad row stops being zero once GloVe is copied in, and a
        # window reaching past the end must see the same zeros the conv's own padding supplies.
        x = self.embedding(input_ids).transpose(1, 2) * real  # (B, E, T)
        x = self.dropout(x)
        pooled = [self._max_over_time(conv, k, x, real) for conv, k in zip(self.convs, self.kernel_sizes)]  # each (B, F)
        return torch.cat(pooled, dim=1)  # (B, K*F)

    @staticmethod
    def _max_over_time(conv: nn.Module, k: int, x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        out = conv(x)  # (B, F, T+k-1)
        # A window counts if it covers at least one real token; windows of padding alone never win.
        # Counted by a conv with a ones kernel, not max_pool1d over the padded mask: torch.export
        # fixes max_pool1d's length to the example's, and the ONNX export needs it dynamic.
        covers_real = F.conv1d(real, real.new_ones(1, 1, k), padding=k - 1) > 0  # (B, 1, T+k-1)
        out = out.masked_fill(~covers_real, torch.finfo(out.dtype).min)
        # ReLU after the max equals the max after ReLU, and maps an all-padding sequence to zeros.
        return F.relu(out.max(dim=2).values)  # (B, F)


ENCODERS.add("cnn", CNNEncoder)
