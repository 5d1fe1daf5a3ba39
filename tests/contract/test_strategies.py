"""Contract of every registered strategy, on a tiny from-scratch Transformer and a tiny random BERT.

Strategies are discovered from the registry: a new strategy file joins these tests without editing
them. Hand-computed trainable counts for the known strategies are in ``test_trainable_counts``.
"""

from __future__ import annotations

import pytest
import torch

import texttune.tasks  # noqa: F401  (registers every model, strategy and task)
from texttune.config import TrainConfig
from texttune.tasks.classify import load_config
from texttune.errors import TexttuneError
from texttune.models.classifier import TexttuneForSequenceClassification
from texttune.models.registry import build_model
from texttune.strategies import STRATEGIES, apply_strategy
from texttune.training.optim import build_optimizer

TEXTS = ["what a wonderful film", "a dull boring waste of time", "great acting and a moving story",
         "terrible script and awful acting"] * 2
TINY_TRANSFORMER = ["model.name=transformer", "model.d_model=16", "model.nhead=2", "model.num_layers=2",
                    "model.dim_feedforward=32", "model.dropout=0.0", "model.head.dropout=0.0"]


def build(kind: str, strategy: str, tiny_model_dir, extra: tuple[str, ...] = ()):
    overrides = [*TINY_TRANSFORMER] if kind == "transformer" else [f"model.path={tiny_model_dir}",
                                                                    "model.head.dropout=0.0"]
    config = load_config(None, [*overrides, f"strategy.name={strategy}", *extra])
    torch.manual_seed(0)
    model, tokenizer = build_model(config.model, ["neg", "pos"], train_texts=TEXTS)
    return apply_strategy(model, config.strategy), tokenizer


def batch(tokenizer):
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"], torch.tensor([1, 0, 1, 0] * 2)


@pytest.fixture(params=["transformer", "bert"])
def kind(request):
    return request.param


@pytest.mark.parametrize("strategy", STRATEGIES.names())
def test_only_the_named_parameters_change_and_the_head_trains(strategy, kind, tiny_model_dir):
    model, tokenizer = build(kind, strategy, tiny_model_dir)
    model.eval()  # no dropout: the change comes from the optimizer alone
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = build_optimizer(model, TrainConfig(lr=1e-2, weight_decay=0.01))
    ids, mask, labels = batch(tokenizer)
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(input_ids=ids, attention_mask=mask).logits, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == trainable
    assert {name for name, _ in model.named_parameters() if name.startswith("head.")} <= changed


@pytest.mark.parametrize("strategy", STRATEGIES.names())
def test_save_load_gives_identical_logits(strategy, kind, tiny_model_dir, tmp_path):
    model, tokenizer = build(kind, strategy, tiny_model_dir)
    model.eval()
    with torch.no_grad():  # make the weights differ from any initialisation
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    model.save_pretrained(tmp_path / "model")
    loaded = TexttuneForSequenceClassification.from_pretrained(tmp_path / "model").eval()
    ids, mask, _ = batch(tokenizer)
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids, attention_mask=mask).logits,
                           loaded(input_ids=ids, attention_mask=mask).logits)


@pytest.mark.parametrize("strategy", STRATEGIES.names())
def test_trained_encoder_parameters_act_in_inference_mode(strategy, kind, tiny_model_dir):
    # PyTorch's fused Transformer inference path reads weights directly: LoRA, adapters or prefixes
    # it bypassed would train but never predict. Every trainable encoder tensor must reach the output.
    model, tokenizer = build(kind, strategy, tiny_model_dir)
    model.eval()
    ids, mask, _ = batch(tokenizer)
    encoder_trainable = [p for p in model.encoder.parameters() if p.requires_grad]
    if not encoder_trainable:
        pytest.skip(f"{strategy} trains no encoder parameter")
    with torch.inference_mode():
        before = model(input_ids=ids, attention_mask=mask).logits
    with torch.no_grad():
        for p in encoder_trainable:
            p.add_(0.5 * torch.randn_like(p))
    with torch.inference_mode():
        after = model(input_ids=ids, attention_mask=mask).logits
    assert not torch.allclose(before, after)


