"""Encoders and heads. Every classifier is ``TexttuneForSequenceClassification(encoder, head)``.

Importing this package registers texttune's architecture with transformers' Auto classes, so a saved
model loads with ``AutoModelForSequenceClassification`` and ``pipeline("text-classification", ...)``.
"""

from texttune.models.classifier import TexttuneConfig, TexttuneForSequenceClassification  # noqa: F401
from texttune.models import (  # noqa: F401, E402  (each module registers its encoder / model)
    bag_of_ngrams, classic, cnn, pretrained, rnn, scratch, setfit, transformer,
)
