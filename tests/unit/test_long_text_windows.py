"""Long documents (model.long_text, issue 19): windows over long texts and pooled window logits."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch

from texttune.data.tokenize import collate, encode_frame
from texttune.errors import TexttuneError
from texttune.models.long_text import document_logits, pool_windows, windows_of
from texttune.tasks.classify import load_config

WORDS = [f"w{i}" for i in range(200)]  # distinct words: every token of the text is told apart
LONG = " ".join(WORDS)
SHORT = "a short text"


@pytest.fixture(scope="module")
def wordpiece():
    from texttune.models.pretrained import load_tokenizer

    return load_tokenizer("minilm")


def word_level(add_cls: bool):
    from texttune.models.word_tokenizer import build_word_tokenizer

    return build_word_tokenizer([LONG, SHORT], add_cls=add_cls)


def frame(*texts: str) -> pd.DataFrame:
    return pd.DataFrame({"text": list(texts), "label": [i % 2 for i in range(len(texts))]})


def inputs(encoded, indices) -> dict[str, torch.Tensor]:
    batch = collate(encoded, np.asarray(indices), pad_id=0)
    batch.pop("labels")
    return batch


def windows_of_document(encoded, doc: int) -> list[list[int]]:
    first, last = encoded.windows[doc], encoded.windows[doc + 1]
    return [encoded.ids[encoded.offsets[w] : encoded.offsets[w + 1]].tolist() for w in range(first, last)]


@pytest.mark.parametrize("kind", ["wordpiece", "word", "word+cls"])
@pytest.mark.parametrize("max_length,stride", [(16, 4), (32, 0), (24, 20)])
def test_windows_cover_every_token_with_the_stated_overlap(kind, max_length, stride, wordpiece):
    tokenizer = {"wordpiece": wordpiece, "word": word_level(False), "word+cls": word_level(True)}[kind]
    content = tokenizer(LONG, add_special_tokens=False)["input_ids"]
    specials = tokenizer.num_special_tokens_to_add(pair=False)
    head = 1 if specials else 0  # [CLS] / <cls> first; BERT's [SEP] last
    tail = specials - head
    encoded = encode_frame(frame(LONG), tokenizer, max_length, stride=stride)
    windows = windows_of_document(encoded, 0)
    assert len(windows) > 1 and all(len(w) <= max_length for w in windows)
    texts = [w[head : len(w) - tail] for w in windows]  # the text part of each window
    for previous, window in itertools.pairwise(texts):
        assert window[:stride] == previous[len(previous) - stride :]  # exactly `stride` tokens shared
    rebuilt = texts[0] + [t for window in texts[1:] for t in window[stride:]]
    assert rebuilt == content  # every token, in order, once past the overlaps
    assert encoded.lengths[0] == sum(len(w) for w in windows)  # a document's length: all its windows


def test_a_short_text_is_one_window_with_the_ids_of_truncation(wordpiece):
    windowed = encode_frame(frame(SHORT, LONG), wordpiece, 32, stride=8)
    truncated = encode_frame(frame(SHORT, LONG), wordpiece, 32)
    assert windowed.windows[1] - windowed.windows[0] == 1
    assert windows_of_document(windowed, 0)[0] == truncated.ids[: truncated.offsets[1]].tolist()
    assert len(windowed) == len(truncated) == 2 and (windowed.labels == truncated.labels).all()
    assert windows_of_document(windowed, 1)[0] == truncated.ids[truncated.offsets[1] :].tolist()  # first = truncation


def test_max_windows_keeps_the_first_windows(wordpiece):
    every = encode_frame(frame(LONG, SHORT), wordpiece, 16, stride=4)
    capped = encode_frame(frame(LONG, SHORT), wordpiece, 16, stride=4, max_windows=3)
    assert np.diff(capped.windows).tolist() == [3, 1]
    assert windows_of_document(capped, 0) == windows_of_document(every, 0)[:3]


def test_a_batch_of_documents_holds_all_their_windows_and_one_label_each(wordpiece):
    encoded = encode_frame(frame(LONG, SHORT, LONG), wordpiece, 16, stride=4)
    batch = collate(encoded, np.array([2, 1]), pad_id=0)
    counts = np.diff(encoded.windows)
    assert batch["windows"].tolist() == [counts[2], counts[1]]
    assert batch["input_ids"].shape[0] == counts[2] + counts[1] and batch["labels"].tolist() == [0, 1]
    assert "windows" not in collate(encode_frame(frame(LONG), wordpiece, 16), [0], pad_id=0)  # truncate


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    from texttune.models.pretrained import PretrainedModelConfig, build_pretrained

    torch.manual_seed(0)
    model, tokenizer = build_pretrained(PretrainedModelConfig(path=str(tiny_model_dir), pooling="mean"), ["a", "b"])
    return model.eval(), tokenizer


@pytest.mark.parametrize("how", ["mean", "max", "first"])
def test_pooled_logits_are_the_pool_of_the_windows_logits_one_by_one(tiny_model, how):
    model, tokenizer = tiny_model
    encoded = encode_frame(frame(LONG, SHORT, " ".join(WORDS[:40])), tokenizer, 16, stride=4)
    with torch.no_grad():
        pooled = document_logits(model, inputs(encoded, np.arange(3)), how)
        for doc in range(3):
            alone = torch.cat([model(input_ids=torch.tensor([w])).logits for w in windows_of_document(encoded, doc)])
            expected = {"mean": alone.mean(0), "max": alone.max(0).values, "first": alone[0]}[how]
            torch.testing.assert_close(pooled[doc], expected, atol=1e-5, rtol=1e-5)


def test_pool_windows_by_hand():
    logits = torch.tensor([[1.0, 0.0], [3.0, -2.0], [5.0, 5.0], [0.0, 1.0]])  # windows of docs 0, 0, 1, 2
    counts = torch.tensor([2, 1, 1])
    assert pool_windows(logits, counts, "mean").tolist() == [[2.0, -1.0], [5.0, 5.0], [0.0, 1.0]]
    assert pool_windows(logits, counts, "max").tolist() == [[3.0, 0.0], [5.0, 5.0], [0.0, 1.0]]
    assert pool_windows(logits, counts, "first").tolist() == [[1.0, 0.0], [5.0, 5.0], [0.0, 1.0]]


@pytest.mark.parametrize("how", ["mean", "max", "first"])
def test_a_short_text_gets_the_logits_of_truncation(tiny_model, how):
    model, tokenizer = tiny_model
    with torch.no_grad():
        windowed = document_logits(model, inputs(encode_frame(frame(SHORT), tokenizer, 32, stride=8), [0]), how)
        truncated = document_logits(model, inputs(encode_frame(frame(SHORT), tokenizer, 32), [0]))
    assert torch.equal(windowed, truncated)


def test_the_default_is_truncation():
    for name in ("pretrained", "cnn", "transformer"):
        model = load_config(None, [f"model.name={name}"]).model
        assert model.long_text.mode == "truncate" and windows_of(model) is None
    assert "long_text" not in load_config(None, ["model.name=cnn"]).model.encoder_dict(10, 0)


@pytest.mark.parametrize("overrides,message", [
    (["model.long_text.mode=windows", "model.long_text.stride=128"],
     "model.long_text: stride 128 must be less than model.max_length 128"),
    (["model.name=cnn", "model.max_length=64", "model.long_text.mode=windows", "model.long_text.stride=100"],
     "model.long_text: stride 100 must be less than model.max_length 64"),
    (["model.long_text.pool=median"], "model.long_text.pool: Input should be 'mean', 'max' or 'first'"),
    (["model.long_text.mode=slide"], "model.long_text.mode: Input should be 'truncate' or 'windows'"),
    (["model.long_text.max_windows=0"], "model.long_text.max_windows: Input should be greater than 0"),
])
def test_a_bad_setting_names_its_key(overrides, message):
    with pytest.raises(TexttuneError) as err:
        load_config(None, overrides)
    assert message in str(err.value) and len(str(err.value).splitlines()) == 1


def test_a_stride_the_special_tokens_leave_no_room_for_is_refused(wordpiece):
    with pytest.raises(TexttuneError, match=r"model.long_text.stride 15 must be less than 14: model.max_length 16 "
                                            r"less the tokenizer's 2 special tokens"):
        encode_frame(frame(LONG), wordpiece, 16, stride=15)


def test_sentence_pairs_are_refused_with_windows(wordpiece):
    pairs = pd.DataFrame({"text": [LONG], "text_pair": [SHORT], "label": [0]})
    with pytest.raises(TexttuneError, match="windows read single texts only, use model.long_text.mode truncate"):
        encode_frame(pairs, wordpiece, 16, stride=4)
