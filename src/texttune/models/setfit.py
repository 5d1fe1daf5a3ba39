"""SetFit (Tunstall et al., 2022): few-shot classification as a sentence-embedding *body* fine-tuned
contrastively on pairs of the labelled examples, then a logistic-regression *head* on its embeddings.

``model.name: setfit`` (MiniLM body by default, ``model.path``). Two named phases, as in the paper:

1. **contrastive body**: for every labelled example, ``num_iterations`` times, one pair with a random
   example of the same class (target 1) and one with a random example of another class (target 0):
   ``2 * num_iterations * N`` pairs for N examples. Loss: sentence-transformers' CosineSimilarityLoss,
   the MSE between ``cos(u, v)`` of the mean-pooled embeddings and the target. AdamW (lr 2e-5, decay
   0.01 off biases/LayerNorm), batch 16, one epoch, linear schedule with 10% warmup: SetFit's defaults.
2. **head**: scikit-learn's logistic regression on the fine-tuned (L2-normalised) embeddings, C as for
   the classic baselines (SetFit's default, C = 1; a grid is chosen by cross-validation on train).

From the run's point of view it is a closed-form family (``classic = True``): ``tasks/classic.py`` fits,
evaluates and saves it like the baselines, and it is loaded by what its ``classic.json`` says
(``family: setfit``, ``models.classic.load_fitted``). Saved without pickle: the body as a Hugging Face
folder (``body/``, safetensors + tokenizer), the head as safetensors + JSON.

Written on torch + transformers rather than the ``setfit`` package: that package and
sentence-transformers are not among texttune's dependencies, and the recipe is ~60 lines. Not on
texttune's ``Trainer`` either: the loop's objective is a per-example classification loss over token
batches of one text; here a step is a batch of *pairs* (two encodings) scored by a similarity loss, and
the model trained (an encoder without a head) is not the classifier that is finally evaluated.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from texttune.models.pooling import pool
from texttune.models.classic import CLASSIC_FILE, CLASSIC_WEIGHTS, FITTED_FAMILIES, FORMAT, _ClassicConfig
from texttune.models.registry import MODEL_BUILDERS, MODEL_CONFIGS

FAMILY = "setfit"
BODY = "body"  # the fine-tuned sentence encoder, a Hugging Face folder inside the run's model/ folder


class SetFitConfig(_ClassicConfig):
    name: Literal["setfit"] = "setfit"
    path: str = Field("minilm", description="The sentence-embedding body: a Hugging Face folder, a Hub id "
                      "(online), or the alias minilm.")
    pooling: Literal["mean", "cls"] = Field("mean", description="Mean over real tokens (sentence-"
                                            "transformers' pooling for MiniLM), or [CLS].")
    max_tokens: int = Field(128, gt=0, description="Longer inputs are truncated to this many tokens.")
    normalize: bool = Field(True, description="L2-normalise the embeddings the head reads.")
    num_iterations: int = Field(20, gt=0, description="Pairs per example and kind: each example gets this "
                                "many positive and as many negative pairs (SetFit's default 20).")
    epochs: int = Field(1, gt=0, description="Passes over the pairs in the contrastive phase.")
    lr: float = Field(2e-5, gt=0, description="AdamW learning rate of the body.")
    batch_size: int = Field(16, gt=0, description="Pairs per contrastive step.")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of the contrastive steps warming up.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (not on biases or LayerNorm).")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Gradient clipping norm (null = off).")
    embed_batch_size: int = Field(64, gt=0, description="Texts embedded per forward pass for the head.")
    C: list[float] = Field([1.0], description="Inverse regularisation strengths of the head; several: the "
                           "best by cross-validated accuracy on the training split (SetFit: 1).")


def sample_pairs(labels: np.ndarray, num_iterations: int, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SetFit's pair generation: per iteration and example, one positive and one negative partner.

    Returns ``(first, second, target)`` index arrays of ``2 * num_iterations * len(labels)`` pairs,
    positives and negatives alternating. A positive partner is another example of the class (the
    example itself only when its class has one; SetFit's sampler allows itself, a trivial pair).
    """
    labels = np.asarray(labels)
    members = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    others = {c: np.flatnonzero(labels != c) for c in members}
    if any(len(rows) == 0 for rows in others.values()):
        raise ValueError("contrastive pairs need at least two classes")
    first, second, target = [], [], []
    for _ in range(num_iterations):
        for i, c in enumerate(labels):
            same = members[c][members[c] != i] if len(members[c]) > 1 else members[c]
            first += [i, i]
            second += [int(rng.choice(same)), int(rng.choice(others[c]))]
            target += [1.0, 0.0]
    return np.asarray(first), np.asarray(second), np.asarray(target, dtype=np.float32)


