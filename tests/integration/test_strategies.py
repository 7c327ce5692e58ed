"""Strategies in this process (no runner): each loads exactly the checkpoint's weights,
predictions follow the DESIGN.md formulas, and bad devices are refused with clear errors.

The runner tests (test_run.py) measure the same strategies in fresh processes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import bigviz.strategies as strategies
from bigviz import StrategyError
from bigviz.checkpoint import inspect_checkpoint, save_sharded
from bigviz.models import build_model
from bigviz.strategies import RunContext, normalize_max_memory, validate_device_map
from bigviz.strategies.weights import checksum, compare_checksums, first_use

MODEL = "gpt:6MB"


class PhaseLog:
    """A stand-in recorder that only remembers phase names (the real one is tested in
    the recorder's own tests and through the runner)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    @contextlib.contextmanager
    def phase(self, name: str, **detail: Any) -> Iterator[None]:
        self.names.append(name)
        yield

    def mark(self, name: str, **detail: Any) -> None:
        pass


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, list[int]]]]:
    """The same model saved as safetensors and .bin in ~1.5 MB shards, with checksums."""
    root = tmp_path_factory.mktemp("ckpt")
    model = build_model(MODEL, seed=7)
    sums = {k: checksum(v) for k, v in model.state_dict().items()}
    out = {}
    for fmt in ("safetensors", "bin"):
        save_sharded(model, root / fmt, max_shard_size="1500kB", format=fmt)  # type: ignore[arg-type]
        out[fmt] = (root / fmt, sums)
    return out


def _ctx(path: Path, tmp_path: Path, **kw: Any) -> tuple[RunContext, PhaseLog]:
    rec = PhaseLog()
    info = inspect_checkpoint(path)
    return RunContext(model=MODEL, checkpoint=path, info=info, recorder=rec,
                      scratch=tmp_path, **kw), rec


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        *[(n, f) for n in ("naive", "sharded", "meta", "mmap", "dispatch")
          for f in ("safetensors", "bin")],
        ("accelerate", "bin"),  # safetensors: through the runner in test_run.py
    ],
)
def test_every_strategy_loads_exactly_the_checkpoint(
    name: str, fmt: str, ckpts: dict[str, Any], tmp_path: Path
) -> None:
    # GIVEN a sharded checkpoint of a seeded model, and checksums taken before saving
    path, expected = ckpts[fmt]
    ctx, rec = _ctx(path, tmp_path, format=fmt)
    # WHEN the strategy loads it (the model it builds has other, seed-1 weights)
    model = strategies.get(name).run(ctx)
    # THEN every weight equals the checkpoint's, tied weights included
    assert compare_checksums(expected, first_use(model)) is None
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    n = inspect_checkpoint(path).n_shards
    assert n >= 3
    if name == "accelerate":  # one library call; its files show up as automatic phases
        assert rec.names == ["build", "load"]
    else:
        assert f"load shard {n}/{n}" in rec.names or f"read shard {n}/{n}" in rec.names


def test_checksums_catch_a_single_changed_value(ckpts: dict[str, Any], tmp_path: Path) -> None:
    path, expected = ckpts["safetensors"]
    ctx, _ = _ctx(path, tmp_path)
    model = strategies.get("meta").run(ctx)
    with torch.no_grad():
        w = model.transformer.h[1].mlp.c_fc.weight
        w.view(-1)[123] += 1e-3
    msg = compare_checksums(expected, first_use(model))
    assert msg is not None and "transformer.h.1.mlp.c_fc.weight" in msg


def test_checksum_depends_on_bytes_not_on_alignment() -> None:
    base = torch.arange(1001, dtype=torch.float32)
    shifted = torch.cat([torch.zeros(1), base])[1:]  # same values at an odd offset
    assert checksum(base) == checksum(shifted)
    assert checksum(base) != checksum(base.flip(0)[:1000].flip(0).contiguous())
    assert checksum(torch.zeros(0)) == [0, 0]


