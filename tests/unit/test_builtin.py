"""Built-in datasets from the prepared-data folder, and the Hub fallback (never the network)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from texttune.config import DataConfig
from texttune.data import hub
from texttune.data.builtin import DATASETS, load_builtin
from texttune.data.load import load_dataset
from texttune.errors import DataError

EXPECTED_ROWS = {  # from ../shared/data/README.md
    "ag_news": {"test": 7600},
    "imdb": {"train": 25000, "test": 25000},
    "trec": {"train": 5452, "test": 500},
    "trec_fine": {"train": 5452, "test": 500},
    "sst2": {"train": 67349, "test": 872},  # the official validation is texttune's test
    "mrpc": {"train": 3668, "validation": 408, "test": 1725},
    "gutenberg": {"train": 42701},
    "lima": {"train": 1029},
}


@pytest.mark.parametrize("name", sorted(EXPECTED_ROWS))
def test_builtin_loads_with_documented_sizes(shared_data, name):
    ds = load_builtin(name, shared_data)
    assert {s: len(df) for s, df in ds.splits.items()} == EXPECTED_ROWS[name]
    for df in ds.splits.values():
        assert df["text"].map(type).eq(str).all()
        if ds.label_names is not None:
            assert df["label"].between(0, ds.num_labels - 1).all()


def test_label_sets(shared_data):
    assert load_builtin("trec", shared_data).label_names == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    fine = load_builtin("trec_fine", shared_data)
    assert fine.num_labels == 50 and fine.splits["train"]["label"].nunique() == 50
    mrpc = load_builtin("mrpc", shared_data)
    assert mrpc.has_pairs and mrpc.task == "pair_classification"
    assert load_builtin("gutenberg", shared_data).splits["train"].columns.tolist() == ["text", "source"]


def test_ag_news_carve_is_6000_1600_then_validation(shared_data):
    ds = load_dataset(DataConfig(dataset="ag_news", data_dir=shared_data))
    assert {s: len(df) for s, df in ds.splits.items()} == {"train": 5400, "validation": 600, "test": 1600}
    assert ds.splits["test"]["label"].value_counts().tolist() == [400] * 4
    assert "carved from the official test split (7,600 rows)" in ds.provenance["train"]


def test_sst2_selects_on_carved_validation_and_reports_on_official_validation(shared_data):
    ds = load_dataset(DataConfig(dataset="sst2", data_dir=shared_data))
    assert len(ds.splits["test"]) == 872 and len(ds.splits["validation"]) == 872
    assert ds.provenance["test"] == "the official validation split"
    assert ds.files["test"].endswith("sst2/validation.parquet")
    # Validation holds whole sentences, and no training phrase is a word span of one of them.
    assert "whole texts only (of 6,885 whole among 67,349)" in ds.provenance["validation"]
    validation, train = ds.splits["validation"], ds.splits["train"]
    assert validation["text"].str.split().str.len().median() > 15  # sentences; train rows are mostly phrases
    sentence = f" {validation['text'].iloc[0].strip()} "
    assert not any(f" {t.strip()} " in sentence for t in train["text"])


def test_missing_builtin_offline_says_where_to_put_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError) as info:
        load_builtin("imdb", tmp_path)
    message = str(info.value)
    assert f"dataset 'imdb' is not in the data folder ({tmp_path / 'imdb'} has no split files)" in message
    assert "downloading 'stanfordnlp/imdb' from the Hugging Face Hub is not possible offline" in message
    assert f"in {tmp_path / 'imdb'}/, or point TEXTTUNE_DATA_DIR" in message


def test_builtin_without_hub_source(tmp_path):
    with pytest.raises(DataError, match="'gutenberg' is not in the data folder .* has no Hugging Face Hub source"):
        load_builtin("gutenberg", tmp_path)


def _fake_export(root, config="default"):
    """A Hub Parquet export as refs/convert/parquet lays it out, with ClassLabel metadata."""
    features = {
        "text": {"dtype": "string", "_type": "Value"},
        "coarse_label": {"names": ["ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"], "_type": "ClassLabel"},
        "fine_label": {"names": [f"F{i}" for i in range(50)], "_type": "ClassLabel"},
    }
    meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    for split, n in (("train", 12), ("test", 6)):
        table = pa.table({"text": [f"q {i}?" for i in range(n)], "coarse_label": [i % 6 for i in range(n)],
                          "fine_label": [i % 50 for i in range(n)]})
        table = table.replace_schema_metadata(meta)
        (root / config / split).mkdir(parents=True)
        pq.write_table(table, root / config / split / "0000.parquet")
    return root


def test_hub_download_is_converted_into_the_prepared_layout(tmp_path, monkeypatch):
    export = _fake_export(tmp_path / "snapshot")
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(export)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot_download)
    data_dir = tmp_path / "data"
    ds = load_builtin("trec", data_dir)
    assert calls[0][0] == "CogComp/trec" and calls[0][1]["revision"] == "refs/convert/parquet"
    assert sorted(p.name for p in (data_dir / "trec").iterdir()) == [
        "labels.txt", "labels_fine.txt", "test.parquet", "train.parquet"]
    # Label names come from the ClassLabel metadata, in the Hub's order.
    assert ds.label_names == ["ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"]
    assert {s: len(df) for s, df in ds.splits.items()} == {"train": 12, "test": 6}
    assert load_builtin("trec_fine", data_dir).num_labels == 50  # second call reads the local copy
    assert len(calls) == 1


def test_hub_failure_is_one_message(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ConnectionError("Name or service not known")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.snapshot_download", broken)
    with pytest.raises(DataError, match=r"downloading 'fancyzhx/ag_news' from the Hugging Face Hub failed "
                                        r"\(ConnectionError: Name or service not known\)"):
        load_builtin("ag_news", tmp_path)
    assert not any(tmp_path.iterdir())  # nothing half-written left behind


def test_hub_fallback_switch(tmp_path):
    with pytest.raises(DataError, match="data.hub_fallback is off"):
        load_builtin("imdb", tmp_path, hub_fallback=False)


def test_every_builtin_is_registered():
    assert DATASETS.names() == sorted(EXPECTED_ROWS)
    assert hub.HUB_SPLITS["dev"] == "validation"
