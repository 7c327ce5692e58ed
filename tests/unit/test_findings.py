"""Findings only when true (issue 13, item 9): the one-line finding compares only
comparable runs (same shard size, format and device map unless that is the axis being
compared), states a difference only beyond noise (>= 5 % and >= 16 MiB), breaks ties by
lower anonymous memory then time, and otherwise says no strategy differs beyond noise."""

from __future__ import annotations

from typing import Any

from bigviz.data.result import RunResult
from bigviz.tables import key_finding
from bigviz.tables.findings import NOISE_BYTES, NOISE_FRACTION, beyond_noise

MiB = 2**20


def run(strategy: str, peak_mib: float, *, shard: int | None = 50_000_000,
        fmt: str = "safetensors", anon_mib: float | None = None, seconds: float = 1.0,
        outcome: str = "ok", **params: Any) -> RunResult:
    peak = int(peak_mib * MiB)
    anon = peak if anon_mib is None else int(anon_mib * MiB)
    return RunResult(strategy, outcome, shard_size=shard, format=fmt,  # type: ignore[arg-type]
                     ram_peak=peak, ram_anon_peak=anon, ram_file_peak=peak - anon,
                     seconds=seconds, params=dict(params))


def test_the_noise_rule_needs_five_percent_and_sixteen_mib() -> None:
    assert NOISE_FRACTION == 0.05
    assert NOISE_BYTES // MiB == 16
    assert not beyond_noise(int(194.1 * MiB), int(195.6 * MiB))  # 1.5 MiB, 1 %
    assert not beyond_noise(100 * MiB, 115 * MiB)  # 13 %, but 15 MiB
    assert not beyond_noise(1000 * MiB, 1040 * MiB)  # 40 MiB, but 3.8 %
    assert beyond_noise(100 * MiB, 117 * MiB)


def test_a_one_percent_difference_is_not_a_finding() -> None:
    # GIVEN two loads 1.5 MiB apart (seen: "transformers cuts peak RAM from 195.6 MiB to
    # 194.1 MiB (−1%)")
    runs = [run("accelerate", 195.6), run("transformers", 194.1)]
    # THEN no cut is claimed
    assert key_finding(runs) == (
        "No strategy differs beyond noise: peak RAM 194.1 MiB (transformers) to 195.6 MiB "
        "(accelerate), under 5% or 16.0 MiB apart."
    )


def test_runs_with_different_shard_sizes_are_not_compared() -> None:
    # GIVEN meta with 3 MB shards and sharded with 30 MB shards (seen: "meta · 3MB cuts …
    # (sharded · 30MB)"), and no run of the same shard size to compare either with
    runs = [run("sharded", 300, shard=30_000_000), run("meta", 100, shard=3_000_000)]
    sentence = key_finding(runs) or ""
    assert "cuts" not in sentence
    assert sentence.startswith("No two comparable runs finished")
    # WHEN naive ran with 30 MB shards too
    runs.append(run("naive", 400, shard=30_000_000))
    # THEN the comparison stays among the 30 MB runs
    assert key_finding(runs) == (
        "sharded · 30MB cuts peak RAM from 400.0 MiB (naive · 30MB) to 300.0 MiB (−25%)."
    )


def test_runs_in_different_formats_are_not_compared() -> None:
    # GIVEN dispatch on .bin and meta on safetensors at the same peak (seen: "dispatch ·
    # bin 954.0 over meta 954.1"), and naive on safetensors
    runs = [run("dispatch", 954.0, fmt="bin"), run("meta", 954.1),
            run("naive", 1908.2)]
    # THEN meta is compared with naive, its own format; dispatch · bin with nothing
    assert key_finding(runs) == (
        "meta · safetensors cuts peak RAM from 1.9 GiB (naive · safetensors) to "
        "954.1 MiB (−50%)."
    )


def test_a_tie_goes_to_lower_anonymous_memory_then_to_time() -> None:
    # GIVEN meta and mmap within noise of each other; mmap's pages are file-backed
    naive = run("naive", 400)
    meta = run("meta", 200, anon_mib=200)
    mmap = run("mmap", 203, anon_mib=1)
    sentence = key_finding([naive, meta, mmap]) or ""
    # THEN mmap is the cheapest, with its reclaimable pages said
    assert sentence == (
        "mmap cuts peak RAM from 400.0 MiB (naive) to 203.0 MiB (−49%), of which "
        "202.0 MiB is file-backed and reclaimable."
    )
    # AND with equal anonymous memory, the faster one
    slow, fast = run("meta", 200, seconds=3.0), run("dispatch", 201, anon_mib=200, seconds=1.0)
    assert (key_finding([naive, slow, fast]) or "").startswith("dispatch cuts peak RAM")


def test_shard_sizes_are_compared_when_they_are_the_axis() -> None:
    # GIVEN one strategy over two shard sizes: the shard size is what is compared
    runs = [run("sharded", 300, shard=100_000_000), run("sharded", 220, shard=20_000_000)]
    assert key_finding(runs) == (
        "sharded · 20MB cuts peak RAM from 300.0 MiB (sharded · 100MB) to 220.0 MiB (−27%)."
    )
    # AND within noise, it says the shard size made no difference
    close = [run("sharded", 300, shard=100_000_000), run("sharded", 295, shard=20_000_000)]
    assert (key_finding(close) or "").startswith("No shard size differs beyond noise: ")


def test_of_several_groups_the_largest_true_cut_is_told() -> None:
    runs = [run("naive", 400, shard=50_000_000), run("meta", 200, shard=50_000_000),
            run("naive", 400, shard=200_000_000), run("meta", 300, shard=200_000_000)]
    assert key_finding(runs) == (
        "meta · 50MB cuts peak RAM from 400.0 MiB (naive · 50MB) to 200.0 MiB (−50%)."
    )


def test_naive_that_did_not_finish_is_the_news() -> None:
    runs = [run("naive", 0, outcome="oom"), run("meta", 200), run("mmap", 201, anon_mib=1)]
    assert key_finding(runs) == (
        "naive did not finish (OOM-killed); mmap has the lowest peak RAM, 201.0 MiB."
    )


def test_the_distributed_finding_keeps_working_and_obeys_the_noise_rule() -> None:
    erl = run("every-rank-loads", 800, shard=None, nproc=2)
    bc = run("rank0-broadcast", 400, shard=None, nproc=2)
    assert key_finding([erl, bc]) == (
        "rank0-broadcast cuts node RAM on 2 ranks from 800.0 MiB (every-rank-loads) to "
        "400.0 MiB (−50%)."
    )
    near = run("shared-mmap", 790, shard=None, nproc=2)
    assert key_finding([erl, near]) == (
        "No strategy differs beyond noise on 2 ranks: node RAM 790.0 MiB (shared-mmap) to "
        "800.0 MiB (every-rank-loads), under 5% or 16.0 MiB apart."
    )
