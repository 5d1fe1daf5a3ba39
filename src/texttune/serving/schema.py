"""The HTTP API's request and response bodies: text-embeddings-inference's ``/predict`` schema.

``inputs`` is, as in TEI, a string (one text), a list of one or two strings (one text, or one pair of
texts), or a batch: a list of such lists (``[["a"], ["b", "c"]]``). A flat list is never a batch:
``["a", "b"]`` is the pair (a, b), and ``["a", "b", "c"]`` is refused with a message naming the batch
form. The declared types give the OpenAPI schema; ``_parse_inputs`` does the validation itself, so that
every refusal is one short sentence naming the input (and never echoes a megabyte of text back).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, RootModel, StrictBool, WrapValidator
from pydantic_core import PydanticCustomError

Sequence = Annotated[list[str], Field(min_length=1, max_length=2, description="One text, or a pair [a, b]")]
INPUTS_FORMS = "a string, a pair of strings [a, b], or a batch [[a], [b, c], ...]"


def _refuse(message: str) -> PydanticCustomError:
    return PydanticCustomError("invalid_inputs", "{message}", {"message": message})


def _check_text(text: Any, where: str) -> None:
    if not isinstance(text, str):
        raise _refuse(f"{where}: expected a string, got {_json_type(text)}")
    if not text.strip():
        raise _refuse(f"{where}: empty text")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800") is valid JSON but no text a tokenizer reads
        raise _refuse(f"{where}: not valid Unicode (a lone surrogate)") from None


def _check_sequence(value: Any, where: str) -> None:
    if not isinstance(value, list):
        raise _refuse(f"{where}: expected a list of one or two strings, got {_json_type(value)}")
    if not 1 <= len(value) <= 2:
        raise _refuse(f"{where}: expected one text [a] or a pair [a, b], got {len(value)} strings")
    for i, text in enumerate(value):
        _check_text(text, f"{where}[{i}]")


def _parse_inputs(value: Any, _handler) -> Any:
    """Validate ``inputs`` in one pass with messages that name the offending item."""
    if isinstance(value, str):
        _check_text(value, "inputs")
        return value
    if not isinstance(value, list):
        raise _refuse(f"inputs: expected {INPUTS_FORMS}; got {_json_type(value)}")
    if not value:
        raise _refuse("inputs: the batch is empty")
    if isinstance(value[0], str):  # one text or one pair, not a batch
        if len(value) > 2:
            raise _refuse(f"inputs: a list of strings is one input, a text [a] or a pair [a, b]; got "
                          f"{len(value)} strings (a batch is a list of lists: [[a], [b], ...])")
        for i, text in enumerate(value):
            _check_text(text, f"inputs[{i}]")
        return value
    for i, item in enumerate(value):
        _check_sequence(item, f"inputs[{i}]")
    return value


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
             dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


Inputs = Annotated[
    str | Sequence | Annotated[list[Sequence], Field(min_length=1, description="A batch")],
    WrapValidator(_parse_inputs),
    Field(description="One text, a pair of texts [a, b], or a batch of texts and pairs [[a], [b, c], ...] "
                      "(as text-embeddings-inference). A flat list of strings is one input, not a batch.",
          examples=["what is the capital of france?", ["a question", "its context"],
                    [["first text"], ["second text"]]]),
]


class PredictRequest(BaseModel):
    """``POST /predict``."""

    model_config = ConfigDict(extra="forbid")

    inputs: Inputs
    truncate: StrictBool | None = Field(
        False, description="Cut inputs longer than the model's max_length tokens instead of refusing them "
                           "(422). null means false.")
    raw_scores: StrictBool = Field(
        False, description="Return the logits instead of probabilities (which are softmax(logits / T), T the "
                           "run's fitted temperature, as `texttune predict`).")


def sequences(inputs: Any) -> tuple[list[tuple[str, str | None]], bool]:
    """``(text, pair or None)`` for each input of a validated ``inputs``, and whether it was a batch."""
    if isinstance(inputs, str):
        return [(inputs, None)], False
    if isinstance(inputs[0], str):
        return [(inputs[0], inputs[1] if len(inputs) == 2 else None)], False
    return [(item[0], item[1] if len(item) == 2 else None) for item in inputs], True


class Prediction(BaseModel):
    label: str = Field(examples=["positive"])
    score: float = Field(examples=[0.93], description="A probability, or a logit with raw_scores")


class PredictResponse(RootModel[list[Prediction] | list[list[Prediction]]]):
    """Every label with its score, highest first: one list for one input, a list of lists for a batch."""


class ErrorResponse(BaseModel):
    error: str = Field(examples=["inputs: the batch is empty"])
    error_type: str = Field(examples=["validation"])


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Limits(BaseModel):
    max_batch_size: int = Field(description="Inputs per forward pass, from one or several requests")
    max_wait_ms: float = Field(description="How long the oldest waiting request waits for others")
    max_inputs: int = Field(description="Inputs per request; more is refused with 413")
    max_body_bytes: int = Field(description="Request body size; larger is refused with 413")
    max_queued_inputs: int = Field(description="Inputs waiting for the model; more is refused with 429")


class Info(BaseModel):
    model: str = Field(description="The path served")
    model_name: str
    backend: str
    device: str | None
    labels: list[str]
    max_length: int = Field(description="Tokens per input (text + pair); longer needs truncate: true")
    temperature: float | None = Field(description="The run's fitted temperature, or null")
    scores: str = Field(description="What score means")
    limits: Limits
    versions: dict[str, str]
    stats: dict[str, Any] = Field(description="Requests, inputs and batches so far; what waits now")
