"""The serving pieces without a server: the micro-batcher's grouping, order, failures and drain; the request
schema's messages; the scorer against the predictor it wraps."""

from __future__ import annotations

import asyncio
import time

import pytest
import torch
from pydantic import ValidationError

from texttune.serving.batching import MicroBatcher
from texttune.serving.errors import ServeError
from texttune.serving.schema import PredictRequest, sequences
from texttune.serving.scoring import Scorer, Work


class Recorder:
    """A run function that doubles numbers, records its batches and fails on request."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list] = []
        self.delay_s = delay_s

    def __call__(self, payloads: list) -> list:
        self.batches.append(list(payloads))
        time.sleep(self.delay_s)
        if any(p == "crash" for p in payloads):
            raise RuntimeError("the model fell over")
        return [ServeError(422, "validation", "bad") if p == "bad" else [2 * x for x in p] for p in payloads]


def run(coroutine_function, *args):
    return asyncio.run(asyncio.wait_for(coroutine_function(*args), timeout=30))


async def _together(batcher: MicroBatcher, payloads: list) -> list:
    batcher.start()
    try:
        return await asyncio.gather(*(batcher.submit(p, len(p) if isinstance(p, list) else 1) for p in payloads),
                                    return_exceptions=True)
    finally:
        await batcher.close()


def test_requests_sent_together_share_a_batch_and_get_their_own_results_in_order():
    recorder = Recorder()
    payloads = [[1, 2], [3], [4, 5, 6]]
    results = run(_together, MicroBatcher(recorder, 32, 50, 1000), payloads)
    assert results == [[2, 4], [6], [8, 10, 12]]
    assert recorder.batches == [payloads]


def test_a_batch_never_passes_max_batch_size_and_a_large_request_runs_alone():
    recorder = Recorder()
    payloads = [[1] * 3, [2] * 3, [3] * 10, [4] * 2]
    batcher = MicroBatcher(recorder, 4, 50, 1000)
    results = run(_together, batcher, payloads)
    assert results == [[2] * 3, [4] * 3, [6] * 10, [8] * 2]
    assert [sum(len(p) for p in batch) for batch in recorder.batches] == [3, 3, 10, 2]  # oldest first, never split
    assert batcher.stats.largest_batch_inputs == 10 and batcher.stats.batches == 4


def test_a_failing_request_fails_alone_even_when_its_whole_batch_fails():
    recorder = Recorder()
    results = run(_together, MicroBatcher(recorder, 32, 50, 1000), [[1], "bad", [2]])
    assert results[0] == [2] and results[2] == [4]
    assert isinstance(results[1], ServeError) and results[1].status == 422
    batcher = MicroBatcher(recorder, 32, 50, 1000)
    crashed = run(_together, batcher, [[1], "crash", [3]])  # the batch fails: each request is run alone
    assert crashed[0] == [2] and crashed[2] == [6]
    assert isinstance(crashed[1], ServeError) and crashed[1].status == 500 and "Traceback" not in crashed[1].message
    assert batcher.stats.failed_batches == 1 and recorder.batches[-3:] == [[[1]], ["crash"], [[3]]]


async def _wait_then_close(batcher: MicroBatcher) -> tuple[list, float]:
    batcher.start()
    tasks = [asyncio.create_task(batcher.submit([i], 1)) for i in range(3)]
    await asyncio.sleep(0.05)  # queued, waiting for company for 10 s
    start = time.perf_counter()
    await batcher.close()
    results = await asyncio.gather(*tasks)
    with pytest.raises(ServeError, match="shutting down"):
        await batcher.submit([9], 1)
    return results, time.perf_counter() - start


def test_close_runs_every_waiting_request_at_once_and_refuses_new_ones():
    recorder = Recorder()
    results, seconds = run(_wait_then_close, MicroBatcher(recorder, 32, 10_000, 1000))
    assert results == [[0], [2], [4]]
    assert seconds < 5  # not the 10 s max wait


async def _flood(batcher: MicroBatcher) -> list:
    batcher.start()
    try:
        return await asyncio.gather(*(batcher.submit([i] * 4, 4) for i in range(4)), return_exceptions=True)
    finally:
        await batcher.close()


def test_too_many_waiting_inputs_is_429():
    results = run(_flood, MicroBatcher(Recorder(delay_s=0.2), 4, 0, 8))
    refused = [r for r in results if isinstance(r, ServeError)]
    assert refused and all(r.status == 429 and r.kind == "overloaded" for r in refused)
    assert any(isinstance(r, list) for r in results)


async def _no_wait(batcher: MicroBatcher) -> float:
    batcher.start()
    start = time.perf_counter()
    await batcher.submit([1], 1)
    seconds = time.perf_counter() - start
    await batcher.close()
    return seconds


def test_a_full_batch_does_not_wait():
    assert run(_no_wait, MicroBatcher(Recorder(), 1, 10_000, 10)) < 5


# --------------------------------------------------------------------------- the request schema


@pytest.mark.parametrize(("inputs", "expected"), [
    ("a text", ([("a text", None)], False)),
    (["a text"], ([("a text", None)], True)),
    (["a", "b", "c"], ([("a", None), ("b", None), ("c", None)], True)),
    ([["a", "b"]], ([("a", "b")], True)),
    ([["a"], ["b", "c"]], ([("a", None), ("b", "c")], True)),
])
def test_inputs_forms_of_text_embeddings_inference(inputs, expected):
    assert sequences(PredictRequest(inputs=inputs).inputs) == expected


@pytest.mark.parametrize(("body", "message"), [
    ({"inputs": 5}, "inputs: expected a string, a batch of strings [a, b, ...], or a batch"),
    ({"inputs": []}, "inputs: the batch is empty"),
    ({"inputs": ["a", ["b"]]}, "inputs[1]: expected a string, got a list"),
    ({"inputs": [["a"], ["b", "c", "d"]]}, "inputs[1]: expected one text [a] or a pair [a, b], got 3 strings"),
    ({"inputs": [["a"], [7]]}, "inputs[1][0]: expected a string, got a number"),
    ({"inputs": "\t "}, "inputs: empty text"),
    ({"inputs": ["a", ""]}, "inputs[1]: empty text"),
])
def test_inputs_refusals_name_the_input(body, message):
    with pytest.raises(ValidationError) as caught:
        PredictRequest.model_validate(body)
    assert message in str(caught.value)


def test_options_are_strict_booleans_and_unknown_fields_are_refused():
    for body in ({"inputs": "a", "truncate": "true"}, {"inputs": "a", "raw_scores": 1}, {"inputs": "a", "x": 1}):
        with pytest.raises(ValidationError):
            PredictRequest.model_validate(body)
    assert PredictRequest.model_validate({"inputs": "a", "truncate": None}).truncate is None


# --------------------------------------------------------------------------- the scorer


class FakePredictor:
    """Logits = (number of words, -number of words); a whitespace tokenizer with [CLS]/[SEP]."""

    def __init__(self) -> None:
        self.label_names = ["long", "short"]

    max_length = 5
    temperature = 2.0

    def tokenizer(self, texts, pairs=None, **_):
        pairs = pairs or [None] * len(texts)
        return {"input_ids": [[0] * (2 + len(t.split()) + (len(p.split()) + 1 if p else 0))
                              for t, p in zip(texts, pairs)]}

    def logits(self, texts, text_pairs=None, batch_size=64):
        pairs = text_pairs or [""] * len(texts)
        return torch.tensor([[float(len(f"{t} {p}".split())), -float(len(f"{t} {p}".split()))]
                             for t, p in zip(texts, pairs)])


def test_scorer_sorts_labels_applies_the_temperature_and_refuses_only_the_long_request():
    scorer = Scorer(FakePredictor(), max_batch_size=8)
    works = [Work([("one two", None)], False, False, False), Work([("a b c d e f", None)], False, False, True),
             Work([("x", "y")], False, True, False)]
    probabilities, too_long, raw = scorer(works)
    want = torch.softmax(torch.tensor([2.0, -2.0]) / 2.0, dim=-1).tolist()
    assert probabilities == [[{"label": "long", "score": pytest.approx(want[0])},
                              {"label": "short", "score": pytest.approx(want[1])}]]
    assert isinstance(too_long, ServeError) and "inputs[0] has 8 tokens, more than the model's maximum of 5" in \
        too_long.message
    assert raw == [[{"label": "long", "score": 2.0}, {"label": "short", "score": -2.0}]]  # a pair: both texts
    truncated = scorer([Work([("a b c d e f", None)], True, True, False)])
    assert truncated[0][0][0] == {"label": "long", "score": 6.0}
