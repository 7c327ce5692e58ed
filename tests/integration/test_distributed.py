"""Distributed loads: N real ranks (gloo on CPU), one timeline per rank, node totals.

The three strategies run once each (module fixture, 2 ranks, a 40 MB model in 10 MB
shards) and several tests read their results. A rank that hangs in a user's model
factory (``sleepy_factory`` below) drives the failure tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import bigviz
import bigviz.strategies as strategies
from bigviz._errors import ConfigError, StrategyError
from bigviz.data.recording import Recording, Series
from bigviz.data.result import RunResult
from bigviz.recorder.merge import merge_ranks, node_series
from bigviz.runner.launcher import run_distributed

MODEL = "mlp:40MB"
SHARD = "10MB"
M = 40_000_000


def sleepy_factory() -> Any:
    """A user's model factory that hangs on rank 1 (e.g. waiting on a lock or a download)."""
    from torch import nn

    if os.environ.get("RANK") == "1":
        time.sleep(120)
    return nn.Sequential(nn.Linear(512, 512), nn.Linear(512, 512))


# the ranks import it by name, as they would a user's "package.module:function"
SLEEPY = f"{__name__}:sleepy_factory"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dist-work")


@pytest.fixture(scope="module")
def results(work: Path) -> dict[str, RunResult]:
    # through the public entry point: bigviz.sweep(..., nproc=2) runs each strategy's ranks
    sweep = bigviz.sweep(MODEL, strategies=strategies.names(kind="distributed"),
                         shard_sizes=[SHARD], nproc=2, work_dir=work, timeout=120)
    assert sweep.config["nproc"] == 2 and "nproc=2" in sweep.command
    return {r.strategy: r for r in sweep.results}


@pytest.mark.slow
def test_bigviz_run_with_nproc_launches_ranks(work: Path) -> None:
    r = bigviz.run("shared-mmap", nproc=1, model=MODEL, max_shard_size=SHARD, work_dir=work)
    _ok(r)
    assert [lane.rank for lane in r.recording.ranks] == [0]


def test_nproc_refuses_options_that_only_apply_to_one_process() -> None:
    with pytest.raises(ConfigError, match="device_map='auto'"):
        bigviz.run("shared-mmap", nproc=2, model=MODEL, device_map="auto")
    with pytest.raises(ConfigError, match="nproc 0"):
        bigviz.run("shared-mmap", nproc=0, model=MODEL)
    with pytest.raises(StrategyError, match="every-rank-loads"):
        bigviz.sweep(MODEL, strategies=["naive"], nproc=2)
    # shared-mmap cannot map .bin files: said before anything runs, not half-way through
    with pytest.raises(StrategyError, match="shared-mmap × bin"):
        bigviz.sweep(MODEL, strategies=["shared-mmap"], formats=["bin"], nproc=2)
    with pytest.raises(ConfigError, match="separate programs"):
        bigviz.run("shared-mmap", nproc=2, model=sleepy_factory)


def _ok(r: RunResult) -> None:
    assert r.outcome == "ok", (r.error, r.checks.log_tail)


# -- the measurements -------------------------------------------------------------------


@pytest.mark.slow
def test_every_rank_loads_costs_the_node_one_copy_per_rank(results: dict[str, RunResult]) -> None:
    # GIVEN two ranks that each load the checkpoint on their own (naive)
    r = results["every-rank-loads"]
    _ok(r)
    node, ranks = r.checks.node, r.checks.ranks
    # THEN nothing is shared: the node's PSS is two ranks' anonymous memory
    one_rank_anon = ranks[0].loaded["anon"]
    assert one_rank_anon > 0.9 * M
    assert abs(node.pss_loaded - 2 * one_rank_anon) < 0.15 * 2 * one_rank_anon
    # AND each rank peaked at the naive cost (model + state dict) at least
    for f in ranks:
        assert f.ram_peak_exact and f.ram_peak > 1.8 * M
    assert r.ram_peak is not None and r.ram_peak >= node.pss_loaded


@pytest.mark.slow
def test_a_rank_measures_the_load_not_the_fixed_costs_of_its_process(
    results: dict[str, RunResult],
) -> None:
    # GIVEN two ranks that each run the naive load (predicted 2 × M)
    r = results["every-rank-loads"]
    _ok(r)
    # THEN each rank's exact peak is the naive cost, as in a single-process run: the
    # one-time cost of a process's first module build (~35 MiB, almost 1 × M here) is
    # part of the rank's baseline, not of its "build" phase
    for f in r.checks.ranks:
        assert f.ram_peak < 2.5 * M, f


