"""The HTTP API's request and response bodies: text-embeddings-inference's ``/predict`` schema.

``inputs`` is a string (one text: the answer is one list of labels), a flat list of strings (a batch of
texts: a list of lists), or a list of lists (a batch of texts and pairs, TEI's batch form
``[["a"], ["b", "c"]]``). Unlike TEI, a flat list of exactly two strings is a batch of two texts, not a
pair: every flat list means the same thing; a pair is written ``[["a", "b"]]``. The declared types give the OpenAPI schema; ``_parse_inputs`` does the validation itself, so that
every refusal is one short sentence naming the input (and never echoes a megabyte of text back).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, RootModel, StrictBool, WrapValidator
from pydantic_core import PydanticCustomError

Sequence = Annotated[list[str], Field(min_length=1, max_length=2, description="One text, or a pair [a, b]")]
INPUTS_FORMS = "a string, a batch of strings [a, b, ...], or a batch of texts and pairs [[a], [b, c], ...]"


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
    # A flat list of strings is a batch of texts ([a, b, c]); a list of lists is a batch of texts and
    # pairs ([[a], [b, c]], text-embeddings-inference's batch form). TEI itself reads a flat list of
    # exactly two strings as one pair; texttune reads every flat list the same way, as a batch, so
    # ["a", "b"] never silently means something other than ["a", "b", "c"] (docs/design.md, "Serving").
    for i, item in enumerate(value):
        if isinstance(value[0], str):
            _check_text(item, f"inputs[{i}]")
        else:
            _check_sequence(item, f"inputs[{i}]")
    return value


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
             dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


Inputs = Annotated[
    str | Sequence | Annotated[list[Sequence], Field(min_length=1, description="A batch")],
    WrapValidator(_parse_inputs),
    Field(description="One text (answer: one list of labels), a batch of texts [a, b, ...], or a batch of "
                      "texts and pairs [[a], [b, c], ...] (answer: a list of lists, in order). A flat list "
                      "of strings is always a batch of texts; a pair is written [[a, b]].",
          examples=["what is the capital of france?", ["first text", "second text"],
                    [["a question", "its context"]], [["first text"], ["a question", "its context"]]]),
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
        return [(text, None) for text in inputs], True
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
    max_length: int | None = Field(description="Tokens per input (text + pair); longer needs truncate: true. "
                                               "null: a closed-form model, which reads raw texts (and cuts "
                                               "them itself)")
    temperature: float | None = Field(description="The run's fitted temperature, or null")
    scores: str = Field(description="What score means")
    limits: Limits
    versions: dict[str, str]
    stats: dict[str, Any] = Field(description="Requests, inputs and batches so far; what waits now")
