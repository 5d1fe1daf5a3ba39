"""Bad model folders and checkpoints through the real CLI: pickled weights are refused unread, a
damaged file is one message naming it (exit 2), never a traceback.

Each case copies one tiny finished run (kept checkpoints) or the tiny BERT folder, damages it, and
runs a command on the copy.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from texttune.tasks.classify import load_config
from texttune.tasks.classify import run_experiment

DATA_ERROR = 2
SAFETENSORS_ONLY = "texttune reads safetensors only"
# A pickle that runs `touch PWNED` when unpickled: it must be refused without being opened.
MALICIOUS_PICKLE = b"cos\nsystem\n(S'touch PWNED'\ntR."


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, toy) -> Path:
    """A tiny CNN run (2 steps) that kept its checkpoints."""
    config = load_config(None, [
        "model.name=cnn", "model.embedding_dim=8", "model.num_filters=4", f"data.train_file={toy}",
        f"data.validation_file={toy}", f"data.test_file={toy}", "train.max_steps=2",
        "train.eval_every_steps=2", "train.per_device_batch_size=4", "train.num_threads=1",
        "train.keep_checkpoints=true",
        f"output_dir={tmp_path_factory.mktemp('runs')}", "name=bad-models",
    ])
    return run_experiment(config, callbacks=[]).run_dir


# --------------------------------------------------------------------------- ways to damage a copy


def pickle_only(folder: str, payload: bytes = b"\x80\x02}q\x00.") -> Callable[[Path], None]:
    """Only pickled weights: model.safetensors gone, pytorch_model.bin in its place."""
    def damage(root: Path) -> None:
        (root / folder / "model.safetensors").unlink()
        (root / folder / "pytorch_model.bin").write_bytes(payload)
    return damage


def truncate(path: str, keep: float = 0.5) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        data = (root / path).read_bytes()
        (root / path).write_bytes(data[: int(len(data) * keep)])
    return damage


def flip_header(path: str) -> Callable[[Path], None]:
    """One bit of the safetensors header's length: the size no longer fits the file."""
    def damage(root: Path) -> None:
        data = bytearray((root / path).read_bytes())
        data[3] ^= 0x10
        (root / path).write_bytes(bytes(data))
    return damage


def write(path: str, text: str) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        (root / path).write_text(text, encoding="utf-8")
    return damage


def edit_json(path: str, **changes) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        data = json.loads((root / path).read_text(encoding="utf-8"))
        (root / path).write_text(json.dumps({**data, **changes}), encoding="utf-8")
    return damage


