"""Realistic synthetic Recordings, RunResults and Sweeps for plot and report tests.

They are built straight from the dataclasses, shaped like what the recorder and runner
produce (1 ms RAM samples, nested phases with exact peaks, marks, a CUDA device), so the
report code is tested on the data it will really render without running a model.
"""

from __future__ import annotations

import math

from bigviz.data.recording import Mark, Phase, Recording, Series, SourceInfo
from bigviz.data.result import Checks, NodeFigures, Prediction, RankFigures, RunResult, Sweep

MiB = 2**20
BASE_ANON = 330 * MiB
BASE_FILE = 9 * MiB

META = {
    "host": "box-01",
    "platform": "Linux-6.1.0-x86_64",
    "python": "3.11.7",
    "cpu_count": 2,
    "ram_total": 24 * 2**30,
    "gpus": [{"index": 0, "name": "NVIDIA H200", "memory_total": 141 * 2**30}],
    "versions": {"torch": "2.13.0", "safetensors": "0.8.0", "bigviz": "0.1.0"},
}

# strategy -> (anon curve, file curve) as multiples of the model size over progress 0..1
_SHAPES = {
    "naive": (lambda x: 2.0 * min(1.0, x / 0.8), lambda x: 0.0),
    "sharded": (lambda x: min(1.0, x / 0.3) + 0.12 * (math.sin(x * 40) > 0), lambda x: 0.0),
    "meta": (lambda x: 1.0 * min(1.0, max(0.0, x - 0.1) / 0.8), lambda x: 0.0),
    "mmap": (lambda x: 0.02, lambda x: min(1.0, x / 0.9)),
    "dispatch": (lambda x: 0.1 * min(1.0, x / 0.2), lambda x: 0.0),
}

_PREDICTIONS = {
    "naive": (2.0, "2 × M"),
    "sharded": (1.12, "M + S"),
    "meta": (1.0, "M (+ transient S)"),
    "mmap": (1.0, "M resident, mostly file-backed"),
    "dispatch": (0.12, "S"),
}


