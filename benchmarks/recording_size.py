"""How big, and how fast to write and load, are long recordings? (issue 17 item 3)

Builds synthetic recordings of 1, 10 and 30 minutes at 1 ms, shaped as the recorder
makes them: ``ram.rss``/``anon``/``file``/``shmem`` every ~1 ms on one clock (a monotonic
nanosecond clock with the sidecar's jitter and an occasional late tick), ``sys.available``
every 10 ms, ``ram.uss``/``pss`` every 200 ms; memory that loads a checkpoint every minute
(anonymous memory ramping up page by page, mmapped file pages coming and going, allocator
noise), with a phase per load and per shard. For each it prints, against the targets:

* bytes per sample of the JSON file (a sample: one 1 ms tick, all its series): target <= 12,
  beside schema 1 (JSON lists, what bigviz wrote before);
* seconds to write the file and to load it back (target for 30 minutes: <= 2 s and <= 1 s),
  and that the loaded recording equals the one written;
* the opt-in bounded store (``bigviz.record(max_samples=N)``) fed the 30-minute timeline in
  the recorder's 25 ms batches: the memory it holds beside the unbounded store, its CPU
  cost per recorded second, and that its peak equals the true peak.

Run: ``.venv/bin/python benchmarks/recording_size.py [--minutes 1,10,30]``;
``--size`` (passed by ``run_all.py --size``) makes it a 1-minute smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from _targets import figure  # benchmarks/ is sys.path[0] when run as a script

from bigviz import report
from bigviz.data.recording import Phase, Recording, Series
from bigviz.data.serde import dumps_document, plain_fields
from bigviz.recorder._store import SampleStore

MiB = 2**20
PAGE = 4096
TARGET_BYTES = 12.0
TARGET_WRITE_S, TARGET_LOAD_S = 2.0, 1.0  # for 30 minutes


def _clock(n: int, every_ms: float, rng: np.random.Generator, start_ns: int) -> np.ndarray:
    """Nanosecond ticks: ``every_ms`` apart, +-25 us jitter, a 5-10 ms late tick per ~2 s."""
    step = np.full(n, int(every_ms * 1e6), dtype=np.int64)
    step += rng.integers(-25_000, 25_000, n)
    late = rng.random(n) < 1 / (2000 / every_ms)
    step[late] += rng.integers(5_000_000, 10_000_000, int(late.sum()))
    return start_ns + np.cumsum(step)


def make_recording(minutes: float, seed: int = 0) -> Recording:
    """A recording of ``minutes`` at 1 ms shaped like a real one (see the module docs)."""
    rng = np.random.default_rng(seed)
    n = int(minutes * 60_000)
    t0_ns = 3_721_123_456_789  # an hour of uptime: monotonic times near 3721 s
    t0 = t0_ns / 1e9
    ns = _clock(n, 1.0, rng, t0_ns)
    sec = (ns - t0_ns) / 1e9
    cycle = np.mod(sec, 60.0)  # a checkpoint load every minute, 8 shards of 0.5 s
    loading = (cycle >= 5.0) & (cycle < 9.0)
    anon_steps = np.where(loading, rng.integers(0, 120, n) * PAGE, 0)
    anon_steps += np.where(rng.random(n) < 0.02, rng.integers(-4, 5, n) * PAGE, 0)
    # each minute frees what the previous load took: back to 400 MiB
    climbed = np.cumsum(anon_steps)
    minute = (sec // 60.0).astype(np.int64)
    first = np.searchsorted(sec, np.arange(minute.max() + 1) * 60.0)
    at_start = np.where(first > 0, climbed[np.maximum(first - 1, 0)], 0)
    anon = 400 * MiB + climbed - at_start[minute]
    file = 30 * MiB + np.where(loading, ((cycle - 5.0) % 0.5) * 400 * MiB, 0).astype(np.int64)
    file = (file // PAGE) * PAGE
    shmem = np.full(n, 2 * MiB, dtype=np.int64)
    rss = anon + file + shmem
    # times exactly as the recorder computes them: monotonic float seconds minus t0
    t = (ns / 1e9 - t0).tolist()
    series = {
        "ram.rss": Series("ram.rss", t, rss.tolist(), source="proc"),
        "ram.anon": Series("ram.anon", list(t), anon.tolist(), source="proc"),
        "ram.file": Series("ram.file", list(t), file.tolist(), source="proc"),
        "ram.shmem": Series("ram.shmem", list(t), shmem.tolist(), source="proc"),
    }
    n_sys = n // 10
    ns_sys = _clock(n_sys, 10.0, rng, t0_ns)
    avail = 60 * 2**30 - rss[::10][:n_sys] + rng.integers(-64, 64, n_sys) * PAGE
    series["sys.available"] = Series("sys.available", (ns_sys / 1e9 - t0).tolist(),
                                     avail.tolist(), source="proc")  # fmt: skip
    n_sm = n // 200
    ns_sm = _clock(n_sm, 200.0, rng, t0_ns)
    t_sm = (ns_sm / 1e9 - t0).tolist()
    series["ram.uss"] = Series("ram.uss", t_sm, (anon[::200][:n_sm] + MiB).tolist())
    series["ram.pss"] = Series("ram.pss", list(t_sm), (rss[::200][:n_sm] - MiB).tolist())
    phases: list[Phase] = []
    for m in range(int(minutes)):
        parent = len(phases)
        base = m * 60.0
        phases.append(Phase("load", base + 5.0, base + 9.0, ram_peak=int(rss.max())))
        for k in range(8):
            s = base + 5.0 + 0.5 * k
            phases.append(Phase(f"safetensors.load_file model-{k + 1:05d}-of-00008", s,
                                s + 0.5, parent=parent, depth=1, auto=True))  # fmt: skip
    return Recording(name=f"{minutes:g} min", pid=1234, duration=sec[-1], series=series,
                     phases=phases, meta={"t0_monotonic": t0})  # fmt: skip


def schema1_text(rec: Recording) -> str:
    """The file the schema-1 writer made (series as JSON lists)."""
    series = {k: plain_fields(s) for k, s in rec.series.items()}
    return dumps_document("recording", {**plain_fields(rec, series=series), "schema": 1})


def measure(minutes: float, tmp: Path) -> dict[str, float]:
    rec = make_recording(minutes)
    ticks = len(rec.series["ram.rss"].t)
    path = tmp / f"rec-{minutes:g}.json"
    c_a, t_a = time.process_time(), time.perf_counter()
    report.write(rec, path)
    c_b, t_b = time.process_time(), time.perf_counter()
    back = report.load(path)
    c_c, t_c = time.process_time(), time.perf_counter()
    assert back == rec, "the loaded recording differs from the one written"
    size = path.stat().st_size
    t_d = time.perf_counter()
    old = schema1_text(rec)
    t_e = time.perf_counter()
    json.loads(old)  # what loading a schema-1 file began with
    old_load = time.perf_counter() - t_e
    return {
        "ticks": ticks, "bytes": size, "bps": size / ticks, "write": t_b - t_a,
        "load": t_c - t_b, "write_cpu": c_b - c_a, "load_cpu": c_c - c_b,
        "old_bps": len(old.encode()) / ticks, "old_write": t_e - t_d,
        "old_load": old_load,
    }  # fmt: skip


def bounded_store(minutes: float, max_samples: int) -> None:
    rec = make_recording(minutes, seed=1)
    names = ["ram.rss", "ram.anon", "ram.file", "ram.shmem"]
    t = rec.series["ram.rss"].t
    cols = [rec.series[k].v for k in names]
    true_peak = max(cols[0])
    stores = {"unbounded": SampleStore(), f"max_samples={max_samples:,}": SampleStore(max_samples)}
    print(f"\nbounded store: the {minutes:g}-minute timeline ({len(t):,} ticks x "
          f"{len(names)} series) fed in the recorder's 25 ms batches")  # fmt: skip
    for label, store in stores.items():
        cpu = time.process_time()
        for i in range(0, len(t), 25):
            ts = t[i : i + 25]
            store.add({k: (ts, c[i : i + 25]) for k, c in zip(names, cols, strict=True)},
                      t0=0.0, source="ram")  # fmt: skip
        cpu = time.process_time() - cpu
        held = store.nbytes()
        peak = store.series["ram.rss"].max()
        kept = len(store.series["ram.rss"])
        per_hour = held / (minutes / 60)
        bound = store.meta().get("store", {})
        print(
            f"  {label:>22}: holds {held / MiB:7.1f} MiB ({kept:,} samples per series; "
            f"{'bounded: at most ' + format(bound['bytes_max'] / MiB, '.1f') + ' MiB at any length' if bound else f'grows {per_hour / MiB:.0f} MiB per hour'}), "  # noqa: E501
            f"CPU {cpu / (minutes * 60) * 1000:.2f} ms per recorded second, "
            f"peak {'== true peak' if peak == true_peak else f'{peak} != {true_peak} LOST'}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", default="1,10,30", help="recording lengths, e.g. 1,10,30")
    parser.add_argument("--size", help="(from run_all.py --size) a 1-minute smoke run")
    parser.add_argument("--max-samples", type=int, default=1_000_000,
                        help="the bounded store's samples per series")  # fmt: skip
    args = parser.parse_args(argv)
    minutes = [1.0] if args.size else [float(m) for m in args.minutes.split(",")]
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; 1 ms samples")
    print(
        "seconds are wall clock (CPU seconds of this process in brackets: on a busy "
        "machine the CPU figure is what a free core would take)"
    )
    print(f"{'length':>7} {'ticks':>10} {'JSON':>9} {'B/sample':>9} {'write s':>13} "
          f"{'load s':>13} | schema 1: {'B/sample':>8} {'write s':>8} {'parse s':>8}")  # fmt: skip
    ok, cpu_ok = True, None
    with tempfile.TemporaryDirectory() as tmp:
        for m in minutes:
            r = measure(m, Path(tmp))
            print(f"{m:>5g} m {r['ticks']:>10,} {r['bytes'] / 1e6:>7.1f}MB {r['bps']:>9.2f} "
                  f"{r['write']:>6.2f} ({r['write_cpu']:.2f}) {r['load']:>6.2f} "
                  f"({r['load_cpu']:.2f}) |           {r['old_bps']:>8.1f} "
                  f"{r['old_write']:>8.2f} {r['old_load']:>8.2f}")  # fmt: skip
            ok &= r["bps"] <= TARGET_BYTES
            figure(f"recording {m:g} min: JSON bytes/sample", round(r["bps"], 2),
                   f"<= {TARGET_BYTES:g}", r["bps"] <= TARGET_BYTES,
                   f"{r['bytes'] / 1e6:.1f} MB")
            if m >= 30:
                figure("recording 30 min: write s", round(r["write"], 2),
                       f"<= {TARGET_WRITE_S:g}", r["write"] <= TARGET_WRITE_S,
                       f"{r['write_cpu']:.2f} s CPU")
                figure("recording 30 min: load s", round(r["load"], 2),
                       f"<= {TARGET_LOAD_S:g}", r["load"] <= TARGET_LOAD_S,
                       f"{r['load_cpu']:.2f} s CPU")
                ok &= r["write"] <= TARGET_WRITE_S and r["load"] <= TARGET_LOAD_S
                cpu_ok = r["write_cpu"] <= TARGET_WRITE_S and r["load_cpu"] <= TARGET_LOAD_S
    print(f"targets: <= {TARGET_BYTES:g} B/sample; 30 min written in <= {TARGET_WRITE_S:g} s, "
          f"loaded in <= {TARGET_LOAD_S:g} s -> {'met' if ok else 'NOT met'} (wall clock)"
          + ("" if cpu_ok is None else f", {'met' if cpu_ok else 'NOT met'} (CPU seconds)")
          + f"; load average now {os.getloadavg()[0]:.2f}")  # fmt: skip
    bounded_store(max(minutes), min(args.max_samples, int(max(minutes) * 60_000) // 4))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
