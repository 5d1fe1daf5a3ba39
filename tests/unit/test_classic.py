"""The classic baselines (``models/classic.py``): fitted by scikit-learn, saved without pickle, and
loaded back into models that score exactly as the fitted ones."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from texttune.errors import TexttuneError
from texttune.models.classic import CLASSIC_FILE, CLASSIC_WEIGHTS, EmbeddingProbeConfig, NbsvmConfig, TfidfLRConfig
from texttune.models.classic_model import ClassicModel

POS = ["a wonderful film", "great acting and a moving story", "a delight from start to finish",
       "one of the best movies", "superb and charming", "loved every minute", "a moving , great film",
       "charming , wonderful cast"]
NEG = ["a dull boring waste", "terrible script and awful acting", "i hated every minute",
       "the worst film ever", "tedious and clumsy", "boring , dull plot", "an awful , tedious film",
       "clumsy and terrible"]
TEXTS, LABELS = POS + NEG, np.array([1] * len(POS) + [0] * len(NEG))
HELD_OUT = ["a great and moving film", "an awful boring script", "wonderful", "tedious"]


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def roundtrip(model: ClassicModel, tmp_path) -> ClassicModel:
    model.save(tmp_path / "model")
    return ClassicModel.load(tmp_path / "model")


@pytest.mark.parametrize("cfg", [TfidfLRConfig(min_df=1, C=[1.0, 10.0], cv_folds=2),
                                 TfidfLRConfig(min_df=1, char_ngrams=None, C=[10.0]),
                                 NbsvmConfig(C=[1.0, 10.0], cv_folds=2), NbsvmConfig(beta=0.25, C=[1.0])])
def test_fitted_models_separate_the_toy_data_and_load_back_identically(cfg, tmp_path):
    model = ClassicModel(cfg, ["neg", "pos"]).fit(TEXTS, LABELS, seed=0)
    logits = model.logits(HELD_OUT)
    assert logits.shape == (4, 2)
    assert logits.argmax(axis=1).tolist() == [1, 0, 1, 0]
    loaded = roundtrip(model, tmp_path)
    np.testing.assert_allclose(loaded.logits(HELD_OUT), logits, atol=1e-5)
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [CLASSIC_FILE, CLASSIC_WEIGHTS]


def test_tfidf_lr_logits_are_sklearns_own_probabilities(tmp_path):
    """Same vectorizers and C by hand: softmax(logits) is LogisticRegression.predict_proba."""
    cfg = TfidfLRConfig(min_df=1, char_ngrams=None, C=[3.0])
    model = ClassicModel(cfg, ["neg", "pos"]).fit(TEXTS, LABELS)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True, dtype=np.float32)
    x = vectorizer.fit_transform(TEXTS)
    reference = LogisticRegression(C=3.0, max_iter=2000).fit(x, LABELS)
    expected = reference.predict_proba(vectorizer.transform(HELD_OUT))
    np.testing.assert_allclose(softmax(model.logits(HELD_OUT)), expected, atol=1e-5)


def test_multiclass_tfidf_lr_matches_predict_proba():
    texts = TEXTS + ["what is the capital", "who wrote it", "when did it end", "where is the city"] * 2
    labels = np.concatenate([LABELS, np.full(8, 2)])
    model = ClassicModel(TfidfLRConfig(min_df=1, char_ngrams=None, C=[1.0]), ["neg", "pos", "q"]).fit(texts, labels)
    x = model.features(HELD_OUT)
    np.testing.assert_allclose(softmax(model.logits(HELD_OUT)), model.linear.predict_proba(x), atol=1e-5)


def test_nbsvm_ratios_are_the_naive_bayes_log_count_ratios():
    cfg = NbsvmConfig(C=[1.0], alpha=1.0)
    model = ClassicModel(cfg, ["neg", "pos"]).fit(TEXTS, LABELS)
    vocab = model._vectorizers[0].vocabulary_
    x = model._vectorizers[0].transform(TEXTS).toarray()  # binarised counts
    p, q = 1 + x[LABELS == 1].sum(0), 1 + x[LABELS == 0].sum(0)
    expected = np.log((p / p.sum()) / (q / q.sum()))
    np.testing.assert_allclose(model._ratios[1], expected, rtol=1e-5)
    assert model._ratios[1][vocab["wonderful"]] > 0 > model._ratios[1][vocab["boring"]]


def test_c_is_chosen_by_cross_validation_on_train_only():
    cfg = TfidfLRConfig(min_df=1, char_ngrams=None, C=[1e-4, 10.0], cv_folds=4)
    model = ClassicModel(cfg, ["neg", "pos"]).fit(TEXTS, LABELS, seed=0)
    assert set(model.info["cv_accuracy"]) == {"0.0001", "10.0"}
    assert model.info["C"] == max(cfg.C, key=lambda c: model.info["cv_accuracy"][str(c)])


def test_pairs_use_both_sides():
    pairs = ["the same thing", "the same thing", "something else", "something else"] * 4
    firsts = ["the same thing", "a different one", "something else", "the same thing"] * 4
    labels = np.array([1, 0, 1, 0] * 4)
    model = ClassicModel(TfidfLRConfig(min_df=1, C=[100.0]), ["diff", "same"]).fit(firsts, labels, pairs=pairs)
    scores = model.logits(["the same thing", "the same thing"], ["the same thing", "something else"])
    assert scores[0, 1] > scores[1, 1]


def test_embedding_probe_on_a_frozen_encoder(tiny_model_dir, tmp_path):
    cfg = EmbeddingProbeConfig(path=str(tiny_model_dir), C=[100.0], batch_size=4)
    model = ClassicModel(cfg, ["neg", "pos"]).fit(TEXTS, LABELS)
    embedded = model.features(TEXTS)
    assert embedded.shape == (16, 32)
    np.testing.assert_allclose(np.linalg.norm(embedded, axis=1), 1.0, atol=1e-5)  # normalised
    loaded = roundtrip(model, tmp_path)
    np.testing.assert_allclose(loaded.logits(HELD_OUT), model.logits(HELD_OUT), atol=1e-5)


def test_saved_files_hold_no_pickle(tmp_path):
    model = ClassicModel(TfidfLRConfig(min_df=1, C=[1.0]), ["neg", "pos"]).fit(TEXTS, LABELS)
    model.save(tmp_path / "model")
    meta = json.loads((tmp_path / "model" / CLASSIC_FILE).read_text())
    assert meta["config"]["name"] == "tfidf_lr" and len(meta["vectorizers"]) == 2
    assert b"\x80\x04" not in (tmp_path / "model" / CLASSIC_WEIGHTS).read_bytes()[:8]


@pytest.mark.parametrize("damage", ["truncated-weights", "broken-json", "wrong-format"])
def test_a_damaged_classic_model_is_reported_by_file(damage, tmp_path):
    model = ClassicModel(TfidfLRConfig(min_df=1, C=[1.0]), ["neg", "pos"]).fit(TEXTS, LABELS)
    folder = tmp_path / "model"
    model.save(folder)
    if damage == "truncated-weights":
        data = (folder / CLASSIC_WEIGHTS).read_bytes()
        (folder / CLASSIC_WEIGHTS).write_bytes(data[: len(data) // 2])
        name = CLASSIC_WEIGHTS
    elif damage == "broken-json":
        (folder / CLASSIC_FILE).write_text("{not json")
        name = CLASSIC_FILE
    else:
        meta = json.loads((folder / CLASSIC_FILE).read_text())
        (folder / CLASSIC_FILE).write_text(json.dumps({**meta, "format": 99}))
        name = CLASSIC_FILE
    with pytest.raises(TexttuneError, match=name.replace(".", r"\.")):
        ClassicModel.load(folder)


def test_bad_grids_are_refused():
    with pytest.raises(ValueError, match="positive"):
        TfidfLRConfig(C=[])
    with pytest.raises(ValueError, match="positive"):
        NbsvmConfig(C=[0.0])
