"""SetFit (``models/setfit.py``) and few-shot sampling (``data.few_shot``): pair sampling, the contrastive
phase, saving without pickle, and loading by the family the saved folder names."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from texttune.data.dataset import TextDataset
from texttune.data.splits import few_shot_sample
from texttune.models.classic import CLASSIC_FILE, CLASSIC_WEIGHTS, TfidfLRConfig, load_fitted
from texttune.models.setfit import BODY, SetFitConfig, SetFitModel, contrastive_fit, pair_loss, sample_pairs

POS = ["a wonderful film", "great acting and a moving story", "a delight from start to finish",
       "one of the best movies", "superb and charming", "loved every minute"]
NEG = ["a dull boring waste", "terrible script and awful acting", "i hated every minute",
       "the worst film ever", "tedious and clumsy", "boring , dull plot"]
TEXTS, LABELS = POS + NEG, np.array([1] * len(POS) + [0] * len(NEG))


def tiny_cfg(folder, **kw) -> SetFitConfig:
    return SetFitConfig(**{"path": str(folder), "num_iterations": 2, "batch_size": 8, "max_tokens": 16, **kw})


# --------------------------------------------------------------------------- pairs


def test_pairs_are_balanced_counted_and_seeded():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    first, second, target = sample_pairs(labels, 5, np.random.default_rng(0))
    assert len(first) == len(second) == len(target) == 2 * 5 * len(labels)
    assert target.sum() == len(target) / 2  # as many positives as negatives
    positive = target == 1.0
    assert (labels[first[positive]] == labels[second[positive]]).all()
    assert (first[positive] != second[positive]).all()  # never itself while its class has another example
    assert (labels[first[~positive]] != labels[second[~positive]]).all()
    assert np.bincount(first, minlength=len(labels)).tolist() == [10] * len(labels)  # 2 per example per iteration
    again = sample_pairs(labels, 5, np.random.default_rng(0))
    other = sample_pairs(labels, 5, np.random.default_rng(1))
    assert all((a == b).all() for a, b in zip((first, second, target), again))
    assert not (second == other[1]).all()


def test_a_class_of_one_pairs_with_itself_and_one_class_is_refused():
    first, second, target = sample_pairs(np.array([0, 1, 1]), 1, np.random.default_rng(0))
    assert (first[0], second[0], target[0]) == (0, 0, 1.0)
    with pytest.raises(ValueError, match="two classes"):
        sample_pairs(np.array([0, 0]), 1, np.random.default_rng(0))


# --------------------------------------------------------------------------- the contrastive phase


def test_the_contrastive_phase_lowers_the_pair_loss(tiny_model_dir):
    from transformers import AutoModel, AutoTokenizer

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    body = AutoModel.from_pretrained(str(tiny_model_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    cfg = tiny_cfg(tiny_model_dir, lr=1e-3, epochs=3, num_iterations=4)
    pairs = sample_pairs(LABELS, 4, np.random.default_rng(7))  # pairs of the same examples, another draw
    before = pair_loss(body, tokenizer, TEXTS, *pairs, cfg)
    losses = contrastive_fit(body, tokenizer, TEXTS, LABELS, cfg, seed=0)
    assert len(losses) == 3 * int(np.ceil(2 * 4 * len(TEXTS) / 8))
    after = pair_loss(body, tokenizer, TEXTS, *pairs, cfg)
    assert after < 0.5 * before, (before, after)


def test_the_contrastive_phase_is_seeded(tiny_model_dir):
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    cfg = tiny_cfg(tiny_model_dir, lr=1e-3)
    runs = [contrastive_fit(AutoModel.from_pretrained(str(tiny_model_dir)), tokenizer, TEXTS, LABELS, cfg, seed=3)
            for _ in range(2)]
    assert runs[0] == runs[1]


# --------------------------------------------------------------------------- fit, save, load


@pytest.fixture(scope="module")
def fitted(tiny_model_dir) -> SetFitModel:
    return SetFitModel(tiny_cfg(tiny_model_dir, lr=1e-3), ["neg", "pos"]).fit(TEXTS, LABELS, seed=0)


def test_save_and_load_give_identical_logits_without_pickle(fitted, tmp_path):
    fitted.temperature = 1.5
    logits = fitted.logits(["a moving film", "an awful plot", "charming"])
    assert logits.shape == (3, 2) and fitted.info["contrastive_steps"] == 6 and fitted.info["pairs"] == 48
    fitted.save(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == sorted([BODY, CLASSIC_FILE, CLASSIC_WEIGHTS])
    body_files = {p.name for p in (tmp_path / "model" / BODY).iterdir()}
    assert "model.safetensors" in body_files and not any(n.endswith((".bin", ".pkl", ".pt")) for n in body_files)
    loaded = load_fitted(tmp_path / "model")  # dispatched on classic.json's family
    assert isinstance(loaded, SetFitModel) and loaded.label_names == ["neg", "pos"] and loaded.temperature == 1.5
    np.testing.assert_allclose(loaded.logits(["a moving film", "an awful plot", "charming"]), logits, atol=1e-5)
    assert loaded.parameter_count() == fitted.parameter_count()


def test_load_fitted_reads_the_classic_baselines_too(tmp_path):
    from texttune.models.classic_model import ClassicModel

    model = ClassicModel(TfidfLRConfig(min_df=1, C=[1.0]), ["neg", "pos"]).fit(TEXTS, LABELS)
    model.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / CLASSIC_FILE).read_text())["family"] == "classic"
    assert isinstance(load_fitted(tmp_path / "m"), ClassicModel)
    meta = json.loads((tmp_path / "m" / CLASSIC_FILE).read_text())
    del meta["family"]  # saved before the key existed
    (tmp_path / "m" / CLASSIC_FILE).write_text(json.dumps(meta))
    assert isinstance(load_fitted(tmp_path / "m"), ClassicModel)


def test_an_unknown_family_is_named(tmp_path):
    from texttune.errors import TexttuneError

    (tmp_path / CLASSIC_FILE).write_text(json.dumps({"family": "nope"}))
    with pytest.raises(TexttuneError, match="unknown model family 'nope'"):
        load_fitted(tmp_path)


def test_sentence_pairs_are_refused(tiny_model_dir):
    from texttune.errors import TexttuneError

    with pytest.raises(TexttuneError, match="text_pair"):
        SetFitModel(tiny_cfg(tiny_model_dir), ["a", "b"]).fit(TEXTS, LABELS, pairs=TEXTS)


# --------------------------------------------------------------------------- few-shot sampling


def dataset(counts: dict[int, int]) -> TextDataset:
    labels = [c for c, n in counts.items() for _ in range(n)]
    train = pd.DataFrame({"text": [f"t{i}" for i in range(len(labels))], "label": labels})
    train.index = np.arange(100, 100 + len(train))  # source rows, kept
    names = [f"c{c}" for c in range(len(counts))]
    return TextDataset("toy", {"train": train, "validation": train.iloc[:3]}, names, provenance={"train": "official"})


def test_few_shot_keeps_n_per_class_deterministically_and_records_it():
    ds = dataset({0: 30, 1: 50, 2: 20})
    out = few_shot_sample(ds, 8, seed=5)
    train = out.splits["train"]
    assert train["label"].value_counts().sort_index().tolist() == [8, 8, 8]
    assert train.index.is_monotonic_increasing and set(train.index) <= set(ds.splits["train"].index)
    assert out.splits["validation"] is ds.splits["validation"]
    assert out.provenance["train"] == "official; few-shot sample of 8 per class: 24 of 100 rows (seed 5)"
    assert few_shot_sample(ds, 8, seed=5).splits["train"].index.tolist() == train.index.tolist()
    assert few_shot_sample(ds, 8, seed=6).splits["train"].index.tolist() != train.index.tolist()
    assert not out.notes


def test_a_short_class_keeps_all_its_rows_and_the_run_says_so(caplog):
    out = few_shot_sample(dataset({0: 30, 1: 3}), 8, seed=0)
    assert out.splits["train"]["label"].value_counts().sort_index().tolist() == [8, 3]
    assert out.notes == ["data.few_shot.per_class=8: 1 class(es) have fewer training rows and keep all of them: 'c1' (3)"]
    assert "keep all of them" in caplog.text


def test_few_shot_is_applied_after_the_carve(tmp_path):
    from texttune.config import DataConfig
    from texttune.data.load import load_dataset

    rows = [(f"text number {i}", "ab"[i % 2]) for i in range(200)]
    path = tmp_path / "train.csv"
    path.write_text("text,label\n" + "".join(f"{t},{label}\n" for t, label in rows), encoding="utf-8")
    cfg = DataConfig(train_file=path, validation_size=40, test_size=40, few_shot={"per_class": 4, "seed": 1})
    ds = load_dataset(cfg)
    assert len(ds.splits["train"]) == 8 and len(ds.splits["validation"]) == 40 and len(ds.splits["test"]) == 40
    assert "few-shot sample of 4 per class: 8 of 120 rows (seed 1)" in ds.provenance["train"]
    plain = load_dataset(DataConfig(train_file=path, validation_size=40, test_size=40))
    assert plain.splits["validation"].index.tolist() == ds.splits["validation"].index.tolist()
