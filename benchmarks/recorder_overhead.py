"""What does recording cost, and does the timeline keep up? (issue 2)

Loads a safetensors checkpoint (default 2 GB) into fresh anonymous memory
(``safetensors.torch.load_file(..., backend="pread")``), each load in a fresh process,
alternating without and with ``bigviz.record(interval_ms=1.0)``, and prints, measured
side by side in this one run:

* the median wall-time ratio of the load, recorder on / off (target <= 1.02);
* samples delivered per second vs requested, during the load and while the main thread
  holds the GIL in one C call (target >= 95% at 1 ms);
* each phase's exact RAM peak against ``VmHWM`` read independently (must be equal);
* what the recorder's timeline itself holds in the measured process (bytes per sample,
  and per minute at the interval).

Run: ``.venv/bin/python benchmarks/recorder_overhead.py [--size 2GB] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHUNK = 64 << 20  # one tensor per 64 MiB, like a shard of a real model's weights


def write_checkpoint(path: Path, size: int) -> int:
    """Stream a safetensors file of ``size`` bytes of float32 tensors (never all in RAM)."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    sizes = []
    left = size - size % 4
    while left > 0:
        n = min(CHUNK, left)
        sizes.append(n)
        left -= n
    offset = 0
    for i, n in enumerate(sizes):
        header[f"layer.{i}.weight"] = {
            "dtype": "F32",
            "shape": [n // 4],
            "data_offsets": [offset, offset + n],
        }
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    block = os.urandom(1 << 20) * (CHUNK >> 20)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for n in sizes:
            fh.write(block[:n])
    return offset


def _vmhwm() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def worker(mode: str, path: str, interval_ms: float) -> dict[str, Any]:
    """One measured load in this (fresh) process."""
    import safetensors.torch

    out: dict[str, Any] = {"mode": mode}
    if mode == "off":
        t = time.perf_counter()
        sd = safetensors.torch.load_file(path, backend="pread")
        out["wall"] = time.perf_counter() - t
        out["bytes"] = sum(v.numel() * v.element_size() for v in sd.values())
        return out

    from bigviz.recorder import record

    t_start = time.perf_counter()
    rec = record(interval_ms=interval_ms, sources=["ram", "sys"]).start()
    out["start_s"] = time.perf_counter() - t_start
    with rec.phase("load") as load:
        t = time.perf_counter()
        sd = safetensors.torch.load_file(path, backend="pread")  # an automatic phase inside
        wall = time.perf_counter() - t
    hwm_after_load = _vmhwm()  # no reset since the inner phase started
    out["wall"] = wall
    out["bytes"] = sum(v.numel() * v.element_size() for v in sd.values())
    del sd
    zeros = bytes(512 << 20)  # calloc'ed, not resident; count() reads it in one C call
    with rec.phase("gil held") as gil:
        zeros.count(b"\x00\x01")
    hwm_after_gil = _vmhwm()
    t_stop = time.perf_counter()
    r = rec.stop()
    out["stop_s"] = time.perf_counter() - t_stop
    rss = r.series["ram.rss"]
    requested = 1000.0 / interval_ms

    def rate(ph: Any) -> float:
        n = sum(1 for t in rss.t if ph.start <= t <= ph.end)
        return float(n / ph.duration) if ph.duration else 0.0

    inner = next(p for p in r.phases if p.auto)
    out.update(
        requested_per_s=requested,
        load_samples_per_s=rate(load),
        gil_samples_per_s=rate(gil),
        gil_seconds=gil.duration,
        load_peak=load.ram_peak,
        inner_peak=inner.ram_peak,
        inner_name=inner.name,
        hwm_after_load=hwm_after_load,
        gil_peak=gil.ram_peak,
        hwm_after_gil=hwm_after_gil,
        exact=load.ram_peak_exact,
        sidecar_startup_ms=r.meta.get("sidecar_startup_ms"),
        late_ticks=r.meta.get("sidecar_ticks_late"),
        recorder_bytes=r.meta.get("recorder_bytes"),
        recorder_bytes_per_sample=r.meta.get("recorder_bytes_per_sample"),
        rss_samples=len(rss.t),
        duration=r.duration,
        errors=r.errors,
    )
    return out


def run_one(mode: str, path: Path, interval_ms: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", mode, "--path", str(path)]
    cmd += ["--interval-ms", repr(interval_ms)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"worker {mode} failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="2GB", help="checkpoint size (default 2GB)")
    ap.add_argument("--repeats", type=int, default=5, help="loads per mode (default 5)")
    ap.add_argument("--interval-ms", type=float, default=1.0)
    ap.add_argument("--dir", default=None, help="where to write the checkpoint (a temp dir)")
    ap.add_argument("--worker", choices=["on", "off"], help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.path, args.interval_ms)))
        return

    from bigviz.units import format_size, parse_size

    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="bigviz-bench-recorder-", dir=args.dir) as tmp:
        path = Path(tmp) / "model.safetensors"
        nbytes = write_checkpoint(path, size)
        print(f"checkpoint: {path.name}, {format_size(nbytes)} ({nbytes:,} bytes) of float32")
        print(f"machine load average (1 min) at the start: {os.getloadavg()[0]:.2f}")
        run_one("off", path, args.interval_ms)  # warm the page cache; not counted
        offs: list[dict[str, Any]] = []
        ons: list[dict[str, Any]] = []
        for i in range(args.repeats):
            first, second = ("off", "on") if i % 2 == 0 else ("on", "off")
            for mode in (first, second):
                res = run_one(mode, path, args.interval_ms)
                (ons if mode == "on" else offs).append(res)
                print(f"  repeat {i + 1} {mode:3s}: load {res['wall']:.3f} s", flush=True)

    off_w = statistics.median(r["wall"] for r in offs)
    on_w = statistics.median(r["wall"] for r in ons)
    req = ons[0]["requested_per_s"]
    load_rate = statistics.median(r["load_samples_per_s"] for r in ons)
    gil_rate = statistics.median(r["gil_samples_per_s"] for r in ons)
    equal_load = sum(r["load_peak"] == r["hwm_after_load"] for r in ons)
    equal_gil = sum(r["gil_peak"] == r["hwm_after_gil"] for r in ons)
    pair_ratios = [on["wall"] / off["wall"] for on, off in zip(ons, offs, strict=True)]
    print()
    print(
        f"machine load average (1 min) at the end: {os.getloadavg()[0]:.2f} "
        f"on {os.cpu_count()} CPUs"
    )
    print(f"load wall time, median of {args.repeats}: off {off_w:.3f} s, on {on_w:.3f} s")
    print(f"median wall ratio (recorder on / off):      {on_w / off_w:.3f}  (target <= 1.02)")
    print(
        f"median of adjacent-pair ratios:             {statistics.median(pair_ratios):.3f}"
        f"  (pairs: {', '.join(f'{r:.2f}' for r in pair_ratios)})"
    )
    print(
        f"recorder start / stop:                      "
        f"{statistics.median(r['start_s'] for r in ons) * 1000:.1f} ms / "
        f"{statistics.median(r['stop_s'] for r in ons) * 1000:.1f} ms "
        f"(sidecar startup {statistics.median(r['sidecar_startup_ms'] for r in ons):.1f} ms)"
    )
    print(
        f"samples/s during the load:                  {load_rate:.0f} of {req:.0f} requested "
        f"({load_rate / req:.1%})"
    )
    print(
        f"samples/s while the GIL is held "
        f"({statistics.median(r['gil_seconds'] for r in ons):.2f} s C call): "
        f"{gil_rate:.0f} of {req:.0f} ({gil_rate / req:.1%}; target >= 95%)"
    )
    print(
        f"phase peak == VmHWM:  load {equal_load}/{len(ons)}, gil-held {equal_gil}/{len(ons)}"
        f"  (exact={all(r['exact'] for r in ons)})"
    )
    for r in ons:
        for what, peak, hwm in (
            ("load", r["load_peak"], r["hwm_after_load"]),
            ("gil-held", r["gil_peak"], r["hwm_after_gil"]),
        ):
            if peak != hwm:
                print(f"  {what}: phase peak {peak:,} != VmHWM {hwm:,} ({peak - hwm:+,} bytes)")
    last = ons[-1]
    print(
        f"  e.g. load peak {last['load_peak']:,} vs VmHWM {last['hwm_after_load']:,}; "
        f"auto phase {last['inner_name']!r} peak {last['inner_peak']:,}"
    )
    per_sample = statistics.median(r["recorder_bytes_per_sample"] for r in ons)
    per_tick = statistics.median(r["recorder_bytes"] / r["rss_samples"] for r in ons)
    print(
        f"recorder timeline in the measured process: {per_sample:.1f} bytes/sample, "
        f"{per_tick:.0f} bytes per RAM tick (e.g. {last['recorder_bytes']:,} bytes for "
        f"{last['duration']:.1f} s); at {args.interval_ms:g} ms: "
        f"{per_tick * 60_000 / args.interval_ms / 1e6:.1f} MB/min"
    )
    errors = [e for r in ons for e in r["errors"]]
    if errors:
        print("recording errors:", errors[:5])


if __name__ == "__main__":
    main()
