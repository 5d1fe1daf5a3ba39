"""Transfer: start a run from a previous run's encoder (``init_from: RUN_DIR``).

The source run's encoder weights, tokenizer and pooling carry over; its head too when the label sets
are the same, else a new head is initialised for the target labels. What was kept and replaced is
logged and recorded in the model's config (``init_from``). The strategy is applied afterwards, so a
model trained on AG News can be adapted to IMDB with any strategy.
"""

from __future__ import annotations

import logging
from pathlib import Path

from texttune.errors import TexttuneError

log = logging.getLogger("texttune")


def build_from_run(run: str | Path, folder: Path, label_names: list[str], max_length: int):
    """(model, tokenizer) for the target labels, starting from the trained model in ``folder`` (the
    model folder of the run ``run``)."""
    from texttune.models.classifier import TexttuneConfig, TexttuneForSequenceClassification
    from texttune.models.loading import load_classifier, plain_encoder_state
    from texttune.models.saving import load_tokenizer_from, weights_fingerprint

    source = load_classifier(folder)
    encoder_state = plain_encoder_state(source, f"init_from: {run}")
    source_labels = [source.config.id2label[i] for i in range(source.config.num_labels)]
    capacity = source.config.encoder.get("max_length")
    if source.config.encoder_type == "transformer" and capacity and max_length + 2 > capacity:
        raise TexttuneError(f"model.max_length: {max_length} is longer than the encoder of {run} supports "
                            f"({capacity - 2} tokens)")
    config = TexttuneConfig(
        encoder_type=source.config.encoder_type, encoder=source.config.encoder, pooling=source.config.pooling,
        head=source.config.head, num_labels=len(label_names), id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
        base_model=getattr(source.config, "base_model", None),
    )
    model = TexttuneForSequenceClassification(config)
    model.encoder.load_state_dict(encoder_state)
    keep_head = source_labels == list(label_names)
    if keep_head:
        model.head.load_state_dict(source.head.state_dict())
    tensors = len(encoder_state)
    if keep_head:
        log.info("init_from %s: encoder (%d tensors), tokenizer and head kept (same %d labels)", run, tensors,
                 len(label_names))
    else:
        log.info("init_from %s: encoder (%d tensors) and tokenizer kept; head replaced: the source's %d labels "
                 "%s differ from the target's %d labels %s", run, tensors, len(source_labels), source_labels,
                 len(label_names), list(label_names))
    config.init_from = {"run": str(Path(run).resolve()), "head_replaced": not keep_head,
                        "source_labels": source_labels}
    config.texttune_base = {"kind": "run", "path": str(folder.resolve()), "sha256": weights_fingerprint(folder)}
    return model, load_tokenizer_from(folder)
