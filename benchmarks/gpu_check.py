"""GPU paths on a real NVIDIA machine: dispatch to cuda:0 and "auto", Transformers with
device_map="cuda", Accelerate to cuda:0 — per-phase allocator and NVML peaks beside the
predictions (CPU RAM ≈ the largest shard when the weights go to the GPU).

Skips cleanly (exit 0) without a CUDA device.

    .venv/bin/python benchmarks/gpu_check.py                 # gpt:1GB, 200 MB shards
    .venv/bin/python benchmarks/gpu_check.py --size 200MB
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1GB", help="model size (default 1GB)")
    ap.add_argument("--shard-size", default="200MB")
    ap.add_argument("--work-dir", default="/tmp/bigviz-bench-gpu")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)

    import bigviz
    from bigviz.strategies.devices import cuda_device_count
    from bigviz.units import format_size

    n = cuda_device_count()
    if n == 0:
        print("gpu_check: no CUDA device visible to torch; skipping (nothing to check here)")
        return 0
    model = f"gpt:{args.size}"
    cases: list[tuple[str, Any, dict[str, Any]]] = [
        ("dispatch", "cuda:0", {}),
        ("dispatch", "auto", {}),
        ("accelerate", "cuda:0", {}),
        ("transformers", "cuda", {}),
    ]
    if n > 1:
        cases.append(("dispatch", "balanced", {}))
    failed = 0
    for strategy, dmap, extra in cases:
        if strategy not in bigviz.strategies.available():
            print(f"\n{strategy}: not installed, skipped")
            continue
        r = bigviz.run(strategy, model=model, max_shard_size=args.shard_size, device_map=dmap,
                       work_dir=args.work_dir, **extra)
        m = r.model_bytes
        info = bigviz.inspect_checkpoint(r.params["checkpoint"])
        s = max(f.bytes for f in info.files)
        pred = r.predicted
        print(f"\n== {strategy} device_map={dmap!r}: {r.outcome}"
              + (f" — {r.error}" if r.error else ""))
        print(f"   M = {format_size(m)}, S = {format_size(s)}; placement "
              f"{ {k: format_size(v) for k, v in (r.checks.get('placement') or {}).items()} }")
        print(f"   CPU RAM peak {format_size(r.ram_peak)} (anon {format_size(r.ram_anon_peak)}, "
              f"file {format_size(r.ram_file_peak)}); predicted "
              f"{format_size(pred.ram_peak) if pred else '—'} [{pred.formula if pred else ''}]"
              f"; = {(r.ram_peak or 0) / s:.2f} × S")
        print(f"   VRAM (allocator, max_memory_allocated): "
              f"{ {k: format_size(v) for k, v in r.vram_peak.items()} }; predicted "
              f"{ {k: format_size(v) for k, v in (pred.vram if pred else {}).items()} }")
        print(f"   {'phase':<44}{'RAM peak':>11}{'alloc peak':>14}{'NVML peak':>14}")
        for p in r.recording.phases:
            if p.depth > 1:
                continue
            alloc = ", ".join(f"{format_size(v)}" for v in p.vram_peak.values()) or "—"
            nvml = ", ".join(f"{format_size(v)}" for v in p.nvml_peak.values()) or "—"
            name = ("  " * p.depth + p.name)[:43]
            ram = format_size(None if p.ram_peak is None else p.ram_peak - r.baseline)
            print(f"   {name:<44}{ram:>11}{alloc:>14}{nvml:>14}")
        failed += r.outcome != "ok"
    print("\nallocator = torch's max_memory_allocated per phase (tensors only); NVML = the "
          "device's used memory (CUDA context and other processes included).")
    bigviz.close()
    if not args.keep:
        shutil.rmtree(Path(args.work_dir), ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
