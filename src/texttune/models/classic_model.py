"""The fitted classic baselines (configs and the family notes: ``models/classic.py``): scikit-learn
estimators, their features, and saving/loading them without pickle. Imported only when a classic
model is fitted or loaded: scikit-learn and SciPy take a second or two to import."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator, ClassifierMixin

from texttune.models.classic import (
    CLASSIC_FILE,
    CLASSIC_WEIGHTS,
    FORMAT,
    EmbeddingProbeConfig,
    NbsvmConfig,
    _ClassicConfig,
    parse_classic_config,
)


def _pair_features(a, b):
    """SentEval's pair features; works on dense arrays and sparse matrices alike."""
    if sparse.issparse(a):
        return sparse.hstack([a, b, abs(a - b), a.multiply(b)]).tocsr()
    return np.hstack([a, b, np.abs(a - b), a * b])


def _logistic(cfg: _ClassicConfig, C: float):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=cfg.max_iter, class_weight=cfg.class_weight)


def choose_C(cfg: _ClassicConfig, features, labels: np.ndarray, seed: int, make=None) -> tuple[float, dict[str, float]]:
    """The C of ``cfg.C`` with the best mean accuracy over stratified folds of the training split
    (``make(C)``: the estimator; by default the family's logistic regression)."""
    make = make or (lambda C: _logistic(cfg, C))
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    if len(cfg.C) == 1:
        return cfg.C[0], {}
    smallest = int(np.bincount(labels).min()) if len(labels) else 0
    folds = min(cfg.cv_folds, smallest)
    if folds < 2:  # a class with a single example: no fold split keeps it on both sides
        return cfg.C[len(cfg.C) // 2], {}
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = {str(C): float(cross_val_score(make(C), features, labels, cv=splitter).mean())
              for C in cfg.C}
    best = max(cfg.C, key=lambda C: scores[str(C)])
    return best, scores


class NBLogisticRegression(ClassifierMixin, BaseEstimator):
    """NBSVM (Wang & Manning, 2012) as a scikit-learn estimator, so ``cross_val_score`` can choose its C.

    scikit-learn has the pieces (naive-Bayes counts, liblinear) but not the combination: per class,
    features scaled by the class's log-count ratio, a binary linear model on them, and the paper's
    interpolation of the weights towards their mean magnitude. The linear models are logistic
    regressions (liblinear, the fast solver for sparse binary problems), so scores are log-odds.
    """

    def __init__(self, C: float = 1.0, alpha: float = 1.0, beta: float = 1.0, max_iter: int = 2000,
                 class_weight: str | None = None, n_classes: int = 2) -> None:
        self.C, self.alpha, self.beta, self.max_iter = C, alpha, beta, max_iter
        self.class_weight, self.n_classes = class_weight, n_classes

    def fit(self, x, y: np.ndarray) -> NBLogisticRegression:
        from sklearn.linear_model import LogisticRegression

        x = sparse.csr_matrix(x)
        self.classes_ = np.arange(self.n_classes)
        self.ratios_ = np.zeros((self.n_classes, x.shape[1]), dtype=np.float32)
        self.coef_ = np.zeros((self.n_classes, x.shape[1]), dtype=np.float32)
        self.intercept_ = np.zeros(self.n_classes, dtype=np.float32)
        for c in range(self.n_classes):
            positive = y == c
            if positive.all() or not positive.any():  # a class absent from (or alone in) this fold
                self.intercept_[c] = 10.0 if positive.all() else -10.0
                continue
            p = self.alpha + np.asarray(x[positive].sum(axis=0)).ravel()  # r = log((p/|p|) / (q/|q|))
            q = self.alpha + np.asarray(x[~positive].sum(axis=0)).ravel()
            self.ratios_[c] = np.log((p / p.sum()) / (q / q.sum()))
            model = LogisticRegression(C=self.C, solver="liblinear", max_iter=self.max_iter,
                                       class_weight=self.class_weight)
            model.fit(x.multiply(self.ratios_[c]).tocsr(), positive.astype(np.int64))
            w = model.coef_[0]
            self.coef_[c] = (1 - self.beta) * np.abs(w).mean() + self.beta * w  # the paper's interpolation
            self.intercept_[c] = model.intercept_[0]
        return self

    def decision_function(self, x) -> np.ndarray:
        x = sparse.csr_matrix(x)
        return np.stack([np.asarray(x.multiply(self.ratios_[c]) @ self.coef_[c]).ravel() + self.intercept_[c]
                         for c in range(self.n_classes)], axis=1).astype(np.float32)

    def predict(self, x) -> np.ndarray:
        return self.decision_function(x).argmax(axis=1)


class ClassicModel:
    """A fitted classic baseline: ``fit`` on texts, ``logits`` for texts, ``save``/``load`` without pickle."""

    def __init__(self, cfg: _ClassicConfig, label_names: list[str]) -> None:
        self.cfg, self.label_names = cfg, list(label_names)
        self.linear = None  # one LogisticRegression (tfidf_lr, embedding_probe) or one per class (nbsvm)
        self.info: dict[str, Any] = {}
        self.temperature: float | None = None  # fitted on validation by the run; predict applies it
        self._vectorizers: list[Any] = []
        self._ratios: np.ndarray | None = None  # nbsvm: (C, F) log-count ratios
        self._encoder = None

    # ------------------------------------------------------------------ features

    def _clip(self, texts) -> list[str]:
        return [str(t)[: self.cfg.max_chars] for t in texts]

    def _new_vectorizers(self) -> list[Any]:
        from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

        cfg = self.cfg
        if isinstance(cfg, NbsvmConfig):
            return [CountVectorizer(ngram_range=tuple(cfg.ngrams), min_df=cfg.min_df, binary=True,
                                    max_features=cfg.max_features, dtype=np.float32)]
        out = [TfidfVectorizer(ngram_range=tuple(cfg.word_ngrams), min_df=cfg.min_df, sublinear_tf=True,
                               max_features=cfg.max_features, dtype=np.float32)]
        if cfg.char_ngrams is not None:
            out.append(TfidfVectorizer(analyzer="char_wb", ngram_range=tuple(cfg.char_ngrams), min_df=cfg.min_df,
                                       sublinear_tf=True, max_features=cfg.max_features, dtype=np.float32))
        return out

    def _sparse(self, texts: list[str], fit: bool):
        parts = [v.fit_transform(texts) if fit else v.transform(texts) for v in self._vectorizers]
        return sparse.hstack(parts).tocsr() if len(parts) > 1 else parts[0].tocsr()

    def _embed(self, texts: list[str]) -> np.ndarray:
        if self._encoder is None:
            self._encoder = _SentenceEncoder(self.cfg)
        return self._encoder(texts)

    def features(self, texts, pairs=None, fit: bool = False):
        texts = self._clip(texts)
        single = self._embed if isinstance(self.cfg, EmbeddingProbeConfig) else \
            (lambda items: self._sparse(items, fit=False))
        if fit and not isinstance(self.cfg, EmbeddingProbeConfig):
            self._vectorizers = self._new_vectorizers()
            # The vocabulary comes from both sides of a pair; transform then reads each side alone.
            self._sparse(texts + (self._clip(pairs) if pairs is not None else []), fit=True)
        if pairs is None:
            return single(texts)
        return _pair_features(single(texts), single(self._clip(pairs)))

    # ------------------------------------------------------------------ fit / predict

    def describe_fit(self, rows: int) -> str:
        return (f"fitting {self.cfg.name} on {rows:,} training texts (C from {list(self.cfg.C)} by "
                f"{self.cfg.cv_folds}-fold cross-validation on train) ...")

    def fit(self, texts, labels: np.ndarray, pairs=None, seed: int = 0) -> ClassicModel:
        labels = np.asarray(labels, dtype=np.int64)
        x = self.features(texts, pairs, fit=True)
        if isinstance(self.cfg, NbsvmConfig):
            return self._fit_nbsvm(x, labels, seed)
        C, scores = choose_C(self.cfg, x, labels, seed)
        self.linear = _logistic(self.cfg, C).fit(x, labels)
        self.info = {"C": C, "cv_accuracy": scores, "features": int(x.shape[1])}
        return self

    def _fit_nbsvm(self, x, labels: np.ndarray, seed: int) -> ClassicModel:
        cfg = self.cfg
        make = lambda C: NBLogisticRegression(C=C, alpha=cfg.alpha, beta=cfg.beta, max_iter=cfg.max_iter,
                                              class_weight=cfg.class_weight, n_classes=len(self.label_names))
        C, scores = choose_C(cfg, x, labels, seed, make)
        fitted = make(C).fit(x, labels)
        self._ratios, self.linear = fitted.ratios_, (fitted.coef_, fitted.intercept_)
        self.info = {"C": C, "cv_accuracy": scores, "features": int(x.shape[1])}
        return self

    def logits(self, texts, pairs=None) -> np.ndarray:
        """(N, C) scores; ``softmax`` of a row is the model's probability of each label."""
        if not len(texts):
            return np.zeros((0, len(self.label_names)), dtype=np.float32)
        x = self.features(texts, pairs)
        if isinstance(self.cfg, NbsvmConfig):
            scores = NBLogisticRegression(n_classes=len(self.label_names))
            scores.ratios_, (scores.coef_, scores.intercept_) = self._ratios, self.linear
            return scores.decision_function(x)
        scores = self.linear.decision_function(x)
        if scores.ndim == 1:  # binary LR: one log-odds column; as two logits softmax gives predict_proba
            scores = np.stack([np.zeros_like(scores), scores], axis=1)
        return scores.astype(np.float32)

    def parameter_count(self) -> int:
        """Fitted coefficients and biases (the vocabulary and idf weights are not learned by gradient)."""
        if isinstance(self.cfg, NbsvmConfig):
            return int(self.linear[0].size + self.linear[1].size)
        return int(self.linear.coef_.size + self.linear.intercept_.size)

    # ------------------------------------------------------------------ save / load

    def save(self, folder: Path) -> None:
        from safetensors.numpy import save_file

        from texttune.io import atomic_write_json

        folder.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {"format": FORMAT, "family": "classic", "config": self.cfg.model_dump(mode="json"),
                                "label_names": self.label_names, "temperature": self.temperature,
                                "info": self.info, "vectorizers": []}
        for i, vectorizer in enumerate(self._vectorizers):
            vocab = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.get)
            meta["vectorizers"].append({"vocabulary": vocab})
            if hasattr(vectorizer, "idf_"):
                tensors[f"idf.{i}"] = vectorizer.idf_.astype(np.float32)
        if isinstance(self.cfg, NbsvmConfig):
            tensors["ratios"], (tensors["coef"], tensors["intercept"]) = self._ratios, self.linear
        else:
            tensors["coef"] = self.linear.coef_.astype(np.float64)
            tensors["intercept"] = self.linear.intercept_.astype(np.float64)
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(folder / CLASSIC_WEIGHTS))
        atomic_write_json(folder / CLASSIC_FILE, meta)

    @classmethod
    def load(cls, folder: str | Path) -> ClassicModel:
        from safetensors.numpy import load_file

        from texttune.models.saving import check_safetensors, read_json_object, reading

        folder = Path(folder)
        meta = read_json_object(folder / CLASSIC_FILE)
        check_safetensors(folder / CLASSIC_WEIGHTS)
        with reading(folder / CLASSIC_FILE, "is not a texttune classic model"):
            if meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT}")
            model = cls(parse_classic_config(meta["config"]), meta["label_names"])
            model.info = meta.get("info", {})
            model.temperature = meta.get("temperature")
            tensors = load_file(str(folder / CLASSIC_WEIGHTS))
            model._restore(meta, tensors)
        return model

    def _restore(self, meta: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
        from sklearn.linear_model import LogisticRegression

        self._vectorizers = self._new_vectorizers() if not isinstance(self.cfg, EmbeddingProbeConfig) else []
        if len(self._vectorizers) != len(meta["vectorizers"]):
            raise ValueError("the vectorizers do not match the config")
        for i, (vectorizer, saved) in enumerate(zip(self._vectorizers, meta["vectorizers"])):
            vectorizer.set_params(vocabulary={term: j for j, term in enumerate(saved["vocabulary"])})
            vectorizer._validate_vocabulary()  # what fit() would do with a given vocabulary
            if f"idf.{i}" in tensors:
                vectorizer.idf_ = tensors[f"idf.{i}"]
        if isinstance(self.cfg, NbsvmConfig):
            self._ratios, self.linear = tensors["ratios"], (tensors["coef"], tensors["intercept"])
            return
        linear = _logistic(self.cfg, 1.0) if isinstance(self.cfg, _ClassicConfig) else LogisticRegression()
        linear.coef_, linear.intercept_ = tensors["coef"], tensors["intercept"]
        linear.classes_ = np.arange(len(self.label_names))
        linear.n_features_in_ = linear.coef_.shape[1]
        self.linear = linear


class _SentenceEncoder:
    """Frozen sentence embeddings from a Hugging Face encoder (no gradient, eval mode, batched by length)."""

    def __init__(self, cfg: EmbeddingProbeConfig) -> None:
        from transformers import AutoModel

        from texttune.models.saving import load_pretrained, load_tokenizer_from
        from texttune.resources import resolve_model_path

        source = resolve_model_path(cfg.path)
        self.cfg = cfg
        self.tokenizer = load_tokenizer_from(source, name=cfg.path)
        self.model = load_pretrained(AutoModel, source, name=cfg.path).eval()

    def __call__(self, texts: list[str]) -> np.ndarray:
        return embed_texts(self.model, self.tokenizer, texts, pooling=self.cfg.pooling, max_tokens=self.cfg.max_tokens,
                           batch_size=self.cfg.batch_size, normalize=self.cfg.normalize)


def embed_texts(model, tokenizer, texts: list[str], *, pooling: str, max_tokens: int, batch_size: int,
                normalize: bool, device: str = "cpu") -> np.ndarray:
    """(N, hidden) sentence embeddings of a Hugging Face encoder: eval mode, no gradient, batched by
    length, pooled over real tokens (``models.pooling``), optionally L2-normalised (the embedding probe
    and SetFit's head both read these)."""
    import torch

    from texttune.models.pooling import pool

    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            idx = order[start: start + batch_size]
            batch = tokenizer([texts[i] for i in idx], truncation=True, max_length=max_tokens, padding=True,
                              return_tensors="pt").to(device)
            vectors = pool(model(**batch).last_hidden_state, batch["attention_mask"], pooling)
            if normalize:
                vectors = torch.nn.functional.normalize(vectors, dim=-1)
            out[idx] = vectors.float().cpu().numpy()
    return out


