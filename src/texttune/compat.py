"""Differences between the library releases texttune supports, handled in one place.

Every shim names the releases it bridges, so it can be deleted when the oldest supported release
moves past them (`pyproject.toml` holds the ranges; `make test-oldest` / `make test-latest` run the
suite at both ends).
"""

from __future__ import annotations

import inspect

import typer

# --------------------------------------------------------------------------- typer / click

try:  # typer >= 0.29 vendors click as ``typer._click`` and raises that copy's exceptions
    from typer._click.exceptions import ClickException  # noqa: F401
except ImportError:  # typer < 0.29 raises click's own
    from click.exceptions import ClickException  # noqa: F401  (re-exported for the CLI)

# ``typer.Abort`` is click's Abort re-exported before typer 0.29 and typer's own class since.
Abort = typer.Abort

# --------------------------------------------------------------------------- transformers attention

# The keyword by which a Hugging Face attention module receives its key/value cache: transformers
# 5.0-5.23 call it ``past_key_values``; 5.24 renamed it ``cache`` (``past_key_values`` is still
# accepted there with a deprecation warning, announced for removal in 5.40). Newest name first.
_CACHE_KEYWORDS = ("cache", "past_key_values")


def attention_cache_keyword(attention) -> str | None:
    """The keyword ``attention.forward`` takes a key/value cache by, or None when it takes none."""
    parameters = inspect.signature(attention.forward).parameters  # follows the deprecation wrapper
    return next((name for name in _CACHE_KEYWORDS if name in parameters), None)