def recording(
    *,
    strategy: str = "naive",
    model_bytes: int = 800 * MiB,
    seconds: float = 2.0,
    interval_ms: float = 1.0,
    shards: int = 3,
    gpu: bool = False,
    stop_at: float | None = None,
    phase_name: str | None = None,
    name: str = "",
) -> Recording:
    """A recording of one load: ``init`` then ``load`` > ``shard i/n`` > ``safetensors.load_file``.

    Args:
        stop_at: fraction of the run after which samples stop (an OOM kill or budget kill).
        phase_name: overrides the name of the first shard phase (escaping tests).
    """
    anon_of, file_of = _SHAPES.get(strategy, _SHAPES["meta"])
    dt = interval_ms / 1000.0
    n = int(seconds / dt)
    end_frac = 1.0 if stop_at is None else stop_at
    n_kept = max(2, int(n * end_frac))
    t = [round(i * dt, 6) for i in range(n_kept)]
    anon = [BASE_ANON + int(anon_of(i / n) * model_bytes) + (i % 7) * 4096 for i in range(n_kept)]
    file = [BASE_FILE + int(file_of(i / n) * model_bytes) for i in range(n_kept)]
    rss = [a + f for a, f in zip(anon, file, strict=True)]
    series = {
        "ram.rss": Series("ram.rss", t=t, v=rss, source="proc"),
        "ram.anon": Series("ram.anon", t=list(t), v=anon, source="proc"),
        "ram.file": Series("ram.file", t=list(t), v=file, source="proc"),
    }
    sources = [SourceInfo("proc", True, exact=True, series=["ram.rss", "ram.anon", "ram.file"])]
    if gpu:
        alloc = [int(min(1.0, i / n / 0.9) * model_bytes) for i in range(n_kept)]
        reserved = [a + (a // 16 // (2 * MiB)) * 2 * MiB for a in alloc]
        used = [r + 512 * MiB for r in reserved]
        series["cuda:0.allocated"] = Series("cuda:0.allocated", t=list(t), v=alloc, source="cuda")
        series["cuda:0.reserved"] = Series("cuda:0.reserved", t=list(t), v=reserved, source="cuda")
        series["nvml:0.used"] = Series("nvml:0.used", t=list(t), v=used, source="nvml")
        sources.append(SourceInfo("cuda", True, exact=True, series=["cuda:0.allocated"]))
        sources.append(SourceInfo("nvml", True, series=["nvml:0.used"]))
    else:
        sources.append(SourceInfo("cuda", False, reason="torch.cuda.is_available() is False"))

    duration = t[-1]
    phases: list[Phase] = []

    def add(pname: str, start: float, end: float | None, parent: int | None, depth: int) -> int:
        hi = end if end is not None else duration
        i0 = int(start / dt)
        i1 = min(n_kept - 1, int(hi / dt))
        window = range(i0, max(i0 + 1, i1 + 1))
        # the kernel's high-water mark sees a spike the 1 ms samples missed
        peak = max(rss[i] for i in window) + 3 * MiB
        ph = Phase(
            pname,
            start=start,
            end=end,
            parent=parent,
            depth=depth,
            auto=depth == 2,
            ram_start=rss[i0],
            ram_end=rss[i1] if end is not None else None,
            ram_peak=peak,
            ram_peak_exact=True,
            ram_anon_peak=max(anon[i] for i in window),
            ram_file_peak=max(file[i] for i in window),
        )
        if gpu:
            ph.vram_start = {"cuda:0": series["cuda:0.allocated"].v[i0]}
            ph.vram_peak = {"cuda:0": max(series["cuda:0.allocated"].v[i] for i in window)}
            ph.nvml_peak = {"0": max(series["nvml:0.used"].v[i] for i in window)}
        phases.append(ph)
        return len(phases) - 1

    def clip(x: float) -> float | None:
        return None if x >= duration else x

    init_end = round(seconds * 0.1, 6)
    add("init", 0.0, clip(init_end), None, 0)
    if init_end < duration:
        load = add("load", init_end, clip(seconds * 0.95), None, 0)
        span = (seconds * 0.95 - init_end) / shards
        for k in range(shards):
            s0 = round(init_end + k * span, 6)
            if s0 >= duration:
                break
            label = f"shard {k + 1}/{shards}"
            if k == 0 and phase_name is not None:
                label = phase_name
            sh = add(label, s0, clip(round(s0 + span * 0.98, 6)), load, 1)
            add("safetensors.load_file", s0, clip(round(s0 + span * 0.6, 6)), sh, 2)
            phases[-1].detail = {"file": f"model-{k + 1:05d}-of-{shards:05d}.safetensors"}
    if stop_at is not None:
        phases[-1].error = "process killed"
    marks = [Mark("checkpoint opened", round(seconds * 0.11, 6), {"files": shards})]
    return Recording(
        name=name or strategy,
        pid=4242,
        interval_ms=interval_ms,
        started_at="2026-11-28T12:00:00+00:00",
        duration=duration,
        series=series,
        phases=phases,
        marks=[m for m in marks if m.t <= duration],
        sources=sources,
        meta=dict(META),
    )


def run_result(
    strategy: str = "naive",
    *,
    outcome: str = "ok",
    model_bytes: int = 800 * MiB,
    shard_size: int | None = 200_000_000,
    device_map: str | None = "cpu",
    seconds: float = 2.0,
    scale: float = 1.0,
    phase_name: str | None = None,
) -> RunResult:
    """A RunResult whose peaks are computed from its synthetic recording (above baseline).

    ``scale`` multiplies the memory the strategy needs (to plant a regression).
    """
    stop = {"oom": 0.6, "budget_exceeded": 0.7, "crashed": 0.5}.get(outcome)
    gpu = device_map is not None and device_map.startswith("cuda")
    rec = recording(
        strategy=strategy,
        model_bytes=int(model_bytes * scale),
        seconds=seconds,
        shards=3,
        gpu=gpu,
        stop_at=stop,
        phase_name=phase_name,
    )
    baseline = BASE_ANON + BASE_FILE
    peak = max(p.ram_peak or 0 for p in rec.phases)
    factor, formula = _PREDICTIONS.get(strategy, (1.0, "M"))
    errors = {
        "oom": "killed by the kernel (SIGKILL, out of memory)",
        "budget_exceeded": "RAM budget 1.0 GiB exceeded (1.2 GiB)",
        "crashed": "worker exited with code -11",
    }
    reached = rec.phases[-1].name if stop is not None else None
    return RunResult(
        strategy=strategy,
        outcome=outcome,  # type: ignore[arg-type]
        model="gpt:800MiB",
        model_bytes=model_bytes,
        error=errors.get(outcome),
        phase_reached=reached,
        shard_size=shard_size,
        format="safetensors",
        device_map=device_map,
        baseline=baseline,
        ram_peak=peak - baseline,
        ram_anon_peak=max(rec.series["ram.anon"].v) - BASE_ANON,
        ram_file_peak=max(rec.series["ram.file"].v) - BASE_FILE,
        vram_peak={"cuda:0": max(rec.series["cuda:0.allocated"].v)} if gpu else {},
        predicted=Prediction(
            ram_peak=int(factor * model_bytes),
            formula=formula,
            vram={"cuda:0": model_bytes} if gpu else {},
        ),
        seconds=rec.duration + 0.25,
        recording=rec,
        params={"dtype": "float32"},
        checks=Checks(weights="ok" if outcome == "ok" else "unchecked"),
    )


def sweep(
    strategies: tuple[str, ...] = ("naive", "sharded", "meta", "mmap"),
    *,
    shard_sizes: tuple[int | None, ...] = (200_000_000,),
    device_maps: tuple[str, ...] = ("cpu",),
    seconds: float = 1.0,
    outcomes: dict[str, str] | None = None,
    scale: dict[str, float] | None = None,
    phase_name: str | None = None,
) -> Sweep:
    """A Sweep over strategies × shard sizes × device maps."""
    results = []
    for dm in device_maps:
        for size in shard_sizes:
            for s in strategies:
                results.append(
                    run_result(
                        s,
                        outcome=(outcomes or {}).get(s, "ok"),
                        shard_size=size,
                        device_map=dm,
                        seconds=seconds,
                        scale=(scale or {}).get(s, 1.0) * (1 + 0.1 * (size or 0) / 1e9),
                        phase_name=phase_name,
                    )
                )
    return Sweep(
        results=results,
        config={
            "model": "gpt:800MiB",
            "strategies": list(strategies),
            "shard_sizes": list(shard_sizes),
            "device_maps": list(device_maps),
        },
        command="bigviz sweep --model gpt:800MiB --strategies "
        + ",".join(strategies)
        + " --shard-sizes 200MB --device-map cpu",
        started_at="2026-11-28T12:00:00+00:00",
        meta=dict(META),
    )


# -- distributed runs ------------------------------------------------------------------

#: distributed strategy -> (anon curve, file curve) of one rank as multiples of the model
#: size over progress 0..1; ``r`` is the rank. Shaped like the runner's real lanes: every
#: rank of ``every-rank-loads`` builds a random model then loads a second copy (2 × M,
#: back to M); ``rank0-broadcast`` ranks receive shard by shard (M each, a shard's
#: transient on rank 0); ``shared-mmap`` ranks map the same file pages (file-backed M).
_DIST_SHAPES = {
    "every-rank-loads": (
        lambda r, x: min(1.0, x / 0.35) + (min(1.0, max(0.0, x - 0.4) / 0.35) if x < 0.85 else 0.0),
        lambda r, x: 0.0,
    ),
    "rank0-broadcast": (
        lambda r, x: (
            min(1.0, max(0.0, x - 0.1) / 0.7)
            + (0.15 * (math.sin(x * 30) > 0) if r == 0 and 0.1 < x < 0.8 else 0.0)
        ),
        lambda r, x: 0.0,
    ),
    "shared-mmap": (lambda r, x: 0.01, lambda r, x: min(1.0, max(0.0, x - 0.1) / 0.7)),
}
_DIST_PREDICTIONS = {
    "every-rank-loads": (lambda n: 2.0 * n, "N × (2 × M)"),
    "rank0-broadcast": (lambda n: 1.0 * n, "N × M"),
    "shared-mmap": (lambda n: 1.0, "M once per node (page cache shared), N × M RSS"),
}
#: the ranks' PSS/USS come from smaps_rollup at a lower rate than RSS (every 20 samples)
SMAPS_EVERY = 20


def _step_sum(name: str, lanes: list[Series]) -> Series:
    """Σ of lanes sampled at the same times (the fixture's ranks share one grid)."""
    t = list(lanes[0].t)
    v = [sum(s.v[i] for s in lanes) for i in range(len(t))]
    return Series(name, t=t, v=v, source="node")


def distributed_recording(
    strategy: str = "every-rank-loads",
    *,
    nproc: int = 2,
    model_bytes: int = 400 * MiB,
    seconds: float = 1.0,
    interval_ms: float = 1.0,
    stop_at: float | None = None,
    failed_rank: int = 1,
    phase_name: str | None = None,
) -> Recording:
    """A merged distributed Recording: ``ranks`` lanes on one clock plus node totals.

    Each rank starts a little later than the one before (its lane is visibly shifted),
    has ``ram.rss/anon/file`` every sample, ``ram.pss/uss`` every :data:`SMAPS_EVERY`
    samples, a ``baseline`` mark holding its baseline snapshot, and phases ``build``,
    ``load`` > ``shard i/3``, ``first use``, ``loaded``. The parent holds ``node.pss``,
    ``node.uss``, ``node.anon`` and ``node.rss`` and rank 0's phases, like
    ``bigviz.recorder.merge.merge_ranks``.

    Args:
        stop_at: fraction of the run after which ``failed_rank``'s samples stop (an OOM
            kill); the other ranks are stopped a few samples later.
        phase_name: overrides the name of every rank's first shard phase.
    """
    anon_of, file_of = _DIST_SHAPES[strategy]
    dt = interval_ms / 1000.0
    n = int(seconds / dt)
    lanes: list[Recording] = []
    for r in range(nproc):
        skew = 0.03 * r
        stop = n if stop_at is None else int(n * stop_at) + (0 if r == failed_rank else 15)
        t = [round(i * dt, 6) for i in range(stop)]

        def prog(i: int, _skew: float = skew) -> float:
            return max(0.0, i / n - _skew)

        anon = [
            BASE_ANON + int(anon_of(r, prog(i)) * model_bytes) + (i % 5) * 4096 for i in range(stop)
        ]
        file = [BASE_FILE + int(file_of(r, prog(i)) * model_bytes) for i in range(stop)]
        rss = [a + f for a, f in zip(anon, file, strict=True)]
        shared = strategy == "shared-mmap"
        # a shared file page counts 1/N in each rank's PSS; private memory counts in full
        pss = [a + (f // nproc if shared else f) for a, f in zip(anon, file, strict=True)]
        uss = [a + (BASE_FILE // 4 if shared else f) for a, f in zip(anon, file, strict=True)]
        keep = range(0, stop, SMAPS_EVERY)
        series = {
            "ram.rss": Series("ram.rss", t=t, v=rss, source="proc"),
            "ram.anon": Series("ram.anon", t=list(t), v=anon, source="proc"),
            "ram.file": Series("ram.file", t=list(t), v=file, source="proc"),
            "ram.pss": Series(
                "ram.pss", t=[t[i] for i in keep], v=[pss[i] for i in keep], source="proc"
            ),
            "ram.uss": Series(
                "ram.uss", t=[t[i] for i in keep], v=[uss[i] for i in keep], source="proc"
            ),
        }
        duration = t[-1]
        phases: list[Phase] = []

        def add(
            pname: str,
            start: float,
            end: float,
            parent: int | None,
            depth: int,
            *,
            _rss: list[int] = rss,
            _anon: list[int] = anon,
            _file: list[int] = file,
            _dur: float = duration,
            _phases: list[Phase] = phases,
        ) -> int:
            if start >= _dur:
                return -1
            stop_t = None if end >= _dur else end
            i0 = int(start / dt)
            i1 = min(len(_rss) - 1, int(min(end, _dur) / dt))
            window = range(i0, max(i0 + 1, i1 + 1))
            _phases.append(
                Phase(
                    pname,
                    start=start,
                    end=stop_t,
                    parent=parent,
                    depth=depth,
                    ram_start=_rss[i0],
                    ram_end=_rss[i1] if stop_t is not None else None,
                    ram_peak=max(_rss[i] for i in window) + MiB,
                    ram_peak_exact=True,
                    ram_anon_peak=max(_anon[i] for i in window),
                    ram_file_peak=max(_file[i] for i in window),
                )
            )
            return len(_phases) - 1

        s = seconds
        add("build", 0.02, round(s * (0.1 + skew), 6), None, 0)
        load = add("load", round(s * (0.1 + skew), 6), round(s * (0.8 + skew), 6), None, 0)
        span = 0.7 * s / 3
        for k in range(3):
            s0 = round(s * (0.1 + skew) + k * span, 6)
            label = phase_name if (k == 0 and phase_name is not None) else f"shard {k + 1}/3"
            if load >= 0:
                add(label, s0, round(s0 + span * 0.97, 6), load, 1)
        add("first use", round(s * (0.8 + skew), 6), round(s * (0.85 + skew), 6), None, 0)
        add("loaded", round(s * (0.85 + skew), 6), round(s * 0.999, 6), None, 0)
        if stop_at is not None and phases:
            phases[-1].error = "process killed" if r == failed_rank else "stopped by the launcher"
            phases[-1].end = None
        base = {
            "rss": rss[0],
            "anon": anon[0],
            "file": file[0],
            "shmem": 0,
            "pss": pss[0],
            "uss": uss[0],
        }
        lanes.append(
            Recording(
                name=f"{strategy} · rank {r}/{nproc}",
                pid=5000 + r,
                interval_ms=interval_ms,
                started_at="2026-11-28T12:00:00+00:00",
                duration=duration,
                series=series,
                phases=phases,
                marks=[Mark("baseline", 0.01, dict(base))],
                sources=[SourceInfo("proc", True, exact=True, series=list(series))],
                meta={"host": "box-01", "clock_offset": 0.0},
                rank=r,
            )
        )
    shortest = min(len(lane.series["ram.rss"].t) for lane in lanes)
    pshort = min(len(lane.series["ram.pss"].t) for lane in lanes)
    node: dict[str, Series] = {}
    for key, cut in (("pss", pshort), ("uss", pshort), ("anon", shortest), ("rss", shortest)):
        cut_lanes = [
            Series(
                f"ram.{key}",
                t=lane.series[f"ram.{key}"].t[:cut],
                v=lane.series[f"ram.{key}"].v[:cut],
            )
            for lane in lanes
        ]
        node[f"node.{key}"] = _step_sum(f"node.{key}", cut_lanes)
    first = lanes[0]
    return Recording(
        name=f"{strategy} · gpt:{model_bytes // MiB}MiB · {nproc} ranks",
        pid=first.pid,
        interval_ms=interval_ms,
        started_at=first.started_at,
        duration=max(lane.duration for lane in lanes),
        series=node,
        phases=[Phase(**vars(p)) for p in first.phases],
        marks=[Mark(m.name, m.t, dict(m.detail)) for m in first.marks],
        sources=list(first.sources),
        meta={**META, "nproc": nproc, "clock_alignment": "monotonic", "phases_from_rank": 0},
        ranks=lanes,
    )


def distributed_result(
    strategy: str = "every-rank-loads",
    *,
    nproc: int = 2,
    outcome: str = "ok",
    model_bytes: int = 400 * MiB,
    seconds: float = 1.0,
    scale: float = 1.0,
    phase_name: str | None = None,
) -> RunResult:
    """A distributed RunResult shaped like ``bigviz.runner.distributed``'s: node figures
    (``ram_peak`` = node PSS above the ranks' summed baseline PSS), per-rank figures in
    ``checks.ranks`` and node figures in ``checks.node``; a failed run
    (``"oom"``) names ``checks.failed_rank``."""
    stop = 0.6 if outcome != "ok" else None
    rec = distributed_recording(
        strategy,
        nproc=nproc,
        model_bytes=int(model_bytes * scale),
        seconds=seconds,
        stop_at=stop,
        phase_name=phase_name,
    )
    bases = [lane.marks[0].detail for lane in rec.ranks]
    node_base = {k: sum(int(b[k]) for b in bases) for k in ("pss", "uss", "anon", "rss")}
    ranks = []
    for lane, b in zip(rec.ranks, bases, strict=True):
        ranks.append(
            RankFigures(
                rank=lane.rank,
                host="box-01",
                baseline={k: int(v) for k, v in b.items()},
                ram_peak=max(p.ram_peak or 0 for p in lane.phases) - b["rss"],
                ram_peak_exact=True,
                ram_anon_peak=max(lane.series["ram.anon"].v) - b["anon"],
                ram_file_peak=max(lane.series["ram.file"].v) - b["file"],
                pss_peak=max(lane.series["ram.pss"].v) - b["pss"],
                loaded={
                    "pss": lane.series["ram.pss"].v[-1] - b["pss"],
                    "uss": lane.series["ram.uss"].v[-1] - b["uss"],
                },
                verify="ok",
                phase_reached=lane.phases[-1].name,
            )
        )
    pss_peak = max(rec.series["node.pss"].v) - node_base["pss"]
    factor, formula = _DIST_PREDICTIONS[strategy]
    checks = Checks(
        weights="ok" if outcome == "ok" else "unchecked",
        ranks=ranks,
        node=NodeFigures(
            baseline=node_base,
            pss_peak=pss_peak,
            anon_peak=max(rec.series["node.anon"].v) - node_base["anon"],
            rss_peak_sum=max(rec.series["node.rss"].v) - node_base["rss"],
        ),
    )
    error = None
    reached = None
    if outcome != "ok":
        checks.failed_rank = 1
        reached = rec.ranks[1].phases[-1].name
        error = (
            f"rank 1 (pid 5001) was killed by SIGKILL (most likely the kernel's OOM killer) "
            f"in phase {reached!r}; the other ranks were stopped"
        )
    return RunResult(
        strategy=strategy,
        outcome=outcome,  # type: ignore[arg-type]
        model=f"gpt:{model_bytes // MiB}MiB",
        model_bytes=model_bytes,
        error=error,
        phase_reached=reached,
        shard_size=200_000_000,
        format="safetensors",
        device_map="cpu",
        baseline=node_base["pss"],
        ram_peak=pss_peak,
        ram_anon_peak=max(rec.series["node.anon"].v) - node_base["anon"],
        ram_file_peak=max(r.ram_file_peak or 0 for r in ranks),
        predicted=Prediction(ram_peak=int(factor(nproc) * model_bytes), formula=formula),
        seconds=rec.duration + 0.5,
        recording=rec,
        params={"nproc": nproc, "per_rank": "naive", "backend": "gloo"},
        checks=checks,
    )


def distributed_sweep(
    strategies: tuple[str, ...] = ("every-rank-loads", "rank0-broadcast", "shared-mmap"),
    *,
    nprocs: tuple[int, ...] = (2,),
    seconds: float = 0.6,
    outcomes: dict[str, str] | None = None,
    phase_name: str | None = None,
) -> Sweep:
    """A Sweep of distributed strategies × rank counts."""
    results = [
        distributed_result(
            s,
            nproc=n,
            seconds=seconds,
            outcome=(outcomes or {}).get(s, "ok"),
            phase_name=phase_name,
        )
        for n in nprocs
        for s in strategies
    ]
    return Sweep(
        results=results,
        config={"model": "gpt:400MiB", "strategies": list(strategies), "nproc": list(nprocs)},
        command="bigviz sweep --model gpt:400MiB --nproc 2 --strategies " + ",".join(strategies),
        started_at="2026-11-28T12:00:00+00:00",
        meta=dict(META),
    )
