"""``texttune pretrain``: masked-language-model pre-training of a BERT-style encoder on a corpus.

From scratch (a BERT of configurable size over a WordPiece tokenizer trained on the corpus, or a
given tokenizer) or continued from an existing encoder (domain-adaptive pre-training; MiniLM ships no
MLM head, so its head starts fresh). Texts are tokenized with [CLS]/[SEP], concatenated and cut into
fixed-length blocks; whole groups of the corpus (books of ``gutenberg``) are held out to measure
masked-token accuracy and perplexity. Masking is transformers' ``DataCollatorForLanguageModeling``
(15%, 80/10/10, special tokens never masked, optional whole-word masking). Training goes through the
same loop and lifecycle as classification (``runs.run_task``), writes the same run record (resumable),
and the saved encoder fine-tunes with ``model: {name: pretrained, path: RUN_DIR/model}``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from texttune import runs
from texttune.config import Section, TrainConfig
from texttune.data.tokenize import Encoded, collate
from texttune.errors import TexttuneError
from texttune.io import atomic_write_json
from texttune.tasks.lm import LanguageModelTask


# The training defaults of this kind of run (a classification run's are in TrainConfig).
TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 1, "lr": 5e-4, "per_device_batch_size": 32, "eval_batch_size": 64,
    "metric": "loss", "calibrate": False,
}


class CorpusConfig(Section):
    dataset: str | None = Field("gutenberg", description="Built-in corpus; null when files are given.")
    files: list[Path] = Field(default_factory=list, description="Text files (.txt lines) or tables with text_column.")
    text_column: str = Field("text", description="Column holding the text in table files.")
    group_column: str | None = Field("source", description="Column naming each text's document (book).")
    held_out: list[str] = Field(
        ["austen-persuasion", "shakespeare-caesar"],
        description="Documents (values of group_column) kept out of training for evaluation; with no "
        "group column, 5% of texts are held out at random.",
    )
    max_train_texts: int | None = Field(None, gt=0, description="Use only this many training texts (budget).")


class TokenizerSection(Section):
    path: str | None = Field(None, description="An existing tokenizer (folder or alias); null: train one.")
    kind: Literal["wordpiece", "bpe"] = Field("wordpiece", description="Kind of tokenizer to train.")
    vocab_size: int = Field(8000, gt=10, description="Vocabulary size of the trained tokenizer.")
    min_frequency: int = Field(2, ge=1, description="Minimum frequency of a learned piece.")


class MLMModelConfig(Section):
    init: str | None = Field(None, description="null: a new BERT; a model folder or alias: continue its pre-training.")
    hidden_size: int = Field(256, gt=0)
    num_layers: int = Field(4, gt=0)
    num_heads: int = Field(4, gt=0)
    intermediate_size: int = Field(1024, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)


class MaskingConfig(Section):
    probability: float = Field(0.15, gt=0, lt=1, description="Share of tokens (or words) selected for prediction.")
    mask_replace_prob: float = Field(0.8, ge=0, le=1, description="Selected tokens replaced by [MASK].")
    random_replace_prob: float = Field(0.1, ge=0, le=1, description="Selected tokens replaced by a random token.")
    whole_word: bool = Field(False, description="Mask every piece of a selected word (WordPiece tokenizers; "
                             "transformers then replaces every chosen piece by the mask token).")
    block_size: int = Field(128, gt=8, description="Tokens per training sequence (texts are concatenated).")


class PretrainExperiment(Section):
    kind: Literal["mlm"] = Field("mlm", description="What this config runs: masked-LM pre-training.")
    name: str = Field("pretrain", description="Run name.")
    seed: int = 42
    output_dir: Path = Path("runs")
    objective: Literal["mlm"] = "mlm"
    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    tokenizer: TokenizerSection = Field(default_factory=TokenizerSection)
    model: MLMModelConfig = Field(default_factory=MLMModelConfig)
    mlm: MaskingConfig = Field(default_factory=MaskingConfig)
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(**TRAIN_DEFAULTS))

    @field_validator("train")
    @classmethod
    def _evaluated_by_examples(cls, train: TrainConfig) -> TrainConfig:
        return train.evaluated_by_examples("masked-LM")


# --------------------------------------------------------------------------- data


def corpus_splits(cfg: CorpusConfig, seed: int) -> tuple[list[str], list[str], dict[str, Any]]:
    """(train texts, held-out texts, a description for data.json)."""
    import pandas as pd

    if cfg.dataset is not None:
        from texttune.config import DataConfig
        from texttune.data.load import load_dataset

        frame = load_dataset(DataConfig(dataset=cfg.dataset), carve=False).splits["train"]
    else:
        from texttune.models.tokenizer_training import corpus_texts

        frame = pd.DataFrame({"text": corpus_texts(files=cfg.files, text_column=cfg.text_column)})
    frame = frame[frame["text"].astype(str).str.strip() != ""]
    if frame.empty:
        raise TexttuneError(f"corpus {cfg.dataset or [str(f) for f in cfg.files]}: no text to pre-train on")
    if cfg.group_column and cfg.group_column in frame.columns:
        unknown = sorted(set(cfg.held_out) - set(frame[cfg.group_column]))
        if unknown:
            raise TexttuneError(f"corpus.held_out: {unknown} are not values of '{cfg.group_column}'")
        held = frame[cfg.group_column].isin(cfg.held_out).to_numpy()
        how = f"documents {cfg.held_out} held out"
    else:
        held = np.random.default_rng(seed).random(len(frame)) < 0.05
        how = "5% of texts held out at random"
    train, test = frame[~held], frame[held]
    if cfg.max_train_texts is not None:
        train = train.sample(n=min(cfg.max_train_texts, len(train)), random_state=seed)
    info = {"source": cfg.dataset or [str(f) for f in cfg.files], "held_out": how,
            "train_texts": len(train), "held_out_texts": len(test)}
    return train["text"].tolist(), test["text"].tolist(), info


def blocks(texts: list[str], tokenizer, block_size: int) -> Encoded:
    """Texts tokenized with their special tokens, concatenated, cut into ``block_size`` blocks."""
    ids: list[int] = []
    for start in range(0, len(texts), 2048):
        for row in tokenizer(texts[start : start + 2048], add_special_tokens=True, truncation=False)["input_ids"]:
            ids.extend(row)
    n = len(ids) // block_size
    if n == 0:
        raise TexttuneError(f"the corpus has {len(ids)} tokens: not one block of {block_size}")
    flat = np.asarray(ids[: n * block_size], dtype=np.int32)
    return Encoded(ids=flat, type_ids=None, offsets=np.arange(n + 1, dtype=np.int64) * block_size,
                   labels=np.zeros(n, dtype=np.int64), rows=np.arange(n, dtype=np.int64))


# --------------------------------------------------------------------------- the task


class MaskedLMTask:
    """Masked-token prediction for the shared loop: masking at batching time, the model's MLM loss,
    held-out masked-token accuracy and perplexity with masks fixed by a seed."""

    metric_default = "loss"

    def __init__(self, tokenizer, cfg: MaskingConfig, seed: int) -> None:
        if cfg.whole_word and not _is_wordpiece(tokenizer):
            raise TexttuneError("mlm.whole_word: needs a WordPiece tokenizer (word pieces marked with ##)")
        self.tokenizer, self.cfg, self.seed = tokenizer, cfg, seed
        self.special = torch.zeros(len(tokenizer), dtype=torch.bool)
        self.special[tokenizer.all_special_ids] = True
        self.continuation = torch.tensor([t.startswith("##") for t in tokenizer.convert_ids_to_tokens(
            list(range(len(tokenizer))))]) if cfg.whole_word else None
        self.collator = self._collator(seed=None)  # training masks: torch's RNG (saved for resume)

    def _collator(self, seed: int | None):
        from transformers import DataCollatorForLanguageModeling

        collator = DataCollatorForLanguageModeling(
            self.tokenizer, mlm_probability=self.cfg.probability, whole_word_mask=self.cfg.whole_word,
            mask_replace_prob=self.cfg.mask_replace_prob, random_replace_prob=self.cfg.random_replace_prob,
            seed=seed)
        if seed is not None:
            # The collator makes its generator only inside __call__; masking directly would silently
            # fall back to torch's global RNG (different held-out masks at every evaluation).
            collator.create_rng()
        return collator

    def mask(self, input_ids: torch.Tensor, collator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked inputs, labels with -100 where nothing is predicted)."""
        collator = collator or self.collator
        special = self.special[input_ids]
        offsets = _word_offsets(self.continuation[input_ids]) if self.continuation is not None else None
        return collator.torch_mask_tokens(input_ids.clone(), special_tokens_mask=special.long(),
                                          offset_mapping=offsets)

    def collate(self, data: Encoded, indices: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
        batch = collate(data, indices, pad_id)
        batch.pop("labels")
        batch["input_ids"], batch["labels"] = self._mask_share(batch["input_ids"])
        return batch

    def _mask_share(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training masks of this process's share of a global batch (rows r, r + N, ... of it: the
        loop's ``_share``). Every process draws from the same RNG state (one seed; the checkpoint's
        restored on all), so masking the share alone would give every process the same masks; each
        masks a global batch's worth of rows, its row k at position k·N + r, and keeps those."""
        from accelerate import PartialState

        processes = PartialState()
        n, rank = processes.num_processes, processes.process_index
        if n == 1:
            return self.mask(input_ids)
        masked, labels = self.mask(input_ids.repeat_interleave(n, dim=0))  # (B·N, T): row k·N + j = row k
        return masked[rank::n], labels[rank::n]

    def loss(self, model, batch: dict[str, torch.Tensor], accelerator) -> torch.Tensor:
        batch = dict(batch)
        labels = batch.pop("labels")
        with accelerator.autocast():
            logits, targets = masked_logits(model, batch, labels)
            return torch.nn.functional.cross_entropy(logits.float(), targets)

    def evaluate(self, model, data: Encoded, pad_id: int, batch_size: int, accelerator) -> dict[str, Any]:
        from texttune.evaluation.evaluate import evaluation_model, map_sharded

        model = evaluation_model(model, accelerator)
        device = accelerator.device if accelerator is not None else torch.device("cpu")

        def scores(batch: dict[str, torch.Tensor]) -> tuple[float, int, int]:
            """(summed loss, correct, masked) of one masked batch."""
            batch = {k: v.to(device) for k, v in batch.items()}
            labels = batch.pop("labels")
            logits, targets = masked_logits(model, batch, labels)
            logits = logits.float()
            return (float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum")),
                    int((logits.argmax(-1) == targets).sum()), len(targets))

        model.eval()
        with torch.inference_mode():
            # Every process masks every batch (map_sharded): the seeded masks are one process's.
            per_batch = list(map_sharded(scores, self._masked_batches(data, pad_id, batch_size), accelerator))
        total_loss, correct, masked = (sum(c) for c in zip(*per_batch)) if per_batch else (0.0, 0, 0)
        loss = total_loss / max(masked, 1)
        return {"loss": loss, "accuracy": correct / max(masked, 1), "perplexity": math.exp(min(loss, 50.0)),
                "num_masked": masked, "num_examples": len(data)}

    def _masked_batches(self, data: Encoded, pad_id: int, batch_size: int):
        """The held-out batches in order, masked by a collator seeded afresh: the same masks at every
        evaluation."""
        collator = self._collator(seed=self.seed + 1)
        for start in range(0, len(data), batch_size):
            batch = collate(data, np.arange(start, min(start + batch_size, len(data))), pad_id)
            batch.pop("labels")
            batch["input_ids"], batch["labels"] = self.mask(batch["input_ids"], collator)
            yield batch


def masked_logits(model, batch: dict[str, torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (M, V), targets (M,)) of the M predicted positions only.

    Sparse prediction: the vocabulary projection runs on the ~15% of positions that carry a label, not
    on every position as ``BertForMaskedLM.forward`` does. By multiply-adds per position, the
    4-layer, hidden-256 encoder of configs/pretrain costs ~3.1 M and the projection onto 8,000 pieces
    ~2.1 M, so most of the projection's work was spent on positions with no label. transformers has no
    option for it, hence this split of the BERT-family model into its encoder (``model.bert``) and its
    head (``model.cls``); any other masked-LM model takes its own full forward."""
    chosen = labels != -100
    encoder, head = getattr(model, "bert", None), getattr(model, "cls", None)
    if encoder is None or head is None:
        return model(**batch).logits[chosen], labels[chosen]
    hidden = encoder(**batch).last_hidden_state
    return head(hidden[chosen]), labels[chosen]


def _is_wordpiece(tokenizer) -> bool:
    return any(t.startswith("##") for t in tokenizer.get_vocab())


def _word_offsets(continuation: torch.Tensor) -> np.ndarray:
    """Character-like offsets the collator's whole-word logic reads: a piece continuing a word starts
    where the previous piece ended; a new word leaves a gap. (B, T) → (B, T, 2)."""
    step = (~continuation).long()  # 1 at word starts: one position of gap
    ends = torch.cumsum(step + 1, dim=1)  # each piece is one position long
    starts = ends - 1
    return torch.stack([starts, ends], dim=-1).numpy()


# --------------------------------------------------------------------------- the run


def build_mlm_model(cfg: MLMModelConfig, tokenizer, block_size: int):
    from transformers import AutoModelForMaskedLM, BertConfig, BertForMaskedLM

    if cfg.init is not None:
        from texttune.models.saving import load_pretrained
        from texttune.resources import resolve_model_path

        # An encoder without MLM weights (MiniLM) gets a freshly initialised head.
        return load_pretrained(AutoModelForMaskedLM, resolve_model_path(cfg.init), name=cfg.init,
                               dtype=torch.float32)
    if cfg.hidden_size % cfg.num_heads:
        raise TexttuneError(f"model.hidden_size ({cfg.hidden_size}) must be divisible by model.num_heads ({cfg.num_heads})")
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                        num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
                        hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout,
                        max_position_embeddings=max(512, block_size), pad_token_id=tokenizer.pad_token_id)
    return BertForMaskedLM(config)


def load_tokenizer_for(cfg: PretrainExperiment, train_texts: list[str]):
    if cfg.tokenizer.path is not None:
        from texttune.models.pretrained import load_tokenizer

        tokenizer = load_tokenizer(cfg.tokenizer.path)
    elif cfg.model.init is not None:
        from texttune.models.pretrained import load_tokenizer

        tokenizer = load_tokenizer(cfg.model.init)
    else:
        from texttune.models.tokenizer_training import train_tokenizer

        tokenizer = train_tokenizer(train_texts, cfg.tokenizer.kind, cfg.tokenizer.vocab_size,
                                    cfg.tokenizer.min_frequency)
    if tokenizer.mask_token is None:
        raise TexttuneError("tokenizer: it has no mask token; masked-LM pre-training needs one")
    return tokenizer


class Pretrain(LanguageModelTask):
    """Masked-LM pre-training as a ``runs.Task``."""

    kind = "mlm"
    command = "pretrain"
    data_parallel = True  # runs under torchrun with N processes (runs.run_task)

    def load_config(self, path: Path | None, overrides: list[str]) -> PretrainExperiment:
        return load_pretrain_config(path, overrides)

    def prepare(self, config: PretrainExperiment, run_dir: Path, resuming: bool) -> runs.Prepared:
        train_texts, test_texts, info = corpus_splits(config.corpus, config.seed)
        # The tokenizer trained for this run is kept beside its checkpoints: a resumed run reads the
        # ids its checkpoint was trained on (a BPE trainer may order merges of equal counts otherwise).
        # Under N processes the main one prepares first (runs.run_task) and keeps it; the others read
        # it, as a resumed run does, so that every process has the same ids.
        kept = run_dir / runs.CHECKPOINTS / "tokenizer"
        if (resuming and kept.is_dir()) or not runs.is_main_process():
            from texttune.models.saving import load_tokenizer_from

            tokenizer = load_tokenizer_from(kept)
        else:
            tokenizer = load_tokenizer_for(config, train_texts)
            tokenizer.save_pretrained(kept)
        train, held_out = blocks(train_texts, tokenizer, config.mlm.block_size), blocks(
            test_texts, tokenizer, config.mlm.block_size)
        info.update(train_blocks=len(train), held_out_blocks=len(held_out), block_size=config.mlm.block_size,
                    train_tokens=int(train.offsets[-1]), vocab_size=len(tokenizer))
        if runs.is_main_process():
            atomic_write_json(run_dir / runs.DATA, info)
        torch.manual_seed(config.seed)
        model = build_mlm_model(config.model, tokenizer, config.mlm.block_size)
        return runs.Prepared(model, tokenizer, train, held_out, MaskedLMTask(tokenizer, config.mlm, config.seed),
                             pad_id=tokenizer.pad_token_id)

    def before_fit(self, config: PretrainExperiment, prepared: runs.Prepared, trainer) -> dict[str, Any] | None:
        """Held-out scores of the encoder continued from (none for a new one)."""
        if config.model.init is None:
            return None
        return prepared.objective.evaluate(trainer.model, prepared.validation, prepared.pad_id,
                                           config.train.eval_batch_size, trainer.accelerator)

    def finish(self, config: PretrainExperiment, prepared: runs.Prepared, trainer, run_dir: Path) -> dict[str, Any]:
        final = prepared.objective.evaluate(trainer.model, prepared.validation, prepared.pad_id,
                                            config.train.eval_batch_size, trainer.accelerator)
        self.save_model(trainer, prepared.tokenizer, run_dir)
        return {"held_out": final, "held_out_before": prepared.extras.get("before")}


PRETRAIN = runs.register_task(Pretrain())


def run_pretraining(config: PretrainExperiment | None = None, callbacks=None, *, resume: Path | None = None):
    """Pre-train and record one run (``resume``: continue an interrupted one); returns a RunResult."""
    return runs.run_task(PRETRAIN, config, resume=resume, callbacks=callbacks)


def load_pretrain_config(path: Path | None, overrides: list[str]) -> PretrainExperiment:
    """Defaults ← file (with ``extends``) ← ``--set``; errors name the key and where it was set."""
    from texttune.config import load_root_config

    return load_root_config(PretrainExperiment, path, overrides, {"train": TRAIN_DEFAULTS})


def fill_mask(run: str | Path, text: str, top_k: int = 5) -> list[dict[str, Any]]:
    """The ``top_k`` tokens for each mask of ``text`` (write the tokenizer's mask token, e.g. [MASK])."""
    from transformers import AutoModelForMaskedLM, pipeline

    from texttune.models.saving import load_pretrained, load_tokenizer_from

    folder = Path(run) / runs.MODEL if (Path(run) / runs.MODEL).is_dir() else Path(run)
    if not (folder / "config.json").is_file():
        raise TexttuneError(f"{folder}: no masked-LM model here (no config.json)")
    tokenizer = load_tokenizer_from(folder)
    model = load_pretrained(AutoModelForMaskedLM, folder, strict=True)
    if tokenizer.mask_token not in text:
        raise TexttuneError(f"the text has no {tokenizer.mask_token} token to fill")
    results = pipeline("fill-mask", model=model, tokenizer=tokenizer, top_k=top_k, device="cpu")(text)
    if results and isinstance(results[0], dict):
        results = [results]
    return [[{"token": r["token_str"], "score": round(float(r["score"]), 4)} for r in masks] for masks in results]
