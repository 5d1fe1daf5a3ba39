"""``texttune export RUN OUT``: a run's model as a folder that plain transformers loads, with a model card.

The whole model is written, whatever the run saved: a frozen-strategy run is rebuilt on its base, LoRA
is merged into the weights. Then one of two forms, decided by whether a stock transformers class
computes exactly what the model computes:

- **stock** — an encoder of a family in ``STOCK`` with cls pooling and an MLP head whose activation is
  the one that family's classification head applies (BERT: ``pooler.dense`` + tanh + ``classifier``):
  the weights are renamed onto that class (``BertForSequenceClassification``, ...), which loads anywhere;
- **custom code** — everything else (mean/max pooling, a linear head, another activation, the
  from-scratch encoders, adapters and prefixes): the folder ships ``texttune/standalone/``'s two files
  and ``config.json`` names them in ``auto_map``, so ``trust_remote_code=True`` loads it without texttune.
  A warning says why the stock class did not fit.

Either way the logits of the written model are checked against the run's before the folder appears,
``config.json`` carries the labels, the calibration temperature (``texttune_temperature``) and a
``texttune_export`` record, and ``README.md`` is the model card. ``load_export`` reads an export back for
``texttune.load`` without running the folder's code.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from texttune.errors import TexttuneError
from texttune.io import apply_umask
from texttune.runs import model_dir_of

EXPORT_KEY = "texttune_export"  # in config.json: present in every folder texttune export wrote
STANDALONE_FILES = ("configuration_texttune.py", "modeling_texttune.py")
AUTO_MAP = {
    "AutoConfig": "configuration_texttune.TexttuneStandaloneConfig",
    "AutoModelForSequenceClassification": "modeling_texttune.TexttuneStandaloneForSequenceClassification",
}
MODEL_CARD = "README.md"
PROBE_TEXTS = ["texttune export checks the written model on these texts.", "a second, shorter one"]
LOGIT_TOLERANCE = 1e-4
log = logging.getLogger("texttune")


@dataclass(frozen=True)
class StockHead:
    """A transformers classifier whose head is Linear(H, H) → activation → Linear(H, C) on the first token:
    exactly texttune's cls pooling + MLP head. ``dense``/``out``: where head.1 and head.4 go; the
    activation is fixed (``activation``) or a config setting (``activation_key``: DeBERTa's pooler)."""

    class_name: str
    dense: str
    out: str
    dropout_key: str | None = None
    activation: str | None = None
    activation_key: str | None = None


_FIRST_TOKEN_HEAD = {"dense": "classifier.dense", "out": "classifier.out_proj", "activation": "tanh"}  # RoBERTa's
_DEBERTA_HEAD = {"dense": "pooler.dense", "out": "classifier", "dropout_key": "cls_dropout",
                 "activation_key": "pooler_hidden_act"}
STOCK = {
    "bert": StockHead("BertForSequenceClassification", "bert.pooler.dense", "classifier", "classifier_dropout",
                      activation="tanh"),
    "albert": StockHead("AlbertForSequenceClassification", "albert.pooler", "classifier",
                        "classifier_dropout_prob", activation="tanh"),
    "roberta": StockHead("RobertaForSequenceClassification", dropout_key="classifier_dropout", **_FIRST_TOKEN_HEAD),
    "xlm-roberta": StockHead("XLMRobertaForSequenceClassification", dropout_key="classifier_dropout",
                             **_FIRST_TOKEN_HEAD),
    "camembert": StockHead("CamembertForSequenceClassification", dropout_key="classifier_dropout",
                           **_FIRST_TOKEN_HEAD),
    "mpnet": StockHead("MPNetForSequenceClassification", **_FIRST_TOKEN_HEAD),
    "electra": StockHead("ElectraForSequenceClassification", "classifier.dense", "classifier.out_proj",
                         "classifier_dropout", activation="gelu"),
    "distilbert": StockHead("DistilBertForSequenceClassification", "pre_classifier", "classifier",
                            "seq_classif_dropout", activation="relu"),
    "deberta": StockHead("DebertaForSequenceClassification", **_DEBERTA_HEAD),
    "deberta-v2": StockHead("DebertaV2ForSequenceClassification", **_DEBERTA_HEAD),
}
STANDALONE_ENCODERS = ("hf", "cnn", "rnn", "transformer", "bag_of_ngrams")  # what modeling_texttune.py has
STANDALONE_STRATEGIES = ("adapters", "prefix")  # strategies whose modules it re-creates (LoRA is merged)


# --------------------------------------------------------------------------- export


def export_classifier(run: str | Path, out: str | Path) -> Path:
    """Write a run's model as a whole Hugging Face model folder with its model card; never overwrites."""
    from texttune.models.saving import load_tokenizer_from

    folder, out = model_dir_of(run), Path(out)
    if out.exists():
        raise TexttuneError(f"{out}: already exists; export writes a new folder")
    if is_export(folder):
        raise TexttuneError(f"{folder}: already an export (written by texttune export); copy the folder instead")
    refuse_closed_form(folder)
    model = whole_model(folder)
    tokenizer = load_tokenizer_from(folder)
    run_dir = run_dir_of(folder)
    _set_max_length(tokenizer, run_dir)
    exported, record = convert(model, folder)
    record["source"] = str((run_dir or folder).resolve())
    _check_logits(model, exported, tokenizer, folder)
    _write_atomically(out, lambda tmp: _write(tmp, exported, tokenizer, record, run_dir, out.name))
    if record["code"] == "custom":
        log.warning("%s: exported with its own modelling code (load it with trust_remote_code=True), because %s",
                    out, record["why_custom"])
    return out


def refuse_closed_form(folder: Path) -> None:
    """A classic baseline or SetFit model is not a transformers architecture: say so, and what works."""
    from texttune.models.classic import CLASSIC_FILE, is_classic_folder

    if is_classic_folder(folder):
        raise TexttuneError(f"{folder / CLASSIC_FILE}: a closed-form model (a classic baseline or SetFit) has "
                            "no transformers or ONNX form; use it with texttune.load, texttune predict or "
                            "texttune serve")


def whole_model(folder: Path):
    """The run's classifier with every weight in it: rebuilt on its base if it saved only what it trained,
    LoRA folded into the base weights (an exact identity, up to float rounding)."""
    from texttune.models.loading import load_classifier
    from texttune.strategies.lora import merge_lora

    model = load_classifier(folder).eval()
    if (getattr(model.config, "strategy", None) or {}).get("name") == "lora":
        merge_lora(model)
    model.config.texttune_base = None
    return model


def run_dir_of(folder: Path) -> Path | None:
    """The run directory a model folder belongs to, when it is one (its records feed the model card)."""
    from texttune.runs import CONFIG

    return folder.parent if (folder.parent / CONFIG).is_file() else None


def _set_max_length(tokenizer, run_dir: Path | None) -> None:
    # A pipeline truncates (truncation=True) at the tokenizer's model_max_length: make it the run's.
    from texttune.runs import read_run_config

    if run_dir is not None:
        value = (read_run_config(run_dir).get("model") or {}).get("max_length")
        if value:
            tokenizer.model_max_length = int(value)


def convert(model, folder: Path) -> tuple[Any, dict[str, Any]]:
    """(the model as a stock or a standalone transformers model, the ``texttune_export`` record)."""
    from texttune.version import __version__

    _check_exportable(model, folder)
    hooks = strategy_hooks(model)
    reason = why_not_stock(model.config, hooks)
    exported = to_stock(model) if reason is None else None
    if exported is None:
        reason = reason or f"its weights do not map onto {STOCK[model.config.encoder['model_type']].class_name}"
        exported = to_standalone(model, hooks)
    config = model.config
    encoder = getattr(config, "base_model", None) or config.encoder.get("model_type") or config.encoder_type
    record = {"format": 1, "texttune_version": __version__, "code": "custom" if reason else "stock",
              "class": type(exported).__name__, "why_custom": reason, "encoder": str(encoder),
              "strategy": getattr(config, "strategy", None)}  # re-created by texttune.load (not LoRA)
    return exported, record


def _check_exportable(model, folder: Path) -> None:
    config = model.config
    if config.encoder_type not in STANDALONE_ENCODERS:
        raise TexttuneError(f"{folder / 'config.json'}: the {config.encoder_type} encoder cannot be exported "
                            "for plain transformers yet; load the run with texttune.load")
    strategy = (getattr(config, "strategy", None) or {}).get("name")
    if strategy and strategy not in STANDALONE_STRATEGIES:
        raise TexttuneError(f"{folder / 'config.json'}: the modules of strategy '{strategy}' cannot be exported "
                            "for plain transformers yet; load the run with texttune.load")


def strategy_hooks(model) -> dict[str, Any]:
    """Where the strategy's modules sit (module names relative to the model), for modeling_texttune.py."""
    from texttune.strategies.adapters import Adapter
    from texttune.strategies.prefix import LayerPrefix, Prompt

    found: dict[str, list[tuple[str, Any]]] = {"adapters": [], "prompt": [], "deep_prefix": []}
    for name, module in model.named_modules():
        kind = {Adapter: "adapters", Prompt: "prompt", LayerPrefix: "deep_prefix"}.get(type(module))
        if kind:
            found[kind].append((name.rpartition(".")[0], module))
    hooks: dict[str, Any] = {}
    if found["adapters"]:
        first = found["adapters"][0][1]
        hooks["adapters"] = {"modules": [name for name, _ in found["adapters"]],
                             "bottleneck": first.down.out_features, "activation": model.config.strategy["activation"]}
    if found["prompt"]:
        (name, prompt), = found["prompt"]
        hooks["prompt"] = {"module": name, "length": prompt.vectors.shape[0]}
    if found["deep_prefix"]:
        hooks["deep_prefix"] = {"modules": [name for name, _ in found["deep_prefix"]],
                                "length": found["deep_prefix"][0][1].keys.shape[0]}
    return hooks


def why_not_stock(config, hooks: dict[str, Any]) -> str | None:
    """Why no stock transformers class computes exactly this model; None when one does."""
    if config.encoder_type != "hf":
        return f"the from-scratch {config.encoder_type} encoder has no transformers class"
    if hooks:
        return (f"strategy '{config.strategy['name']}' adds modules inside the encoder "
                f"({', '.join(hooks)}) that no transformers class has")
    model_type = config.encoder.get("model_type")
    stock = STOCK.get(model_type)
    if stock is None:
        return f"texttune maps no transformers classifier of '{model_type}' encoders (only {', '.join(STOCK)})"
    head, hidden = config.head, config.encoder.get("hidden_size", config.encoder.get("dim"))
    wanted = (f"{stock.class_name} classifies the first token with Linear(H, H), "
              f"{stock.activation or 'an activation'}, Linear(H, C)")
    if config.pooling != "cls":
        return f"{wanted}; this model pools with {config.pooling}"
    activation_fits = stock.activation in (None, head["activation"])
    if head["type"] != "mlp" or not activation_fits or (head["hidden_size"] or hidden) != hidden:
        shape = "a linear head" if head["type"] != "mlp" else (
            f"an mlp head with {head['activation']} and width {head['hidden_size'] or hidden}")
        return f"{wanted}; this model has {shape}"
    return None


def multi_label_settings(config) -> dict[str, Any]:
    """A multi-label model's ``problem_type`` (stock classes then train with BCE, and
    ``pipeline(..., function_to_apply="sigmoid")`` scores each label) and its fitted thresholds."""
    get = config.get if isinstance(config, dict) else lambda key: getattr(config, key, None)
    if get("problem_type") != "multi_label_classification":
        return {}
    return {"problem_type": "multi_label_classification", "texttune_thresholds": get("texttune_thresholds")}


def to_stock(model):
    """The stock transformers classifier with the model's weights, or None if they do not map exactly."""
    import transformers
    from transformers import AutoConfig

    config, stock = model.config, STOCK[model.config.encoder["model_type"]]
    cls = getattr(transformers, stock.class_name)
    settings = {"id2label": dict(config.id2label), "label2id": dict(config.label2id),
                **multi_label_settings(config)}
    if stock.dropout_key:
        settings[stock.dropout_key] = config.head["dropout"]
    if stock.activation_key:
        settings[stock.activation_key] = config.head["activation"]
    exported = cls(AutoConfig.for_model(**{**config.encoder, **settings})).eval()
    state = {f"{cls.base_model_prefix}.{name}": t for name, t in model.encoder.model.state_dict().items()}
    for index, target in ((1, stock.dense), (4, stock.out)):  # the MLP head's two Linear layers
        state[f"{target}.weight"], state[f"{target}.bias"] = model.head[index].weight, model.head[index].bias
    try:
        result = exported.load_state_dict(state, strict=False)
    except RuntimeError:  # a tensor of another shape (a pooler wider than the encoder)
        return None
    # A pooler texttune's encoder kept (RoBERTa's) is never used: cls pooling reads the hidden state.
    unused = [k for k in result.unexpected_keys if not k.startswith(f"{cls.base_model_prefix}.pooler.")]
    if result.missing_keys or unused:
        return None
    exported.config.texttune_temperature = getattr(config, "texttune_temperature", None)
    return exported


def to_standalone(model, hooks: dict[str, Any]):
    """The model as ``modeling_texttune.py``'s class: the same module names, so the same state dict."""
    from texttune.standalone.configuration_texttune import TexttuneStandaloneConfig
    from texttune.standalone.modeling_texttune import TexttuneStandaloneForSequenceClassification

    config = model.config
    # Scratch encoders keep their config with defaults filled in: the standalone code knows no defaults.
    encoder = getattr(model.encoder, "encoder_config", None) or config.encoder
    standalone_config = TexttuneStandaloneConfig(
        encoder_type=config.encoder_type, encoder=dict(encoder), pooling=config.pooling, head=dict(config.head),
        hooks=hooks, id2label=dict(config.id2label), label2id=dict(config.label2id),
        texttune_temperature=getattr(config, "texttune_temperature", None), auto_map=dict(AUTO_MAP),
        **multi_label_settings(config),
    )
    exported = TexttuneStandaloneForSequenceClassification(standalone_config).eval()
    exported.load_state_dict(model.state_dict(), strict=True)
    return exported


def _check_logits(model, exported, tokenizer, folder: Path) -> None:
    """The written model must compute what the run's model computes; a difference is a texttune bug."""
    batches = [PROBE_TEXTS] if tokenizer.pad_token_id is not None else [[text] for text in PROBE_TEXTS]
    with torch.no_grad():
        for texts in batches:
            batch = dict(tokenizer(texts, padding=True, truncation=True, return_tensors="pt"))
            gap = (model(**batch).logits - exported(**batch).logits).abs().max().item()
            if gap > LOGIT_TOLERANCE:
                raise TexttuneError(f"{folder}: the exported {type(exported).__name__} differs from the run's "
                                    f"model by {gap:.2g} in the logits; nothing written (please report this)")


def _write_atomically(out: Path, write) -> None:
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
        apply_umask(tmp)  # save_pretrained's safetensors files come out 0600
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write(tmp: Path, exported, tokenizer, record: dict[str, Any], run_dir: Path | None, name: str) -> None:
    from texttune.reports.model_card import model_card

    setattr(exported.config, EXPORT_KEY, record)
    exported.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if record["code"] == "custom":
        source = Path(__file__).with_name("standalone")
        for file in STANDALONE_FILES:
            shutil.copyfile(source / file, tmp / file)
    (tmp / MODEL_CARD).write_text(model_card(exported.config, record, run_dir, name), encoding="utf-8")


# --------------------------------------------------------------------------- reading an export back


def is_export(folder: Path) -> bool:
    from texttune.models.saving import read_json_object

    path = Path(folder) / "config.json"
    return path.is_file() and EXPORT_KEY in read_json_object(path)


def load_export(folder: Path):
    """An exported model for texttune: the stock class as transformers has it; a custom-code export
    rebuilt as texttune's own classifier (the folder's code is never run)."""
    from transformers import AutoModelForSequenceClassification

    from texttune.models.saving import load_pretrained, read_json_object, reading

    folder = Path(folder)
    raw = read_json_object(folder / "config.json")
    if not raw.get("auto_map"):
        return load_pretrained(AutoModelForSequenceClassification, folder, strict=True).eval()
    from texttune.models.classifier import TexttuneConfig, TexttuneForSequenceClassification
    from texttune.models.heads import HeadConfig
    from texttune.models.pooling import Pooling

    with reading(folder / "config.json", "not a valid exported model config"):
        HeadConfig(**raw["head"])  # checked here: a bad head or pooling would only fail at prediction time
        if raw["pooling"] not in Pooling.__args__:
            raise ValueError(f"pooling '{raw['pooling']}'")
        id2label = {int(i): str(label) for i, label in raw["id2label"].items()}
        config = TexttuneConfig(
            encoder_type=raw["encoder_type"], encoder=raw["encoder"], pooling=raw["pooling"], head=raw["head"],
            strategy=raw[EXPORT_KEY].get("strategy"), num_labels=len(id2label), id2label=id2label,
            label2id={label: i for i, label in id2label.items()},
            texttune_temperature=raw.get("texttune_temperature"), **multi_label_settings(raw),
        )
    return load_pretrained(TexttuneForSequenceClassification, folder, config=config, strict=True).eval()


def how_to_load(folder: Path) -> str:
    """One line for the CLI: which class the export is and how plain transformers loads it."""
    from texttune.models.saving import read_json_object

    record = read_json_object(Path(folder) / "config.json")[EXPORT_KEY]
    if record["code"] == "stock":
        return f"{record['class']}: loads with pipeline or AutoModelForSequenceClassification, and texttune.load"
    return ("its own modelling code: load with trust_remote_code=True (pipeline or "
            "AutoModelForSequenceClassification), or texttune.load")
