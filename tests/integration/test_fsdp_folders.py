"""A checkpoint folder the user has, loaded by 2 real ranks (gloo on CPU) as saved.

References nobody here wrote: the folders are written by Transformers' ``save_pretrained``
(sharded safetensors with an index; ``.bin`` by huggingface_hub), the hub cache is laid
out as huggingface_hub stores a download, and the reference checksums are recomputed
here from the files with safetensors. The ranks build the model from the folder's
``config.json`` on meta and read the files where they are: ``fsdp-hf`` hands the folder
itself to ``HuggingFaceStorageReader`` (no converted copy anywhere), and every rank's
weights are checked shard by shard against the files (positioned checksums of each
rank's local shards, summed over the ranks).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import bigviz
from bigviz._errors import ConfigError
from bigviz.data.result import RunResult
from bigviz.runner.plan import Settings, plan_runs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import hf_zoo
from hf_zoo import file_checksums, snapshot

pytest.importorskip("transformers")

#: the strategies each folder runs under (the issue's two)
RUNS = ("fsdp-hf", "every-rank-loads")


def weight_files(root: Path) -> list[Path]:
    """Weight files under ``root``, links not followed (a copy, not the user's files)."""
    return [Path(d) / n for d, _, names in os.walk(root) for n in names
            if n.endswith((".safetensors", ".bin", ".distcp"))]


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # GIVEN a ~8 MB GPT-2 saved by Transformers in 3 MB safetensors shards (with an index)
    return hf_zoo.user_gpt2(tmp_path_factory, size=8_000_000, max_shard_size="3MB")


@pytest.fixture(scope="module")
def runs(gpt2: Path, tmp_path_factory: pytest.TempPathFactory
         ) -> tuple[dict[str, RunResult], dict[str, tuple[int, int]], Path]:
    work = tmp_path_factory.mktemp("work")
    before = snapshot(gpt2)
    # WHEN 2 ranks load it as saved, with each strategy
    results = {s: bigviz.run(s, model=str(gpt2), nproc=2, work_dir=work, timeout=300)
               for s in RUNS}
    return results, before, work


def _check_rank_weights(r: RunResult) -> None:
    assert r.outcome == "ok", r.error
    assert r.params["nproc"] == 2
    # every rank's weights equal the files (fsdp-hf: its shards, at their offsets)
    assert [f.verify for f in r.checks.ranks] == ["ok", "ok"]
    assert r.checks.weights == "ok"


@pytest.mark.slow
@pytest.mark.parametrize("name", RUNS)
def test_ranks_load_the_folder_as_saved(runs: tuple[dict[str, RunResult], Any, Path],
                                        gpt2: Path, name: str) -> None:
    r = runs[0][name]
    _check_rank_weights(r)
    # THEN the run names the folder as given, its files as saved in their own format
    assert r.model == str(gpt2)
    assert r.shard_size is None and r.format == "safetensors"
    assert r.params["as_saved"].startswith(f"{len(list(gpt2.glob('*.safetensors')))} × ")
    # the checkpoint the ranks read is the user's folder itself (a link to it)
    ckpt = Path(r.params["checkpoint"])
    assert ckpt.is_symlink() and ckpt.resolve() == gpt2.resolve()
    # and the checksums the ranks were checked against are the files' own
    expected = json.loads((ckpt.parent / "checksums.json").read_text())
    assert expected == file_checksums(gpt2)
    # every rank built the model (on meta) and read its weights
    for lane in r.recording.ranks:
        got = {p.name for p in lane.phases}
        assert {"build", "first use", "loaded"} <= got
        if name == "fsdp-hf":
            assert {"shard", "allocate", "read"} <= got
            read = next(p for p in lane.phases if p.name == "read")
            assert read.detail["how"] == "dcp.load(HuggingFaceStorageReader)"
            assert Path(read.detail["folder"]).resolve() == gpt2.resolve()
    # the prediction (per rank about M/N for fsdp-hf) holds on the node
    assert r.checks.prediction is not None and r.checks.prediction.agrees, (
        r.checks.prediction)


@pytest.mark.slow
def test_nothing_is_written_into_the_folder_and_nothing_converted(
        runs: tuple[dict[str, RunResult], dict[str, tuple[int, int]], Path],
        gpt2: Path) -> None:
    results, before, work = runs
    assert all(r.outcome == "ok" for r in results.values())
    # THEN the user's folder is as it was: same entries, sizes and mtimes
    assert snapshot(gpt2) == before
    # AND the work folder holds no weights of its own: no converted copy (DCP or
    # safetensors) was made for fsdp-hf, the ranks read the user's files
    assert weight_files(work) == []


@pytest.mark.slow
def test_an_hf_id_from_the_local_cache_runs_on_ranks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a Llama (rotary buffers computed, not saved) laid out in a temporary hub
    # cache as huggingface_hub stores a download
    home, snap = hf_zoo.cached_llama(tmp_path, monkeypatch, size=6_000_000,
                                     max_shard_size="2MB")
    before = snapshot(home)
    # WHEN fsdp-hf runs the id on 2 ranks
    r = bigviz.run("fsdp-hf", model="hf:acme/tiny-llama", nproc=2, work_dir=tmp_path / "w",
                   timeout=300)
    # THEN each rank holds its shard of the cached files' weights; the cache is untouched
    _check_rank_weights(r)
    assert r.model == "hf:acme/tiny-llama"
    assert Path(r.params["source"]) == snap.resolve()
    ckpt = Path(r.params["checkpoint"])
    assert json.loads((ckpt.parent / "checksums.json").read_text()) == file_checksums(snap)
    assert snapshot(home) == before
    assert weight_files(tmp_path / "w") == []


@pytest.mark.slow
def test_torchrun_ranks_prepare_the_folder_themselves(gpt2: Path, tmp_path: Path) -> None:
    # GIVEN torchrun starts two ranks of `-m bigviz.runner.distributed` on the folder
    before = snapshot(gpt2)
    out = tmp_path / "result.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", "2", "-m", "bigviz.runner.distributed", "fsdp-hf",
           "--model", str(gpt2), "--work-dir", str(tmp_path / "w"), "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # THEN rank 0 wrote the result: the files as saved, every rank's shard checked
    r = RunResult.from_json(out.read_text())
    _check_rank_weights(r)
    assert r.shard_size is None and r.params["dtype"] == "float32"
    assert snapshot(gpt2) == before


# -- checked before any rank starts (no processes) -----------------------------------


@pytest.fixture(scope="module")
def bin_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # GIVEN GPT-2 as .bin shards written by huggingface_hub, with its config.json
    from huggingface_hub import save_torch_state_dict

    model = hf_zoo.model_class("gpt2")(hf_zoo.config("gpt2", 1_000_000))
    folder = tmp_path_factory.mktemp("user") / "gpt2-bin"
    folder.mkdir()
    save_torch_state_dict(model.state_dict(), folder, safe_serialization=False,
                          max_shard_size="500KB")
    model.config.architectures = ["GPT2LMHeadModel"]  # what save_pretrained records
    model.config.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("name", ["fsdp-hf", "shared-mmap"])
def test_a_bin_folder_is_refused_in_one_line_for_safetensors_readers(
        bin_folder: Path, tmp_path: Path, name: str) -> None:
    before = snapshot(bin_folder)
    # WHEN a strategy that reads safetensors only is asked to read .bin files as saved
    with pytest.raises(ConfigError) as err:
        bigviz.run(name, model=str(bin_folder), nproc=2, work_dir=tmp_path)
    msg = str(err.value)
    # THEN one line names the folder, the strategy, why, and the fixes
    assert "\n" not in msg
    assert str(bin_folder) in msg and f"{name!r}" in msg and "saved as bin" in msg
    assert {"fsdp-hf": "HuggingFaceStorageReader", "shared-mmap": "mapped"}[name] in msg
    assert "--max-shard-size" in msg and "rank0-broadcast" in msg
    # and nothing was prepared or written
    assert not (tmp_path / "checkpoints").exists() or not any(
        (tmp_path / "checkpoints").iterdir())
    assert snapshot(bin_folder) == before


def test_a_sweep_on_ranks_plans_the_folder_as_saved(gpt2: Path, bin_folder: Path) -> None:
    # WHEN a sweep on 2 ranks is planned for the folders (nothing runs)
    plan = plan_runs(Settings(str(gpt2), nproc=2),
                     strategies=["fsdp-hf", "every-rank-loads"], shard_sizes=None,
                     device_maps=["cpu"], formats=["safetensors"], max_memory=None,
                     ram_budget=None)
    # THEN its shard-size axis is the files as saved, in their format and dtype
    assert [(r.strategy.name, r.shard, r.format) for r in plan.runs] == [
        ("fsdp-hf", None, "safetensors"), ("every-rank-loads", None, "safetensors")]
    assert plan.config["shard_sizes"] == ["as saved"]
    assert plan.config["dtype"] == "float32"
    files = len(list(gpt2.glob("*.safetensors")))
    assert plan.runs[0].label(2).startswith(f"fsdp-hf · {files} × ")
    assert plan.runs[0].label(2).endswith(" · safetensors × 2")
    # AND a .bin folder skips fsdp-hf as saved, saying how to reshard, and runs the rest
    plan = plan_runs(Settings(str(bin_folder), nproc=2),
                     strategies=["fsdp-hf", "rank0-broadcast"], shard_sizes=None,
                     device_maps=["cpu"], formats=["safetensors"], max_memory=None,
                     ram_budget=None)
    assert [(r.strategy.name, r.format) for r in plan.runs] == [("rank0-broadcast", "bin")]
    assert len(plan.skipped) == 1 and plan.skipped[0].startswith("fsdp-hf × bin")
    assert "reshard" in plan.skipped[0]
