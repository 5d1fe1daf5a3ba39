"""A word-level tokenizer for the from-scratch encoders, built from the training split.

It is a ``transformers.PreTrainedTokenizerFast`` wrapping a ``tokenizers.Tokenizer`` (a ``WordLevel``
model), so the data pipeline treats it exactly like a pretrained model's tokenizer: the same call,
``pad_token_id``, the cache key from ``backend_tokenizer.to_str()``, ``save_pretrained`` next to the
model and ``AutoTokenizer.from_pretrained`` at prediction time. The splitting rule lives in the
tokenizer's normalizer and pre-tokenizer, so it runs in Rust and is saved inside ``tokenizer.json``:
a reloaded tokenizer splits text exactly as the one the model was trained with.

The splitting rule is torchtext's ``basic_english``, which applies, in order, to the lower-cased text::

    '      -> " '  "   (so "don't" -> don ' t)
    "      -> ""       (dropped)
    .      -> " . "
    <br /> -> " "
    ,  (  )  !  ?   -> the character with a space on each side
    ;  :            -> " "  (dropped, like basic_english)
    \\s+    -> " ", then split on whitespace

Deliberate differences, all behind options whose defaults keep basic_english's behaviour on IMDB:

* ``strip_html`` removes the simple formatting tags found in IMDB reviews (``<br />``, ``<br/>``,
  ``<br>``, ``<i>``, ``</i>``, ``<hr>``, ...), not only the literal ``<br />``; it runs before the
  punctuation rules, as basic_english's ``<br \\/>`` rule does in effect (no rule before it touches
  a tag). With ``strip_html=False`` tags stay in the text and split like any other characters.
* ``lowercase=False`` skips lower-casing (basic_english always lower-cases); tag stripping is
  case-insensitive either way.
* Lower-casing and whitespace follow Rust's Unicode rules (``char::to_lowercase``,
  ``char::is_whitespace``) instead of Python's ``str.lower``/``str.split``; they differ only on a
  few rare code points (e.g. the ASCII separators ``\\x1c``-``\\x1f``, which Python treats as
  whitespace).
* The special tokens (``<pad>``, ``<unk>``, ``<cls>``, ``<sep>``) are matched in raw text before the
  rule runs, so a review containing the literal string ``<unk>`` gets the special token.

Vocabulary: ids 0-3 are always ``<pad>``, ``<unk>``, ``<cls>``, ``<sep>`` (whatever ``add_cls`` says,
so a sentence-pair task never lacks its separator); then the words of the training texts seen at
least ``min_freq`` times, most frequent first, ties broken by the word itself (Unicode order), so
the vocabulary -- and with it the cache key -- is a pure function of the training texts and options.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, processors, trainers
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

PAD, UNK, CLS, SEP = "<pad>", "<unk>", "<cls>", "<sep>"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP)  # ids 0, 1, 2, 3
DEFAULT_MODEL_MAX_LENGTH = 100_000  # no positional limit of its own; the model config sets the real one
CHUNK = 2048  # texts per encode call in vocab_stats

# Formatting tags seen in IMDB reviews; other "<...>" text (<grin>, <3) is left to the split rule.
HTML_TAG = r"(?i)</?\s*(?:br|hr|p|i|b|u|em|strong)\s*/?\s*>"


def build_normalizer(*, lowercase: bool = True, strip_html: bool = True) -> normalizers.Normalizer:
    """torchtext's basic_english rule (see the module docstring) as a Rust normalizer sequence."""
    steps: list[normalizers.Normalizer] = []
    if lowercase:
        steps.append(normalizers.Lowercase())
    if strip_html:
        steps.append(normalizers.Replace(Regex(HTML_TAG), " "))
    steps += [
        normalizers.Replace("'", " '  "),
        normalizers.Replace('"', ""),
        normalizers.Replace(".", " . "),
        normalizers.Replace(",", " , "),
        normalizers.Replace("(", " ( "),
        normalizers.Replace(")", " ) "),
        normalizers.Replace("!", " ! "),
        normalizers.Replace("?", " ? "),
        normalizers.Replace(";", " "),
        normalizers.Replace(":", " "),
    ]
    return normalizers.Sequence(steps)


