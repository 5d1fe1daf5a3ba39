"""Recurrent encoder (Elman RNN, LSTM or GRU) over packed sequences.

embedding → dropout → ``nn.RNN``/``nn.LSTM``/``nn.GRU`` on a ``PackedSequence``, so the recurrence
never reads padding and the final state is each sequence's true final state, not the state after its
padding. It always pools itself (``pools_itself = True``, ``forward`` → ``(B, H)``), by ``pooling``:

- ``last``: the last layer's final hidden state, both directions concatenated when bidirectional
  (forward direction: after the last real token; backward direction: after the first);
- ``mean`` / ``max``: over the last layer's outputs at real tokens.

Pooling inside keeps ``pools_itself`` a class attribute; the classifier's ``pooling`` setting is
ignored for this encoder. ``hidden_size`` (the attribute) is the output size: the config's
``hidden_size`` times 2 when bidirectional.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from texttune.errors import TexttuneError
from texttune.models.classifier import ENCODERS, resolve_config
from texttune.models.pooling import pool

DEFAULTS: dict[str, Any] = {
    "embedding_dim": 128,
    "cell": "lstm",
    "hidden_size": 128,
    "num_layers": 1,
    "bidirectional": True,
    "dropout": 0.1,
    "pooling": "last",
}
CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
POOLINGS = ("last", "mean", "max")




def _check(cfg: dict[str, Any]) -> None:
    for key, allowed in (("cell", tuple(CELLS)), ("pooling", POOLINGS)):
        if cfg[key] not in allowed:
            choices = ", ".join(allowed)
            raise TexttuneError(f"rnn encoder config: {key} must be one of {choices}, got '{cfg[key]}'")


def right_align(input_ids: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's real tokens to the front, keeping their order (packing assumes right padding);
    a no-op for right-padded batches."""
    if not (real[:, 1:] & ~real[:, :-1]).any():  # no real token after a pad: already right-aligned
        return input_ids, real
    order = torch.sort((~real).to(torch.int8), dim=1, stable=True).indices  # (B, T)
    return input_ids.gather(1, order), real.gather(1, order)


class RNNEncoder(nn.Module):
    """Token ids → ``(B, hidden_size * num_directions)`` pooled recurrent features."""

    pools_itself = True

    def __init__(self, encoder_config: dict[str, Any]) -> None:
        super().__init__()
        cfg = resolve_config(encoder_config, DEFAULTS, "rnn")
        _check(cfg)
        self.encoder_config = cfg
        self.pad_id, self.pooling = int(cfg["pad_id"]), cfg["pooling"]
        self.num_directions = 2 if cfg["bidirectional"] else 1
        self.embedding = nn.Embedding(cfg["vocab_size"], cfg["embedding_dim"], padding_idx=self.pad_id)
        self.dropout = nn.Dropout(cfg["dropout"])
        self.rnn = CELLS[cfg["cell"]](
            cfg["embedding_dim"], cfg["hidden_size"], num_layers=cfg["num_layers"], batch_first=True,
            bidirectional=bool(cfg["bidirectional"]),
            # Between layers only: torch warns (and does nothing) for a single layer.
            dropout=cfg["dropout"] if cfg["num_layers"] > 1 else 0.0,
        )
        self.hidden_size = int(cfg["hidden_size"]) * self.num_directions
        self._init()

    def _init(self) -> None:
        nn.init.normal_(self.embedding.weight, std=0.1)
        with torch.no_grad():
            self.embedding.weight[self.pad_id].zero_()
        for name, param in self.rnn.named_parameters():
            if name.startswith("weight_hh"):
                nn.init.orthogonal_(param)  # keeps the recurrence's gain near 1 over long sequences
            elif name.startswith("weight_ih"):
                nn.init.xavier_uniform_(param)
            else:
                nn.init.zeros_(param)

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        input_ids, real = right_align(input_ids, attention_mask.bool())  # (B, T), (B, T)
        x = self.dropout(self.embedding(input_ids)) * real.unsqueeze(-1)  # (B, T, E)
        # An all-padding row still needs length 1 to pack; its one step reads a zero vector.
        lengths = real.sum(dim=1).clamp(min=1).cpu()  # (B,) on CPU, as packing requires
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        outputs, state = self.rnn(packed)
        if self.pooling == "last":
            h_n = state[0] if isinstance(state, tuple) else state  # (L*D, B, H); LSTM gives (h, c)
            # h_n comes back in the batch's order; its last D rows are the last layer's directions.
            return torch.cat(list(h_n[-self.num_directions:]), dim=-1)  # (B, D*H)
        steps = input_ids.shape[1]
        outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=steps)  # (B, T, D*H)
        packed_steps = torch.arange(steps, device=real.device) < lengths.to(real.device)[:, None]  # (B, T)
        # The packed steps, not `real`: an all-padding row then pools its one step instead of -inf for max.
        return pool(outputs, packed_steps, self.pooling)  # (B, D*H)


ENCODERS.add("rnn", RNNEncoder)