def test_dispatch_offloads_to_disk_and_still_serves_the_right_weights(
    ckpts: dict[str, Any], tmp_path: Path
) -> None:
    # GIVEN a device map sending two blocks to disk
    path, expected = ckpts["safetensors"]
    dmap = {"transformer.h.0": "disk", "transformer.h.1": "disk", "": "cpu"}
    ctx, rec = _ctx(path, tmp_path, device_map=dmap)
    # WHEN dispatch loads it
    model = strategies.get("dispatch").run(ctx)
    # THEN those weights are memmap files in the scratch folder, not in the model
    assert model.transformer.h[0].mlp.c_fc.weight.is_meta
    assert (tmp_path / "offload" / "index.json").exists()
    assert any(p.suffix == ".dat" for p in (tmp_path / "offload").iterdir())
    assert ctx.notes["placement"]["disk"] > 0
    # AND reading them through accelerate's hooks gives the checkpoint's values
    assert compare_checksums(expected, first_use(model)) is None
    assert model(torch.zeros(1, 3, dtype=torch.long)).shape[-1] == model.config["vocab"]
    assert rec.names[:2] == ["build", "plan"] and "dispatch" in rec.names


@pytest.mark.parametrize("name", ["accelerate", "transformers"])
def test_library_adapters_take_nested_device_maps_with_disk(
    name: str, ckpts: dict[str, Any], tmp_path: Path
) -> None:
    # GIVEN a map nesting a disk block inside a CPU model (accelerate's own hooks need
    # disjoint entries; the adapters flatten it)
    if strategies.get(name).unavailable():
        pytest.skip(f"{name} not installed")
    import json

    from bigviz.models import transformers_config

    path, expected = ckpts["safetensors"]
    (path / "config.json").write_text(json.dumps(transformers_config(MODEL)))
    ctx, _ = _ctx(path, tmp_path, device_map={"": "cpu", "transformer.h.1": "disk"})
    model = strategies.get(name).run(ctx)
    # THEN block 1 is offloaded, the rest in RAM, and every weight is the checkpoint's
    assert ctx.notes["placement"]["disk"] > 0 and ctx.notes["placement"]["cpu"] > 0
    assert compare_checksums(expected, first_use(model)) is None


def test_save_strategy_writes_a_loadable_checkpoint(ckpts: dict[str, Any], tmp_path: Path) -> None:
    path, expected = ckpts["bin"]
    ctx, rec = _ctx(path, tmp_path, format="bin", shard_size=1_500_000, seed=7)
    model = strategies.get("save").run(ctx)
    saved = inspect_checkpoint(ctx.notes["saved_to"])
    assert saved.format == "bin" and saved.n_shards >= 3
    assert compare_checksums(expected, first_use(model)) is None
    assert rec.names == ["build", "save"]


