"""texttune: train, adapt and compare text classifiers."""

from __future__ import annotations

__version__ = "0.1.0"
