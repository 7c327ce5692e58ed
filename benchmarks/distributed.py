"""Node RAM of a torch.distributed load, per strategy and number of ranks (issue 8).

For N = 1, 2, 4 ranks on this machine (gloo, CPU), runs ``every-rank-loads`` (each
rank loads on its own, ``naive``), ``rank0-broadcast`` and ``shared-mmap`` on one
GPT-shaped checkpoint (default 1 GB, 200 MB shards), each job in fresh processes, and
prints, measured side by side in this one run, as multiples of the model bytes M:

* node RAM peak (Σ of the ranks' PSS on one clock, above their baselines; PSS is
  sampled every ≥ 20 ms, so the 1 ms Σ of anonymous memory bounds it from below);
* node PSS while every rank holds its weights (exact snapshot at a barrier);
* Σ RSS at that moment (what adding up ``top``'s RES column would claim);
* the largest rank's exact peak (``VmHWM``), and the prediction for the node.

Run: ``.venv/bin/python benchmarks/distributed.py [--size 1GB] [--nproc 1,2,4]``.
Memory: ``every-rank-loads`` with 4 ranks holds about 4 × 3 × M at once; on a shared
machine pass ``--size 200MB`` (and ``--ram-budget`` to stop a job that would not fit).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="1GB", help="model size (default 1GB)")
    p.add_argument("--shard", default="200MB", help="max shard size (default 200MB)")
    p.add_argument("--nproc", default="1,2,4", help="rank counts, comma-separated")
    p.add_argument("--strategies", default="every-rank-loads,rank0-broadcast,shared-mmap")
    p.add_argument("--ram-budget", default=None, help="stop a job above this node RAM")
    p.add_argument("--work-dir", default=None)
    ns = p.parse_args(argv)

    from bigviz.runner.launcher import run_distributed

    counts = [int(x) for x in ns.nproc.split(",") if x]
    strategies = [s for s in ns.strategies.split(",") if s]
    work = ns.work_dir or tempfile.mkdtemp(prefix="bigviz-bench-dist-")
    model = f"gpt:{ns.size}"
    print(f"model {model}, shards {ns.shard}, work dir {work}", flush=True)
    header = (f"{'strategy':<18} {'N':>2} {'node peak':>14} {'PSS loaded':>11} "
              f"{'Σ RSS loaded':>13} {'max rank peak':>14} {'predicted':>10} {'s':>6}  outcome")
    rows = []
    for strategy in strategies:
        for n in counts:
            t0 = time.monotonic()
            r = run_distributed(strategy, nproc=n, model=model, max_shard_size=ns.shard,
                                work_dir=work, ram_budget=ns.ram_budget, timeout=1800,
                                interval_ms=1.0)
            wall = time.monotonic() - t0
            m = r.model_bytes or 1
            node = r.checks.get("node") or {}
            peaks = [f.get("ram_peak") or 0 for f in r.checks.get("ranks") or []]

            def x(v: object, m: int = m) -> str:
                return f"{v / m:.2f}×" if isinstance(v, int) else "—"

            row = (f"{strategy:<18} {n:>2} {x(r.ram_peak):>14} {x(node.get('pss_loaded')):>11} "
                   f"{x(node.get('rss_loaded_sum')):>13} {x(max(peaks) if peaks else None):>14} "
                   f"{x(r.predicted.ram_peak if r.predicted else None):>10} {wall:>6.1f}  "
                   f"{r.outcome}{'' if r.ok else ' — ' + str(r.error)[:80]}")
            rows.append(row)
            print(row, flush=True)
    print()
    print(header)
    for row in rows:
        print(row)
    print("(× = multiples of the model bytes; peaks above each rank's post-import baseline)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
