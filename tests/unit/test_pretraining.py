"""Masked-LM pre-training: masking statistics, whole-word masking, held-out books, the run record,
fill-mask, and the pre-trained encoder fine-tuning for classification."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from texttune.tasks.classify import load_config
from texttune.errors import TexttuneError
from texttune.models.registry import build_model
from texttune.models.tokenizer_training import train_tokenizer
from texttune.tasks.mlm import CorpusConfig, MaskedLMTask, MaskingConfig, corpus_splits, fill_mask, load_pretrain_config, run_pretraining

WORDS = ("the sea whale ship captain ahab white crew harpoon deck sail storm night day love heart sister "
         "ball dance letter extraordinarily unquestionably").split()


def corpus(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(20)) for _ in range(n)]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(corpus(), "wordpiece", vocab_size=70, min_frequency=1)


def test_fifteen_percent_are_chosen_split_80_10_10_and_specials_never(tokenizer):
    task = MaskedLMTask(tokenizer, MaskingConfig(), seed=0)
    ids = tokenizer(corpus(64, seed=1), padding="max_length", max_length=40, truncation=True,
                    return_tensors="pt")["input_ids"]
    ids[:, -5:] = tokenizer.pad_token_id  # padding, as in a batch
    torch.manual_seed(0)
    inputs, labels = task.mask(ids)
    special = task.special[ids]
    chosen = labels != -100
    assert not (chosen & special).any()
    share = chosen.sum() / (~special).sum()
    assert abs(float(share) - 0.15) < 0.02
    replaced = chosen & (inputs == tokenizer.mask_token_id)
    kept = chosen & (inputs == ids)
    assert abs(float(replaced.sum() / chosen.sum()) - 0.8) < 0.05
    assert abs(float((kept.sum() + (chosen & ~replaced & ~kept).sum()) / chosen.sum()) - 0.2) < 0.05
    assert torch.equal(labels[chosen], ids[chosen])  # the labels are the original tokens
    assert torch.equal(inputs[~chosen], ids[~chosen])


def test_whole_word_masking_masks_every_piece_of_a_chosen_word(tokenizer):
    task = MaskedLMTask(tokenizer, MaskingConfig(whole_word=True, probability=0.3), seed=0)
    ids = tokenizer(corpus(32, seed=2), padding=True, return_tensors="pt")["input_ids"]
    torch.manual_seed(1)
    _, labels = task.mask(ids)
    chosen = labels != -100
    continuation = task.continuation[ids]
    assert continuation.any()  # the corpus has words split into pieces
    for row in range(ids.shape[0]):
        for t in range(1, ids.shape[1]):
            if continuation[row, t]:  # a piece is chosen exactly when the piece before it is
                assert chosen[row, t] == chosen[row, t - 1]


def test_whole_words_need_wordpiece():
    bpe = train_tokenizer(corpus(), "bpe", vocab_size=300, min_frequency=1)
    with pytest.raises(TexttuneError, match="mlm.whole_word: needs a WordPiece tokenizer"):
        MaskedLMTask(bpe, MaskingConfig(whole_word=True), seed=0)


def test_gutenberg_holds_out_whole_books(shared_data):
    train, test, info = corpus_splits(CorpusConfig(held_out=["carroll-alice"]), seed=0)
    assert any("Alice" in t for t in test) and not any("[Alice's Adventures in Wonderland" in t for t in train)
    assert info["held_out_texts"] == len(test) and len(train) + len(test) > 40_000
    with pytest.raises(TexttuneError, match=r"corpus.held_out: \['nosuch'\] are not values of 'source'"):
        corpus_splits(CorpusConfig(held_out=["nosuch"]), seed=0)


def tiny_config(tmp_path, text_file, **extra):
    items = {"corpus.dataset": "null", "corpus.files": f"[{text_file}]", "corpus.held_out": "[]",
             "tokenizer.vocab_size": 70, "tokenizer.min_frequency": 1, "model.hidden_size": 32,
             "model.num_layers": 2, "model.num_heads": 2, "model.intermediate_size": 64, "mlm.block_size": 32,
             "train.num_threads": 1, "train.epochs": 2, "train.lr": 2e-3, "output_dir": tmp_path / "runs", **extra}
    return load_pretrain_config(None, [f"{k}={v}" for k, v in items.items()])


def test_a_pretraining_run_records_learns_fills_masks_and_fine_tunes(tmp_path):
    text_file = tmp_path / "corpus.txt"
    text_file.write_text("\n".join(corpus(400)), encoding="utf-8")
    result = run_pretraining(tiny_config(tmp_path, text_file), callbacks=[])
    files = {p.name for p in result.run_dir.iterdir()}
    assert {"config.yaml", "environment.json", "data.json", "metrics.jsonl", "metrics.json", "model",
            "learning_curves.png"} <= files and "checkpoints" not in files
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    held = metrics["held_out"]
    assert held["num_masked"] > 0 and held["perplexity"] == pytest.approx(2.718281828 ** held["loss"], rel=1e-6)
    assert held["perplexity"] < 70  # better than a uniform guess over the 70-token vocabulary
    masks = fill_mask(result.run_dir, "the white [MASK] ship", top_k=3)
    assert len(masks) == 1 and len(masks[0]) == 3 and masks[0][0]["score"] >= masks[0][1]["score"]
    with pytest.raises(TexttuneError, match=r"the text has no \[MASK\] token"):
        fill_mask(result.run_dir, "no mask here")
    # The pre-trained encoder is an ordinary Hugging Face encoder for classification.
    config = load_config(None, [f"model.path={result.run_dir / 'model'}"])
    model, _ = build_model(config.model, ["a", "b"])
    pretrained = result.model.bert.state_dict()
    for name, tensor in model.encoder.model.state_dict().items():
        assert torch.equal(tensor, pretrained[name]), name


def test_a_corpus_without_text_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n   \n\n", encoding="utf-8")
    with pytest.raises(TexttuneError, match="no text to pre-train on"):
        run_pretraining(tiny_config(tmp_path, empty), callbacks=[])
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_unknown_pretrain_keys_name_their_path(tmp_path):
    with pytest.raises(TexttuneError, match=r"mlm.probabilty: unknown field"):
        load_pretrain_config(None, ["mlm.probabilty=0.2"])


def test_held_out_masks_are_the_same_at_every_evaluation_and_leave_the_training_rng_alone(tokenizer):
    from transformers import BertConfig, BertForMaskedLM

    from texttune.tasks.mlm import blocks

    task = MaskedLMTask(tokenizer, MaskingConfig(), seed=0)
    data = blocks(corpus(50), tokenizer, 32)
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=64))
    state = torch.get_rng_state()
    first = task.evaluate(model, data, tokenizer.pad_token_id, 16, None)
    assert torch.equal(torch.get_rng_state(), state)
    assert task.evaluate(model, data, tokenizer.pad_token_id, 16, None) == first


def test_sparse_prediction_gives_the_full_forward_loss_and_gradients(tokenizer):
    from accelerate import Accelerator
    from transformers import BertConfig, BertForMaskedLM

    from texttune.tasks.mlm import blocks

    task = MaskedLMTask(tokenizer, MaskingConfig(), seed=0)
    data = blocks(corpus(20), tokenizer, 32)
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=64, hidden_dropout_prob=0.0,
                                       attention_probs_dropout_prob=0.0))
    batch = task.collate(data, np.arange(8), tokenizer.pad_token_id)
    assert (batch["labels"] != -100).sum() < 0.3 * batch["labels"].numel()  # few positions predicted
    full = model(**batch).loss
    full_grads = torch.autograd.grad(full, list(model.parameters()), allow_unused=True)
    sparse = task.loss(model, batch, Accelerator(cpu=True))
    assert "labels" in batch  # the caller's batch is left whole
    torch.testing.assert_close(sparse, full)
    for (name, p), g in zip(model.named_parameters(), full_grads):
        got = torch.autograd.grad(sparse, p, retain_graph=True, allow_unused=True)[0]
        if g is None:
            assert got is None or not got.any(), name
        else:
            torch.testing.assert_close(got, g, rtol=1e-4, atol=1e-6, msg=name)
    # A masked-LM model of another family takes its own full forward: the same loss.
    class Wrapped(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, **kw):
            return self.inner(**kw)

    torch.testing.assert_close(task.loss(Wrapped(model), batch, Accelerator(cpu=True)), full)