@pytest.mark.slow
def test_rank0_broadcast_keeps_receivers_below_every_rank_loads(
    results: dict[str, RunResult],
) -> None:
    b, e = results["rank0-broadcast"], results["every-rank-loads"]
    _ok(b)
    # GIVEN rank 1 builds on meta and receives every tensor by broadcast
    recv = b.checks.ranks[1]
    alone = e.checks.ranks[1]
    # THEN its exact peak is about one model, well below a rank that loads by itself
    assert recv.ram_peak < 0.75 * alone.ram_peak
    assert 0.9 * M < recv.ram_peak < 1.3 * M + 16 * 2**20
    # AND only rank 0 read the checkpoint (receivers have no "read" phase)
    lanes = b.recording.ranks
    assert any(p.name == "read" for p in lanes[0].phases)
    assert not any(p.name == "read" for p in lanes[1].phases)
    assert any(p.name == "broadcast" and p.detail.get("role") == "receive"
               for p in lanes[1].phases)


@pytest.mark.slow
def test_shared_mmap_counts_file_pages_once(results: dict[str, RunResult]) -> None:
    r = results["shared-mmap"]
    _ok(r)
    node, ranks = r.checks.node, r.checks.ranks
    # GIVEN every rank holds the whole model in file-backed pages (its RSS says M)
    for f in ranks:
        assert f.loaded["file"] > 0.9 * M
        assert f.loaded["anon"] < 0.1 * M
    # THEN summing RSS would count the pages twice, but node PSS counts them once
    assert node.rss_loaded_sum > 1.8 * M
    assert 0.85 * M < node.pss_loaded < 1.3 * M
    # AND so does the node peak over the whole run, while the pages were being mapped:
    # far from the 2 × M that counting each rank's pages would give (the margin over M is
    # the ranks' own transient buffers, ~12 MB on this 40 MB model, more under load)
    assert r.ram_peak is not None and r.ram_peak < 1.5 * M
    # AND the prediction (M once per node) agrees
    assert r.predicted is not None and r.predicted.ram_peak == r.model_bytes
    assert r.checks.prediction.agrees


@pytest.mark.slow
def test_every_rank_ends_with_the_checkpoint_weights(results: dict[str, RunResult]) -> None:
    for name, r in results.items():
        _ok(r)
        assert r.checks.weights == "ok", name
        assert [f.verify for f in r.checks.ranks] == ["ok", "ok"], name
        assert [f.rank for f in r.checks.ranks] == [0, 1]