@pytest.mark.parametrize("strategy", STRATEGIES.names())
def test_padding_does_not_change_a_texts_logits(strategy, kind, tiny_model_dir):
    # Prefixes extend the attention mask: a short text alone and padded in a batch must agree.
    model, tokenizer = build(kind, strategy, tiny_model_dir)
    model.eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
        alone = tokenizer(TEXTS[:1], return_tensors="pt")
        padded = tokenizer(TEXTS[:2], padding=True, return_tensors="pt")
        assert padded["attention_mask"][0].sum() < padded["attention_mask"].shape[1]  # text 0 is padded
        one = model(input_ids=alone["input_ids"], attention_mask=alone["attention_mask"]).logits[0]
        two = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits[0]
    torch.testing.assert_close(one, two, atol=1e-5, rtol=1e-4)


def count(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_trainable_counts(tiny_model_dir):
    # Tiny Transformer: d 16, FFN 32, 2 pre-LN layers + final LayerNorm, 2 labels, linear head.
    head = 16 * 2 + 2
    layer = (3 * 16 * 16 + 3 * 16) + (16 * 16 + 16) + (16 * 32 + 32) + (32 * 16 + 16) + 2 * (16 + 16)  # 2224
    final_norm = 16 + 16
    layer_biases = 3 * 16 + 16 + 32 + 16 + 16 + 16  # in_proj, out_proj, linear1, linear2, norm1, norm2
    model, _ = build("transformer", "full", tiny_model_dir)
    vocab = model.encoder.embedding.num_embeddings
    assert count(model) == vocab * 16 + 2 * layer + final_norm + head
    assert count(build("transformer", "linear_probe", tiny_model_dir)[0]) == head
    assert count(build("transformer", "bitfit", tiny_model_dir)[0]) == 2 * layer_biases + 16 + head
    assert count(build("transformer", "partial", tiny_model_dir)[0]) == 2 * layer + final_norm + head
    assert count(build("transformer", "partial", tiny_model_dir, ("strategy.num_layers=1",))[0]) \
        == layer + final_norm + head
    assert count(build("transformer", "partial", tiny_model_dir,
                       ("strategy.num_layers=0", "strategy.train_embeddings=true"))[0]) == vocab * 16 + head
    # Tiny BERT: hidden 32, FFN 64, 2 layers (each: QKV + attention output + its LayerNorm, FFN in/out
    # + its LayerNorm).
    bert_layer = 3 * (32 * 32 + 32) + (32 * 32 + 32) + 64 + (32 * 64 + 64) + (64 * 32 + 32) + 64
    bert_head = 32 * 2 + 2
    assert count(build("bert", "linear_probe", tiny_model_dir)[0]) == bert_head
    assert count(build("bert", "partial", tiny_model_dir, ("strategy.num_layers=1",))[0]) == bert_layer + bert_head


def test_trainable_counts_of_added_modules(tiny_model_dir):
    head, norms = 16 * 2 + 2, 2 * 2 * (16 + 16) + (16 + 16)  # 2 layers x 2 LayerNorms + the final one
    adapter = (16 * 4 + 4) + (4 * 16 + 16)  # bottleneck 4: down + up
    assert count(build("transformer", "adapters", tiny_model_dir, ("strategy.bottleneck=4",))[0]) \
        == 2 * 2 * adapter + norms + head
    assert count(build("transformer", "adapters", tiny_model_dir,
                       ("strategy.bottleneck=4", "strategy.placement=pfeiffer",
                        "strategy.train_layer_norms=false"))[0]) == 2 * adapter + head
    # LoRA rank 2 on attention (in-projection 16 -> 48, out-projection 16 -> 16) and the FFN (16 -> 32 -> 16).
    attention = (2 * 16 + 48 * 2) + (2 * 16 + 16 * 2)
    ffn = (2 * 16 + 32 * 2) + (2 * 32 + 16 * 2)
    assert count(build("transformer", "lora", tiny_model_dir, ("strategy.rank=2",))[0]) == 2 * (attention + ffn) + head
    assert count(build("transformer", "prefix", tiny_model_dir, ("strategy.prefix_length=5",))[0]) == 5 * 16 + head
    assert count(build("transformer", "prefix", tiny_model_dir,
                       ("strategy.prefix_length=5", "strategy.mode=deep"))[0]) == 2 * 2 * 5 * 16 + head
    assert count(build("transformer", "prefix", tiny_model_dir, ("strategy.prefix_length=null",))[0]) == head
    bert_head = 32 * 2 + 2
    # BERT: PEFT's default targets query and value (32 -> 32), rank 2.
    assert count(build("bert", "lora", tiny_model_dir, ("strategy.rank=2",))[0]) \
        == 2 * 2 * (2 * 32 + 32 * 2) + bert_head
    assert count(build("bert", "prefix", tiny_model_dir, ("strategy.prefix_length=3", "strategy.mode=deep"))[0]) \
        == 2 * 2 * 3 * 32 + bert_head


def test_lora_on_a_cnn_adapts_its_convolutions(tiny_model_dir):
    config = load_config(None, ["model.name=cnn", "model.embedding_dim=8", "model.num_filters=4",
                                "model.kernel_sizes=[2,3]", "strategy.name=lora", "strategy.rank=2"])
    model, tokenizer = build_model(config.model, ["neg", "pos"], train_texts=TEXTS)
    model = apply_strategy(model, config.strategy)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"encoder.convs.{i}.lora_{ab}.default.weight" for i in (0, 1) for ab in "AB"} \
        | {f"head.{n}" for n, _ in model.head.named_parameters()}
    ids, mask, _ = batch(tokenizer)
    assert model(input_ids=ids, attention_mask=mask).logits.shape == (8, 2)


