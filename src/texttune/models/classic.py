"""Classic baselines as model families: TF-IDF + logistic regression, NBSVM, and a frozen-embedding probe.

A neural score means little without the linear baseline beside it on the same split, so these three
go through ``run``, ``compare``, ``predict`` and the leaderboard like any other family
(``model.name: tfidf_lr | nbsvm | embedding_probe``). scikit-learn does all the fitting; texttune only
chooses ``C`` by stratified k-fold cross-validation on the training split (never on validation or
test) and stores the fitted model without pickle: vocabularies and settings as JSON, the numbers
(idf weights, NB ratios, coefficients) as safetensors, rebuilt into the same scikit-learn objects on
load.

- ``tfidf_lr``: word 1-2-grams + character 2-5-grams (``char_wb``), sublinear tf, L2-normalised, one
  multinomial logistic regression over both.
- ``nbsvm``: Wang & Manning (2012). Binarised word n-gram counts scaled by the naive-Bayes
  log-count ratio of each class (one-vs-rest), then a linear model per class. The linear model is a
  logistic regression rather than an SVM so that scores are calibrated log-odds like the others'; the
  ratios and interpolation are the paper's (the common "NB-LR" form of NBSVM).
- ``embedding_probe``: SentEval's protocol: frozen mean-pooled sentence embeddings (MiniLM by default)
  + logistic regression. Pairs become ``[u, v, |u - v|, u * v]``.

Scores are logits: ``softmax(logits)`` is the model's probability (multinomial LR's own
``predict_proba``), so metrics, calibration and the leaderboard treat them like a network's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator
from scipy import sparse
from sklearn.base import BaseEstimator, ClassifierMixin

from texttune.config import Section

CLASSIC_FILE = "classic.json"
CLASSIC_WEIGHTS = "classic.safetensors"
FORMAT = 1


def _check_grid(values: list[float]) -> list[float]:
    if not values or any(v <= 0 for v in values):
        raise ValueError("needs one or more positive values")
    return values


class _ClassicConfig(Section):
    # These families fit in closed form: the loop's settings do not apply to them.
    train_defaults: ClassVar[dict[str, Any]] = {}
    classic: ClassVar[bool] = True
    C: list[float] = Field([0.1, 1.0, 10.0, 100.0], description="Inverse regularisation strengths "
                           "tried; the best by cross-validated accuracy on the training split is kept.")
    cv_folds: int = Field(5, ge=2, le=20, description="Stratified folds of the training split for choosing C.")
    max_iter: int = Field(2000, gt=0, description="Iterations of the logistic-regression solver.")
    class_weight: Literal["balanced"] | None = Field(None, description="balanced: weight classes "
                                                     "inversely to their frequency.")
    max_length: int = Field(100_000, gt=0, description="Texts are cut to this many characters.")

    @field_validator("C")
    @classmethod
    def _grid(cls, values: list[float]) -> list[float]:
        return _check_grid(values)


class TfidfLRConfig(_ClassicConfig):
    name: Literal["tfidf_lr"] = "tfidf_lr"
    word_ngrams: tuple[int, int] = Field((1, 2), description="Word n-gram range.")
    char_ngrams: tuple[int, int] | None = Field((2, 5), description="Character n-gram range (within "
                                                "word boundaries); null: words only.")
    min_df: int = Field(2, ge=1, description="An n-gram must occur in this many training texts.")
    max_features: int = Field(200_000, gt=0, description="Most frequent n-grams kept, per analyzer.")


class NbsvmConfig(_ClassicConfig):
    name: Literal["nbsvm"] = "nbsvm"
    ngrams: tuple[int, int] = Field((1, 2), description="Word n-gram range (the paper: uni+bigrams).")
    alpha: float = Field(1.0, gt=0, description="Laplace smoothing of the naive-Bayes counts.")
    beta: float = Field(1.0, ge=0, le=1, description="Wang & Manning's interpolation w' = (1 - beta) * "
                        "mean|w| + beta * w (the paper: 0.25 for its SVM); 1 keeps the fitted weights, "
                        "the NB-LR form.")
    min_df: int = Field(1, ge=1, description="An n-gram must occur in this many training texts.")
    max_features: int = Field(500_000, gt=0, description="Most frequent n-grams kept.")


class EmbeddingProbeConfig(_ClassicConfig):
    name: Literal["embedding_probe"] = "embedding_probe"
    path: str = Field("minilm", description="The frozen sentence encoder: a Hugging Face folder, a Hub "
                      "id (online), or the alias minilm.")
    pooling: Literal["mean", "cls"] = Field("mean", description="Mean over real tokens (sentence-"
                                            "transformers' pooling for MiniLM), or [CLS].")
    max_tokens: int = Field(256, gt=0, description="Longer inputs are truncated to this many tokens.")
    normalize: bool = Field(True, description="L2-normalise the embeddings (as sentence-transformers does).")
    batch_size: int = Field(64, gt=0, description="Texts embedded per forward pass.")


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
        self._vectorizers: list[Any] = []
        self._ratios: np.ndarray | None = None  # nbsvm: (C, F) log-count ratios
        self._encoder = None

    # ------------------------------------------------------------------ features

    def _clip(self, texts) -> list[str]:
        return [str(t)[: self.cfg.max_length] for t in texts]

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

    # ------------------------------------------------------------------ save / load

    def save(self, folder: Path) -> None:
        from safetensors.numpy import save_file

        from texttune.io import atomic_write_json

        folder.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {"format": FORMAT, "config": self.cfg.model_dump(mode="json"),
                                "label_names": self.label_names, "info": self.info, "vectorizers": []}
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
        import torch

        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), self.cfg.batch_size):
                idx = order[start: start + self.cfg.batch_size]
                batch = self.tokenizer([texts[i] for i in idx], truncation=True, max_length=self.cfg.max_tokens,
                                       padding=True, return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state
                if self.cfg.pooling == "cls":
                    vectors = hidden[:, 0]
                else:
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    vectors = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
                if self.cfg.normalize:
                    vectors = torch.nn.functional.normalize(vectors, dim=-1)
                out[idx] = vectors.float().numpy()
        return out


CLASSIC_CONFIGS = {c.model_fields["name"].default: c for c in (TfidfLRConfig, NbsvmConfig, EmbeddingProbeConfig)}


def parse_classic_config(data: dict[str, Any]) -> _ClassicConfig:
    name = data.get("name")
    if name not in CLASSIC_CONFIGS:
        raise ValueError(f"unknown classic model {name!r}")
    return CLASSIC_CONFIGS[name].model_validate(data)


def is_classic(model_cfg: Any) -> bool:
    return bool(getattr(type(model_cfg), "classic", False))


def is_classic_folder(folder: str | Path) -> bool:
    return (Path(folder) / CLASSIC_FILE).is_file()


def read_meta(folder: Path) -> dict[str, Any]:
    return json.loads((folder / CLASSIC_FILE).read_text(encoding="utf-8"))
