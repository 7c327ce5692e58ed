"""Interoperability with the real libraries, models built from configs (no downloads):
bigviz checkpoints load with Transformers and huggingface_hub, and theirs load with bigviz."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _quiet import quiet_transformers  # noqa: F401  (autouse: every test here is quiet)

from bigviz.checkpoint import inspect_checkpoint, load_sharded, save_sharded, validate_checkpoint

transformers = pytest.importorskip("transformers")
hf = pytest.importorskip("huggingface_hub")


def _config(tie: bool = True) -> object:
    return transformers.GPT2Config(
        n_layer=2,
        n_embd=64,
        n_head=2,
        vocab_size=128,
        n_positions=32,
        bos_token_id=0,
        eos_token_id=0,
        tie_word_embeddings=tie,
    )


def _model(seed: int = 0, tie: bool = True) -> torch.nn.Module:
    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(_config(tie)).eval()


def _equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_bigviz_checkpoint_loads_with_from_pretrained(tmp_path: Path) -> None:
    # GIVEN a tiny GPT-2 saved by bigviz in several shards, with its config beside it
    model = _model()
    info = save_sharded(model, tmp_path / "ck", max_shard_size="100kB")
    assert info.n_shards > 2
    model.config.save_pretrained(tmp_path / "ck")
    # WHEN Transformers loads the folder
    loaded = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "ck")
    # THEN every weight is equal and the head is still tied to the embedding
    assert _equal(model, loaded)
    assert loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr()
    ids = torch.arange(10).unsqueeze(0)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_bigviz_checkpoint_loads_with_hub_load_torch_model(tmp_path: Path, fmt: str) -> None:
    model = _model(tie=False)
    save_sharded(model, tmp_path / "ck", max_shard_size="100kB", format=fmt)  # type: ignore[arg-type]
    target = _model(seed=1, tie=False)
    assert not _equal(model, target)
    result = hf.load_torch_model(target, tmp_path / "ck", strict=True, safe=fmt == "safetensors")
    assert not result.missing_keys and not result.unexpected_keys
    assert _equal(model, target)


def test_save_pretrained_checkpoint_loads_and_inspects_with_bigviz(tmp_path: Path) -> None:
    # GIVEN Transformers' own sharded save (safetensors only in Transformers 5)
    model = _model()
    model.save_pretrained(tmp_path / "ck", max_shard_size="100kB")
    index = json.loads((tmp_path / "ck" / "model.safetensors.index.json").read_text())
    # WHEN bigviz inspects it
    info = inspect_checkpoint(tmp_path / "ck")
    # THEN it sees the same files, keys and total size
    assert info.index_file == "model.safetensors.index.json"
    assert sorted(set(index["weight_map"].values())) == [p.name for p in info.shard_paths()]
    assert set(info.tensors) == set(index["weight_map"])
    assert info.total_size == index["metadata"]["total_size"]
    assert info.module_sizes[""] == info.total_size
    # AND loading into a meta model (strict) fills every weight, ties included
    with torch.device("meta"):
        fresh = transformers.GPT2LMHeadModel(_config())
    report = load_sharded(fresh, tmp_path / "ck", assign=True)
    assert report.missing_keys == [] and report.unexpected_keys == []
    assert _equal(model, fresh)
    assert fresh.lm_head.weight is fresh.transformer.wte.weight
    validate_checkpoint(tmp_path / "ck", fresh)


def test_hub_bin_checkpoint_loads_and_inspects_with_bigviz(tmp_path: Path) -> None:
    model = _model()
    (tmp_path / "ck").mkdir()
    hf.save_torch_state_dict(
        model.state_dict(), tmp_path / "ck", max_shard_size="100kB", safe_serialization=False
    )
    index = json.loads((tmp_path / "ck" / "pytorch_model.bin.index.json").read_text())
    info = inspect_checkpoint(tmp_path / "ck")
    assert info.format == "bin"
    assert info.total_size == index["metadata"]["total_size"]
    assert [p.name for p in info.shard_paths()] == sorted(set(index["weight_map"].values()))
    assert ["lm_head.weight", "transformer.wte.weight"] in info.tied
    target = _model(seed=1)
    report = load_sharded(target, tmp_path / "ck")
    assert report.missing_keys == [] and report.unexpected_keys == []
    assert _equal(model, target)