@pytest.mark.slow
def test_lanes_share_one_clock_and_node_series_sum_them(results: dict[str, RunResult]) -> None:
    rec = results["every-rank-loads"].recording
    assert [lane.rank for lane in rec.ranks] == [0, 1]
    # GIVEN both ranks leave the "loaded" phase through the same barrier
    ends = [lane.phase("loaded").end for lane in rec.ranks]
    assert None not in ends
    # THEN on the merged clock they end together (same host: one monotonic clock)
    assert abs(ends[0] - ends[1]) < 0.25  # type: ignore[operator]
    assert rec.meta["clock_alignment"] == "monotonic"
    # AND node.anon at any time is the sum of the two lanes at that time
    anon = rec.series["node.anon"]
    t = anon.t[len(anon.t) // 2]
    assert anon.at(t) == sum(lane.series["ram.anon"].at(t) or 0 for lane in rec.ranks)
    # AND node.pss holds node-wide readings over the load (the launcher reads every
    # rank at once) and, at the "loaded" mark, the sum of the ranks' exact snapshots
    node = results["every-rank-loads"].checks.node
    pss = rec.series["node.pss"]
    assert pss.source.startswith("launcher")
    marks = {m.name: m.t for m in rec.ranks[0].marks}
    during = [t for t in pss.t if marks["baseline"] < t < marks["loaded"]]
    # (the launcher backs off to 20 × the cost of a round of smaps reads, so a load of
    # this 40 MB model, ~0.15 s on a loaded machine, may get a single node-wide reading)
    assert len(during) >= 1
    assert pss.at(marks["loaded"]) == node.pss_loaded + node.baseline["pss"]
    # AND the whole result survives JSON exactly
    r = results["every-rank-loads"]
    assert RunResult.from_json(r.to_json()) == r


@pytest.mark.slow
def test_wrong_weights_on_the_ranks_is_an_error(work: Path, results: dict[str, RunResult]) -> None:
    # GIVEN the checksums beside the checkpoint disagree with it for one tensor
    folder = Path(results["shared-mmap"].params["checkpoint"]).parent
    sums_path = folder / "checksums.json"
    original = sums_path.read_text()
    sums = json.loads(original)
    key = sorted(sums)[0]
    sums[key] = [sums[key][0], sums[key][1] + 1]
    sums_path.write_text(json.dumps(sums))
    try:
        r = run_distributed("rank0-broadcast", nproc=2, model=MODEL, max_shard_size=SHARD,
                            work_dir=work, timeout=120)
    finally:
        sums_path.write_text(original)
    # THEN every rank reports the mismatch and the run is not "ok"
    assert r.outcome == "error"
    assert r.error is not None and "rank 0" in r.error and "rank 1" in r.error
    assert key in r.error


# -- failures ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_rank_stops_the_job_and_is_named(work: Path) -> None:
    killed: list[int] = []

    def on_event(ev: dict[str, Any]) -> None:
        # WHEN rank 1 enters its "build" phase, something kills it with SIGKILL
        if (ev.get("rank") == 1 and ev.get("type") == "phase_start"
                and ev["name"] == "build" and not killed):
            os.kill(ev["pid"], signal.SIGKILL)
            killed.append(ev["pid"])

    t0 = time.monotonic()
    r = run_distributed("every-rank-loads", nproc=2, model=SLEEPY,
                        max_shard_size=SHARD, work_dir=work, on_event=on_event, timeout=120)
    # THEN rank 0 was stopped too (no waiting for the collective's timeout)
    assert time.monotonic() - t0 < 60
    assert killed
    # a kill -9 from outside: the kernel's OOM counter did not move, so not "oom"
    assert r.outcome == "crashed" and "not the OOM killer" in (r.error or "")
    assert r.checks.failed_rank == 1
    assert r.phase_reached == "build"
    assert RunResult.from_json(r.to_json()) == r
    assert r.error is not None and "rank 1" in r.error and "'build'" in r.error
    # AND the partial timeline keeps both lanes
    assert len(r.recording.ranks) == 2 and r.recording.meta["partial"]


@pytest.mark.slow
def test_a_node_budget_stops_every_rank(work: Path, results: dict[str, RunResult]) -> None:
    # GIVEN a node budget that the ranks' baselines fit in but two naive loads do not
    # (each rank needs ~2-3 × M above its baseline)
    base = results["every-rank-loads"].checks.ranks
    idle = sum(f.baseline["anon"] for f in base) + max(f.baseline["file"] for f in base)
    budget = idle + 3 * M
    r = run_distributed("every-rank-loads", nproc=2, model=MODEL, max_shard_size=SHARD,
                        work_dir=work, ram_budget=budget, timeout=120)
    # THEN the job is stopped with the budget named, and which rank was heaviest where
    assert r.outcome == "budget_exceeded"
    assert r.error is not None and r.error.startswith("would not fit in")
    rank = r.checks.failed_rank
    assert rank in (0, 1)
    # AND the phase named is one the heaviest rank had started (from its partial lane)
    lane = r.recording.ranks[rank]
    assert r.phase_reached in {p.name for p in lane.phases}


@pytest.mark.slow
def test_a_hung_rank_times_out_and_is_named(work: Path) -> None:
    r = run_distributed("every-rank-loads", nproc=2, model=SLEEPY,
                        max_shard_size=SHARD, work_dir=work, timeout=12)
    assert r.outcome == "error"
    assert r.error is not None and r.error.startswith("timed out after 12 s")
    # the rank the others wait for is the one named
    assert r.checks.failed_rank == 1
    assert r.checks.rank_phases["1"] == "build"


@pytest.mark.slow
def test_torchrun_runs_the_same_entry_point(work: Path, results: dict[str, RunResult],
                                            tmp_path: Path) -> None:
    # GIVEN torchrun starts two ranks of `-m bigviz.runner.distributed` (checkpoint reused)
    out = tmp_path / "result.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", "2", "-m", "bigviz.runner.distributed", "shared-mmap",
           "--model", MODEL, "--max-shard-size", SHARD, "--work-dir", str(work),
           "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # THEN rank 0 wrote the gathered result: two lanes, node PSS counting the file once
    r = RunResult.from_json(out.read_text())
    _ok(r)
    assert r.params["nproc"] == 2 and len(r.recording.ranks) == 2
    assert r.checks.weights == "ok"
    assert r.checks.node.pss_loaded < 1.3 * M


@pytest.mark.slow
def test_the_command_launches_its_own_ranks(work: Path, results: dict[str, RunResult],
                                            tmp_path: Path) -> None:
    # GIVEN no torchrun variables: `python -m bigviz.runner.distributed` is the launcher
    out = tmp_path / "r.json"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    cmd = [sys.executable, "-m", "bigviz.runner.distributed", "rank0-broadcast", "--nproc", "2",
           "--model", MODEL, "--max-shard-size", SHARD, "--work-dir", str(work),
           "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    # THEN it prints the per-rank summary, exits 0 and writes the result
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 1: peak" in proc.stdout and "weights ok" in proc.stdout
    r = RunResult.from_json(out.read_text())
    assert r.ok and r.params["nproc"] == 2


# -- pure logic (no processes) ------------------------------------------------------------


def test_node_series_sums_where_every_rank_was_measured() -> None:
    a = Series("ram.pss", t=[0.0, 1.0, 2.0, 3.0], v=[10, 20, 30, 40])
    b = Series("ram.pss", t=[0.5, 2.5], v=[1, 2])
    s = node_series("node.pss", [a, b])
    assert s is not None
    assert list(zip(s.t, s.v, strict=True)) == [(0.5, 11), (1.0, 21), (2.0, 31), (2.5, 32)]
    assert node_series("node.pss", [a, Series("ram.pss")]) is None


def test_node_pss_skips_instants_with_stale_readings() -> None:
    # GIVEN rank A alone held a 100-byte page at t=0; rank B mapped it at t=1.0 (each
    # now 50), but A's next reading only came at t=2.0
    a = Series("ram.pss", t=[0.0, 2.0], v=[100, 50])
    b = Series("ram.pss", t=[0.0, 1.0, 2.0], v=[0, 50, 50])
    # THEN a plain step-hold sum claims 150 bytes at t=1.0, the fresh-only sum never does
    assert node_series("node.pss", [a, b]).v == [100, 150, 100]
    fresh = node_series("node.pss", [a, b], max_age=0.05)
    assert fresh is not None and list(zip(fresh.t, fresh.v, strict=True)) == [(0.0, 100),
                                                                            (2.0, 100)]


def test_merge_aligns_hosts_by_the_barrier() -> None:
    # GIVEN two hosts whose monotonic clocks differ by 1000 s; both left the barrier
    # 0.5 s after their own recorder started, and each marked that moment
    r0 = Recording(marks=[], series={"ram.pss": Series("ram.pss", [0.5], [1])})
    r1 = Recording(series={"ram.pss": Series("ram.pss", [0.5], [2])})
    parts = [
        {"recording": r0, "t0_monotonic": 10.0, "t_sync": 10.5, "host": "a"},
        {"recording": r1, "t0_monotonic": 1010.2, "t_sync": 1010.7, "host": "b"},
    ]
    merged = merge_ranks(parts)
    # THEN the barrier exit is at the same merged time in both lanes
    assert merged.meta["clock_alignment"] == "barrier"
    assert merged.ranks[1].series["ram.pss"].t == [0.5]
    assert merged.series["node.pss"].v == [3]
    # AND on one host the exact monotonic offset is used instead
    for p in parts:
        p["host"] = "a"
    same = merge_ranks(parts)
    assert same.meta["clock_alignment"] == "monotonic"
    assert same.ranks[1].meta["clock_offset"] == pytest.approx(1000.2)


def test_predictions_per_strategy() -> None:
    # M = 1000 bytes in 4 shards of S = 250, largest tensor T = 100
    info = SimpleNamespace(total_size=1000,
                           files=[SimpleNamespace(bytes=250) for _ in range(4)],
                           tensors={"w": SimpleNamespace(nbytes=100)})
    every = strategies.get("every-rank-loads")
    assert every.predict(info, nproc=4).ram_peak == 4 * 2 * 1000
    assert every.predict(info, nproc=4, per_rank="sharded").ram_peak == 4 * 1250
    # the page cache is counted once for the node, whatever N
    assert strategies.get("shared-mmap").predict(info, nproc=4).ram_peak == 1000
    b = strategies.get("rank0-broadcast")
    assert b.predict(info, nproc=3).ram_peak == 3 * 1000
    # on GPUs the receivers need no CPU RAM and rank 0 one shard
    assert b.predict_rank(info, 1, "cuda:1").ram_peak == 0
    assert b.predict_rank(info, 0, "cuda:0").ram_peak == 250
    assert b.predict_rank(info, 1, "cuda:1").vram == {"cuda:1": 1000}


def test_bad_options_fail_before_any_process(tmp_path: Path) -> None:
    with pytest.raises(StrategyError, match="valid: every-rank-loads"):
        run_distributed("everyone", work_dir=tmp_path)
    with pytest.raises(ConfigError, match="nproc"):
        run_distributed("shared-mmap", nproc=0, work_dir=tmp_path)
    with pytest.raises(ConfigError, match="format='safetensors'"):
        run_distributed("shared-mmap", format="bin", work_dir=tmp_path)
    with pytest.raises(StrategyError, match="per_rank 'mmap'"):
        run_distributed("every-rank-loads", per_rank="mmap", work_dir=tmp_path)
    with pytest.raises(ConfigError, match="model spec"):
        run_distributed("shared-mmap", model="gpt:lots", work_dir=tmp_path)
    assert not any(tmp_path.iterdir())  # nothing was saved or started


def test_strategies_refuse_to_run_outside_a_job() -> None:
    from bigviz.strategies import RunContext

    ctx = RunContext(model=MODEL, checkpoint=Path("."), info=None, recorder=None,  # type: ignore[arg-type]
                     scratch=Path("."))
    with pytest.raises(StrategyError, match="run_distributed"):
        strategies.get("shared-mmap").run(ctx)


# -- per_rank and backend from every front end ------------------------------------------

TINY = "gpt:1MB"


@pytest.mark.slow
def test_per_rank_and_backend_reach_the_ranks_from_run_sweep_and_the_cli(
    tmp_path: Path,
) -> None:
    from bigviz.data.result import Sweep

    # GIVEN every-rank-loads on 2 ranks, its per-rank strategy chosen three ways
    r = bigviz.run("every-rank-loads", model=TINY, max_shard_size="500KB", nproc=2,
                   per_rank="meta", backend="gloo", work_dir=tmp_path, timeout=120)
    s = bigviz.sweep(TINY, strategies=["every-rank-loads"], shard_sizes=["500KB"], nproc=2,
                     per_rank="sharded", backend="gloo", work_dir=tmp_path, timeout=120)
    out = tmp_path / "cli.json"
    done = subprocess.run(
        [sys.executable, "-m", "bigviz", "sweep", "--model", TINY, "--nproc", "2",
         "--strategies", "every-rank-loads", "--shard-sizes", "500KB", "--per-rank", "naive",
         "--backend", "gloo", "--work-dir", str(tmp_path), "--json", str(out),
         "--out", str(tmp_path / "r.md")],
        capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    (rs,) = s.results
    (rc,) = Sweep.from_json(out.read_text(encoding="utf-8")).results
    # THEN each job ran what was asked, on gloo, with every rank's weights right
    for res, per_rank in ((r, "meta"), (rs, "sharded"), (rc, "naive")):
        assert res.ok, res.error
        assert res.params["per_rank"] == per_rank and res.checks.backend == "gloo"
        assert [f.verify for f in res.checks.ranks] == ["ok", "ok"]
    # AND the ranks' predictions follow the per-rank strategy each one ran
    assert len({res.checks.ranks[0].formula for res in (r, rs, rc)}) == 3
    # AND the sweep records the choice so that its report says how to reproduce it
    assert s.config["per_rank"] == "sharded" and "per_rank='sharded'" in s.command
    assert "backend='gloo'" in s.command


def test_bad_per_rank_or_backend_is_a_one_line_error_naming_the_choices(
    tmp_path: Path,
) -> None:
    import torch

    with pytest.raises(ConfigError, match=r"per_rank 'bogus' .*naive, sharded, meta"):
        bigviz.run("shared-mmap", model=TINY, nproc=2, per_rank="bogus", work_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"backend 'mpi' .*gloo, nccl"):
        bigviz.sweep(TINY, strategies=["shared-mmap"], nproc=2, backend="mpi",
                     work_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"per_rank='meta'.*add nproc"):
        bigviz.run("meta", model=TINY, per_rank="meta", work_dir=tmp_path)
    if torch.cuda.device_count() < 2:
        with pytest.raises(ConfigError, match="'nccl' needs a GPU per rank"):
            bigviz.run("shared-mmap", model=TINY, nproc=2, backend="nccl", work_dir=tmp_path)
    done = subprocess.run([sys.executable, "-m", "bigviz", "sweep", "--model", TINY,
                           "--nproc", "2", "--per-rank", "bogus"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != 0
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and "--per-rank 'bogus'" in err[0] and "naive, sharded, meta" in err[0]
    assert not any(tmp_path.iterdir())  # nothing was saved or started
