"""Property tests: bigviz's split is huggingface_hub's, saves are byte-identical to
huggingface_hub's, and save -> load round-trips bit-exactly (ties included)."""

from __future__ import annotations

import filecmp
import json
import struct
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from bigviz.checkpoint import inspect_checkpoint, load_sharded, plan_shards, save_sharded

hf = pytest.importorskip("huggingface_hub")

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int8, torch.bool]
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _tensor(dtype: torch.dtype, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=g).bool()
    if dtype.is_floating_point:
        return torch.randn(shape, generator=g).to(dtype)
    return torch.randint(-100, 100, shape, generator=g).to(dtype)


@st.composite
def state_dicts(draw: st.DrawFn) -> dict[str, torch.Tensor]:
    """Two-level names (m<i>.p<j>), mixed dtypes and shapes (scalars and empty tensors
    included), and some names tied to an earlier tensor (same object, shared storage)."""
    n = draw(st.integers(1, 9))
    sd: dict[str, torch.Tensor] = {}
    for i in range(n):
        name = f"m{draw(st.integers(0, 3))}.p{i}"
        earlier = list(sd.values())
        if earlier and draw(st.integers(0, 4)) == 0:
            sd[name] = earlier[draw(st.integers(0, len(earlier) - 1))]
            continue
        shape = tuple(draw(st.lists(st.integers(0, 7), min_size=0, max_size=3)))
        sd[name] = _tensor(draw(st.sampled_from(DTYPES)), shape, seed=i)
    return sd


def _split_safetensors(path: Path) -> tuple[object, bytes]:
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _holder(sd: dict[str, torch.Tensor], *, meta: bool) -> nn.Module:
    """A module whose state dict has exactly ``sd``'s names, shapes, dtypes and ties."""
    root = nn.Module()
    made: dict[int, torch.Tensor] = {}
    for name, t in sd.items():
        mod_name, leaf = name.split(".")
        if not hasattr(root, mod_name):
            root.add_module(mod_name, nn.Module())
        if id(t) not in made:
            made[id(t)] = torch.empty_like(t, device="meta") if meta else torch.zeros_like(t)
        getattr(root, mod_name).register_buffer(leaf, made[id(t)])
    return root


@given(sd=state_dicts(), limit=st.integers(0, 400))
@SETTINGS
def test_split_equals_huggingface_hub(sd: dict[str, torch.Tensor], limit: int) -> None:
    ours = plan_shards(sd, limit)
    for fmt, pattern in [
        ("safetensors", "model{suffix}.safetensors"),
        ("bin", "pytorch_model{suffix}.bin"),
    ]:
        theirs = hf.split_torch_state_dict_into_shards(
            sd, filename_pattern=pattern, max_shard_size=limit
        )
        assert dict(zip(ours.filenames(fmt), (s.keys for s in ours.shards), strict=True)) == (
            theirs.filename_to_tensors
        )
        assert ours.weight_map(fmt) == dict(sorted(theirs.tensor_to_filename.items()))
        assert ours.total_size == theirs.metadata["total_size"]
    unique = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in sd.values()}
    if all(t.nelement() for t in sd.values()):
        assert ours.total_size == sum(unique.values())


@given(sd=state_dicts(), limit=st.integers(0, 400), fmt=st.sampled_from(["safetensors", "bin"]))
@SETTINGS
def test_files_are_byte_identical_to_huggingface_hub(
    sd: dict[str, torch.Tensor], limit: int, fmt: str
) -> None:
    safe = fmt == "safetensors"
    with tempfile.TemporaryDirectory(prefix="bigviz-ck-") as tmp:
        ours, theirs = Path(tmp) / "ours", Path(tmp) / "theirs"
        theirs.mkdir()
        save_sharded(dict(sd), ours, max_shard_size=limit, format=fmt)  # type: ignore[arg-type]
        hf.save_torch_state_dict(dict(sd), theirs, max_shard_size=limit, safe_serialization=safe)
        names = sorted(p.name for p in ours.iterdir())
        assert names == sorted(p.name for p in theirs.iterdir())
        for name in names:
            if name.endswith(".index.json"):
                assert json.loads((ours / name).read_text()) == json.loads(
                    (theirs / name).read_text()
                )
            elif name.endswith(".safetensors"):
                # the __metadata__ map is a Rust HashMap: its key order varies run to run,
                # so compare the parsed header and the data bytes
                assert _split_safetensors(ours / name) == _split_safetensors(theirs / name)
            else:
                assert filecmp.cmp(ours / name, theirs / name, shallow=False), name


@given(
    sd=state_dicts(),
    limit=st.integers(0, 400),
    fmt=st.sampled_from(["safetensors", "bin"]),
    assign=st.booleans(),
)
@SETTINGS
def test_round_trip_is_bit_exact(
    sd: dict[str, torch.Tensor], limit: int, fmt: str, assign: bool
) -> None:
    with tempfile.TemporaryDirectory(prefix="bigviz-ck-") as tmp:
        info = save_sharded(dict(sd), Path(tmp) / "ck", max_shard_size=limit, format=fmt)  # type: ignore[arg-type]
        model = _holder(sd, meta=assign)
        report = load_sharded(model, Path(tmp) / "ck", assign=assign)
        assert report.missing_keys == [] and report.unexpected_keys == []
        loaded = model.state_dict()
        for name, t in sd.items():
            got = loaded[name]
            assert got.dtype == t.dtype and got.shape == t.shape
            assert torch.equal(got.reshape(-1).view(torch.uint8), t.reshape(-1).view(torch.uint8))
        # tied names are still one tensor after loading
        for a in sd:
            for b in sd:
                if sd[a] is sd[b] and sd[a].nelement():
                    assert loaded[a].data_ptr() == loaded[b].data_ptr()
        assert inspect_checkpoint(Path(tmp) / "ck").total_size == info.total_size
