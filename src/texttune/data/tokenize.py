"""Tokenize once, cache by fingerprint, batch with dynamic padding and length grouping.

Token ids are stored flat (one int32 array + offsets per split), so a cached split loads with
``np.load(allow_pickle=False)`` in milliseconds and never unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from texttune.errors import TexttuneError

TOKENIZE_CHUNK = 2048  # texts per tokenizer call: the fast tokenizer parallelises inside a call


def cache_dir() -> Path:
    return Path(os.environ.get("TEXTTUNE_CACHE_DIR", Path.home() / ".cache" / "texttune")) / "tokenized"


def frame_fingerprint(df: pd.DataFrame) -> str:
    """A hash of a split's content (texts, pairs, labels, row order)."""
    digest = hashlib.sha256()
    for column in ("text", "text_pair", "label", "label_set"):
        if column in df.columns:
            values = pd.util.hash_pandas_object(df[column], index=False).to_numpy()
            digest.update(column.encode())
            digest.update(values.tobytes())
    return digest.hexdigest()[:20]


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of what the tokenizer does. Truncation/padding settings are left out: a call with
    ``truncation=True`` writes them into the backend's state, and ``max_length`` is in the key anyway."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        state = repr(sorted(tokenizer.get_vocab().items()))
    else:
        data = json.loads(backend.to_str())
        data.pop("truncation", None)
        data.pop("padding", None)
        state = json.dumps(data, sort_keys=True)
    return hashlib.sha256(state.encode()).hexdigest()[:20]


@dataclass
class Encoded:
    """A tokenized split: flat token ids with offsets; labels; the source row ids.

    Windowed (``model.long_text.mode windows``): ``offsets`` delimit W windows and ``windows`` says
    which belong to each of the N documents; everything else (``len``, ``labels``, ``rows``,
    ``lengths``, batch indices) stays per document, so batches, shards and metrics are of documents."""

    ids: np.ndarray  # (total_tokens,) int32
    type_ids: np.ndarray | None  # (total_tokens,) int8, for sentence pairs
    offsets: np.ndarray  # (N + 1,) int64, or (W + 1,) when windowed
    labels: np.ndarray  # (N,) int64; multi-label: (N, C) float32 0/1 indicators
    rows: np.ndarray  # (N,) int64 source row numbers
    windows: np.ndarray | None = None  # (N + 1,) int64: document d owns windows windows[d]:windows[d + 1]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per document (all its windows': what a token budget counts)."""
        if self.windows is None:
            return np.diff(self.offsets)
        return self.offsets[self.windows[1:]] - self.offsets[self.windows[:-1]]

    def save(self, path: Path) -> None:
        arrays = {"ids": self.ids, "offsets": self.offsets, "labels": self.labels, "rows": self.rows}
        if self.type_ids is not None:
            arrays["type_ids"] = self.type_ids
        if self.windows is not None:
            arrays["windows"] = self.windows
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Encoded:
        with np.load(path, allow_pickle=False) as data:
            return cls(
                ids=data["ids"], type_ids=data["type_ids"] if "type_ids" in data else None,
                offsets=data["offsets"], labels=data["labels"], rows=data["rows"],
                windows=data["windows"] if "windows" in data else None,
            )


def encode_frame(df: pd.DataFrame, tokenizer, max_length: int, num_labels: int = 0, stride: int | None = None,
                 max_windows: int | None = None) -> Encoded:
    """Token ids of a split, truncated to ``max_length``; with ``stride`` (``model.long_text.mode
    windows``) every text in overlapping windows of ``max_length`` tokens instead (``encode_windows``)."""
    if stride is not None:
        return encode_windows(df, tokenizer, max_length, stride, max_windows, num_labels)
    texts = df["text"].tolist()
    pairs = df["text_pair"].tolist() if "text_pair" in df.columns else None
    ids: list[list[int]] = []
    type_ids: list[list[int]] = []
    for start in range(0, len(texts), TOKENIZE_CHUNK):
        args = [texts[start : start + TOKENIZE_CHUNK]]
        if pairs is not None:
            args.append(pairs[start : start + TOKENIZE_CHUNK])
        out = tokenizer(*args, truncation=True, max_length=max_length, return_attention_mask=False,
                        return_token_type_ids=pairs is not None)
        ids.extend(out["input_ids"])
        if pairs is not None:
            type_ids.extend(out["token_type_ids"])
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.fromiter((t for seq in ids for t in seq), dtype=np.int32, count=int(offsets[-1]))
    flat_types = (
        np.fromiter((t for seq in type_ids for t in seq), dtype=np.int8, count=int(offsets[-1]))
        if pairs is not None else None
    )
    labels = df["label"].to_numpy(dtype=np.int64) if "label" in df.columns else np.zeros(len(df), np.int64)
    if "label_set" in df.columns:  # multi-label: the sets as an indicator matrix
        labels = label_indicators(df["label_set"], num_labels)
    return Encoded(flat, flat_types, offsets, labels, df.index.to_numpy(dtype=np.int64))