def sharded_pickles(root: Path) -> None:
    (root / "model" / "model.safetensors").unlink()
    index = {"metadata": {}, "weight_map": {"head.1.weight": "pytorch_model-00001-of-00001.bin"}}
    (root / "model" / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")


def interrupted(*damages: Callable[[Path], None]) -> Callable[[Path], None]:
    """The run as if cut after its last checkpoint (no metrics.json), then damaged."""
    def damage(root: Path) -> None:
        (root / "metrics.json").unlink()
        for more in damages:
            more(root)
    return damage


def unsealed(root: Path) -> None:
    (root / "checkpoints" / "last" / "complete.json").unlink()


# --------------------------------------------------------------------------- the cases


@dataclass
class Case:
    id: str
    damage: Callable[[Path], None]
    command: list[str]  # {run}: the damaged copy; {bert}: a damaged tiny BERT folder; {toy}: the data
    expected: str  # a fragment of the message, with the same placeholders
    source: str = "run"  # what is copied and damaged: "run" or "bert"


PREDICT = ["predict", "{run}", "--text", "a great film"]
EVALUATE = ["evaluate", "{run}", "--data", "{toy}"]
RESUME = ["run", "--resume", "{run}"]
RUN_ON_BERT = ["run", "--set", "model.path={bert}", "--set", "data.train_file={toy}",
               "--set", "output_dir={bert}/../runs"]
CASES = [
    Case("predict-pickle-only", pickle_only("model"), PREDICT,
         f"{{run}}/model: holds pickled weights only (pytorch_model.bin); {SAFETENSORS_ONLY} — convert them"),
    Case("evaluate-pickle-only", pickle_only("model"), EVALUATE, "{run}/model: holds pickled weights only"),
    Case("export-pickle-only", pickle_only("model"), ["export", "{run}", "{run}/../exported"],
         "{run}/model: holds pickled weights only"),
    Case("predict-malicious-pickle", pickle_only("model", MALICIOUS_PICKLE), PREDICT,
         "{run}/model: holds pickled weights only (pytorch_model.bin)"),
    Case("predict-pickle-named-by-config",
         edit_json("model/config.json", transformers_weights="pytorch_model.bin"), PREDICT,
         "{run}/model/config.json: transformers_weights names pytorch_model.bin, not a safetensors file"),
    Case("predict-pickled-shards", sharded_pickles, PREDICT,
         "{run}/model/model.safetensors.index.json: lists pickled shards (pytorch_model-00001-of-00001.bin)"),
    Case("predict-truncated-safetensors", truncate("model/model.safetensors"), PREDICT,
         "{run}/model/model.safetensors: corrupted or truncated safetensors file"),
    Case("evaluate-truncated-safetensors", truncate("model/model.safetensors"), EVALUATE,
         "{run}/model/model.safetensors: corrupted or truncated safetensors file"),
    Case("predict-empty-safetensors", truncate("model/model.safetensors", 0), PREDICT,
         "{run}/model/model.safetensors: corrupted or truncated safetensors file"),
    Case("evaluate-flipped-header", flip_header("model/model.safetensors"), EVALUATE,
         "{run}/model/model.safetensors: corrupted or truncated safetensors file"),
    Case("predict-config-not-json", write("model/config.json", '{"model_type": "texttune",'), PREDICT,
         "{run}/model/config.json: not valid JSON"),
    Case("predict-config-wrong-types", edit_json("model/config.json", num_labels="two"), PREDICT,
         "{run}/model/config.json: not a valid model config"),
    Case("predict-config-a-list", write("model/config.json", "[]"), PREDICT,
         "{run}/model/config.json: expected a JSON object, found list"),
    Case("predict-truncated-tokenizer", truncate("model/tokenizer.json"), PREDICT,
         "{run}/model/tokenizer.json: not valid JSON"),
    Case("resume-truncated-optimizer", interrupted(truncate("checkpoints/last/optimizer.safetensors")),
         RESUME,
         "{run}/checkpoints/last/optimizer.safetensors: cut short or changed since it was saved"),
    Case("resume-unsealed-truncated-optimizer",
         interrupted(unsealed, truncate("checkpoints/last/optimizer.safetensors")), RESUME,
         "{run}/checkpoints/last/optimizer.safetensors: corrupted or truncated safetensors file"),
    Case("resume-trainer-state-not-json",
         interrupted(unsealed, write("checkpoints/last/trainer_state.json", "{")), RESUME,
         "{run}/checkpoints/last/trainer_state.json: not valid JSON"),
    Case("resume-damaged-best-model", interrupted(flip_header("checkpoints/best/model.safetensors")), RESUME,
         "{run}/checkpoints/best/model.safetensors: corrupted or truncated safetensors file"),
    Case("run-pickle-only-encoder", pickle_only("."),
         RUN_ON_BERT,
         "{bert}: holds pickled weights only (pytorch_model.bin)", source="bert"),
    Case("fill-mask-pickle-only", pickle_only("."), ["fill-mask", "{bert}", "a [MASK] film"],
         "{bert}: holds pickled weights only (pytorch_model.bin)", source="bert"),
    Case("run-truncated-encoder", truncate("model.safetensors"),
         RUN_ON_BERT,
         "{bert}/model.safetensors: corrupted or truncated safetensors file", source="bert"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_a_bad_model_is_one_message_naming_the_file(case, finished_run, tiny_model_dir, toy, tmp_path,
                                                   run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a pickle that ran would leave PWNED here
    source = {"run": finished_run, "bert": tiny_model_dir}[case.source]
    copy = tmp_path / case.source
    shutil.copytree(source, copy)
    case.damage(copy)
    where = {"run": copy, "bert": copy, "toy": toy}
    code, out, err = run_cli(*[part.format(**where) for part in case.command])
    assert "Traceback" not in out + err
    assert code == DATA_ERROR, f"exit {code}\nstdout:\n{out}\nstderr:\n{err}"
    assert err.startswith("error"), err
    expected = case.expected.format(**where).replace("/./", "/")
    assert expected in " ".join(err.split()), f"{expected!r} not in stderr:\n{err}"
    assert not (tmp_path / "PWNED").exists()


def test_a_hub_repository_with_pickles_only_is_refused():
    """For a Hub id, use_safetensors=True makes transformers refuse a pickle-only repository; its
    message is replaced by texttune's (offline here: the refusal transformers raises is simulated)."""
    from texttune.errors import TexttuneError
    from texttune.models.saving import load_pretrained

    class PickleOnlyRepo:
        @staticmethod
        def from_pretrained(source, use_safetensors=None, **kwargs):
            assert use_safetensors is True
            raise OSError(f"{source} does not appear to have a file named model.safetensors or "
                          "model.safetensors.index.json and thus cannot be loaded with `safetensors`. "
                          "Please do not set `use_safetensors=True`.")

    with pytest.raises(TexttuneError, match=r"^someone/model: this repository holds no safetensors weights; "
                                            "texttune reads safetensors only — convert them"):
        load_pretrained(PickleOnlyRepo, "someone/model")
