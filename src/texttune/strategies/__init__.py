"""Adaptation strategies: functions of a model that change modules and ``requires_grad`` only.

A strategy is a config class plus one function, registered by name; the training loop never knows
which one ran. See ../shared/STYLE.md ("Strategies plug in as data").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field

from texttune.config import STRATEGY_CONFIGS, Section
from texttune.registry import Registry

StrategyFn = Callable[[Any, Any], Any]
STRATEGIES: Registry[StrategyFn] = Registry("strategy")


class StrategyConfig(Section):
    """Fields every strategy has."""

    head_lr: float | None = Field(
        None, gt=0, description="Learning rate of the head; default: train.lr (per-group learning rates)."
    )


def register(name: str, config: type[StrategyConfig]) -> Callable[[StrategyFn], StrategyFn]:
    """Register a strategy function and its config class (which joins the ``strategy`` union)."""

    def decorator(fn: StrategyFn) -> StrategyFn:
        STRATEGIES.add(name, fn, config=config)
        STRATEGY_CONFIGS.add(name, config, config=config)
        return fn

    return decorator


def apply_strategy(model: Any, cfg: StrategyConfig) -> Any:
    return STRATEGIES.get(cfg.name)(model, cfg)  # type: ignore[attr-defined]