def label_indicators(sets, num_labels: int) -> np.ndarray:
    """Label sets (tuples of indices) as a (N, C) float32 0/1 matrix: the BCE targets."""
    out = np.zeros((len(sets), num_labels), dtype=np.float32)
    for row, labels in enumerate(sets):
        out[row, list(labels)] = 1.0
    return out


def check_window_stride(tokenizer, max_length: int, stride: int) -> None:
    """The tokenizer panics (a Rust panic, not an exception) unless each window's text part,
    max_length less its special tokens, is longer than the overlap."""
    room = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    if stride >= room:
        raise TexttuneError(f"model.long_text.stride {stride} must be less than {room}: model.max_length "
                            f"{max_length} less the tokenizer's {max_length - room} special tokens per window")


def encode_windows(df: pd.DataFrame, tokenizer, max_length: int, stride: int, max_windows: int | None = None,
                   num_labels: int = 0) -> Encoded:
    """Every text as windows of at most ``max_length`` tokens (special tokens included), each sharing
    ``stride`` text tokens with the previous one (the fast tokenizer's overflowing tokens); a text
    that fits is one window, the same ids as truncation. ``max_windows`` keeps the first ones."""
    if "text_pair" in df.columns:
        raise TexttuneError("model.long_text.mode windows: the data has sentence pairs (text_pair); windows "
                            "read single texts only, use model.long_text.mode truncate")
    check_window_stride(tokenizer, max_length, stride)
    texts = df["text"].tolist()
    ids: list[list[int]] = []
    counts = np.zeros(len(texts), dtype=np.int64)
    for start in range(0, len(texts), TOKENIZE_CHUNK):
        out = tokenizer(texts[start : start + TOKENIZE_CHUNK], truncation=True, max_length=max_length,
                        stride=stride, return_overflowing_tokens=True, return_attention_mask=False,
                        return_token_type_ids=False)
        for seq, owner in zip(out["input_ids"], out["overflow_to_sample_mapping"]):
            if max_windows is None or counts[start + owner] < max_windows:
                ids.append(seq)
                counts[start + owner] += 1
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.fromiter((t for seq in ids for t in seq), dtype=np.int32, count=int(offsets[-1]))
    labels = df["label"].to_numpy(dtype=np.int64) if "label" in df.columns else np.zeros(len(df), np.int64)
    if "label_set" in df.columns:  # multi-label, as encode_frame
        labels = label_indicators(df["label_set"], num_labels)
    windows = np.concatenate([[0], np.cumsum(counts)])
    return Encoded(flat, None, offsets, labels, df.index.to_numpy(dtype=np.int64), windows)


def encode_cached(df: pd.DataFrame, tokenizer, max_length: int, use_cache: bool = True,
                  num_labels: int = 0, stride: int | None = None,
                  max_windows: int | None = None) -> tuple[Encoded, bool]:
    """Tokenize a split, or load it from the cache. Returns (encoded, was_cached). ``num_labels``: the
    width of a multi-label split's indicator matrix (its ``label_set`` column)."""
    width = f"-ml{num_labels}" if "label_set" in df.columns else ""
    key = f"{frame_fingerprint(df)}-{tokenizer_fingerprint(tokenizer)}-{max_length}{width}"
    if stride is not None:  # model.long_text.mode windows
        key += f"-windows{stride}-{max_windows or 'all'}"
    path = cache_dir() / f"{key}.npz"
    if use_cache and path.is_file():
        try:
            return Encoded.load(path), True
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry is rebuilt below
    encoded = encode_frame(df, tokenizer, max_length, num_labels, stride, max_windows)
    if use_cache:
        encoded.save(path)
    return encoded, False


