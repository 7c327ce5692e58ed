"""GPU paths on a real NVIDIA machine: dispatch to cuda:0 and "auto", Transformers with
device_map="cuda", Accelerate to cuda:0 — per-phase allocator and NVML peaks beside the
predictions (CPU RAM ≈ the largest shard when the weights go to the GPU).

Then the FSDP2 strategies over NCCL (``fsdp-broadcast``, ``fsdp-dcp``, ``fsdp-hf``,
``fsdp-dcp-save``, ``fsdp-hf-save``) and ``dcp-consolidate``, one rank per GPU (at most
``--nproc``), each rank's CPU RAM and VRAM peak beside the expected figures below.

Skips cleanly (exit 0) without a CUDA device: it prints "no GPU" and checks nothing.

    .venv/bin/python benchmarks/gpu_check.py                 # gpt:1GB, 200 MB shards
    .venv/bin/python benchmarks/gpu_check.py --size 200MB --shard-size 50MB --nproc 2
    .venv/bin/python benchmarks/gpu_check.py --only fsdp     # the NCCL part only

Expected per rank with NCCL (written before any GPU run; M = model bytes, N = ranks,
S = largest shard file, T = largest tensor, T₂ = second largest, M/N = one rank's FSDP2
shard, rows padded). The shards live in VRAM, so the CPU RAM of the gloo measurements
in docs/distributed.md loses its M/N; the numbers are for ``--size 200MB --shard-size
50MB --nproc 2`` (S = 0.24 M = 48 MB, T = 0.19 M = 38 MB), scaled from those CPU runs:

==================  ==========================  ===========================  ==================
strategy            CPU RAM, rank 0             CPU RAM, rank 1              VRAM, every rank
==================  ==========================  ===========================  ==================
fsdp-broadcast      M (1.51 M on CPU − M/N):    ≈ 0 (0.54 M on CPU − M/N)    M/N + ≤ 2 T:
                    ≈ 1.0 M = 200 MB            ≈ 10 MB                      100–180 MB
fsdp-dcp            ≤ T: ≈ 0.04 M = 8 MB        same                         M/N ≈ 100 MB
                    (0.54 − 0.50), ≤ 38 MB
fsdp-hf             ≤ (S + T)/N: ≈ 0.13 M =     same                         M/N ≈ 100 MB
                    26 MB (0.63 − 0.50), ≤ 43 MB
fsdp-dcp-save       as fsdp-hf, plus the        same                         M/N ≈ 100 MB
                    shards staged to the CPU
                    to be written: ≤ M/N + T/N,
                    ≤ 120 MB
fsdp-hf-save        2 × M/N (the serialised     2 × M/N ≈ 200 MB             M/N ≈ 100 MB
                    file; 1.51 M on CPU − M/N):
                    ≈ 200 MB, + T consolidating
dcp-consolidate     2 T + ≤ 3 T₂ (CPU files,    2 T₂ + ≤ 3 T₂ (its largest   0 (no tensor on a
                    NCCL only for barriers):    tensor is T₂ = 5.3 MB):      GPU)
                    76–92 MB                    11–27 MB
==================  ==========================  ===========================  ==================

The VRAM column is the CUDA allocator's peak (``max_memory_allocated``) above the rank's
baseline; NVML adds the CUDA and NCCL contexts (several hundred MB a rank). A rank far
above its row means a full copy was kept somewhere the gloo runs did not show.
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
    ap.add_argument("--nproc", type=int, default=2,
                    help="ranks for the NCCL part, at most one per GPU (default 2)")
    ap.add_argument("--only", choices=("single", "fsdp"), default=None,
                    help="run only the single-process part or only the NCCL part")
    args = ap.parse_args(argv)

    import bigviz
    from bigviz.strategies.devices import cuda_device_count
    from bigviz.units import format_size

    n = cuda_device_count()
    if n == 0:
        print("gpu_check: no GPU (no CUDA device visible to torch); skipping, nothing checked")
        return 0
    if args.nproc < 1:
        print(f"gpu_check: --nproc {args.nproc} is not a number of ranks; use 1 or more")
        return 2
    model = f"gpt:{args.size}"
    cases: list[tuple[str, Any, dict[str, Any]]] = [
        ("dispatch", "cuda:0", {}),
        ("dispatch", "auto", {}),
        ("accelerate", "cuda:0", {}),
        ("transformers", "cuda", {}),
    ]
    if n > 1:
        cases.append(("dispatch", "balanced", {}))
    if args.only == "fsdp":
        cases = []
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
    if args.only != "single":
        failed += _fsdp_nccl(model, args.shard_size, min(args.nproc, n), args.work_dir)
    print("\nallocator = torch's max_memory_allocated per phase (tensors only); NVML = the "
          "device's used memory (CUDA context and other processes included).")
    bigviz.close()
    if not args.keep:
        shutil.rmtree(Path(args.work_dir), ignore_errors=True)
    return 1 if failed else 0


#: the distributed strategies run over NCCL, one rank per GPU
NCCL_STRATEGIES = ("fsdp-broadcast", "fsdp-dcp", "fsdp-hf", "fsdp-dcp-save", "fsdp-hf-save",
                   "dcp-consolidate")


def _fsdp_nccl(model: str, shard_size: str, nproc: int, work_dir: str) -> int:
    """Run every FSDP2 strategy (and the consolidation) with ``backend="nccl"`` on
    ``nproc`` GPUs; print each rank's CPU RAM and VRAM peaks beside its formula. Returns
    the number of runs that were not ``ok``."""
    from bigviz.runner.launcher import run_distributed
    from bigviz.units import format_size

    failed = 0
    for name in NCCL_STRATEGIES:
        r = run_distributed(name, nproc=nproc, model=model, max_shard_size=shard_size,
                                   backend="nccl", work_dir=work_dir, timeout=600)
        m = r.model_bytes or 1
        print(f"\n== {name} (NCCL, {nproc} GPU{'s' if nproc > 1 else ''}): {r.outcome}"
              + (f" — {r.error}" if r.error else ""))
        print(f"   M = {format_size(m)}; node CPU RAM peak {format_size(r.ram_peak)} "
              f"= {(r.ram_peak or 0) / m:.2f} × M")
        print(f"   {'rank':<6}{'CPU RAM peak':>14}{'× M':>7}{'VRAM peak':>12}{'× M':>7}"
              f"  weights  formula (CPU RAM)")
        for f in r.checks.ranks:
            vram = sum(f.vram_peak.values())
            print(f"   {f.rank!s:<6}{format_size(f.ram_peak):>14}{(f.ram_peak or 0) / m:>7.2f}"
                  f"{format_size(vram):>12}{vram / m:>7.2f}  {f.verify:<7}  {f.formula}")
        failed += r.outcome != "ok"
    return failed


if __name__ == "__main__":
    sys.exit(main())
