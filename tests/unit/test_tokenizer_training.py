"""Training WordPiece and BPE tokenizers: round trips, special tokens, saving, bad corpora."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from texttune.errors import TexttuneError
from texttune.models.tokenizer_training import corpus_texts, save_tokenizer, train_tokenizer

CORPUS = ["It is a truth universally acknowledged, that a single man in possession of a good fortune,",
          "must be in want of a wife.", "Call me Ishmael. Some years ago - never mind how long precisely -",
          "having little or no money in my purse, and nothing particular to interest me on shore,"] * 20


def test_wordpiece_round_trips_lowercased_text_and_wraps_it_in_cls_sep(tmp_path):
    tokenizer = train_tokenizer(CORPUS, "wordpiece", vocab_size=300, min_frequency=1)
    ids = tokenizer("Call me Ishmael.")["input_ids"]
    assert tokenizer.convert_ids_to_tokens([ids[0], ids[-1]]) == ["[CLS]", "[SEP]"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "call me ishmael."
    assert tokenizer.mask_token == "[MASK]" and tokenizer.pad_token_id is not None
    assert any(t.startswith("##") for t in tokenizer.get_vocab())  # subwords were learned
    loaded = AutoTokenizer.from_pretrained(save_tokenizer(tokenizer, tmp_path / "tok"))
    assert loaded("Call me Ishmael.")["input_ids"] == ids


def test_bpe_round_trips_any_text_exactly():
    tokenizer = train_tokenizer(CORPUS, "bpe", vocab_size=400, min_frequency=1, lowercase=False)
    text = "Never mind how long, précisément — 42 ¥!"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text  # byte-level: nothing is unknown
    assert tokenizer.convert_ids_to_tokens(ids[0]) == "<s>"


def test_an_empty_corpus_and_an_existing_folder_are_clear_errors(tmp_path):
    with pytest.raises(TexttuneError, match="the corpus has no text"):
        train_tokenizer(["", "   "])
    (tmp_path / "tok").mkdir()
    with pytest.raises(TexttuneError, match="already exists"):
        save_tokenizer(train_tokenizer(CORPUS, vocab_size=200, min_frequency=1), tmp_path / "tok")


def test_text_files_and_tables_feed_the_corpus(tmp_path):
    (tmp_path / "a.txt").write_text("first line\nsecond line\n", encoding="utf-8")
    (tmp_path / "b.csv").write_text("body\nthird text\n", encoding="utf-8")
    assert corpus_texts(files=[tmp_path / "a.txt", tmp_path / "b.csv"], text_column="body") == \
        ["first line", "second line", "third text"]
    with pytest.raises(TexttuneError, match="no column 'text'"):
        corpus_texts(files=[tmp_path / "b.csv"])
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe bad")
    with pytest.raises(TexttuneError, match="not UTF-8"):
        corpus_texts(files=[tmp_path / "bad.txt"])


def test_the_cli_trains_on_a_built_in_corpus(shared_data, run_cli, tmp_path):
    code, out, err = run_cli("tokenizer", "train", tmp_path / "tok", "--dataset", "trec", "--vocab-size", "500")
    assert code == 0, err
    assert len(AutoTokenizer.from_pretrained(tmp_path / "tok")) == 500


def test_the_cli_rejects_an_unknown_kind_and_two_corpora(run_cli, tmp_path):
    (tmp_path / "a.txt").write_text("a line\n", encoding="utf-8")
    code, _, err = run_cli("tokenizer", "train", tmp_path / "tok", "--file", tmp_path / "a.txt", "--kind", "bytes")
    assert code == 2 and "--kind: expected wordpiece or bpe, got 'bytes'" in err
    code, _, err = run_cli("tokenizer", "train", tmp_path / "tok", "--file", tmp_path / "a.txt", "--dataset", "trec")
    assert code == 2 and "give a built-in dataset (--dataset) or text files (--file), one of the two" in err