def collate(encoded: Encoded, indices: np.ndarray | list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad one batch to its own longest example (dynamic padding). Windowed data: the documents'
    windows in order, one row each, with ``windows`` (B,) saying how many rows each document has
    (``models.long_text.document_logits`` pools them); ``labels`` stay one per document."""
    sequences = indices
    if encoded.windows is not None:
        first, last = encoded.windows[indices], encoded.windows[np.asarray(indices) + 1]
        sequences = np.concatenate([np.arange(a, b) for a, b in zip(first, last)])
    starts, ends = encoded.offsets[sequences], encoded.offsets[np.asarray(sequences) + 1]
    width = int((ends - starts).max())
    ids = np.full((len(starts), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(starts), width), dtype=np.int64)
    types = np.zeros((len(starts), width), dtype=np.int64) if encoded.type_ids is not None else None
    for row, (start, end) in enumerate(zip(starts, ends)):
        n = end - start
        ids[row, :n] = encoded.ids[start:end]
        mask[row, :n] = 1
        if types is not None:
            types[row, :n] = encoded.type_ids[start:end]
    batch = {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(mask),
        "labels": torch.tensor(encoded.labels[indices]),
    }
    if types is not None:
        batch["token_type_ids"] = torch.from_numpy(types)
    if encoded.windows is not None:
        batch["windows"] = torch.from_numpy(last - first)
    return batch


def epoch_batches(
    lengths: np.ndarray, batch_size: int, seed: int, epoch: int, group_by_length: bool
) -> list[np.ndarray]:
    """The training batches of one epoch, a pure function of (seed, epoch): resumable.

    With ``group_by_length`` the shuffled order is cut into mega-batches of 50 batches, each sorted
    by length and cut into batches, and the batches are shuffled again: batches hold examples of
    similar length (little padding) while the data order stays random (as transformers'
    LengthGroupedSampler does). The longest batch goes first so out-of-memory shows up at once.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    if not group_by_length:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    mega = batch_size * 50
    batches: list[np.ndarray] = []
    for start in range(0, len(order), mega):
        chunk = order[start : start + mega]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return _longest_first_then_shuffled(batches, lengths, rng)


def _longest_first_then_shuffled(batches: list[np.ndarray], lengths: np.ndarray, rng) -> list[np.ndarray]:
    longest = int(np.argmax([lengths[b].max() for b in batches]))
    first = batches.pop(longest)
    rest = [batches[i] for i in rng.permutation(len(batches))]
    return [first, *rest]


def padded_tokens(lengths: np.ndarray, indices: np.ndarray) -> int:
    """What a batch costs with dynamic padding: rows × its longest row (not its real tokens)."""
    return len(indices) * int(lengths[indices].max()) if len(indices) else 0


def epoch_token_batches(
    lengths: np.ndarray, batch_tokens: int, seed: int, epoch: int, group_by_length: bool, ranks: int = 1
) -> list[np.ndarray]:
    """``epoch_batches`` by a token budget: global batches whose every rank's share (every
    ``ranks``-th example, see ``training.loop._share``) holds at most ``batch_tokens`` *padded*
    tokens, rows × longest row, which is what a dynamically padded forward pass costs. A batch of at
    most ``ranks`` examples (one per rank) is allowed whatever its length: an example longer than the
    budget trains alone. A pure function of (seed, epoch) (and the budget and rank count), so resume
    needs only a position.

    With ``group_by_length`` the shuffled order is cut into chunks of about 50 budgets of tokens, each
    chunk sorted by length and cut greedily (rows = ranks × (budget // longest), a multiple of
    ``ranks``, so ranks stay balanced), the longest batch first, the rest shuffled. Without it the
    shuffled order is cut greedily as it comes (each batch padded to its own longest example).
    """
    if batch_tokens <= 0 or ranks <= 0:
        raise ValueError(f"batch_tokens ({batch_tokens}) and ranks ({ranks}) must be positive")
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    lengths = np.maximum(np.asarray(lengths, dtype=np.int64), 1)  # an empty row still takes a row
    if not group_by_length:
        return _cut_in_order(order, lengths, batch_tokens, ranks)
    chunk_of = (np.cumsum(lengths[order]) - 1) // (50 * batch_tokens * ranks)
    batches: list[np.ndarray] = []
    for chunk in np.split(order, np.flatnonzero(np.diff(chunk_of)) + 1):
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        start = 0
        while start < len(chunk):
            rows = ranks * max(1, batch_tokens // int(lengths[chunk[start]]))
            batches.append(chunk[start : start + rows])
            start += rows
    return _longest_first_then_shuffled(batches, lengths, rng) if batches else []


def _cut_in_order(order: np.ndarray, lengths: np.ndarray, batch_tokens: int, ranks: int) -> list[np.ndarray]:
    """Greedy batches of ``order`` as it comes: a row joins while ceil(rows / ranks) × longest fits."""
    batches, start, longest = [], 0, 0
    for i, index in enumerate(order):
        rows, width = i + 1 - start, max(longest, int(lengths[index]))
        if rows > ranks and -(-rows // ranks) * width > batch_tokens:
            batches.append(order[start:i])
            start, width = i, int(lengths[index])
        longest = width
    if start < len(order):
        batches.append(order[start:])
    return batches


def eval_batches(lengths: np.ndarray, batch_size: int, batch_tokens: int | None = None) -> list[np.ndarray]:
    """Evaluation batches sorted by length (order does not matter for metrics; padding does): of
    ``batch_size`` examples, or with ``batch_tokens`` as many as fit that many padded tokens (an
    example longer than the budget alone)."""
    order = np.argsort(-lengths, kind="stable")
    if batch_tokens is None:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches, start = [], 0
    while start < len(order):
        rows = max(1, batch_tokens // max(int(lengths[order[start]]), 1))
        batches.append(order[start : start + rows])
        start += rows
    return batches
