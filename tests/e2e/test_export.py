"""``texttune export`` end to end: tiny runs of every encoder family and of the strategies that change
what is saved (whole models, LoRA merged, trained-only tensors on a base, adapters, prefixes) are exported
and loaded by plain transformers in a process where ``import texttune`` fails; their logits must be the
run's. Stock exports must be transformers' own classes, custom-code ones must say why; ``texttune.load``
and ``texttune predict`` read every export; the config and the model card carry the run's record; export
never overwrites and leaves nothing half-written; bad input is one message.

The runs train 2 steps on the toy sentences and are shared by the module; one subprocess loads all
exports at once (importing torch and transformers costs seconds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_run import assert_error, squash

import texttune
from texttune.errors import TexttuneError
from texttune.export import STOCK, export_classifier
from texttune.runs import read_run_config
from texttune.tasks.classify import load_config, run_experiment

TEXTS = ["what a wonderful film", "a dull boring waste of time , i hated it", "moving", "terrible acting"]
STANDALONE = "TexttuneStandaloneForSequenceClassification"
BERT, MLP = "model.path={bert}", "model.head.type=mlp"
TINY_TRANSFORMER = ["model.name=transformer", "model.d_model=16", "model.nhead=2", "model.num_layers=2",
                    "model.dim_feedforward=32", "model.max_length=32"]
# name: (--set items, the class plain transformers must load)
CASES = {
    "bert-full": ([BERT, MLP], "BertForSequenceClassification"),
    "bert-lora": ([BERT, MLP, "strategy.name=lora", "strategy.rank=2"], "BertForSequenceClassification"),
    "bert-bitfit-mean": ([BERT, "strategy.name=bitfit", "model.pooling=mean"], STANDALONE),
    "bert-adapters": ([BERT, MLP, "strategy.name=adapters", "strategy.bottleneck=4"], STANDALONE),
    "bert-prefix-deep": ([BERT, "strategy.name=prefix", "strategy.mode=deep", "strategy.prefix_length=3"],
                         STANDALONE),
    "cnn": (["model.name=cnn", "model.embedding_dim=8", "model.num_filters=4"], STANDALONE),
    "rnn": (["model.name=rnn", "model.embedding_dim=8", "model.hidden_size=8", "model.pooling=max"], STANDALONE),
    "bag_of_ngrams": (["model.name=bag_of_ngrams", "model.embedding_dim=8", "model.num_buckets=64"], STANDALONE),
    "transformer-prefix": ([*TINY_TRANSFORMER, "strategy.name=prefix", "strategy.prefix_length=2"], STANDALONE),
}

# Run with the venv's python: texttune cannot be imported, transformers loads the folders as it would
# on a machine without texttune. stdin: {"folders": [[path, trust_remote_code], ...], "texts": [...]}.
PLAIN_TRANSFORMERS = r'''
import importlib.abc, json, sys

class NoTexttune(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "texttune" or name.startswith("texttune."):
            raise ImportError(f"{name}: importing texttune is blocked in this process")

sys.meta_path.insert(0, NoTexttune())
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

job = json.load(sys.stdin)
results = []
for folder, remote in job["folders"]:
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=remote).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=remote)
    with torch.no_grad():
        logits = model(**tokenizer(job["texts"], padding=True, truncation=True, return_tensors="pt")).logits
    classify = pipeline("text-classification", model=folder, trust_remote_code=remote, device="cpu")
    scores = [{row["label"]: row["score"] for row in rows} for rows in classify(job["texts"], top_k=None, truncation=True)]
    results.append({"class": type(model).__name__, "logits": logits.tolist(), "pipeline": scores})
try:
    import texttune
    blocked = False
except ImportError:
    blocked = True
print(json.dumps({"results": results, "blocked": blocked,
                  "texttune_modules": sorted(m for m in sys.modules if m.split(".")[0] == "texttune")}))
'''


def load_without_texttune(folders: list[tuple[Path, bool]], texts: list[str], workdir: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": "",
           "HF_MODULES_CACHE": str(workdir / "hf-modules")}  # remote code is copied there, not into ~/.cache
    job = {"folders": [[str(folder), remote] for folder, remote in folders], "texts": texts}
    done = subprocess.run([sys.executable, "-c", PLAIN_TRANSFORMERS], input=json.dumps(job), env=env, cwd=workdir,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def train(settings: list[str], name: str, root: Path, toy: Path, bert: Path) -> Path:
    items = [item.format(bert=bert) for item in settings] + [
        f"data.train_file={toy}", f"data.validation_file={toy}", f"data.test_file={toy}", "train.max_steps=2",
        "train.eval_every_steps=2", "train.per_device_batch_size=4", "train.lr=1e-2", "train.num_threads=1",
        "model.head.dropout=0", f"output_dir={root}", f"name={name}"]
    return run_experiment(load_config(None, items), callbacks=[]).run_dir


@pytest.fixture(scope="module")
def exported(tmp_path_factory, toy, tiny_model_dir) -> dict[str, tuple[Path, Path]]:
    """name -> (run directory, its export)."""
    root = tmp_path_factory.mktemp("export")
    found = {}
    for name, (settings, _) in CASES.items():
        run_dir = train(settings, name, root / "runs", toy, tiny_model_dir)
        found[name] = (run_dir, export_classifier(run_dir, root / "exports" / name))
    return found


@pytest.fixture(scope="module")
def plain(exported, tmp_path_factory) -> dict[str, dict]:
    """What plain transformers computes for every export (one subprocess for them all)."""
    names = list(exported)
    folders = [(exported[name][1], CASES[name][1] == STANDALONE) for name in names]
    answer = load_without_texttune(folders, TEXTS, tmp_path_factory.mktemp("plain"))
    assert answer["blocked"] and answer["texttune_modules"] == []
    return dict(zip(names, answer["results"]))


def config_of(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- plain transformers


@pytest.mark.parametrize("name", CASES)
def test_plain_transformers_computes_the_runs_logits(name, exported, plain):
    run_dir = exported[name][0]
    result = plain[name]
    assert result["class"] == CASES[name][1]
    expected = texttune.load(run_dir).logits(TEXTS)
    torch.testing.assert_close(torch.tensor(result["logits"]), expected, atol=1e-5, rtol=0)
    # The pipeline gives the uncalibrated softmax of those logits.
    labels = texttune.load(run_dir).label_names
    probabilities = torch.softmax(expected, dim=-1)
    for row, scores in zip(probabilities, result["pipeline"]):
        assert [scores[label] for label in labels] == pytest.approx(row.tolist(), abs=1e-5)


@pytest.mark.parametrize("name", CASES)
def test_a_stock_export_needs_no_code_and_a_custom_one_ships_its_own(name, exported):
    out = exported[name][1]
    config, files = config_of(out), {p.name for p in out.iterdir()}
    record = config["texttune_export"]
    assert {"config.json", "model.safetensors", "README.md", "tokenizer.json", "tokenizer_config.json"} <= files
    if CASES[name][1] == STANDALONE:
        assert record["code"] == "custom" and record["why_custom"]
        assert config["auto_map"]["AutoModelForSequenceClassification"] == f"modeling_texttune.{STANDALONE}"
        assert {"modeling_texttune.py", "configuration_texttune.py"} <= files
        source = (out / "modeling_texttune.py").read_text(encoding="utf-8")
        assert "import texttune" not in source and "from texttune" not in source
    else:
        assert record["code"] == "stock" and record["why_custom"] is None
        assert "auto_map" not in config and not any(f.endswith(".py") for f in files)
        assert config["architectures"] == [CASES[name][1]]
    assert not any("lora" in key for key in _tensor_names(out))  # LoRA merged, never shipped
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def _tensor_names(folder: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as handle:
        return list(handle.keys())


def test_the_reasons_for_custom_code_name_what_did_not_fit(exported):
    why = {name: config_of(out)["texttune_export"]["why_custom"] for name, (_, out) in exported.items()}
    assert "pools with mean" in why["bert-bitfit-mean"]
    assert "strategy 'adapters' adds modules" in why["bert-adapters"]
    assert "strategy 'prefix' adds modules" in why["bert-prefix-deep"]
    assert why["cnn"] == "the from-scratch cnn encoder has no transformers class"


# --------------------------------------------------------------------------- texttune reads exports back


@pytest.mark.parametrize("name", CASES)
def test_texttune_load_reads_every_export_as_the_run(name, exported):
    run_dir, out = exported[name]
    run, export = texttune.load(run_dir), texttune.load(out)
    torch.testing.assert_close(export.logits(TEXTS), run.logits(TEXTS), atol=1e-5, rtol=0)
    assert export.temperature == pytest.approx(run.temperature) and run.temperature
    assert export.label_names == run.label_names == ["neg", "pos"]
    assert [p["label"] for p in export.predict(TEXTS)] == [p["label"] for p in run.predict(TEXTS)]
    assert [p["score"] for p in export.predict(TEXTS)] == pytest.approx([p["score"] for p in run.predict(TEXTS)],
                                                                        abs=1e-5)


def test_texttune_predict_reads_an_export(exported, run_cli):
    run_dir, out = exported["bert-adapters"]
    code, stdout, err = run_cli("predict", out, "--text", TEXTS[0])
    assert code == 0, err
    assert texttune.load(run_dir).predict(TEXTS[0])[0]["label"] in stdout


# --------------------------------------------------------------------------- the record and the model card


def test_the_config_carries_labels_the_temperature_and_the_source(exported):
    for run_dir, out in exported.values():
        config = config_of(out)
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        assert config["id2label"] == {"0": "neg", "1": "pos"} and config["label2id"] == {"neg": 0, "pos": 1}
        assert config["texttune_temperature"] == pytest.approx(metrics["temperature"])
        assert config["texttune_export"]["source"] == str(run_dir.resolve())
        max_length = read_run_config(run_dir)["model"]["max_length"]
        assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == max_length


@pytest.mark.parametrize("name", ["bert-lora", "bert-adapters"])
def test_the_model_card_describes_the_run(name, exported):
    run_dir, out = exported[name]
    text = (out / "README.md").read_text(encoding="utf-8")
    _, front, body = text.split("---\n", 2)
    meta = yaml.safe_load(front)
    custom = CASES[name][1] == STANDALONE
    assert meta["pipeline_tag"] == "text-classification" and meta["library_name"] == "transformers"
    assert {"texttune", name.split("-")[1]} <= set(meta["tags"]) and ("custom_code" in meta["tags"]) == custom
    assert "| train | 8 | your file | neg: 4, pos: 4 |" in body and "| test | 8 |" in body
    assert "95% bootstrap intervals over the 8 test examples" in body and "f1_macro [" in body
    assert run_dir.name in body and "## Intended use" in body and "## Limitations" in body
    assert ('trust_remote_code=True' in body) == custom
    assert "uncalibrated" in body and "texttune_temperature" in body and "texttune.load" in body
    if custom:
        assert config_of(out)["texttune_export"]["why_custom"] in body


# --------------------------------------------------------------------------- the command line


def test_the_command_says_why_it_wrote_custom_code(exported, run_cli, tmp_path):
    run_dir, _ = exported["bert-bitfit-mean"]
    code, out, err = run_cli("export", run_dir, tmp_path / "again")
    assert code == 0, err
    text = squash(out)
    assert squash("exported with its own modelling code (load it with trust_remote_code=True), because "
                  "BertForSequenceClassification classifies the first token") in text
    assert squash("this model pools with mean") in text and squash("trust_remote_code=True") in text


def test_the_command_names_the_stock_class(exported, run_cli, tmp_path):
    code, out, err = run_cli("export", exported["bert-full"][0], tmp_path / "again")
    assert code == 0, err
    assert "BertForSequenceClassification" in out and "own modelling code" not in out


def test_export_never_overwrites(exported, run_cli, tmp_path):
    run_dir, out = exported["cnn"]
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert_error(run_cli("export", run_dir, out), f"{out}: already exists; export writes a new folder")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_a_failed_export_leaves_nothing(exported, tmp_path, monkeypatch):
    import texttune.reports.model_card as card

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(card, "model_card", broken)
    with pytest.raises(OSError, match="disk full"):
        export_classifier(exported["cnn"][0], tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_bad_input_is_one_message(exported, run_cli, tmp_path):
    assert_error(run_cli("export", tmp_path / "missing", tmp_path / "out"), f"{tmp_path / 'missing'}: no such run")
    out = exported["cnn"][1]
    assert_error(run_cli("export", out, tmp_path / "out"), f"{out}: already an export (written by texttune export)")
    for i, damage in enumerate([{"encoder": None}, {"pooling": "avg"}, {"head": {"type": "deep"}}]):
        damaged = tmp_path / f"damaged-{i}"
        damaged.mkdir()
        for file in out.iterdir():
            (damaged / file.name).write_bytes(file.read_bytes())
        config = {key: value for key, value in {**config_of(damaged), **damage}.items() if value is not None}
        (damaged / "config.json").write_text(json.dumps(config), encoding="utf-8")
        assert_error(run_cli("predict", damaged, "--text", "a film"),
                     f"{damaged / 'config.json'}: not a valid exported model config")
    assert not (tmp_path / "out").exists()


def test_an_encoder_without_standalone_code_is_refused(exported, monkeypatch, tmp_path):
    from texttune import export

    monkeypatch.setattr(export, "STANDALONE_ENCODERS", ("hf",))
    run_dir = exported["cnn"][0]
    with pytest.raises(TexttuneError, match=r"the cnn encoder cannot be exported for plain transformers yet; "
                                            "load the run with texttune.load"):
        export_classifier(run_dir, tmp_path / "out")


# --------------------------------------------------------------------------- every stock family


def tiny_hf_model(model_type: str, head: dict, tokenizer_dir: Path, folder: Path) -> Path:
    """A texttune classifier on a tiny random encoder of ``model_type``, saved whole (no training)."""
    from transformers import AutoConfig, AutoTokenizer

    from texttune.models.classifier import TexttuneConfig, TexttuneForSequenceClassification
    from texttune.models.pretrained import _encoder_dict

    sizes = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
             "vocab_size": 30522, "max_position_embeddings": 130}
    if model_type == "distilbert":
        sizes = {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64, "vocab_size": 30522}
    encoder = AutoConfig.for_model(model_type, **sizes)
    config = TexttuneConfig(encoder_type="hf", encoder=_encoder_dict(encoder), pooling="cls",
                            head={"type": "mlp", "hidden_size": None, "dropout": 0.0, **head}, num_labels=3,
                            id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2})
    torch.manual_seed(0)
    model = TexttuneForSequenceClassification(config).eval()
    with torch.no_grad():
        for param in model.head.parameters():
            param.normal_()  # a head far from its initialisation
    model.save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    if model_type == "distilbert":  # DistilBERT takes no token type ids
        tokenizer.model_input_names = ["input_ids", "attention_mask"]
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("model_type", STOCK)
def test_every_stock_family_maps_exactly(model_type, tiny_model_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    activation = STOCK[model_type].activation or "relu"  # DeBERTa's pooler takes any
    folder = tiny_hf_model(model_type, {"activation": activation}, tiny_model_dir, tmp_path / "model")
    out = export_classifier(folder, tmp_path / "exported")
    stock = AutoModelForSequenceClassification.from_pretrained(out).eval()  # transformers' class, no remote code
    assert type(stock).__name__ == STOCK[model_type].class_name
    with torch.no_grad():
        logits = stock(**AutoTokenizer.from_pretrained(out)(TEXTS, padding=True, return_tensors="pt")).logits
    torch.testing.assert_close(logits, texttune.load(folder).logits(TEXTS), atol=1e-5, rtol=0)


@pytest.mark.parametrize("head, reason", [
    ({"activation": "gelu"}, "this model has an mlp head with gelu and width 32"),
    ({"activation": "tanh", "hidden_size": 16}, "this model has an mlp head with tanh and width 16"),
])
def test_a_head_the_stock_class_lacks_gets_custom_code(head, reason, tiny_model_dir, tmp_path):
    folder = tiny_hf_model("bert", head, tiny_model_dir, tmp_path / "model")
    out = export_classifier(folder, tmp_path / "exported")
    record = config_of(out)["texttune_export"]
    assert record["code"] == "custom" and record["why_custom"].endswith(reason)
    card = (out / "README.md").read_text(encoding="utf-8")  # a model folder alone: no run records to show
    assert "## Data\n\nNot recorded" in card and "## Metrics\n\nNot recorded." in card
    torch.testing.assert_close(texttune.load(out).logits(TEXTS), texttune.load(folder).logits(TEXTS), atol=1e-5,
                               rtol=0)


def test_an_export_that_computes_otherwise_is_never_written(exported, monkeypatch, tmp_path):
    import texttune.standalone.modeling_texttune as standalone

    monkeypatch.setattr(standalone, "pool", lambda hidden, mask, how: hidden.mean(dim=1))  # padding counted
    with pytest.raises(TexttuneError, match=r"the exported TexttuneStandaloneForSequenceClassification differs "
                                            r"from the run's model by .* in the logits; nothing written"):
        export_classifier(exported["bert-bitfit-mean"][0], tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
