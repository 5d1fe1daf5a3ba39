"""From-scratch encoders as model configs: bag_of_ngrams, cnn, rnn, transformer.

Each config names its encoder's hyper-parameters (they become the encoder dict saved in the model's
config.json) plus what every from-scratch model shares: the tokenizer (a word vocabulary built from
the training split only, or a pretrained WordPiece tokenizer such as MiniLM's), optional GloVe
initialisation, the head and ``max_length``. The encoders themselves live in their own modules.

Each class also declares ``train_defaults``: the training settings its family needs unless the user sets
them (``tasks/classify.with_model_defaults`` puts them under every config source). From-scratch models
learn at learning rates ~40x a pretrained encoder's: at the global 5e-5 a CNN on TREC-6 stays near chance
(0.16 after 3 epochs). The values are those of the tuned configs in ``configs/scratch/`` (and
``configs/*_bag_of_ngrams.yaml``), with epochs and early stopping that suit small and large datasets.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from texttune.config import Section
from texttune.models.heads import HeadConfig
from texttune.models.long_text import LongTextConfig, check_stride
from texttune.models.registry import MODEL_BUILDERS, MODEL_CONFIGS

# Keys of a model config that are not encoder hyper-parameters.
SHARED_KEYS = {"name", "tokenizer", "vocab", "glove", "freeze_embedding", "max_length", "long_text", "head",
               "pooling"}


class VocabConfig(Section):
    lowercase: bool = Field(True, description="Lower-case texts before splitting into words.")
    strip_html: bool = Field(True, description="Remove HTML tags such as IMDB's <br />.")
    min_freq: int = Field(1, ge=1, description="Words seen fewer times in train become <unk>.")
    max_size: int | None = Field(None, gt=4, description="Vocabulary cap (most frequent first, specials included).")
    glove_words: int = Field(
        0, ge=0,
        description="Also add GloVe's N most frequent words that train lacks (needs glove: true): they keep "
        "their GloVe vectors, so a model transferred to another domain (init_from) still knows its words.",
    )


class ScratchModelConfig(Section):
    tokenizer: str = Field(
        "word",
        description="word: a word vocabulary built from the training split (basic_english rules); or a "
        "pretrained tokenizer: minilm, a model folder or a Hub id (its WordPiece vocabulary).",
    )
    vocab: VocabConfig = Field(default_factory=VocabConfig)
    glove: bool = Field(False, description="Initialise the word embedding with GloVe 6B 50d (embedding_dim 50).")
    freeze_embedding: bool = Field(False, description="Keep the (GloVe) embedding fixed during training.")
    max_length: int = Field(256, gt=0, description="Longer texts are truncated to this many tokens "
                            "(or, with long_text.mode windows, read in windows of this many).")
    long_text: LongTextConfig = Field(default_factory=LongTextConfig)
    head: HeadConfig = Field(default_factory=HeadConfig)

    @field_validator("long_text")
    @classmethod
    def _stride_fits(cls, value: LongTextConfig, info: ValidationInfo) -> LongTextConfig:
        return check_stride(value, info.data.get("max_length", value.stride + 1))

    def encoder_dict(self, vocab_size: int, pad_id: int) -> dict[str, Any]:
        data = {k: v for k, v in self.model_dump().items() if k not in SHARED_KEYS}
        return {"vocab_size": vocab_size, "pad_id": pad_id, **data}


class BagOfNgramsModelConfig(ScratchModelConfig):
    name: Literal["bag_of_ngrams"] = "bag_of_ngrams"
    embedding_dim: int = Field(50, gt=0, description="Size of word and n-gram vectors.")
    # fastText's recipe (configs/*_bag_of_ngrams.yaml): sparse Adagrad at lr 0.2, no clipping, 5 epochs.
    train_defaults: ClassVar[dict[str, Any]] = {
        "optimizer": "adagrad", "lr": 0.2, "max_grad_norm": None, "weight_decay": 0.0, "warmup_ratio": 0.0,
        "epochs": 5, "per_device_batch_size": 64,
    }
    ngrams: Literal[1, 2] = Field(2, description="1: words only; 2: words and hashed word bigrams.")
    num_buckets: int = Field(200_000, gt=0, description="Hash buckets of the bigrams.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the averaged vector.")
    sparse: bool = Field(
        True,
        description="Sparse embedding gradients (only the rows a batch read), as fastText: fast with "
        "train.optimizer sgd or adagrad and train.max_grad_norm null; adamw falls back to dense ones.",
    )


class CNNModelConfig(ScratchModelConfig):
    name: Literal["cnn"] = "cnn"
    # configs/scratch/{trec,sst2,imdb}_cnn.yaml: lr 2e-3-3e-3, no weight decay or warmup.
    train_defaults: ClassVar[dict[str, Any]] = {
        "lr": 2e-3, "weight_decay": 0.0, "warmup_ratio": 0.0, "epochs": 10, "per_device_batch_size": 32,
        "early_stopping_patience": 3,
    }
    embedding_dim: int = Field(128, gt=0, description="Word vector size (50 with glove).")
    kernel_sizes: list[int] = Field([3, 4, 5], min_length=1, description="Widths of the parallel filters.")
    num_filters: int = Field(100, gt=0, description="Filters per width.")
    dropout: float = Field(
        0.5, ge=0, lt=1, description="Dropout on the word vectors (the pooled features get head.dropout)."
    )


class RNNModelConfig(ScratchModelConfig):
    name: Literal["rnn"] = "rnn"
    # configs/scratch/{trec,imdb}_lstm.yaml: lr 2e-3-3e-3, no weight decay or warmup.
    train_defaults: ClassVar[dict[str, Any]] = {
        "lr": 2e-3, "weight_decay": 0.0, "warmup_ratio": 0.0, "epochs": 10, "per_device_batch_size": 32,
        "early_stopping_patience": 3,
    }
    embedding_dim: int = Field(128, gt=0, description="Word vector size (50 with glove).")
    cell: Literal["rnn", "lstm", "gru"] = Field("lstm", description="Recurrent cell.")
    hidden_size: int = Field(128, gt=0, description="Hidden units per direction.")
    num_layers: int = Field(1, gt=0, description="Stacked layers.")
    bidirectional: bool = Field(True, description="Read the text in both directions.")
    dropout: float = Field(0.3, ge=0, lt=1, description="Dropout on embeddings, between layers, on the output.")
    pooling: Literal["last", "mean", "max"] = Field(
        "last", description="last: the final hidden state of each sequence; mean/max over real tokens."
    )

    def encoder_dict(self, vocab_size: int, pad_id: int) -> dict[str, Any]:
        return {**super().encoder_dict(vocab_size, pad_id), "pooling": self.pooling}


class TransformerModelConfig(ScratchModelConfig):
    name: Literal["transformer"] = "transformer"
    # configs/scratch/{trec,imdb}_transformer.yaml: lr 1e-3 with 10% warmup (attention layers need it).
    train_defaults: ClassVar[dict[str, Any]] = {
        "lr": 1e-3, "weight_decay": 0.01, "warmup_ratio": 0.1, "epochs": 10, "per_device_batch_size": 32,
        "early_stopping_patience": 3,
    }
    embedding_dim: int | None = Field(None, description="Word vector size if not d_model (50 with glove).")
    d_model: int = Field(128, gt=0, description="Width of the encoder layers.")
    nhead: int = Field(4, gt=0, description="Attention heads.")
    num_layers: int = Field(2, gt=0, description="Encoder layers.")
    dim_feedforward: int = Field(256, gt=0, description="Hidden size of the feed-forward blocks.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout in the encoder layers.")
    positions: Literal["sinusoidal", "learned"] = Field("sinusoidal", description="Position encoding.")
    norm_first: bool = Field(True, description="Pre-LN (true) or post-LN (false) encoder layers.")
    embedding_scale: float | Literal["auto"] = Field(
        "auto", description="Factor on the token vectors before the positions are added. auto: unit "
        "RMS per channel, i.e. sqrt(d_model) for random embeddings (Vaswani et al.) and, with glove, the "
        "factor that brings the projected GloVe vectors to RMS 1 (sqrt(d_model) would make them ~5x the "
        "sinusoidal positions and drown word order); measured at build time and saved with the model."
    )
    pooling: Literal["cls", "mean", "max"] = Field(
        "mean", description="cls uses a <cls> token put first by the word tokenizer; mean/max over real tokens."
    )

    def encoder_dict(self, vocab_size: int, pad_id: int) -> dict[str, Any]:
        data = super().encoder_dict(vocab_size, pad_id)
        data["max_length"] = self.max_length + 2  # room for <cls>/<sep> added by the tokenizer
        if data["embedding_scale"] == "auto":
            data["embedding_scale"] = None  # sqrt(d_model); build_scratch measures it for GloVe inputs
        return data


SCRATCH_CONFIGS = {
    "bag_of_ngrams": BagOfNgramsModelConfig, "cnn": CNNModelConfig, "rnn": RNNModelConfig,
    "transformer": TransformerModelConfig,
}


def build_tokenizer(cfg: ScratchModelConfig, train_texts):
    if cfg.tokenizer != "word":
        from texttune.models.pretrained import load_tokenizer

        return load_tokenizer(cfg.tokenizer)
    from texttune.models.word_tokenizer import build_word_tokenizer

    add_cls = getattr(cfg, "pooling", None) == "cls"
    extra: list[str] = []
    if cfg.vocab.glove_words:
        from texttune.models.glove import glove_words

        extra = glove_words(cfg.vocab.glove_words)
    return build_word_tokenizer(
        train_texts, lowercase=cfg.vocab.lowercase, strip_html=cfg.vocab.strip_html,
        min_freq=cfg.vocab.min_freq, max_size=cfg.vocab.max_size, add_cls=add_cls, max_length=cfg.max_length,
        extra_words=extra,
    )


def build_scratch(cfg: ScratchModelConfig, label_names: list[str], train_texts=None):
    """(model, tokenizer): vocabulary from the training texts, encoder from its config, GloVe rows."""
    from texttune.errors import TexttuneError
    from texttune.models.classifier import TexttuneConfig, TexttuneForSequenceClassification

    if train_texts is None and cfg.tokenizer == "word":
        raise TexttuneError(f"model '{cfg.name}' builds its vocabulary from the training texts; none given")
    if cfg.vocab.glove_words and not cfg.glove:
        raise TexttuneError("model.vocab.glove_words: the added words only mean something with GloVe vectors; "
                            "set model.glove=true")
    if cfg.glove and (getattr(cfg, "embedding_dim", None) or 50) != 50:
        raise TexttuneError(f"model.embedding_dim: GloVe 6B vectors offline are 50-dimensional; "
                            f"set model.embedding_dim=50 (got {cfg.embedding_dim})")
    tokenizer = build_tokenizer(cfg, list(train_texts) if train_texts is not None else None)
    vocab_size = len(tokenizer)
    config = TexttuneConfig(
        encoder_type=cfg.name,
        encoder=cfg.encoder_dict(vocab_size, tokenizer.pad_token_id or 0),
        pooling=getattr(cfg, "pooling", "mean") if cfg.name == "transformer" else "mean",
        head=cfg.head.model_dump(),
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
    )
    model = TexttuneForSequenceClassification(config)
    if cfg.glove:
        config.glove = _init_glove(model, tokenizer)
        if getattr(cfg, "embedding_scale", None) == "auto":
            scale = glove_embedding_scale(model.encoder)
            model.encoder.scale = config.encoder["embedding_scale"] = scale
    if cfg.freeze_embedding:
        model.encoder.embedding.weight.requires_grad_(False)
    return model, tokenizer


build_scratch.needs_train_texts = True  # type: ignore[attr-defined]


def glove_embedding_scale(encoder) -> float:
    """The factor that gives the transformer's projected token vectors RMS 1 per channel, as
    Vaswani et al.'s sqrt(d_model) does for embeddings drawn at std d_model**-0.5. GloVe rows (std ~0.4)
    through the projection and then x sqrt(128) came out ~5x the sinusoidal positions' RMS (0.71), so
    attention saw almost no word order (issue 4's closing note)."""
    import torch

    with torch.no_grad():
        vectors = encoder.project(encoder.embedding.weight)  # (V, d_model)
        rms = vectors.pow(2).mean().sqrt().item()
    return round(1.0 / max(rms, 1e-6), 6)


def _init_glove(model, tokenizer) -> dict[str, Any]:
    import torch

    from texttune.models.glove import glove_matrix

    vectors, stats = glove_matrix(tokenizer.get_vocab(), dim=50)
    with torch.no_grad():
        model.encoder.embedding.weight[: len(vectors)] = torch.from_numpy(vectors)
    return stats


for _name, _cls in SCRATCH_CONFIGS.items():
    MODEL_CONFIGS.add(_name, _cls, config=_cls)
    MODEL_BUILDERS.add(_name, build_scratch)