def split_words(text: str, *, lowercase: bool = True, strip_html: bool = True) -> list[str]:
    """The words of one text under the splitting rule (for inspection and tests)."""
    normalized = build_normalizer(lowercase=lowercase, strip_html=strip_html).normalize_str(text)
    return [word for word, _ in pre_tokenizers.WhitespaceSplit().pre_tokenize_str(normalized)]


def build_post_processor(add_cls: bool) -> processors.TemplateProcessing:
    """Single texts: ``[<cls>] A``; pairs: ``<cls> A <sep> B <sep>`` or ``A <sep> B`` (B has type id 1)."""
    if add_cls:
        single, pair = f"{CLS} $A:0", f"{CLS}:0 $A:0 {SEP}:0 $B:1 {SEP}:1"
    else:
        single, pair = "$A:0", f"$A:0 {SEP}:0 $B:1"
    return processors.TemplateProcessing(
        single=single,
        pair=pair,
        special_tokens=[(CLS, SPECIAL_TOKENS.index(CLS)), (SEP, SPECIAL_TOKENS.index(SEP))],
    )


def build_word_tokenizer(
    texts: Iterable[str],
    *,
    lowercase: bool = True,
    strip_html: bool = True,
    min_freq: int = 1,
    max_size: int | None = None,
    add_cls: bool = False,
    max_length: int | None = None,
    extra_words: Iterable[str] = (),
) -> PreTrainedTokenizerFast:
    """Count the words of ``texts`` (the training split only) and wrap a WordLevel tokenizer.

    ``max_size`` caps the whole vocabulary, the four special tokens included (it is the embedding
    table's row count); ``min_freq`` drops words seen fewer times. ``max_length`` becomes
    ``model_max_length``. ``extra_words`` are appended after the training words (those it lacks).
    """
    if min_freq < 1:
        raise ValueError(f"min_freq must be >= 1, got {min_freq}")
    if max_size is not None and max_size < len(SPECIAL_TOKENS):
        raise ValueError(f"max_size must be >= {len(SPECIAL_TOKENS)} (the special tokens), got {max_size}")
    backend = Tokenizer(WordLevel(unk_token=UNK))
    backend.normalizer = build_normalizer(lowercase=lowercase, strip_html=strip_html)
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # The trainer counts words in parallel in Rust with this tokenizer's own normalizer and
    # pre-tokenizer, sorts by (-count, word) and puts the special tokens first: ids 0..3.
    trainer = trainers.WordLevelTrainer(
        vocab_size=max_size if max_size is not None else 2**62,
        min_frequency=min_freq,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    extra = list(extra_words)
    if extra:
        vocab = backend.get_vocab()
        for word in extra:
            vocab.setdefault(word, len(vocab))
        backend.model = WordLevel(vocab=vocab, unk_token=UNK)
    backend.post_processor = build_post_processor(add_cls)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        unk_token=UNK,
        cls_token=CLS,
        sep_token=SEP,
        model_max_length=max_length or DEFAULT_MODEL_MAX_LENGTH,
        padding_side="right",
    )


def vocab_stats(tokenizer: PreTrainedTokenizerFast, texts: Iterable[str]) -> dict[str, float | int]:
    """Vocabulary size and how well it covers ``texts``: the share of word tokens that are ``<unk>``.

    Counts words only (special tokens are not added) over whole texts (no truncation).
    """
    # A private copy: the caller's tokenizer keeps whatever truncation/padding state it has.
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    unk_id = tokenizer.unk_token_id
    texts = list(texts)
    num_tokens = unk_tokens = 0
    for start in range(0, len(texts), CHUNK):  # chunks: 25k encodings at once cost ~1 GB
        for encoding in backend.encode_batch_fast(texts[start : start + CHUNK], add_special_tokens=False):
            ids = encoding.ids
            num_tokens += len(ids)
            unk_tokens += ids.count(unk_id)
    unk_rate = unk_tokens / num_tokens if num_tokens else 0.0
    return {
        "vocab_size": len(tokenizer),
        "num_texts": len(texts),
        "num_tokens": num_tokens,
        "unk_tokens": unk_tokens,
        "unk_rate": unk_rate,
        "coverage": 1.0 - unk_rate if num_tokens else 0.0,
    }
