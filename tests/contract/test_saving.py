"""Saving only what a strategy trains, loading it back on its base, merging and exporting LoRA.

Parametrized over the registry like test_strategies.py: a new strategy joins without edits.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from test_strategies import batch, build
from texttune.errors import TexttuneError
from texttune.models.loading import load_classifier
from texttune.models.saving import TRAINED_WEIGHTS, save_classifier
from texttune.predict import export_classifier
from texttune.strategies import STRATEGIES
from texttune.strategies.lora import merge_lora


def perturbed(model):
    model.eval()
    with torch.no_grad():  # weights that differ from any initialisation, where the strategy trains
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return model


def logits(model, tokenizer):
    ids, mask, _ = batch(tokenizer)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


@pytest.mark.parametrize("strategy", STRATEGIES.names())
def test_frozen_strategies_save_only_trained_tensors_and_load_identically(strategy, tiny_model_dir, tmp_path):
    model, tokenizer = build("bert", strategy, tiny_model_dir)
    model = perturbed(model)
    save_classifier(model, tokenizer, tmp_path / "model")
    frozen = any(not p.requires_grad for p in model.parameters())
    files = {p.name for p in (tmp_path / "model").iterdir()}
    if frozen:
        assert TRAINED_WEIGHTS in files and "model.safetensors" not in files
        size = (tmp_path / "model" / TRAINED_WEIGHTS).stat().st_size
        assert size < 0.7 * sum(p.numel() * 4 for p in model.parameters())
    else:
        assert "model.safetensors" in files and TRAINED_WEIGHTS not in files
    loaded = load_classifier(tmp_path / "model")
    assert torch.equal(logits(model, tokenizer), logits(loaded, tokenizer))


def test_a_from_scratch_model_has_no_base_and_is_saved_whole(tiny_model_dir, tmp_path):
    model, tokenizer = build("transformer", "lora", tiny_model_dir)
    save_classifier(perturbed(model), tokenizer, tmp_path / "model")
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert torch.equal(logits(model, tokenizer), logits(load_classifier(tmp_path / "model"), tokenizer))


def test_a_changed_or_missing_base_is_a_clear_error(tiny_model_dir, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    model, tokenizer = build("bert", "lora", base)
    save_classifier(perturbed(model), tokenizer, tmp_path / "model")
    weights = base / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(TexttuneError, match="has changed since this run was trained"):
        load_classifier(tmp_path / "model")
    shutil.rmtree(base)
    with pytest.raises(TexttuneError, match="its base model .* is missing"):
        load_classifier(tmp_path / "model")


@pytest.mark.parametrize("kind", ["transformer", "bert"])
def test_merged_lora_predicts_the_same_without_lora_modules(kind, tiny_model_dir):
    model, tokenizer = build(kind, "lora", tiny_model_dir)
    model = perturbed(model)
    before = logits(model, tokenizer)
    merge_lora(model)
    assert not [n for n, _ in model.named_parameters() if "lora" in n]
    assert model.config.strategy is None
    torch.testing.assert_close(logits(model, tokenizer), before, atol=1e-5, rtol=1e-4)


def test_export_writes_a_standalone_model_that_transformers_loads(tiny_model_dir, tmp_path):
    import texttune  # noqa: F401  (registers the architecture with the Auto classes)

    # cls pooling + a tanh MLP head: exactly transformers' BertForSequenceClassification (tests/e2e/test_export.py
    # covers the exports that ship their own code)
    model, tokenizer = build("bert", "lora", tiny_model_dir, ("model.head.type=mlp",))
    model = perturbed(model)
    save_classifier(model, tokenizer, tmp_path / "run" / "model")
    out = export_classifier(tmp_path / "run", tmp_path / "exported")
    standalone = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert not [n for n, _ in standalone.named_parameters() if "lora" in n]
    torch.testing.assert_close(logits(standalone, tokenizer), logits(model, tokenizer), atol=1e-5, rtol=1e-4)
    with pytest.raises(TexttuneError, match="already exists"):
        export_classifier(tmp_path / "run", out)
