"""Node and per-rank RAM of a torch.distributed load, per strategy and number of ranks
(issues 8 and 16).

For N = 1, 2, 4 ranks on this machine (gloo, CPU), runs each strategy on one GPT-shaped
checkpoint (default 200 MB, 50 MB shards), each job in fresh processes, and prints,
measured side by side in this one run, as multiples of the model bytes M:

* node RAM peak (Σ of the ranks' PSS on one clock, above their baselines; PSS is
  sampled every ≥ 20 ms, so the 1 ms Σ of anonymous memory bounds it from below);
* node PSS while every rank holds its weights (exact snapshot at a barrier) and Σ RSS at
  that moment (what adding up ``top``'s RES column would claim);
* rank 0's exact peak (``VmHWM``) and the largest other rank's;
* the node prediction and whether the measurement agrees with its range.

The default strategies are the rows of the Transformers maintainers' per-process table
(``every-rank-loads`` with ``naive`` per rank: 2·M·N; ``meta``, as
``low_cpu_mem_usage``: M·N; ``sharded``: (M+S)·N), bigviz's ``rank0-broadcast`` and
``shared-mmap``, the three FSDP2 strategies (the ZeRO-3-style rows: about M per
node), ``fsdp-dcp-save`` (load as ``fsdp-hf``, then ``dcp.save`` from every rank) and
``fsdp-hf-save`` (the same as safetensors, consolidated on rank 0).
``every-rank-loads:meta`` picks the per-rank strategy.

Run: ``.venv/bin/python benchmarks/distributed.py [--size 200MB] [--nproc 1,2,4]``.
Memory: ``every-rank-loads`` with 4 ranks holds about 4 × 2 × M at once; pass
``--ram-budget`` to stop a job that would not fit.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

DEFAULT = ("every-rank-loads:naive,every-rank-loads:meta,every-rank-loads:sharded,"
           "rank0-broadcast,shared-mmap,fsdp-broadcast,fsdp-dcp,fsdp-hf,fsdp-dcp-save,fsdp-hf-save")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--size", default="200MB", help="model size (default 200MB)")
    p.add_argument("--shard", default="50MB", help="max shard size (default 50MB)")
    p.add_argument("--nproc", default="1,2,4", help="rank counts, comma-separated")
    p.add_argument("--strategies", default=DEFAULT,
                   help="comma-separated; every-rank-loads:PER_RANK picks its per-rank load")
    p.add_argument("--ram-budget", default=None, help="stop a job above this node RAM")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per job")
    p.add_argument("--work-dir", default=None)
    ns = p.parse_args(argv)

    from bigviz.runner.launcher import run_distributed

    counts = [int(x) for x in ns.nproc.split(",") if x]
    specs = [s for s in ns.strategies.split(",") if s]
    work = ns.work_dir or tempfile.mkdtemp(prefix="bigviz-bench-dist-")
    model = f"gpt:{ns.size}"
    print(f"model {model}, shards {ns.shard}, work dir {work}", flush=True)
    header = (f"{'strategy':<26} {'N':>2} {'node peak':>9} {'PSS ld':>7} {'ΣRSS ld':>8} "
              f"{'rank 0':>7} {'others':>7} {'predicted node':>16} {'s':>6}  outcome")
    print(header, flush=True)
    rows = []
    for spec in specs:
        strategy, _, per_rank = spec.partition(":")
        for n in counts:
            t0 = time.monotonic()
            r = run_distributed(strategy, nproc=n, model=model, max_shard_size=ns.shard,
                                per_rank=per_rank or "naive", work_dir=work,
                                ram_budget=ns.ram_budget, timeout=ns.timeout,
                                interval_ms=1.0)
            wall = time.monotonic() - t0
            m = r.model_bytes or 1
            node = r.checks.node
            by_rank = {f.rank: f.ram_peak for f in r.checks.ranks}
            others = [v for k, v in by_rank.items() if k != 0 and v is not None]

            def x(v: object, m: int = m) -> str:
                return f"{v / m:.2f}×" if isinstance(v, int) else "—"

            pred = "—"
            if r.predicted is not None:
                low, high = r.predicted.bounds
                pred = f"{low / m:.2f}–{high / m:.2f}×"
            check = r.checks.prediction
            verdict = "" if check is None else f" ({check.verdict or '?'})"
            row = (f"{spec:<26} {n:>2} {x(r.ram_peak):>9} "
                   f"{x(node.pss_loaded if node else None):>7} "
                   f"{x(node.rss_loaded_sum if node else None):>8} {x(by_rank.get(0)):>7} "
                   f"{x(max(others) if others else None):>7} {pred:>16} {wall:>6.1f}  "
                   f"{r.outcome}{verdict}{'' if r.ok else ' — ' + str(r.error)[:80]}")
            rows.append(row)
            print(row, flush=True)
    print()
    print(header)
    for row in rows:
        print(row)
    print("(× = multiples of the model bytes M; node peak = Σ PSS above the ranks' "
          "baselines; rank figures = exact VmHWM above each rank's baseline)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
