"""Imports every module that registers an encoder, a strategy or a dataset.

Registration happens at import time (``@register(...)``); importing this module makes the
registries complete. Adding a strategy = one file + one line here.
"""

from __future__ import annotations

import texttune.data.builtin  # noqa: F401
import texttune.models.bag_of_ngrams  # noqa: F401
import texttune.models.cnn  # noqa: F401
import texttune.models.pretrained  # noqa: F401
import texttune.models.rnn  # noqa: F401
import texttune.models.scratch  # noqa: F401
import texttune.models.transformer  # noqa: F401
import texttune.strategies.adapters  # noqa: F401
import texttune.strategies.bitfit  # noqa: F401
import texttune.strategies.full  # noqa: F401
import texttune.strategies.linear_probe  # noqa: F401
import texttune.strategies.lora  # noqa: F401
import texttune.strategies.partial  # noqa: F401
import texttune.strategies.prefix  # noqa: F401
import texttune.strategies.scratch  # noqa: F401
