"""Shared fixtures. Tests run offline on CPU: the Hub is switched off for the whole session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Set before any test imports huggingface_hub/transformers, so nothing can reach the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
# Tokenization caches go to a throw-away folder, never the user's ~/.cache.
os.environ["TEXTTUNE_CACHE_DIR"] = tempfile.mkdtemp(prefix="texttune-test-cache-")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TEXTTUNE_DATA_DIR", REPO.parent / "shared" / "data"))
os.environ.setdefault("TEXTTUNE_DATA_DIR", str(SHARED_DATA))


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    # Tests use tiny models: they run fastest on one thread, and far faster than with two when another
    # process holds the cores (thread contention made a tiny BERT step ~90x slower).
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def shared_data() -> Path:
    """The prepared real datasets (../shared/data); tests that need them skip when it is absent."""
    if not (SHARED_DATA / "trec" / "train.parquet").is_file():
        pytest.skip(f"prepared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def run_cli(capsys):
    """Run the CLI in-process: returns (exit_code, stdout, stderr)."""
    from texttune.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny randomly initialised BERT (2 layers, hidden 32) with MiniLM's WordPiece tokenizer,
    saved as a Hugging Face folder: fast, offline, and the same code path as a real checkpoint."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from texttune.resources import resolve_model_path

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        vocab_size=30522, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(resolve_model_path("minilm"))).save_pretrained(folder)
    return folder


TOY_ROWS = [
    ("what a wonderful film , i loved it", "pos"),
    ("great acting and a moving story", "pos"),
    ("an absolute delight from start to finish", "pos"),
    ("one of the best movies this year", "pos"),
    ("a dull , boring waste of time", "neg"),
    ("terrible script and awful acting", "neg"),
    ("i hated every minute of it", "neg"),
    ("the worst film i have ever seen", "neg"),
]


@pytest.fixture(scope="session")
def toy(tmp_path_factory) -> Path:
    """The eight labelled sentences as one CSV file shared by a whole session (read, never written)."""
    import csv

    path = tmp_path_factory.mktemp("toy") / "toy.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("text", "label"), *TOY_ROWS])
    return path


@pytest.fixture
def toy_csv(tmp_path) -> Path:
    """Eight labelled sentences (4 pos, 4 neg) as a CSV file."""
    import csv

    path = tmp_path / "toy.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(TOY_ROWS)
    return path


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
LM_TEXTS = ["what is the capital of france", "paris is the capital of france", "name a red fruit",
            "the apple is a red fruit", "how many legs has a cat", "a cat has four legs"] * 30


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory):
    """A tiny randomly initialised Llama (2 layers, hidden 32) with a BPE tokenizer trained on
    ``LM_TEXTS`` and a ChatML template: instruction tuning without weights to download."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from texttune.models.tokenizer_training import train_tokenizer

    tokenizer = train_tokenizer(LM_TEXTS, "bpe", vocab_size=300, min_frequency=1)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.chat_template = CHATML
    folder = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
