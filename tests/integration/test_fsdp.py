"""FSDP2 strategies on 2 real ranks (gloo on CPU): each rank ends with its shard only
(``fsdp-dcp-save`` then writes its shards with ``dcp.save``; ``fsdp-hf-save`` as
safetensors, consolidated by rank 0 into full tensors and read back). ``dcp-consolidate``
consolidates a DCP safetensors checkpoint into full-tensor files with torch's own
consolidation, each rank writing its share of the files, which are read back.

Each strategy runs once (module fixture, a 40 MB GPT in 10 MB safetensors shards). The
rank program checks the weights shard by shard: every rank sums the checksums of its
local shards at their offsets in the full tensors, the ranks add their sums up, and the
totals must equal the checksums of the checkpoint's tensors (``verify == "ok"``).
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest
import torch

import bigviz.strategies as strategies
import bigviz.strategies.dcp as dcp_module
import bigviz.strategies.fsdp as fsdp_module
from bigviz._errors import ConfigError, StrategyError
from bigviz.checkpoint import inspect_checkpoint, save_sharded
from bigviz.data.result import RunResult
from bigviz.runner.launcher import run_distributed
from bigviz.strategies.dcp import (
    DCP_DIR,
    DCP_HF_DIR,
    check_dcp_hf,
    read_dcp_hf_metadata,
    save_dcp_hf,
    saved_checksums,
)
from bigviz.strategies.fsdp import _positioned_sum, shard_bytes
from bigviz.strategies.weights import checksum

MODEL = "gpt:40MB"
SHARD = "10MB"
FSDP = ("fsdp-broadcast", "fsdp-dcp", "fsdp-hf", "fsdp-dcp-save", "fsdp-hf-save")
#: allocator slack either side of a rank's predicted range
SLACK = 4 << 20


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, RunResult]:
    work = tmp_path_factory.mktemp("fsdp-work")
    return {s: run_distributed(s, nproc=2, model=MODEL, max_shard_size=SHARD, work_dir=work,
                               timeout=300)
            for s in FSDP}


def test_positioned_sums_of_any_slices_add_up_to_the_checksum() -> None:
    g = torch.Generator().manual_seed(0)
    for n in (1, 5, 8, 13, 64, 1001):
        t = torch.randint(-(2**31), 2**31 - 1, (n,), generator=g, dtype=torch.int32)
        flat = t.view(torch.uint8)
        total = flat.numel()
        want = checksum(t)[1]
        for cuts in ([], [total // 2], [3, 11], [1, 2, 9, total - 1]):
            edges = [0, *[c for c in cuts if 0 < c < total], total]
            got = sum(_positioned_sum(flat[a:b], a, total)
                      for a, b in itertools.pairwise(edges))
            got %= 1 << 64
            assert got - (1 << 64) * (got >= 1 << 63) == want, (n, cuts)
        # one changed byte changes the sum of the parts
        bad = flat.clone()
        bad[total // 2] ^= 1
        parts = (_positioned_sum(bad[: total // 2], 0, total)
                 + _positioned_sum(bad[total // 2:], total // 2, total)) % (1 << 64)
        assert parts - (1 << 64) * (parts >= 1 << 63) != want


def test_the_dcp_names_moved_to_their_module_are_still_fsdps() -> None:
    # GIVEN the DCP copies, their checks and dcp-consolidate, now in bigviz.strategies.dcp
    moved = set(dcp_module.__all__)
    # THEN code that imported them from bigviz.strategies.fsdp gets the same objects
    assert moved <= set(fsdp_module.__all__)
    for name in moved:
        assert getattr(fsdp_module, name) is getattr(dcp_module, name), name
    # and the registry holds the one dcp-consolidate
    assert type(strategies.get("dcp-consolidate")) is dcp_module.DcpConsolidate


def test_shard_bytes_pads_rows_per_rank() -> None:
    from types import SimpleNamespace as NS

    info = NS(tensors={"w": NS(shape=[5, 4], nbytes=80), "b": NS(shape=[3], nbytes=12),
                       "s": NS(shape=[], nbytes=4)})
    assert shard_bytes(info, 1) == 96
    assert shard_bytes(info, 2) == 3 * 16 + 2 * 4 + 4
    assert shard_bytes(info, 4) == 2 * 16 + 1 * 4 + 4


def test_fsdp_hf_refuses_bin_files_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"fsdp-hf.*format='safetensors'"):
        run_distributed("fsdp-hf", nproc=2, model=MODEL, format="bin", work_dir=tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", FSDP)
def test_every_rank_holds_its_shard_bit_exact(results: dict[str, RunResult],
                                              name: str) -> None:
    r = results[name]
    assert r.outcome == "ok", r.error
    assert r.params["nproc"] == 2
    assert [f.verify for f in r.checks.ranks] == ["ok", "ok"]
    # the phases the strategy names, on every rank
    for lane in r.recording.ranks:
        got = {p.name for p in lane.phases}
        assert {"build", "shard", "allocate", "first use", "loaded"} <= got
        assert ("read" in got) == (name != "fsdp-broadcast" or lane.rank == 0)
        if name == "fsdp-broadcast":
            assert "broadcast" in got
        assert ("save" in got) == name.endswith("-save")
        # rank 0 read the consolidated safetensors back: their checksums are the
        # checkpoint's (else the run is an error)
        assert ("check saved" in got) == (name == "fsdp-hf-save" and lane.rank == 0)


@pytest.mark.slow
@pytest.mark.parametrize("name", FSDP)
def test_each_rank_peaks_within_its_predicted_range(results: dict[str, RunResult],
                                                    name: str) -> None:
    r = results[name]
    info = inspect_checkpoint(Path(r.params["checkpoint"]))
    strat = strategies.get(name)
    m = r.model_bytes
    assert m is not None
    for f in r.checks.ranks:
        assert f.rank is not None and f.ram_peak is not None
        low, high = strat.predict_rank(info, f.rank, nproc=2).bounds  # type: ignore[attr-defined]
        assert low - SLACK <= f.ram_peak <= high + SLACK, (
            f"rank {f.rank}: {f.ram_peak / m:.2f} × M outside "
            f"[{low / m:.2f}, {high / m:.2f}] × M")
        if name not in ("fsdp-broadcast", "fsdp-hf-save"):
            # a rank reads about half the model, far below a full copy
            assert f.ram_peak < 0.8 * m
        elif name == "fsdp-broadcast" and f.rank:
            # a receiver holds its half and the tensor in flight, never a full copy
            assert f.ram_peak < m
    check = r.checks.prediction
    assert check is not None and check.agrees, check and check.says


@pytest.mark.slow
def test_sharded_loads_hold_about_one_model_per_node(results: dict[str, RunResult]) -> None:
    m = results["fsdp-hf"].model_bytes
    assert m is not None
    for name in ("fsdp-dcp", "fsdp-hf", "fsdp-dcp-save"):
        peak = results[name].ram_peak
        assert peak is not None and peak < 1.5 * m, (name, peak)
    # rank 0 read the whole state dict: the node held M more at its peak
    peak = results["fsdp-broadcast"].ram_peak
    assert peak is not None and peak > 1.8 * m


@pytest.mark.slow
def test_fsdp_dcp_saved_its_dcp_copy_once_beside_the_checkpoint(
        results: dict[str, RunResult]) -> None:
    ckpt = Path(results["fsdp-dcp"].params["checkpoint"])
    dcp = ckpt.parent / DCP_DIR
    assert (dcp / ".metadata").is_file()
    assert sum(p.stat().st_size for p in dcp.iterdir()) >= inspect_checkpoint(ckpt).total_size


@pytest.mark.slow
def test_a_dcp_folder_of_another_model_is_a_clear_error(results: dict[str, RunResult]) -> None:
    from torch.distributed.checkpoint import state_dict_saver

    ckpt = Path(results["fsdp-dcp"].params["checkpoint"])
    dcp = ckpt.parent / DCP_DIR
    kept = dcp.with_name("dcp-kept")
    dcp.rename(kept)
    try:
        with pytest.warns(UserWarning, match="single process"):
            state_dict_saver.save({"other.weight": torch.zeros(4, 4)},
                                  checkpoint_id=str(dcp), no_dist=True)
        r = run_distributed("fsdp-dcp", nproc=2, model=MODEL, max_shard_size=SHARD,
                            work_dir=ckpt.parent.parent.parent, timeout=300)
    finally:
        shutil.rmtree(dcp, ignore_errors=True)
        kept.rename(dcp)
    assert r.outcome == "error"
    assert "saved from another model" in (r.error or ""), r.error
    assert str(dcp) in (r.error or "")
    assert r.checks.failed_rank in (0, 1)
    assert r.phase_reached == "allocate"  # checked before any rank read a byte


# -- dcp-consolidate ----------------------------------------------------------------


@pytest.fixture(scope="module")
def consolidated(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    work = tmp_path_factory.mktemp("consolidate-work")
    return run_distributed("dcp-consolidate", nproc=2, model=MODEL, max_shard_size=SHARD,
                           work_dir=work, timeout=300)


def _small_checkpoint(folder: Path) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    sd = {"a.weight": torch.randn(300, 40, generator=g),
          "b.weight": torch.randn(7, 5, generator=g).to(torch.bfloat16),
          "c.bias": torch.randn(13, generator=g)}
    save_sharded(sd, folder, max_shard_size=20_000)
    return sd


def test_torch_consolidation_of_a_dcp_copy_gives_the_checkpoint_back(tmp_path: Path) -> None:
    from torch.distributed.checkpoint._consolidate_hf_safetensors import (
        consolidate_safetensors_files,
    )

    sd = _small_checkpoint(tmp_path / "checkpoint")
    info = inspect_checkpoint(tmp_path / "checkpoint")
    assert len(info.files) >= 2
    src = save_dcp_hf(tmp_path / "checkpoint", tmp_path / DCP_HF_DIR)
    meta = read_dcp_hf_metadata(src)
    assert meta == {k: (list(t.shape), str(t.dtype).removeprefix("torch."))
                    for k, t in sd.items()}
    check_dcp_hf(src, info)  # the same tensors: no error
    out = tmp_path / "out"
    out.mkdir()
    consolidate_safetensors_files(str(src), str(out), dict.fromkeys(sd, 1))
    assert saved_checksums(out) == {k: list(checksum(t)) for k, t in sd.items()}


def test_a_dcp_copy_of_another_model_is_a_one_line_error(tmp_path: Path) -> None:
    _small_checkpoint(tmp_path / "checkpoint")
    info = inspect_checkpoint(tmp_path / "checkpoint")
    save_sharded({"a.weight": torch.zeros(300, 41), "c.bias": torch.zeros(13)},
                 tmp_path / "other", max_shard_size=20_000)
    src = save_dcp_hf(tmp_path / "other", tmp_path / DCP_HF_DIR)
    with pytest.raises(StrategyError, match="saved from another model") as got:
        check_dcp_hf(src, info)
    assert "\n" not in str(got.value)
    assert str(src) in str(got.value) and "b.weight" in str(got.value)
    with pytest.raises(StrategyError, match="no DCP safetensors checkpoint"):
        read_dcp_hf_metadata(tmp_path / "missing")


@pytest.mark.slow
def test_dcp_consolidate_writes_the_checkpoints_tensors(consolidated: RunResult) -> None:
    r = consolidated
    assert r.outcome == "ok", r.error
    # every rank read the consolidated files' checksums: they are the checkpoint's
    assert [f.verify for f in r.checks.ranks] == ["ok", "ok"]
    ckpt = Path(r.params["checkpoint"])
    files = sorted(f.name for f in inspect_checkpoint(ckpt).files)
    written: dict[int, list[str]] = {}
    for lane in r.recording.ranks:
        assert lane.rank is not None
        got = [p.name for p in lane.phases]
        assert got[0] == "read metadata"
        written[lane.rank] = [n.removeprefix("consolidate ") for n in got
                              if n.startswith("consolidate ")]
        assert ("write index" in got) == (lane.rank == 0)
    # file i by rank i % 2, each file once
    assert written == {0: files[0::2], 1: files[1::2]}
    # the input, DCP's safetensors layout, was saved once beside the checkpoint
    assert len(list((ckpt.parent / DCP_HF_DIR).glob("*.safetensors"))) == len(files)


@pytest.mark.slow
def test_dcp_consolidate_peaks_within_its_range(consolidated: RunResult) -> None:
    r = consolidated
    info = inspect_checkpoint(Path(r.params["checkpoint"]))
    strat = strategies.get("dcp-consolidate")
    m = r.model_bytes
    assert m is not None
    for f in r.checks.ranks:
        assert f.rank is not None and f.ram_peak is not None
        low, high = strat.predict_rank(info, f.rank, nproc=2).bounds  # type: ignore[attr-defined]
        assert low - SLACK <= f.ram_peak <= high + SLACK, (f.rank, f.ram_peak, low, high)
        # streamed tensor by tensor: far below the files it wrote
        assert f.ram_peak < 0.7 * m
    check = r.checks.prediction
    assert check is not None and check.agrees, check and check.says


@pytest.mark.slow
def test_dcp_consolidate_refuses_a_dcp_copy_of_another_model(
        consolidated: RunResult) -> None:
    ckpt = Path(consolidated.params["checkpoint"])
    src = ckpt.parent / DCP_HF_DIR
    kept = src.with_name("dcp-hf-kept")
    src.rename(kept)
    try:
        save_sharded({"other.weight": torch.zeros(4, 4)}, src.with_name("other"))
        save_dcp_hf(src.with_name("other"), src)
        r = run_distributed("dcp-consolidate", nproc=2, model=MODEL, max_shard_size=SHARD,
                            work_dir=ckpt.parent.parent.parent, timeout=300)
    finally:
        shutil.rmtree(src, ignore_errors=True)
        shutil.rmtree(src.with_name("other"), ignore_errors=True)
        kept.rename(src)
    assert r.outcome == "error"
    assert "saved from another model" in (r.error or ""), r.error
    assert str(src) in (r.error or "")
    assert r.phase_reached == "read metadata"  # checked before a byte was written
