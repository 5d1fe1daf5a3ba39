"""Instruction fine-tuning: the assistant-only label mask (single and multi-turn), truncation that keeps
supervised tokens, the guanaco layout, and a run end to end on a tiny random Llama (full and LoRA)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer, LlamaForCausalLM

from texttune.errors import TexttuneError
from texttune.tasks.sft import SFTTask, encode_conversations, generate, load_sft_config, parse_guanaco, run_sft, \
    tokenize_conversation, truncate

from conftest import LM_TEXTS as TEXTS


CONVERSATION = [{"role": "user", "content": "what is the capital of france"},
                {"role": "assistant", "content": "paris is the capital of france"},
                {"role": "user", "content": "name a red fruit"},
                {"role": "assistant", "content": "the apple is a red fruit"}]


def test_only_assistant_tokens_are_supervised_in_every_turn(tiny_lm):
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    ids, mask = tokenize_conversation(tokenizer, CONVERSATION)
    assert ids == tokenizer.apply_chat_template(CONVERSATION, tokenize=True, return_dict=False)
    supervised = tokenizer.decode([i for i, m in zip(ids, mask) if m])
    ignored = tokenizer.decode([i for i, m in zip(ids, mask) if not m])
    assert supervised == "paris is the capital of france<|im_end|>\nthe apple is a red fruit<|im_end|>\n"
    assert "what is the capital of france" in ignored and "name a red fruit" in ignored
    assert "paris" not in ignored and "apple" not in ignored


def test_the_guanaco_layout_parses_into_turns_and_needs_an_assistant():
    text = "### Human: hi there### Assistant: hello!### Human: and?### Assistant: bye"
    assert [m["role"] for m in parse_guanaco(text)] == ["user", "assistant", "user", "assistant"]
    assert parse_guanaco(text)[1]["content"] == "hello!"
    with pytest.raises(TexttuneError, match="lima row 3: no assistant turn"):
        parse_guanaco("### Human: only a question", "lima row 3")


def test_truncation_never_leaves_an_example_without_supervised_tokens():
    ids, mask = list(range(100)), [0] * 90 + [1] * 10
    cut_ids, cut_mask = truncate(ids, mask, 32)
    assert len(cut_ids) == 32 and sum(cut_mask) > 0 and cut_ids[-1] < 100
    short = truncate(list(range(10)), [0] * 5 + [1] * 5, 32)
    assert short == (list(range(10)), [0] * 5 + [1] * 5)
    early = truncate(list(range(100)), [0] * 4 + [1] * 96, 32)
    assert early[0] == list(range(32))  # a reply starting early keeps the start of the text


def test_the_batch_ignores_prompt_and_padding(tiny_lm):
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    data = encode_conversations([CONVERSATION, CONVERSATION[:2]], tokenizer, 256)
    batch = SFTTask().collate(data, [0, 1], tokenizer.pad_token_id)
    counted = batch["labels"] != -100
    assert int(counted.sum()) == int(data.type_ids.sum())
    assert not counted[1, data.lengths[1]:].any()  # padding of the shorter example


def test_a_tiny_run_learns_saves_and_generates(tiny_lm, tmp_path):
    rows = [{"prompt": TEXTS[i], "completion": TEXTS[i + 1]} for i in range(0, 60, 2)]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    items = [f"model.path={tiny_lm}", "data.dataset=null", f"data.train_file={data}", "data.validation_size=0.2",
             "train.epochs=8", "train.lr=3e-3", "train.num_threads=1", f"output_dir={tmp_path / 'runs'}"]
    result = run_sft(load_sft_config(None, items), callbacks=[])
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["validation"]["loss"] < metrics["validation_before"]["loss"] - 1.0
    assert metrics["params"]["trainable_pct"] == 100.0
    reply = generate(result.run_dir, "name a red fruit", max_new_tokens=8)
    assert isinstance(reply, str) and reply
    lora = run_sft(load_sft_config(None, [*items, "lora.rank=4", "train.epochs=1"]), callbacks=[])
    lora_metrics = json.loads((lora.run_dir / "metrics.json").read_text())
    assert lora_metrics["params"]["trainable"] == 2 * 2 * (4 * 32 + 32 * 4)  # q_proj, v_proj in 2 layers
    saved = LlamaForCausalLM.from_pretrained(lora.run_dir / "model")
    assert not [n for n, _ in saved.named_parameters() if "lora" in n]


def test_bad_sft_data_is_a_clear_error(tiny_lm, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("question,answer\na,b\n", encoding="utf-8")
    with pytest.raises(TexttuneError, match="expected a text column .* or prompt and completion columns"):
        run_sft(load_sft_config(None, [f"model.path={tiny_lm}", "data.dataset=null", f"data.train_file={bad}",
                                       f"output_dir={tmp_path / 'runs'}"]), callbacks=[])


def test_a_cached_smollm2_folder_with_a_gguf_record_loads_and_saves(tiny_lm, tmp_path, monkeypatch):
    """A folder converted from GGUF by an earlier texttune kept the GGUF quantization_config: a model
    loaded from it was marked quantized and could not be saved at the end of an SFT run."""
    import shutil

    from texttune.tasks.sft import load_causal_lm

    cached = tmp_path / "cache" / "models" / "smollm2"
    shutil.copytree(tiny_lm, cached)
    config = json.loads((cached / "config.json").read_text())
    config["quantization_config"] = {"dequantize": False, "gguf_file": "x.gguf", "quant_method": "gguf"}
    (cached / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("TEXTTUNE_CACHE_DIR", str(tmp_path / "cache"))
    model, tokenizer = load_causal_lm("smollm2")
    assert "quantization_config" not in json.loads((cached / "config.json").read_text())
    model.save_pretrained(tmp_path / "saved")  # raised "The model is quantized with gguf" before
    reloaded = LlamaForCausalLM.from_pretrained(tmp_path / "saved")
    ids = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(reloaded(ids).logits, model(ids).logits)


def test_the_generate_command_prints_the_reply_unwrapped(tiny_lm, run_cli, monkeypatch):
    """Piped output keeps the model's own lines: the console does not break them at 80 columns."""
    import texttune.tasks.sft

    reply = "a reply with many words " * 12 + "\nand a second line, [b]not markup[/b] :smile: "
    monkeypatch.setattr(texttune.tasks.sft, "generate", lambda *args, **kwargs: reply)
    code, out, _ = run_cli("generate", tiny_lm, "--prompt", "hi")
    assert code == 0
    assert out.rstrip("\n") == reply
