"""Training a subword tokenizer (WordPiece, BERT-style; or byte-level BPE) on a corpus.

Built with Hugging Face ``tokenizers`` (normalizer, pre-tokenizer, trainer, post-processor, decoder as
BERT and RoBERTa use them) and saved as a ``PreTrainedTokenizerFast`` folder: it loads with
``AutoTokenizer.from_pretrained`` and works as ``model.tokenizer`` of a from-scratch encoder or for
masked-LM pre-training (it has a mask token).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from texttune.errors import TexttuneError
from texttune.io import apply_umask

WORDPIECE_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
BPE_SPECIALS = {"pad": "<pad>", "unk": "<unk>", "cls": "<s>", "sep": "</s>", "mask": "<mask>"}


def _number_pieces_in_a_fixed_order(backend, models, specials: list[str]) -> None:
    """The tokenizers trainer learns the same pieces from the same texts, but numbers pieces of equal
    counts in hash-map order, different in every process: the same corpus gave a different
    tokenizer.json (and, resumed, a model reading other ids). WordPiece matches pieces by their text
    only, so they are renumbered here: the special tokens first, then by length and text."""
    vocab = backend.get_vocab()
    order = sorted(vocab, key=lambda piece: (0, specials.index(piece), "") if piece in specials
                   else (1, len(piece.removeprefix("##")), piece))
    backend.model = models.WordPiece(vocab={piece: i for i, piece in enumerate(order)},
                                     unk_token=backend.model.unk_token)


def train_tokenizer(
    texts: Iterable[str],
    kind: Literal["wordpiece", "bpe"] = "wordpiece",
    vocab_size: int = 8000,
    min_frequency: int = 2,
    lowercase: bool = True,
    max_length: int = 512,
):
    """A fast tokenizer trained on ``texts``: [CLS] text [SEP] (WordPiece) or <s> text </s> (BPE)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise TexttuneError("tokenizer training: the corpus has no text (every row is empty)")
    specials = WORDPIECE_SPECIALS if kind == "wordpiece" else BPE_SPECIALS
    if kind == "wordpiece":
        backend = Tokenizer(models.WordPiece(unk_token=specials["unk"]))
        backend.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase)
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece(prefix="##")
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            special_tokens=list(specials.values()), show_progress=False)
    else:
        backend = Tokenizer(models.BPE(unk_token=specials["unk"]))
        backend.normalizer = normalizers.Lowercase() if lowercase else None
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                      special_tokens=list(specials.values()),
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(texts, trainer=trainer)
    if kind == "wordpiece":
        _number_pieces_in_a_fixed_order(backend, models, list(specials.values()))
    cls, sep = specials["cls"], specials["sep"]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, backend.token_to_id(cls)), (sep, backend.token_to_id(sep))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, model_max_length=max_length, padding_side="right",
        **{f"{role}_token": token for role, token in specials.items()},
    )


def corpus_texts(dataset: str | None = None, files: list[Path] | None = None, text_column: str = "text",
                 split: str = "train") -> list[str]:
    """Texts of a built-in dataset's split, or of files (.txt: one text per line; tables: a column)."""
    if (dataset is None) == (not files):
        raise TexttuneError("give a built-in dataset (--dataset) or text files (--file), one of the two")
    if dataset is not None:
        from texttune.config import DataConfig
        from texttune.data.load import load_dataset

        ds = load_dataset(DataConfig(dataset=dataset))
        if split not in ds.splits:
            raise TexttuneError(f"dataset '{dataset}' has no split '{split}'; it has {ds.split_names()}")
        return ds.splits[split]["text"].tolist()
    texts: list[str] = []
    for path in files or []:
        texts += _file_texts(Path(path), text_column)
    return texts


def _file_texts(path: Path, text_column: str) -> list[str]:
    if not path.is_file():
        raise TexttuneError(f"{path}: no such file")
    if path.suffix.lower() in (".txt", ".text", ""):
        try:
            return path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as err:
            raise TexttuneError(f"{path}: not UTF-8 text (byte {err.start})") from None
    from texttune.data.files import detect_format, read_table

    frame = read_table(path, detect_format(path))
    if text_column not in frame.columns:
        raise TexttuneError(f"{path}: no column '{text_column}'; columns: {list(frame.columns)}")
    return frame[text_column].dropna().astype(str).tolist()


def save_tokenizer(tokenizer, out: Path) -> Path:
    """Save to a new folder (never over an existing one), atomically."""
    out = Path(out)
    if out.exists():
        raise TexttuneError(f"{out}: already exists; give a new folder")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer.save_pretrained(tmp)
    apply_umask(tmp)
    tmp.rename(out)
    return out