def test_transformers_adapter_loads_the_zoo_gpt(ckpts: dict[str, Any], tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    import json

    from bigviz.models import transformers_config

    path, expected = ckpts["safetensors"]
    (path / "config.json").write_text(json.dumps(transformers_config(MODEL)))
    ctx, _ = _ctx(path, tmp_path)
    model = strategies.get("transformers").run(ctx)
    assert type(model).__name__ == "GPT2LMHeadModel"
    assert compare_checksums(expected, first_use(model)) is None


def test_transformers_adapter_states_which_models_it_runs() -> None:
    s = strategies.get("transformers")
    if s.unavailable():
        pytest.skip("transformers not installed")
    with pytest.raises(StrategyError, match=r"runs 'gpt:<size>' models and Transformers "
                                            r"checkpoint folders, not 'mlp:10MB'"):
        s.check(model="mlp:10MB", format="safetensors", device_map="cpu")


def test_predictions_follow_the_design_table(ckpts: dict[str, Any]) -> None:
    info = inspect_checkpoint(ckpts["safetensors"][0])
    m, s = info.total_size, max(f.bytes for f in info.files)
    get = strategies.get
    assert (get("naive").predict(info).ram_peak, get("naive").predict(info).formula) == (2 * m,
                                                                                          "2 × M")
    assert get("sharded").predict(info).ram_peak == m + s
    assert get("meta").predict(info).ram_peak == m
    mm = get("mmap").predict(info)
    assert (mm.ram_anon, mm.ram_file) == (0, m)
    # a GPU map: CPU holds one shard in transit, the GPU the whole model
    gpu = get("dispatch").predict(info, "cuda:0")
    assert gpu.ram_peak == s and gpu.vram == {"cuda:0": m}
    disk = get("dispatch").predict(info, "disk")
    assert disk.ram_peak == s and disk.vram == {}
    split = get("dispatch").predict(info, placement={"cpu": m // 2, "cuda:1": m - m // 2})
    assert split.ram_peak == m // 2 + s and split.vram == {"cuda:1": m - m // 2}


def test_unknown_strategy_lists_the_valid_ones() -> None:
    with pytest.raises(StrategyError) as exc:
        strategies.get("fast")
    for name in ("naive", "sharded", "meta", "mmap", "dispatch", "save"):
        assert name in str(exc.value)


def test_cpu_only_strategies_refuse_device_maps() -> None:
    with pytest.raises(StrategyError, match="CPU RAM only"):
        strategies.get("meta").check(model=MODEL, format="safetensors", device_map="disk")


def test_a_combination_a_strategy_cannot_run_is_named_before_check_refuses_it() -> None:
    # GIVEN strategies and options that cannot go together on any machine
    meta, mmap_dist = strategies.get("meta"), strategies.get("shared-mmap")
    cases = [(meta, "safetensors", "disk", "CPU RAM only"),
             (mmap_dist, "bin", "cpu", "does not read format 'bin'")]
    for strat, fmt, dmap, text in cases:
        # WHEN asked, the strategy names the reason (a sweep skips the combination)
        why = strat.incompatible(model=MODEL, format=fmt, device_map=dmap)
        assert why is not None and text in why
        # THEN check() refuses the same combination with that reason
        with pytest.raises(StrategyError) as exc:
            strat.check(model=MODEL, format=fmt, device_map=dmap)
        assert str(exc.value) == why
    assert meta.incompatible(model=MODEL, format="bin", device_map="cpu") is None


@pytest.mark.parametrize(
    ("device_map", "n_cuda", "message"),
    [
        ("cuda:3", 0, "cuda:3 requested but no CUDA device is available"),
        ("cuda", 0, "cuda:0 requested but no CUDA device is available"),
        ("cuda:3", 1, "cuda:3 requested but only 1 CUDA device is available"),
        ("cuda:2", 2, "only 2 CUDA devices are available (cuda:0..cuda:1)"),
        ({"transformer": 1, "": "cpu"}, 1, "cuda:1 requested but only 1"),
        ("gpu", 1, "device_map 'gpu' is not valid"),
        ({"": "tpu"}, 1, "'tpu' is not a device"),
    ],
)
def test_device_maps_naming_missing_gpus_are_refused(
    device_map: Any, n_cuda: int, message: str
) -> None:
    with pytest.raises(StrategyError) as exc:
        validate_device_map(device_map, n_cuda=n_cuda)
    assert message in str(exc.value)


def test_device_maps_on_a_machine_with_gpus_pass() -> None:
    # a fake GPU count: these are the code paths a real GPU takes
    assert validate_device_map("cuda", n_cuda=1) == "cuda:0"
    assert validate_device_map({"a": 1, "": "disk"}, n_cuda=2) == {"a": "cuda:1", "": "disk"}
    assert normalize_max_memory({0: "10GB", "cpu": "2GiB"}, n_cuda=1) == {0: 10**10,
                                                                        "cpu": 2 * 2**30}


@pytest.mark.parametrize(
    ("max_memory", "device_map", "message"),
    [
        ({"cpu": "1MB"}, "cpu", "cannot hold the"),
        ({"cpu": "0GB"}, "auto", "must be a positive size"),
        ({"cpu": "lots"}, "auto", "max_memory['cpu'] = 'lots'"),
        ({3: "1GB"}, "auto", "cuda:3 requested but no CUDA device"),
    ],
)
def test_impossible_max_memory_is_refused(max_memory: Any, device_map: str, message: str) -> None:
    with pytest.raises(StrategyError) as exc:
        normalize_max_memory(max_memory, n_cuda=0, model_bytes=6_000_000, device_map=device_map)
    assert message in str(exc.value)
