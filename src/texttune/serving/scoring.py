"""What the model thread does with a batch of requests: check lengths, one forward pass, scores.

Runs in the batcher's worker thread, never on the event loop. Uses only the predictor interface every
backend offers (``tokenizer``, ``max_length``, ``logits``, ``label_names``, ``temperature``), so torch
and ONNX models are served alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from texttune.serving.errors import ServeError


@dataclass
class Work:
    """One request's inputs and options."""

    sequences: list[tuple[str, str | None]]  # (text, pair or None)
    truncate: bool
    raw_scores: bool
    batch: bool  # a batch request (messages name inputs[i])


class Scorer:
    """``scorer(works)`` -> per work, its rows of ``{"label", "score"}`` (highest first) or a ServeError."""

    def __init__(self, predictor, max_batch_size: int) -> None:
        self.predictor = predictor
        self.max_batch_size = max_batch_size
        self.labels = list(predictor.label_names)
        temperature = getattr(predictor, "temperature", None)
        self.temperature = float(temperature) if temperature else None
        # A closed-form model (a classic baseline, SetFit) has no tokenizer here: it reads raw texts and cuts
        # them itself, so there is no token limit to check.
        self.max_tokens: int | None = predictor.max_length if getattr(predictor, "tokenizer", None) else None

    def __call__(self, works: list[Work]) -> list[list[list[dict]] | ServeError]:
        outcomes: list = [None if work.truncate or self.max_tokens is None else self._too_long(work)
                          for work in works]
        live = [i for i, outcome in enumerate(outcomes) if outcome is None]
        flat = [seq for i in live for seq in works[i].sequences]
        logits = self._logits(flat) if flat else torch.empty((0, len(self.labels)))  # (N, C)
        start = 0
        for i in live:
            n = len(works[i].sequences)
            outcomes[i] = self._rows(logits[start : start + n], works[i].raw_scores)
            start += n
        return outcomes

    def warm_up(self, batch_size: int) -> None:
        """Requests' own path on a few shapes (one short text up to a full batch of max_length tokens, at
        most 512) before serving: no request pays for lazy initialisation, and the allocator has grown to
        what batches need before the server's memory is first measured."""
        model = getattr(self.predictor, "model", None)  # the torch backend; onnxruntime holds its own copy
        if isinstance(model, torch.nn.Module):
            # Every weight read once: safetensors are memory-mapped, and the pages no text has used yet
            # (embedding rows of words not seen so far) would be read from disk by the requests that first
            # need them: slower answers, and a resident size that grows with the vocabulary seen.
            with torch.inference_mode():
                for tensor in model.state_dict().values():
                    tensor.sum()
        words = min(self.max_tokens or 512, 512) // 2  # "warm up": two tokens a repeat; truncated
        for size, repeats in ((1, 1), (batch_size, 1), (batch_size, words), (max(1, batch_size // 2), 16),
                              (1, words)):
            self([Work([("warm up " * repeats, None)] * size, truncate=True, raw_scores=False, batch=True)])

    def _too_long(self, work: Work) -> ServeError | None:
        """TEI's answer to an input over the limit without truncate: 422, naming the input."""
        limit = self.max_tokens
        for i, length in enumerate(self._lengths(work.sequences)):
            if length > limit:
                where = f"inputs[{i}]" if work.batch else "inputs"
                return ServeError(422, "validation", f"{where} has {length} tokens, more than the model's "
                                                     f"maximum of {limit}; send \"truncate\": true to cut it")
        return None

    def _lengths(self, seqs: list[tuple[str, str | None]]) -> list[int]:
        tokenizer = self.predictor.tokenizer
        lengths = [0] * len(seqs)
        for indices, pairs in self._by_kind(seqs):
            texts = [seqs[i][0] for i in indices]
            args = [texts, [seqs[i][1] for i in indices]] if pairs else [texts]
            ids = tokenizer(*args, truncation=False, add_special_tokens=True)["input_ids"]
            for i, row in zip(indices, ids):
                lengths[i] = len(row)
        return lengths

    def _logits(self, seqs: list[tuple[str, str | None]]) -> torch.Tensor:
        out = torch.empty((len(seqs), len(self.labels)))  # (N, C)
        for indices, pairs in self._by_kind(seqs):  # texts and pairs in separate forward passes
            texts = [seqs[i][0] for i in indices]
            text_pairs = [seqs[i][1] for i in indices] if pairs else None
            out[torch.tensor(indices)] = self.predictor.logits(texts, text_pairs, batch_size=self.max_batch_size).float()
        return out

    @staticmethod
    def _by_kind(seqs):
        singles = [i for i, (_, pair) in enumerate(seqs) if pair is None]
        pairs = [i for i, (_, pair) in enumerate(seqs) if pair is not None]
        return [(group, kind) for group, kind in ((singles, False), (pairs, True)) if group]

    def _rows(self, logits: torch.Tensor, raw_scores: bool) -> list[list[dict]] | ServeError:
        if raw_scores:
            scores = logits
        else:  # as Predictor.predict: calibrated by the run's temperature when one was fitted
            scores = torch.softmax(logits / self.temperature if self.temperature else logits, dim=-1)
        if not torch.isfinite(scores).all():
            return ServeError(500, "backend", "the model produced a non-finite score")
        values, indices = scores.sort(dim=-1, descending=True)
        return [[{"label": self.labels[j], "score": v} for v, j in zip(row_v, row_i)]
                for row_v, row_i in zip(values.tolist(), indices.tolist())]
