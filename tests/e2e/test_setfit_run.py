"""SetFit end to end: ``texttune run --set model.name=setfit --set data.few_shot.per_class=4`` writes an
ordinary run directory whose data.json records the sample and whose model loads back by its family."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import numpy as np

from texttune import runs

WORDS = [(w, "pos") for w in ("wonderful", "great", "moving", "delightful")] + \
        [(w, "neg") for w in ("dull", "boring", "awful", "terrible")]
NOUNS = ("film", "story", "script", "cast", "ending")


def test_a_few_shot_setfit_run_writes_an_ordinary_run_directory(tiny_model_dir, tmp_path, run_cli):
    from texttune.models.classic import load_fitted

    rows = [(f"a {word} {noun}", label) for (word, label), noun in itertools.product(WORDS, NOUNS)]
    random.Random(0).shuffle(rows)
    path = tmp_path / "train.csv"
    path.write_text("text,label\n" + "".join(f"{t},{label}\n" for t, label in rows), encoding="utf-8")
    code, out, err = run_cli(
        "run", "--set", "model.name=setfit", "--set", f"model.path={tiny_model_dir}", "--set", "model.num_iterations=2",
        "--set", "model.max_tokens=16", "--set", "data.few_shot.per_class=4", "--set", f"data.train_file={path}",
        "--set", "data.validation_size=8", "--set", "data.test_size=8", "--set", f"output_dir={tmp_path / 'out'}")
    assert code == 0, err
    assert "fitting setfit on 8 training texts: contrastive body" in out + err
    (run,) = (tmp_path / "out").iterdir()
    data = runs.read_json(run, runs.DATA)
    assert data["splits"]["train"]["rows"] == 8 and data["splits"]["train"]["classes"] == {"neg": 4, "pos": 4}
    assert "few-shot sample of 4 per class: 8 of 24 rows" in data["splits"]["train"]["provenance"]
    metrics = runs.read_json(run, runs.METRICS)
    assert metrics["fit"]["pairs"] == 2 * 2 * 8 and metrics["fit"]["contrastive_steps"] == 2
    assert "accuracy" in metrics["test"] and metrics["params"]["total"] > 0
    for name in (runs.REPORT, runs.CONFIG, runs.TEST_PREDICTIONS, runs.DATA_CHECKS):
        assert (run / name).is_file(), name
    model_dir = run / runs.MODEL
    assert json.loads((model_dir / "classic.json").read_text())["family"] == "setfit"
    model = load_fitted(model_dir)
    predictions = runs.read_json(run, runs.TEST_PREDICTIONS)
    test_texts = [t for t, _ in rows]  # test rows are source rows of the file
    logits = model.logits([test_texts[i] for i in predictions["rows"]])
    assert np.argmax(logits, axis=1).tolist() == predictions["predicted"]
    assert model.temperature == metrics["temperature"]
