"""``lora``: low-rank updates W + (alpha/r)·B·A of chosen layers of a frozen encoder (Hu et al., 2021).

Linear and Conv1d layers go through PEFT (``inject_adapter_in_model``: the LoRA layers without the
PeftModel wrapper, so the classifier keeps its own save/load and the loop sees an ordinary model).
``nn.MultiheadAttention`` (texttune's Transformer) is handled here: PEFT supports it by adding the
update into the frozen ``in_proj_weight`` and subtracting it again on every forward, which lets
rounding drift into weights that must stay frozen (and be re-loaded bit for bit from the base).
:class:`LoraMultiheadAttention` passes W + ΔW to the attention as a function argument instead.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from texttune.errors import TexttuneError
from texttune.strategies.registry import StrategyConfig, freeze_encoder_except, register

# Default targets when ``targets`` is not given: PEFT's own table for Hugging Face model types,
# else what each texttune encoder has.
SCRATCH_TARGETS = {"TransformerEncoder": ["self_attn", "linear1", "linear2"], "CNNEncoder": ["convs"]}
LORA_LAYERS = (nn.Linear, nn.Conv1d, nn.MultiheadAttention)


class LoraStrategyConfig(StrategyConfig):
    name: Literal["lora"] = "lora"
    rank: int = Field(8, gt=0, description="Rank r of the update B·A.")
    alpha: float = Field(16.0, gt=0, description="Scaling: the update is multiplied by alpha / rank.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the input of A (Linear and Conv1d targets).")
    targets: list[str] | None = Field(
        None,
        description="Module names (or name suffixes) to adapt, e.g. [query, value]; a name of a container "
        "adapts every Linear/Conv1d/attention inside it. Default: PEFT's choice for the Hugging Face model "
        "type (query, value for BERT/MiniLM); self_attn, linear1, linear2 for transformer; convs for cnn.",
    )


class LoraMultiheadAttention(nn.Module):
    """nn.MultiheadAttention with LoRA on its input (q, k, v) and output projections."""

    def __init__(self, base: nn.MultiheadAttention, rank: int, alpha: float) -> None:
        super().__init__()
        if not base._qkv_same_embed_dim:
            raise TexttuneError("strategy 'lora': attention with separate q/k/v weights is not supported")
        self.base_layer = base
        self.scaling = alpha / rank
        embed = base.embed_dim
        self.lora_A = nn.Parameter(torch.empty(rank, embed))  # in_proj: (3E, E) += B (3E, r) @ A (r, E)
        self.lora_B = nn.Parameter(torch.zeros(3 * embed, rank))
        self.out_lora_A = nn.Parameter(torch.empty(rank, embed))
        self.out_lora_B = nn.Parameter(torch.zeros(embed, rank))
        if not base.in_proj_weight.is_meta:
            nn.init.kaiming_uniform_(self.lora_A, a=5**0.5)  # as PEFT and the paper: A random, B zero
            nn.init.kaiming_uniform_(self.out_lora_A, a=5**0.5)

    def __getattr__(self, name: str):
        # nn.TransformerEncoder reads attributes of its layers' attention (batch_first, ...).
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.base_layer, name)

    def delta(self) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.scaling * self.lora_B @ self.lora_A, self.scaling * self.out_lora_B @ self.out_lora_A)

    def forward(self, *args, **kwargs):
        d_in, d_out = self.delta()
        params = {"in_proj_weight": self.base_layer.in_proj_weight + d_in,
                  "out_proj.weight": self.base_layer.out_proj.weight + d_out}
        return torch.func.functional_call(self.base_layer, params, args, kwargs)

    def merged(self) -> nn.MultiheadAttention:
        with torch.no_grad():
            d_in, d_out = self.delta()
            self.base_layer.in_proj_weight += d_in
            self.base_layer.out_proj.weight += d_out
        return self.base_layer


def resolve_targets(encoder: nn.Module, targets: list[str] | None) -> list[str]:
    """Full module names of the layers to adapt."""
    if targets is None:
        targets = _default_targets(encoder)
    modules = dict(encoder.named_modules())
    found: list[str] = []
    for target in targets:
        hits = [name for name in modules if name == target or name.endswith(f".{target}")]
        names = [inner for hit in hits for inner, module in modules.items()
                 if (inner == hit or inner.startswith(f"{hit}.")) and isinstance(module, LORA_LAYERS)
                 and not _inside_attention(inner, modules)]
        if not names:
            raise TexttuneError(f"strategy.targets: '{target}' names no Linear, Conv1d or attention layer of "
                                f"the {type(encoder).__name__} encoder")
        found += names
    return list(dict.fromkeys(found))


def _inside_attention(name: str, modules: dict[str, nn.Module]) -> bool:
    # out_proj of nn.MultiheadAttention is adapted with it, never on its own (it is not called as a module).
    parent = name.rsplit(".", 1)[0] if "." in name else ""
    return parent != name and isinstance(modules.get(parent), nn.MultiheadAttention)


def _default_targets(encoder: nn.Module) -> list[str]:
    if type(encoder).__name__ in SCRATCH_TARGETS:
        return SCRATCH_TARGETS[type(encoder).__name__]
    # texttune's HF encoder wraps the model as .model; a whole Hugging Face model has its own config.
    config = getattr(encoder, "config", None) or getattr(getattr(encoder, "model", None), "config", None)
    model_type = getattr(config, "model_type", None)
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as TABLE

    if model_type in TABLE:
        return list(TABLE[model_type])
    raise TexttuneError(f"strategy.targets: no default LoRA targets for the {type(encoder).__name__} encoder "
                        f"({model_type or 'not a Hugging Face model'}); name them, e.g. targets: [query, value]")


def inject_lora(model, cfg: LoraStrategyConfig):
    inject_lora_into(model.encoder, cfg)
    return model


def inject_lora_into(encoder: nn.Module, cfg: LoraStrategyConfig) -> nn.Module:
    """LoRA layers in ``encoder`` (a classifier's encoder, or any model: instruction tuning adapts a
    causal LM with the same code); the base weights are left as they are."""
    from peft import LoraConfig, inject_adapter_in_model

    names = resolve_targets(encoder, cfg.targets)
    attention = [n for n in names if isinstance(encoder.get_submodule(n), nn.MultiheadAttention)]
    others = [n for n in names if n not in attention]
    for name in attention:
        parent, _, leaf = name.rpartition(".")
        owner = encoder.get_submodule(parent) if parent else encoder
        setattr(owner, leaf, LoraMultiheadAttention(getattr(owner, leaf), cfg.rank, cfg.alpha))
    if others:
        # Full names: PEFT matches a listed target as the whole name or a dotted suffix of it.
        peft_config = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                                 target_modules=others)
        inject_adapter_in_model(peft_config, encoder)
    return encoder


@register("lora", LoraStrategyConfig, inject=inject_lora)
def apply_lora(model, cfg: LoraStrategyConfig):
    """Inject LoRA into the target layers; only the LoRA matrices and the head train."""
    inject_lora(model, cfg)
    freeze_encoder_except(model, lambda name: "lora_" in name)
    return model


def train_lora_only(model: nn.Module, cfg: LoraStrategyConfig) -> nn.Module:
    """LoRA on a whole model without a head (a causal LM): only the LoRA matrices train."""
    inject_lora_into(model, cfg)
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name)
    return model


def merge_lora(model) -> None:
    """Fold every LoRA update into its base weight and remove the LoRA modules (for inference/export)."""
    for name, module in list(model.encoder.named_modules()):
        if isinstance(module, LoraMultiheadAttention):
            parent, _, leaf = name.rpartition(".")
            setattr(model.encoder.get_submodule(parent) if parent else model.encoder, leaf, module.merged())
    merge_peft_layers(model.encoder)
    if getattr(model.config, "strategy", None) and model.config.strategy.get("name") == "lora":
        model.config.strategy = None


def merge_peft_layers(model) -> None:
    """Fold PEFT LoRA layers of any model into their base weights and remove them."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, module.get_base_layer())
