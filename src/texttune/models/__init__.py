"""Encoders and heads. Every classifier is ``TexttuneForSequenceClassification(encoder, head)``."""
