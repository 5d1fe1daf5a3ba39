"""The benchmark's fairness checks (issue 21, point 5): a variant whose timed part did not train every
shared example once per timed epoch stops; the suite computes no ratio when variants timed different
example sets; real tokens come from one count of the shared list."""

from __future__ import annotations

import numpy as np
import pytest

from bench.minilm import Result, TimedExamples
from bench.run import different_timed_examples, ratios


def timed(ids, lengths, epochs=1, variant="texttune"):
    res = Result(variant, "sst2", "throughput", "cpu")
    examples = TimedExamples()
    examples.add(ids)
    examples.record(res, np.asarray(lengths), epochs_timed=epochs)
    return res


def test_the_same_set_in_any_order_gives_the_same_record():
    lengths = [5, 9, 3, 7]
    a, b = timed([0, 1, 2, 3], lengths), timed([3, 1, 0, 2], lengths, variant="trainer")
    assert (a.train_samples, a.train_tokens, a.timed_fingerprint) == (b.train_samples, b.train_tokens,
                                                                      b.timed_fingerprint)
    assert a.train_tokens == 24
    assert timed([0, 1, 2, 3] * 2, lengths, epochs=2).train_tokens == 48


@pytest.mark.parametrize("ids", [[0, 1, 2], [0, 1, 2, 3, 3], [0, 1, 2, 2]])
def test_a_timed_part_that_is_not_whole_epochs_stops_the_variant(ids):
    with pytest.raises(SystemExit, match="did not train every one of the 4 examples"):
        timed(ids, [5, 9, 3, 7])


def row(variant, fingerprint, samples=800, tokens=9144, per_s=10.0):
    return {"task": "sst2", "mode": "throughput", "variant": variant, "timed_fingerprint": fingerprint,
            "train_samples": samples, "train_tokens": tokens, "train_samples_per_s": per_s,
            "real_tokens_per_s": per_s * tokens / samples}


def test_the_suite_refuses_to_compare_different_timed_sets():
    same = [row("notebook", "f1", per_s=5.0), row("trainer", "f1", per_s=8.0), row("texttune", "f1")]
    assert different_timed_examples(same) == []
    value = ratios(same)["sst2: texttune / notebook"]
    assert value["train_samples_per_s"] == value["real_tokens_per_s"] == 2.0  # one ratio, counted one way
    differ = [row("notebook", "f1", tokens=10544), row("trainer", "f2", tokens=9664), row("texttune", "f1")]
    [problem] = different_timed_examples(differ)
    assert problem.startswith("sst2 (throughput): ") and "trainer timed 800 examples, 9664 real tokens" in problem
    assert different_timed_examples([row("texttune", "")])  # no record of the set is a difference too


def test_rounds_alternate_their_order_and_ratios_compare_medians():
    from bench.run import interleaved, median_rows

    assert interleaved(["a", "b", "c"], 3) == [(0, "a"), (0, "b"), (0, "c"), (1, "c"), (1, "b"), (1, "a"),
                                               (2, "a"), (2, "b"), (2, "c")]
    rows = [row("notebook", "f1", per_s=s) for s in (5.0, 30.0, 6.0)] + \
           [row("texttune", "f1", per_s=s) for s in (12.0, 60.0, 10.0)]
    medians = {r["variant"]: r for r in median_rows(rows)}
    assert (medians["notebook"]["train_samples_per_s"], medians["texttune"]["train_samples_per_s"]) == (6.0, 12.0)
    assert ratios(median_rows(rows))["sst2: texttune / notebook"]["train_samples_per_s"] == 2.0