def _optimizer(body, cfg: SetFitConfig):
    import torch

    decay, no_decay = [], []
    for name, param in body.named_parameters():
        (no_decay if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name else decay).append(param)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)


def contrastive_fit(body, tokenizer, texts: list[str], labels: np.ndarray, cfg: SetFitConfig, seed: int,
                    device: str = "cpu") -> list[float]:
    """Phase 1: fine-tune ``body`` in place on sampled pairs; returns the loss of every step."""
    import torch

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)  # dropout masks
    first, second, target = sample_pairs(labels, cfg.num_iterations, rng)
    steps = math.ceil(len(target) / cfg.batch_size) * cfg.epochs
    warmup = int(cfg.warmup_ratio * steps)
    optimizer = _optimizer(body, cfg)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: (s + 1) / max(warmup, 1) if s < warmup
                                                 else max(0.0, (steps - s) / max(steps - warmup, 1)))
    body.to(device).train()
    losses: list[float] = []
    for _ in range(cfg.epochs):
        order = rng.permutation(len(target))
        for start in range(0, len(order), cfg.batch_size):
            batch = order[start: start + cfg.batch_size]
            sides = [texts[i] for i in first[batch]] + [texts[i] for i in second[batch]]
            encoded = tokenizer(sides, truncation=True, max_length=cfg.max_tokens, padding=True,
                                return_tensors="pt").to(device)
            vectors = pool(body(**encoded).last_hidden_state, encoded["attention_mask"], cfg.pooling)
            u, v = vectors[: len(batch)], vectors[len(batch):]
            cosine = torch.nn.functional.cosine_similarity(u, v)
            loss = torch.nn.functional.mse_loss(cosine, torch.from_numpy(target[batch]).to(device))
            loss.backward()
            if cfg.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(body.parameters(), cfg.max_grad_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
    body.eval()
    return losses


def pair_loss(body, tokenizer, texts: list[str], first, second, target, cfg: SetFitConfig, device="cpu") -> float:
    """The mean CosineSimilarityLoss of the given pairs, without dropout or gradient (for tests and logs)."""
    import torch

    with torch.inference_mode():
        embeddings = torch.from_numpy(embed(body, tokenizer, texts, cfg, device, normalize=False))
        cosine = torch.nn.functional.cosine_similarity(embeddings[first], embeddings[second])
        return float(torch.nn.functional.mse_loss(cosine, torch.from_numpy(np.asarray(target))))


def embed(body, tokenizer, texts: list[str], cfg: SetFitConfig, device: str = "cpu",
          normalize: bool | None = None) -> np.ndarray:
    """(N, hidden) pooled embeddings, batched by length, in eval mode (the embedding probe's code)."""
    from texttune.models.classic_model import embed_texts

    return embed_texts(body, tokenizer, texts, pooling=cfg.pooling, max_tokens=cfg.max_tokens,
                       batch_size=cfg.embed_batch_size, device=device,
                       normalize=cfg.normalize if normalize is None else normalize)


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class SetFitModel:
    """A SetFit classifier: ``body`` (a transformers encoder) + ``linear`` (a fitted LogisticRegression).

    The same surface as ``ClassicModel``: ``fit``, ``logits``, ``save``/``load``, ``parameter_count``,
    ``info``, ``temperature``, ``label_names``.
    """

    def __init__(self, cfg: SetFitConfig, label_names: list[str]) -> None:
        self.cfg, self.label_names = cfg, list(label_names)
        self.body, self.tokenizer, self.linear = None, None, None
        self.info: dict[str, Any] = {}
        self.temperature: float | None = None
        self.device = _device()

    def _clip(self, texts) -> list[str]:
        return [str(t)[: self.cfg.max_chars] for t in texts]

    def _load_body(self, source, name, strict: bool = False) -> None:
        from transformers import AutoModel

        from texttune.models.saving import load_pretrained, load_tokenizer_from

        self.tokenizer = load_tokenizer_from(source, name=name)
        self.body = load_pretrained(AutoModel, source, name=name, strict=strict).to(self.device)

    def describe_fit(self, rows: int) -> str:
        pairs = 2 * self.cfg.num_iterations * rows * self.cfg.epochs
        return (f"fitting setfit on {rows:,} training texts: contrastive body ({self.cfg.path}, {pairs:,} pairs, "
                f"{math.ceil(pairs / self.cfg.batch_size):,} steps), then a logistic-regression head ...")

    def fit(self, texts, labels: np.ndarray, pairs=None, seed: int = 0) -> SetFitModel:
        from texttune.errors import TexttuneError
        from texttune.models.classic_model import _logistic, choose_C
        from texttune.resources import resolve_model_path

        if pairs is not None:
            raise TexttuneError("model.name setfit: sentence-pair data (text_pair) is not supported; SetFit "
                                "embeds one text per example")
        texts, labels = self._clip(texts), np.asarray(labels, dtype=np.int64)
        self._load_body(resolve_model_path(self.cfg.path), self.cfg.path)
        tic = time.perf_counter()
        losses = contrastive_fit(self.body, self.tokenizer, texts, labels, self.cfg, seed, self.device)
        contrastive_s = time.perf_counter() - tic
        x = self.embeddings(texts)
        C, scores = choose_C(self.cfg, x, labels, seed)
        self.linear = _logistic(self.cfg, C).fit(x, labels)
        tenth = max(1, len(losses) // 10)
        self.info = {"C": C, "cv_accuracy": scores, "features": int(x.shape[1]), "pairs": 2 * self.cfg.num_iterations
                     * len(texts), "contrastive_steps": len(losses), "contrastive_time_s": round(contrastive_s, 3),
                     "loss_first_tenth": float(np.mean(losses[:tenth])), "loss_last_tenth": float(np.mean(losses[-tenth:]))}
        return self

    def embeddings(self, texts) -> np.ndarray:
        return embed(self.body, self.tokenizer, self._clip(texts), self.cfg, self.device)

    def logits(self, texts, pairs=None) -> np.ndarray:
        """(N, C) scores; ``softmax`` of a row is the head's probability of each label."""
        if not len(texts):
            return np.zeros((0, len(self.label_names)), dtype=np.float32)
        scores = self.linear.decision_function(self.embeddings(texts))
        if scores.ndim == 1:  # binary LR: one log-odds column; as two logits softmax gives predict_proba
            scores = np.stack([np.zeros_like(scores), scores], axis=1)
        return scores.astype(np.float32)

    def parameter_count(self) -> int:
        """The fine-tuned body's weights plus the head's coefficients and biases (all trained)."""
        return int(sum(p.numel() for p in self.body.parameters()) + self.linear.coef_.size + self.linear.intercept_.size)

    def save(self, folder: Path) -> None:
        from safetensors.numpy import save_file

        from texttune.io import atomic_write_json

        folder.mkdir(parents=True, exist_ok=True)
        self.body.save_pretrained(folder / BODY)  # safetensors (transformers' default)
        self.tokenizer.save_pretrained(folder / BODY)
        save_file({"coef": np.ascontiguousarray(self.linear.coef_, dtype=np.float64),
                   "intercept": np.ascontiguousarray(self.linear.intercept_, dtype=np.float64)},
                  str(folder / CLASSIC_WEIGHTS))
        atomic_write_json(folder / CLASSIC_FILE, {
            "format": FORMAT, "family": FAMILY, "config": self.cfg.model_dump(mode="json"),
            "label_names": self.label_names, "temperature": self.temperature, "info": self.info, "body": BODY})

    @classmethod
    def load(cls, folder: str | Path) -> SetFitModel:
        from safetensors.numpy import load_file

        from texttune.models.classic_model import _logistic
        from texttune.models.saving import check_safetensors, read_json_object, reading

        folder = Path(folder)
        meta = read_json_object(folder / CLASSIC_FILE)
        check_safetensors(folder / CLASSIC_WEIGHTS)
        with reading(folder / CLASSIC_FILE, "is not a texttune setfit model"):
            if meta.get("format") != FORMAT or meta.get("family") != FAMILY:
                raise ValueError(f"format {meta.get('format')!r} family {meta.get('family')!r}, expected "
                                 f"{FORMAT} {FAMILY!r}")
            model = cls(SetFitConfig.model_validate(meta["config"]), meta["label_names"])
            model.info, model.temperature = meta.get("info", {}), meta.get("temperature")
            tensors = load_file(str(folder / CLASSIC_WEIGHTS))
            linear = _logistic(model.cfg, 1.0)
            linear.coef_, linear.intercept_ = tensors["coef"], tensors["intercept"]
            linear.classes_ = np.arange(len(model.label_names))
            linear.n_features_in_ = linear.coef_.shape[1]
            model.linear = linear
        model._load_body(folder / BODY, folder / BODY, strict=True)  # every weight from the file
        model.body.eval()
        return model


def build_setfit(cfg: SetFitConfig, label_names: list[str]):
    """The unfitted model (fitted by the run's closed-form phase, ``tasks/classic.py``); no tokenizer."""
    return SetFitModel(cfg, label_names), None


MODEL_CONFIGS.add(FAMILY, SetFitConfig, config=SetFitConfig)
MODEL_BUILDERS.add(FAMILY, build_setfit)
FITTED_FAMILIES[FAMILY] = "texttune.models.setfit:SetFitModel"
