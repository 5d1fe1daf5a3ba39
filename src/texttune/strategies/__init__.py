"""Adaptation strategies, one file each; importing this package registers all of them.

A strategy is a config class plus one function (``registry.register``); see ``registry.py`` and
../shared/STYLE.md ("Strategies plug in as data").
"""

from texttune.strategies import (  # noqa: F401  (each module registers its strategy)
    adapters, bitfit, full, linear_probe, lora, partial, prefix, scratch,
)
from texttune.strategies.registry import (  # noqa: F401
    INJECTORS, STRATEGIES, STRATEGY_CONFIGS, StrategyConfig, apply_strategy, freeze_encoder_except, register,
    restore_structure,
)
