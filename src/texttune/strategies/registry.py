"""The strategy registry: functions of a model that change modules and ``requires_grad`` only.

A strategy is a config class plus one function, registered by name; the training loop never knows
which one ran. See ../shared/STYLE.md ("Strategies plug in as data").

Strategies that add modules (adapters, LoRA, prefixes) also register an ``inject`` function that
only builds those modules. The model's config records the strategy (``config.strategy``), and a
saved model re-runs ``inject`` when it is loaded, before its weights are read: the saved file holds
the added weights under the same names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field

from texttune.config import Section
from texttune.registry import Registry

StrategyFn = Callable[[Any, Any], Any]
STRATEGIES: Registry[StrategyFn] = Registry("strategy")
STRATEGY_CONFIGS: Registry[type] = Registry("strategy")  # the classes of the config's ``strategy`` union
INJECTORS: dict[str, StrategyFn] = {}


class StrategyConfig(Section):
    """Fields every strategy has."""

    head_lr: float | None = Field(
        None, gt=0, description="Learning rate of the head; default: train.lr (per-group learning rates)."
    )


def register(
    name: str, config: type[StrategyConfig], inject: StrategyFn | None = None
) -> Callable[[StrategyFn], StrategyFn]:
    """Register a strategy function and its config class (which joins the ``strategy`` union).

    ``inject(model, cfg)`` is given by strategies that add modules: it must build exactly the
    modules ``fn`` adds, so that a saved model can be rebuilt before its weights load.
    """

    def decorator(fn: StrategyFn) -> StrategyFn:
        STRATEGIES.add(name, fn, config=config)
        STRATEGY_CONFIGS.add(name, config, config=config)
        if inject is not None:
            INJECTORS[name] = inject
        return fn

    return decorator


def apply_strategy(model: Any, cfg: StrategyConfig) -> Any:
    model = STRATEGIES.get(cfg.name)(model, cfg)  # type: ignore[attr-defined]
    if cfg.name in INJECTORS:  # type: ignore[attr-defined]
        model.config.strategy = cfg.model_dump()
    return model


def restore_structure(model: Any, strategy: dict[str, Any]) -> None:
    """Re-create the modules a recorded strategy added (called while a saved model is built)."""
    name = strategy.get("name")
    if name not in INJECTORS:
        return
    cfg = STRATEGY_CONFIGS.config_class(name).model_validate(strategy)
    INJECTORS[name](model, cfg)


def freeze_encoder_except(model: Any, keep: Callable[[str], bool]) -> None:
    """Encoder parameters whose name satisfies ``keep`` train, the rest are frozen; the head trains."""
    for name, param in model.encoder.named_parameters():
        param.requires_grad_(keep(name))
    for param in model.head.parameters():
        param.requires_grad_(True)
