"""Any checkpoint on disk is a model: folders written by Transformers' ``save_pretrained``
and ``hf:`` ids resolved from a local Hugging Face cache laid out like huggingface_hub's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _quiet import quiet_transformers  # noqa: F401  (autouse: every test here is quiet)

from bigviz import ConfigError
from bigviz.checkpoint import inspect_checkpoint, load_sharded, save_sharded
from bigviz.models import build_model, model_bytes, parse_spec, transformers_config

transformers = pytest.importorskip("transformers")
hf = pytest.importorskip("huggingface_hub")

import hf_zoo  # noqa: E402  (needs transformers)


def build_mlp() -> torch.nn.Module:
    """A factory for a folder without config.json (imported by name)."""
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 8))


@pytest.mark.parametrize("kind", hf_zoo.KINDS)
def test_a_save_pretrained_folder_builds_on_meta_and_loads_its_own_weights(
    kind: str, tmp_path: Path
) -> None:
    # GIVEN a Transformers model saved sharded by save_pretrained
    folder = tmp_path / kind
    saved = hf_zoo.save_hf(kind, folder, size=1_500_000, max_shard_size="500kB")
    info = inspect_checkpoint(folder)
    assert len(info.files) > 1
    # WHEN bigviz takes the folder as the model
    spec = parse_spec(str(folder))
    skeleton = build_model(str(folder), dtype=None, device="meta")
    # THEN it is the saved class, built on meta, with the files' bytes as its size
    assert spec.kind == "folder" and spec.path == str(folder.resolve())
    assert type(skeleton) is type(saved)
    assert all(p.is_meta for p in skeleton.parameters())
    assert model_bytes(str(folder)) == info.total_size
    assert transformers_config(str(folder))["architectures"] == [type(saved).__name__]
    # AND the skeleton takes the checkpoint's weights exactly
    load_sharded(skeleton, folder, assign=True)
    expected = saved.state_dict()
    got = skeleton.state_dict()
    for key in info.tensors:
        assert torch.equal(got[key], expected[key]), key


def test_a_bfloat16_folder_keeps_its_dtype(tmp_path: Path) -> None:
    # GIVEN a model saved in bfloat16
    torch.manual_seed(0)
    model = hf_zoo.model_class("gpt2")(hf_zoo.config("gpt2")).to(torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16")
    # WHEN its skeleton is built "as saved"
    skeleton = build_model(str(tmp_path / "bf16"), dtype=None, device="meta")
    # THEN its parameters are bfloat16, like the files
    assert {p.dtype for p in skeleton.parameters()} == {torch.bfloat16}
    files = inspect_checkpoint(tmp_path / "bf16").tensors.values()
    assert {t.dtype for t in files} == {"bfloat16"}


def test_an_hf_id_resolves_from_the_local_cache_like_huggingface_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a hub cache (HF_HOME) holding a save_pretrained model at main and at a tag
    src = tmp_path / "src"
    hf_zoo.save_hf("llama", src)
    home = tmp_path / "hf-home"
    snap = hf_zoo.hub_cache(home, "acme/tiny-llama", src)
    tagged = hf_zoo.hub_cache(home, "acme/tiny-llama", src, revision="v1")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    # WHEN bigviz resolves hf:acme/tiny-llama and @v1
    spec = parse_spec("hf:acme/tiny-llama")
    spec_v1 = parse_spec("hf:acme/tiny-llama@v1")
    # THEN it found the snapshots huggingface_hub itself finds there, offline
    ref = hf.try_to_load_from_cache("acme/tiny-llama", "config.json",
                                    cache_dir=str(home / "hub"))
    assert isinstance(ref, str) and Path(ref).parent == snap
    assert spec.path == str(snap.resolve()) and spec_v1.path == str(tagged.resolve())
    assert parse_spec(f"hf:acme/tiny-llama@{snap.name}").path == spec.path
    # AND the model builds from the cached config
    assert type(build_model("hf:acme/tiny-llama", dtype=None, device="meta")).__name__ == (
        "LlamaForCausalLM")


def test_an_uncached_id_is_a_one_line_error_that_says_how_to_fetch_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    with pytest.raises(ConfigError) as exc:
        parse_spec("hf:meta-llama/Llama-3-8B")
    msg = str(exc.value)
    assert "\n" not in msg
    assert "not in the local Hugging Face cache" in msg
    assert "hf download meta-llama/Llama-3-8B" in msg and "never downloads" in msg
    # a cached repo without the asked revision says so too
    src = tmp_path / "src"
    hf_zoo.save_hf("gpt2", src)
    hf_zoo.hub_cache(tmp_path / "empty-home", "acme/g", src)
    with pytest.raises(ConfigError, match=r"revision 'v9' is not in the local cache"):
        parse_spec("hf:acme/g@v9")
    with pytest.raises(ConfigError, match=r"is not a Hugging Face model id"):
        parse_spec("hf:../../etc")


def test_bad_folders_are_one_line_errors_and_nothing_is_written(tmp_path: Path) -> None:
    # GIVEN folders that cannot be models
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    bare = tmp_path / "bare"
    save_sharded(build_mlp(), bare, max_shard_size="10kB")
    unknown = tmp_path / "unknown"
    hf_zoo.save_hf("gpt2", unknown)
    cfg = json.loads((unknown / "config.json").read_text())
    cfg["architectures"] = ["NopeForCausalLM"]
    (unknown / "config.json").write_text(json.dumps(cfg))
    before = {p: p.stat().st_mtime_ns for d in (empty, bare, unknown) for p in d.iterdir()}
    cases = [
        (lambda: parse_spec(str(tmp_path / "missing")), "does not exist"),
        (lambda: parse_spec(str(empty)), "holds no weights"),
        (lambda: build_model(str(bare), device="meta"), "has no config.json"),
        (lambda: build_model(str(unknown), device="meta"),
         "'NopeForCausalLM' of .* is unknown to the installed Transformers"),
        (lambda: parse_spec("gpt:1MB", factory="x.y:z"), "goes with a checkpoint folder"),
        (lambda: parse_spec(str(bare), factory="not a factory"), "is not valid"),
    ]
    for call, pattern in cases:
        with pytest.raises(ConfigError, match=pattern) as exc:
            call()
        assert "\n" not in str(exc.value)
    # THEN nothing in the user's folders changed
    assert before == {p: p.stat().st_mtime_ns for d in (empty, bare, unknown)
                      for p in d.iterdir()}


def test_a_folder_without_config_takes_a_factory(tmp_path: Path) -> None:
    # GIVEN a plain torch checkpoint folder (no config.json)
    model = build_mlp()
    save_sharded(model, tmp_path / "plain", max_shard_size="10kB")
    # WHEN it is built with a factory
    spec = f"{__name__}:build_mlp"
    skeleton = build_model(str(tmp_path / "plain"), device="meta", factory=spec)
    # THEN the factory built it on meta and the folder's weights fill it
    assert all(p.is_meta for p in skeleton.parameters())
    load_sharded(skeleton, tmp_path / "plain", assign=True)
    assert all(torch.equal(a, b) for a, b in zip(skeleton.state_dict().values(),
                                                  model.state_dict().values(), strict=True))
    assert parse_spec(str(tmp_path / "plain"), factory=spec).factory == spec
