"""Summaries of a dataset for ``texttune data inspect``: sizes, balance, lengths, examples."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from texttune.data.dataset import TextDataset

PERCENTILES = (5, 50, 90, 95, 99)
TOKEN_SAMPLE = 5000  # token lengths come from a seeded sample per split; tokenizing IMDB in full takes minutes


def load_tokenizer(name: str):
    """A Hugging Face tokenizer from an alias (``minilm``), a folder or a Hub id; None for ``words``."""
    if name == "words":
        return None
    from texttune.resources import resolve_model_path

    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(resolve_model_path(name)))


def _percentiles(lengths: np.ndarray) -> dict[str, int]:
    if len(lengths) == 0:
        return {}
    values = np.percentile(lengths, PERCENTILES)
    out = {f"p{p}": int(round(v)) for p, v in zip(PERCENTILES, values)}
    out["max"] = int(lengths.max())
    return out


def token_lengths(texts: pd.Series, pairs: pd.Series | None, tokenizer) -> np.ndarray:
    if tokenizer is None:
        lengths = texts.str.split().str.len().to_numpy()
        if pairs is not None:
            lengths = lengths + pairs.str.split().str.len().to_numpy()
        return lengths
    args = [texts.tolist()] + ([pairs.tolist()] if pairs is not None else [])
    encoded = tokenizer(*args, add_special_tokens=True, truncation=False)["input_ids"]
    return np.array([len(ids) for ids in encoded])


def summarize(ds: TextDataset, tokenizer_name: str = "minilm", examples: int = 3, seed: int = 0) -> dict[str, Any]:
    tokenizer = load_tokenizer(tokenizer_name)
    out: dict[str, Any] = {
        "name": ds.name,
        "task": ds.task,
        "labels": ds.label_names,
        "notes": ds.notes,
        "tokenizer": tokenizer_name,
        "splits": {},
    }
    for split in ds.split_names():
        df = ds.splits[split]
        pairs = df["text_pair"] if "text_pair" in df.columns else None
        chars = df["text"].str.len().to_numpy()
        if pairs is not None:
            chars = chars + pairs.str.len().to_numpy()
        sample = df.sample(n=min(TOKEN_SAMPLE, len(df)), random_state=seed) if len(df) else df
        tokens = token_lengths(sample["text"], sample["text_pair"] if pairs is not None else None, tokenizer)
        info: dict[str, Any] = {
            "rows": len(df),
            "provenance": ds.provenance.get(split, ""),
            "file": ds.files.get(split, ""),
            "chars": _percentiles(chars),
            "tokens": _percentiles(tokens),
            "tokens_sampled": len(sample) < len(df),
            "examples": _examples(df, ds.label_names, examples, seed),
        }
        if ds.label_names is not None and "label" in df.columns:
            counts = df["label"].value_counts()
            info["classes"] = {name: int(counts.get(i, 0)) for i, name in enumerate(ds.label_names)}
        out["splits"][split] = info
    return out


def _examples(df: pd.DataFrame, label_names: list[str] | None, n: int, seed: int) -> list[dict[str, str]]:
    if n <= 0 or len(df) == 0:
        return []
    rows = df.sample(n=min(n, len(df)), random_state=seed)
    out = []
    for _, row in rows.iterrows():
        item = {"text": row["text"]}
        if "text_pair" in row:
            item["text_pair"] = row["text_pair"]
        if label_names is not None and "label" in row and 0 <= row["label"] < len(label_names):
            item["label"] = label_names[int(row["label"])]
        out.append(item)
    return out
