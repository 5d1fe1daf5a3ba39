"""Optimizer and schedule: AdamW with decay only where it belongs, warmup then linear/cosine."""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import get_scheduler

from texttune.config import TrainConfig


def _no_decay(name: str, param: nn.Parameter) -> bool:
    # Biases and normalisation weights are not decayed (as in BERT's recipe): shrinking a LayerNorm
    # gain toward 0 or a bias toward 0 is not regularisation, it changes the function.
    lowered = name.lower()
    return param.ndim < 2 or "norm" in lowered or lowered.endswith(".bias")


def param_groups(model: nn.Module, cfg: TrainConfig, head_lr: float | None = None) -> list[dict]:
    """Trainable parameters in up to four groups: (body | head) × (decay | no decay)."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_head = name.startswith("head.") or ".head." in name
        groups.setdefault((is_head, _no_decay(name, param)), []).append(param)
    out = []
    for (is_head, no_decay), params in sorted(groups.items()):
        lr = head_lr if (is_head and head_lr is not None) else cfg.lr
        out.append({
            "params": params, "lr": lr, "weight_decay": 0.0 if no_decay else cfg.weight_decay,
            "name": f"{'head' if is_head else 'body'}{'-no-decay' if no_decay else ''}",
        })
    return out


def build_optimizer(model: nn.Module, cfg: TrainConfig, head_lr: float | None = None) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg, head_lr)
    if not groups:
        raise ValueError("no trainable parameters: the strategy froze everything")
    # The fused kernel is the fastest AdamW where it exists (CUDA); elsewhere the foreach one.
    fused = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.adam_betas, eps=cfg.adam_eps, fused=fused or None)


def total_steps(cfg: TrainConfig, batches_per_epoch: int) -> int:
    if cfg.max_steps is not None:
        return cfg.max_steps
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.gradient_accumulation_steps)
    return max(1, math.ceil(cfg.epochs * steps_per_epoch))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps: int):
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else int(round(cfg.warmup_ratio * steps))
    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[cfg.scheduler]
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=steps)
