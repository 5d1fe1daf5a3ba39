"""One small registry used for datasets, encoders and strategies."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from texttune.errors import TexttuneError

T = TypeVar("T")


def suggest(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """Return " (did you mean 'x'?)" for the closest choice, or "" when nothing is close.

    An abbreviation (``acc`` for ``accuracy``) counts as close even where difflib's ratio is low.
    """
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if not close and len(word) >= 2:
        close = sorted(c for c in choices if c.startswith(word))[:1]
    return f" (did you mean '{close[0]}'?)" if close else ""


class Registry(Generic[T]):
    """Maps names to objects (functions, specs), optionally with a config class per entry.

    ``kind`` is used in messages: ``unknown dataset 'treq' (did you mean 'trec'?); known: ...``.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._configs: dict[str, type] = {}

    def register(self, name: str, config: type | None = None) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            self.add(name, obj, config=config)
            return obj

        return decorator

    def add(self, name: str, obj: T, config: type | None = None) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._items[name] = obj
        if config is not None:
            self._configs[name] = config

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise TexttuneError(
                f"unknown {self.kind} '{name}'{suggest(name, self.names())}; known: {known}"
            ) from None

    def config_class(self, name: str) -> type:
        return self._configs[name]

    def configs(self) -> dict[str, type]:
        return dict(self._configs)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, Any]]:
        return sorted(self._items.items())
