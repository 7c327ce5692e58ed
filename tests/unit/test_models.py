"""The model zoo: sizes hit their byte targets, builds are fast and deterministic, and
bad specs say what is valid."""

from __future__ import annotations

import pytest
import torch

from bigviz import ConfigError
from bigviz.models import (
    build_model,
    materialize,
    model_bytes,
    parse_spec,
    transformers_config,
)


def _unique_bytes(model: torch.nn.Module) -> int:
    seen: dict[int, int] = {}
    for t in list(model.parameters()) + list(model.buffers()):
        seen[id(t)] = t.numel() * t.element_size()
    return sum(seen.values())


@pytest.mark.parametrize("spec", ["gpt:10MB", "gpt:1GB", "gpt:4.4GB", "mlp:500MB", "mlp:3MB"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_zoo_sizes_land_on_the_byte_target(spec: str, dtype: str) -> None:
    # GIVEN a size spec WHEN built on meta THEN the unique parameter bytes are within
    # 0.5 % of the target and model_bytes (computed without building) agrees exactly
    target = parse_spec(spec).target_bytes
    assert target is not None
    model = build_model(spec, dtype=dtype, device="meta")
    assert _unique_bytes(model) == model_bytes(spec, dtype)
    assert abs(model_bytes(spec, dtype) - target) <= 0.005 * target
    assert all(p.dtype == getattr(torch, dtype) for p in model.parameters())


def test_bert_base_has_bert_base_shapes() -> None:
    model = build_model("bert-base", device="meta")
    n = sum(p.numel() for p in model.parameters())
    assert 108_000_000 < n < 109_000_000  # BERT-base without the pooler
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["embeddings.word_embeddings.weight"] == (30522, 768)
    assert shapes["encoder.layer.11.intermediate.dense.weight"] == (3072, 768)
    assert model_bytes("bert-base", "float16") == 2 * n


def test_gpt_head_is_tied_and_counted_once() -> None:
    model = build_model("gpt:5MB")
    assert model.lm_head.weight is model.transformer.wte.weight  # type: ignore[union-attr]
    sd = model.state_dict()
    assert "lm_head.weight" in sd and "transformer.wte.weight" in sd
    assert _unique_bytes(model) == model_bytes("gpt:5MB")


def test_materialised_weights_are_deterministic_varied_and_usable() -> None:
    a = build_model("gpt:5MB", seed=3)
    b = build_model("gpt:5MB", seed=3)
    c = build_model("gpt:5MB", seed=4)
    for (k, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(),
                               c.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
        assert not torch.equal(va, vc), k
        assert torch.isfinite(va).all()
    # different tensors get different content (a swapped load would be caught)
    h = a.state_dict()
    assert not torch.equal(h["transformer.h.0.mlp.c_fc.bias"][:10],
                           h["transformer.h.1.mlp.c_fc.bias"][:10])
    out = a(torch.zeros(1, 4, dtype=torch.long))
    assert out.shape[-1] == a.config["vocab"]  # type: ignore[index]


def test_meta_build_of_a_big_model_allocates_nothing() -> None:
    model = build_model("gpt:8GB", device="meta")
    assert all(p.is_meta for p in model.parameters())
    assert model_bytes("gpt:8GB") > 7_900_000_000


def test_materialize_fills_every_tensor_of_a_meta_model() -> None:
    model = build_model("mlp:20MB", device="meta")
    materialize(model, seed=1)
    assert not any(p.is_meta for p in model.parameters())
    for name, p in model.named_parameters():
        assert float(p.detach().abs().sum()) > 0, name


def make_small() -> torch.nn.Module:
    """A user factory found by 'test_models:make_small' or passed directly."""
    return torch.nn.Sequential(torch.nn.Linear(100, 50), torch.nn.Linear(50, 10))


def test_user_factories_by_path_and_by_callable() -> None:
    by_callable = build_model(make_small, dtype="float16")
    assert next(by_callable.parameters()).dtype == torch.float16
    assert model_bytes(make_small) == (100 * 50 + 50 + 50 * 10 + 10) * 4
    by_path = build_model("test_models:make_small", device="meta")
    assert sum(p.numel() for p in by_path.parameters()) == 100 * 50 + 50 + 50 * 10 + 10


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("gpt", "'gpt:<size>'"),
        ("gpt:lots", "bad size 'lots'"),
        ("gpt:10kB", "too small"),
        ("resnet:1GB", "not valid"),
        ("", "not valid"),
        ("no_such_module_xyz:make", "cannot import 'no_such_module_xyz'"),
        ("test_models:nope", "has no attribute 'nope'"),
    ],
)
def test_bad_specs_name_the_spec_and_the_valid_forms(spec: str, needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        build_model(spec, device="meta")
    assert needle in str(exc.value)
    if needle in ("not valid", "'gpt:<size>'"):
        assert "'mlp:<size>'" in str(exc.value) and "bert-base" in str(exc.value)


def test_bad_dtype_and_device_and_lambda() -> None:
    with pytest.raises(ConfigError, match="dtype 'int8'"):
        model_bytes("gpt:10MB", "int8")
    with pytest.raises(ConfigError, match="device 'cuda'"):
        build_model("gpt:10MB", device="cuda")
    with pytest.raises(ConfigError, match="module level"):
        parse_spec(lambda: make_small())
    with pytest.raises(ConfigError, match=r"not an nn\.Module"):
        build_model("test_models:_not_a_module", device="meta")


def _not_a_module() -> int:
    return 3


def test_gpt_specs_come_with_a_gpt2_config() -> None:
    # (tests/integration/test_strategies.py loads a zoo checkpoint with Transformers using it)
    cfg = transformers_config("gpt:5MB")
    c = parse_spec("gpt:5MB").config
    assert cfg is not None and cfg["model_type"] == "gpt2"
    assert (cfg["n_embd"], cfg["n_layer"], cfg["vocab_size"]) == (c["width"], c["layers"],
                                                                  c["vocab"])
    assert transformers_config("mlp:5MB") is None
