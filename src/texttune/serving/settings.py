"""What ``texttune serve`` batches and accepts: its options, shared by the server and the app (its
own module so that ``server`` and ``app`` do not import each other)."""

from __future__ import annotations

from dataclasses import dataclass

from texttune.errors import TexttuneError


@dataclass(frozen=True)
class Settings:
    """How the server batches and what it accepts (``texttune serve`` options)."""

    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_inputs: int = 1000
    max_body_bytes: int = 1 << 20
    max_queued_inputs: int = 16_000

    def check(self) -> None:
        for name in ("max_batch_size", "max_inputs", "max_body_bytes", "max_queued_inputs"):
            if getattr(self, name) < 1:
                raise TexttuneError(f"--{name.replace('_', '-')}: must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.max_wait_ms <= 10_000:
            raise TexttuneError(f"--max-wait-ms: must be between 0 and 10000, got {self.max_wait_ms}")
        if self.max_queued_inputs < self.max_inputs:
            raise TexttuneError(f"--max-queued-inputs ({self.max_queued_inputs}) must be at least --max-inputs "
                                f"({self.max_inputs})")
