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

from pydantic import Field, field_validator

from texttune.config import Section
from texttune.models.registry import MODEL_CONFIGS

CLASSIC_FILE = "classic.json"
CLASSIC_WEIGHTS = "classic.safetensors"
FORMAT = 1

# The "family" key of a saved classic.json -> "module:Class" whose ``load(folder)`` reads it. A family
# fitted by the closed-form phase (``tasks/classic.py``) adds itself here (``models/setfit.py``); a
# folder saved before the key existed is "classic".
FITTED_FAMILIES: dict[str, str] = {"classic": "texttune.models.classic_model:ClassicModel"}


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
    max_chars: int = Field(100_000, gt=0, description="Texts are cut to this many characters.")

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


def load_fitted(folder: str | Path):
    """A saved closed-form model (a classic baseline or SetFit), by the family its classic.json names."""
    import importlib

    from texttune.errors import TexttuneError
    from texttune.models.saving import read_json_object

    folder = Path(folder)
    family = read_json_object(folder / CLASSIC_FILE).get("family", "classic")
    if family not in FITTED_FAMILIES:
        raise TexttuneError(f"{folder / CLASSIC_FILE}: unknown model family {family!r} (known: "
                            f"{', '.join(sorted(FITTED_FAMILIES))})")
    module, _, name = FITTED_FAMILIES[family].partition(":")
    return getattr(importlib.import_module(module), name).load(folder)


for _name, _cls in CLASSIC_CONFIGS.items():
    # Configs only: the model is built by the run's closed-form phase (tasks/classic.py), which
    # imports scikit-learn; nothing here may import models/classic_model.py (it imports this module).
    MODEL_CONFIGS.add(_name, _cls, config=_cls)
