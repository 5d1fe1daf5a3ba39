"""Optimizer and schedule: AdamW (or SGD / Adagrad) with decay only where it belongs, warmup then
linear/cosine.

Sparse gradients: an embedding built with ``sparse=True`` (bag_of_ngrams' ``model.sparse``) hands
back a gradient holding only the rows a batch read. SGD and Adagrad update just those rows, which is
what makes a 10M-parameter bag of n-grams train in seconds; AdamW cannot take them, and neither can
gradient clipping. ``build_optimizer`` settles this once, before training: with AdamW the embedding computes
dense gradients (the same model, trained as before sparse existed); with clipping on it fails, naming
``train.max_grad_norm``.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Collection, Sequence

import torch
from torch import nn
from transformers import get_scheduler

from texttune.config import TrainConfig
from texttune.errors import ConfigError

log = logging.getLogger("texttune")

# The optimizers of `train.optimizer` that accept sparse gradients (torch's SGD and Adagrad do).
TAKES_SPARSE = {"sgd", "adagrad"}


def _no_decay(name: str, param: nn.Parameter) -> bool:
    # Biases and normalisation weights are not decayed (as in BERT's recipe): shrinking a LayerNorm
    # gain toward 0 or a bias toward 0 is not regularisation, it changes the function.
    lowered = name.lower()
    return param.ndim < 2 or "norm" in lowered or lowered.endswith(".bias")


def sparse_embeddings(model: nn.Module) -> list[nn.Embedding | nn.EmbeddingBag]:
    """Trainable embeddings built with ``sparse=True``: their gradients will be sparse tensors."""
    return [m for m in model.modules()
            if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.sparse and m.weight.requires_grad]


def settle_sparse(model: nn.Module, cfg: TrainConfig) -> set[int]:
    """The ids of the parameters that will get sparse gradients under ``cfg``, after making the model
    and the optimizer agree: AdamW gets dense gradients instead; clipping a sparse gradient fails."""
    embeddings = sparse_embeddings(model)
    if not embeddings:
        return set()
    if cfg.optimizer not in TAKES_SPARSE:
        # `sparse` only changes how the gradient is stored, so dense ones train the same model.
        for module in embeddings:
            module.sparse = False
        log.info("train.optimizer %s takes dense gradients only: the sparse embeddings compute dense "
                 "ones (train.optimizer sgd or adagrad updates only the rows a batch uses)", cfg.optimizer)
        return set()
    if cfg.max_grad_norm is not None:
        # torch's clip_grad_norm_ has no norm for sparse tensors (NotImplementedError on SparseCPU).
        raise ConfigError(
            f"train.max_grad_norm: gradient clipping cannot measure the sparse embedding gradients that "
            f"train.optimizer {cfg.optimizer} uses (model.sparse: true); set train.max_grad_norm=null "
            f"(fastText does not clip) or model.sparse=false"
        )
    return {id(m.weight) for m in embeddings}


def param_groups(
    model: nn.Module, cfg: TrainConfig, head_lr: float | None = None, sparse: Collection[int] = frozenset()
) -> list[dict]:
    """Trainable parameters in up to five groups: (body | head) × (decay | no decay), plus
    ``body-sparse`` for the parameters (ids in ``sparse``) whose gradients are sparse."""
    groups: dict[tuple[bool, bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_head = name.startswith("head.") or ".head." in name
        is_sparse = id(param) in sparse
        # Weight decay would densify a sparse gradient (torch refuses it), and fastText has none.
        no_decay = is_sparse or _no_decay(name, param)
        groups.setdefault((is_head, no_decay, is_sparse), []).append(param)
    out = []
    for (is_head, no_decay, is_sparse), params in sorted(groups.items()):
        lr = head_lr if (is_head and head_lr is not None) else cfg.lr
        suffix = "-sparse" if is_sparse else "-no-decay" if no_decay else ""
        out.append({
            "params": params, "lr": lr, "weight_decay": 0.0 if no_decay else cfg.weight_decay,
            "name": f"{'head' if is_head else 'body'}{suffix}",
        })
    return out


def build_optimizer(
    model: nn.Module, cfg: TrainConfig, head_lr: float | None = None
) -> torch.optim.Optimizer:
    """The optimizer ``cfg.optimizer`` names, over the trainable parameters in ``param_groups``."""
    sparse = settle_sparse(model, cfg)
    groups = param_groups(model, cfg, head_lr, sparse)
    if not groups:
        raise ValueError("no trainable parameters: the strategy froze everything")
    if cfg.optimizer == "sgd":
        # Plain SGD, as fastText: a momentum buffer of sparse gradients grows to the whole table.
        return torch.optim.SGD(groups, lr=cfg.lr)
    if cfg.optimizer == "adagrad":
        if sparse:
            # Adagrad builds sparse tensors from the gradient's own (valid) indices; torch warns once
            # that it does not re-check them, which tells a user nothing they can act on.
            warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
        return torch.optim.Adagrad(groups, lr=cfg.lr)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.adam_betas, eps=cfg.adam_eps,
                             fused=fused_adamw_supported(groups) or None)


def fused_adamw_supported(groups: list[dict]) -> bool:
    """Whether AdamW's fused kernel can take every parameter: one device type it has a kernel for
    (CUDA and, since torch 2.4, CPU) and floating-point tensors. On the project's 2-core CPU it steps
    MiniLM's 22.6 M parameters in 15 ms against 63 ms for the foreach kernel (``python -m bench.adamw``,
    docs/performance.md); elsewhere the foreach kernel."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        supported = set(_get_fused_kernels_supported_devices())
    except ImportError:  # a private helper: a torch without it gets the two kernels it surely has
        supported = {"cuda", "cpu"}
    params = [p for g in groups for p in g["params"]]
    kinds = {p.device.type for p in params}
    return (len(kinds) == 1 and kinds <= supported
            and all(torch.is_floating_point(p) for p in params))


def total_steps(cfg: TrainConfig, batches_per_epoch: int | Sequence[int]) -> int:
    """Optimizer steps of ``cfg.epochs`` epochs (the last one's micro-batches make a step of their own).

    ``batches_per_epoch`` is one count for every epoch, or one per epoch (token-budget batches vary
    from epoch to epoch): at least ceil(epochs) of them; a fractional last epoch takes its share."""
    if cfg.max_steps is not None:
        return cfg.max_steps
    if isinstance(batches_per_epoch, int):
        steps_per_epoch = math.ceil(batches_per_epoch / cfg.gradient_accumulation_steps)
        return max(1, math.ceil(cfg.epochs * steps_per_epoch))
    steps = [math.ceil(count / cfg.gradient_accumulation_steps) for count in batches_per_epoch]
    whole = int(cfg.epochs)
    if len(steps) < math.ceil(cfg.epochs):
        raise ValueError(f"{len(steps)} epoch counts for {cfg.epochs} epochs")
    part = math.ceil(round((cfg.epochs - whole) * steps[whole], 6)) if cfg.epochs > whole else 0
    return max(1, sum(steps[:whole]) + part)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps: int):
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else int(round(cfg.warmup_ratio * steps))
    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[cfg.scheduler]
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=steps)
