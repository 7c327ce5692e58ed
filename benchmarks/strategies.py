"""Every loading strategy on one >= 2 GB model, each in a fresh worker, side by side.

Prints, per strategy: peak anonymous and file-backed RAM as multiples of the model size
(peak during the run, and what is resident after one pass over the weights), load and
first-use throughput, the prediction beside the measurement, and the runner's overhead
(fork request to first phase; target < 0.5 s). Transformers ``from_pretrained`` and
Accelerate ``load_checkpoint_and_dispatch`` run in the same sweep when installed.

    .venv/bin/python benchmarks/strategies.py               # gpt:2GB, 500 MB shards
    .venv/bin/python benchmarks/strategies.py --size 200MB  # smoke test
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

DEFAULT = ["naive", "sharded", "meta", "mmap", "dispatch", "save", "transformers", "accelerate"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="2GB", help="model size (default 2GB)")
    ap.add_argument("--shard-size", default="500MB")
    ap.add_argument("--format", default="safetensors", choices=["safetensors", "bin"])
    ap.add_argument("--strategies", default=",".join(DEFAULT))
    ap.add_argument("--work-dir", default="/tmp/bigviz-bench-strategies")
    ap.add_argument("--keep", action="store_true", help="keep the saved checkpoint")
    args = ap.parse_args(argv)

    import bigviz
    from bigviz.units import format_size

    model = f"gpt:{args.size}"
    names = [s for s in args.strategies.split(",") if s in bigviz.strategies.available()]
    print(f"model {model}, {args.shard_size} {args.format} shards, strategies: {names}")

    def progress(p: dict[str, object]) -> None:
        if p["stage"] in ("prepare", "run"):
            print(f"  [{int(p['index']) + 1}/{p['total']}] {p['label']} ...", flush=True)  # type: ignore[call-overload]

    t0 = time.perf_counter()
    sweep = bigviz.sweep(model, strategies=names, shard_sizes=[args.shard_size],
                         formats=[args.format], work_dir=args.work_dir, on_progress=progress)
    wall = time.perf_counter() - t0
    m = sweep.results[0].model_bytes
    print(f"\nM = {format_size(m)} ({m:,} bytes); sweep wall time {wall:.1f} s\n")
    head = (f"{'strategy':<13}{'outcome':<9}{'peak':>7}{'anon':>7}{'file':>7}"
            f"{'after:anon':>11}{'file':>6}{'pred':>7}{'agree':>6}"
            f"{'load s':>8}{'GB/s':>6}{'1st use':>8}{'GB/s':>6}{'spawn→1st':>10}")
    print(head)
    print("-" * len(head))
    overheads = []
    for r in sweep.results:
        def x(v: int | None) -> str:
            return "   —" if v is None else f"{v / m:.2f}×"

        phases = [p for p in r.recording.phases if p.parent is None and p.end is not None]
        first = next((p for p in phases if p.name == "first use"), None)
        load = sum(p.duration or 0.0 for p in phases if p.name != "first use")
        fu = first.duration if first and first.duration else None
        after = r.checks.get("after_first_use", {})
        ov = r.checks.get("spawn_to_first_phase_s")
        if isinstance(ov, float):
            overheads.append(ov)
        pred = r.predicted.ram_peak if r.predicted else None
        agree = r.checks.get("prediction", {}).get("agrees")
        print(f"{r.strategy:<13}{r.outcome:<9}{x(r.ram_peak):>7}{x(r.ram_anon_peak):>7}"
              f"{x(r.ram_file_peak):>7}{x(after.get('anon')):>11}{x(after.get('file')):>6}"
              f"{x(pred):>7}{'yes' if agree else ('no' if agree is not None else '—'):>6}"
              f"{load:>8.2f}{m / load / 1e9 if load else 0:>6.2f}"
              f"{fu if fu is not None else 0:>8.2f}"
              f"{(m / fu / 1e9) if fu else 0:>6.2f}{ov if ov is not None else 0:>10.3f}")
        if r.outcome != "ok":
            print(f"    error: {r.error}")
    print()
    print("peak/anon/file: highest above the worker's post-import baseline (anon and file are")
    print("sampled; peak is the kernel's exact VmHWM per phase). after: resident after the")
    print("first-use pass. load s: all phases before first use (build included).")
    if overheads:
        med = statistics.median(overheads)
        print(f"runner overhead, fork request → first phase: median {med:.3f} s, "
              f"max {max(overheads):.3f} s (target < 0.5 s; the first transformers run "
              "includes importing transformers into the fork server once)")
    bigviz.close()
    if not args.keep:
        shutil.rmtree(Path(args.work_dir), ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