def test_unknown_lora_target_and_adapters_on_a_cnn_are_clear_errors(tiny_model_dir):
    with pytest.raises(TexttuneError, match="strategy.targets: 'nosuch' names no Linear"):
        build("bert", "lora", tiny_model_dir, ("strategy.targets=[nosuch]",))
    config = load_config(None, ["model.name=cnn", "strategy.name=adapters"])
    model, _ = build_model(config.model, ["neg", "pos"], train_texts=TEXTS)
    with pytest.raises(TexttuneError, match="strategy 'adapters' needs an attention encoder"):
        apply_strategy(model, config.strategy)


def test_partial_with_more_layers_than_the_encoder_has_is_a_clear_error(tiny_model_dir):
    with pytest.raises(TexttuneError, match="strategy.num_layers: 3 layers asked for, the encoder has 2"):
        build("transformer", "partial", tiny_model_dir, ("strategy.num_layers=3",))


def test_scratch_reinitialises_pretrained_weights(tiny_model_dir):
    full, _ = build("bert", "full", tiny_model_dir)
    scratch, _ = build("bert", "scratch", tiny_model_dir)
    name = "encoder.model.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(dict(full.named_parameters())[name], dict(scratch.named_parameters())[name])
    assert count(scratch) == count(full)


def test_an_embedding_adapter_adapts_the_token_vectors(tiny_model_dir):
    adapter = (16 * 4 + 4) + (4 * 16 + 16)
    head, norms = 16 * 2 + 2, 2 * 2 * (16 + 16) + (16 + 16)
    model, tokenizer = build("transformer", "adapters", tiny_model_dir,
                             ("model.embedding_dim=8", "strategy.bottleneck=4", "strategy.embeddings=true"))
    assert count(model) == 5 * adapter + norms + head  # 2 per layer + 1 after the input projection
    assert model.encoder.project.adapter.up.weight.requires_grad
    with pytest.raises(TexttuneError, match="strategy.embeddings: this encoder has no embedding output"):
        build("transformer", "adapters", tiny_model_dir, ("strategy.embeddings=true",))


@pytest.mark.parametrize("strategy", STRATEGIES.names())
def test_multi_label_bce_trains_the_head_under_every_strategy(strategy, tiny_model_dir):
    """data.multi_label: the same model and strategy, one sigmoid per label under BCE (issue 19)."""
    from texttune.tasks.classify import MultiLabelObjective

    config = load_config(None, [f"model.path={tiny_model_dir}", "model.head.dropout=0.0", f"strategy.name={strategy}"])
    torch.manual_seed(0)
    model, tokenizer = build_model(config.model, ["a", "b", "c"], train_texts=TEXTS)
    model = apply_strategy(model, config.strategy).eval()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = build_optimizer(model, TrainConfig(lr=1e-2, weight_decay=0.01))
    objective = MultiLabelObjective(["a", "b", "c"])
    ids, mask, _ = batch(tokenizer)
    targets = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]] * 2, dtype=torch.float32)

    losses = []
    for _ in range(3):
        loss = objective.loss_fn(model(input_ids=ids, attention_mask=mask).logits, targets)
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == trainable
    assert {name for name, _ in model.named_parameters() if name.startswith("head.")} <= changed
    assert isinstance(objective.loss_fn, torch.nn.BCEWithLogitsLoss) and losses[-1] < losses[0]
