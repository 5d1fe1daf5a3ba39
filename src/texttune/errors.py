"""User-facing errors.

Everything a user can cause (a bad config, a bad data file, a missing model folder) is raised as a
``TexttuneError`` whose message names the file, column or key at fault. The CLI catches this one type
and prints the message without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class TexttuneError(Exception):
    """An error caused by user input; ``str(err)`` is the complete message shown to the user."""

    exit_code = 2


class ConfigError(TexttuneError):
    """A config file or override that does not validate."""


class DataError(TexttuneError):
    """A data file or dataset that cannot be read or does not have the expected shape."""


class DataCheckError(DataError):
    """Data checks failed under the ``fail`` policy."""

    exit_code = 3
