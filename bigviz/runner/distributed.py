"""The command line of distributed runs: ``python -m bigviz.runner.distributed``.

Under ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` …) it runs one
rank (:mod:`bigviz.runner.rank`), so multi-node jobs need nothing extra::

    torchrun --nnodes 2 --nproc_per_node 4 ... -m bigviz.runner.distributed shared-mmap \\
        --model gpt:1GB --out result.json

Without those variables it launches the ranks itself (:mod:`bigviz.runner.launcher`):
``python -m bigviz.runner.distributed shared-mmap --nproc 2 --model gpt:100MB``.

Clocks: on one host every rank's ``t0_monotonic`` is read from the same monotonic clock,
so lanes are aligned exactly; across hosts each rank's time is taken relative to the exit
of a barrier all ranks pass together (skew ≈ one network round trip).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import bigviz.strategies as strategies
from bigviz.data.result import RunResult
from bigviz.runner.launcher import run_distributed
from bigviz.runner.rank import rank_env, rank_main
from bigviz.units import format_size, parse_size

__all__ = ["main", "parser", "run_distributed"]


# -- command line --------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m bigviz.runner.distributed``.

    Example:
        >>> parser().parse_args(["shared-mmap"]).nproc
        2
    """
    p = argparse.ArgumentParser(
        prog="python -m bigviz.runner.distributed",
        description="Per-rank RAM/VRAM timelines of a torch.distributed load. Under torchrun "
                    "this is one rank; otherwise it launches --nproc ranks itself.",
    )
    p.add_argument("strategy", choices=strategies.names(kind="distributed"))
    p.add_argument("--nproc", type=int, default=2, help="ranks to launch (not under torchrun)")
    p.add_argument("--model", default="gpt:100MB")
    p.add_argument("--max-shard-size", default="500MB")
    p.add_argument("--format", default="safetensors", choices=("safetensors", "bin"))
    p.add_argument("--dtype", default="float32")
    p.add_argument("--per-rank", default="naive", choices=strategies.PER_RANK)
    p.add_argument("--work-dir", default=None)
    p.add_argument("--ram-budget", default=None)
    p.add_argument("--interval-ms", type=float, default=1.0)
    p.add_argument("--timeout", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default=None, choices=("gloo", "nccl"))
    p.add_argument("--out", default=None, help="write the RunResult JSON here")
    # set by the launcher for its ranks
    p.add_argument("--checkpoint-root", default=None, help=argparse.SUPPRESS)
    p.add_argument("--scratch", default=None, help=argparse.SUPPRESS)
    p.add_argument("--events-fd", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--pg-timeout", type=float, default=1800.0, help=argparse.SUPPRESS)
    return p


def _summary(r: RunResult) -> str:
    m = r.model_bytes or 1
    lines = [f"{r.strategy} · {r.model} · {r.params.get('nproc')} ranks: {r.outcome}"
             + (f" — {r.error}" if r.error else "")]
    node = r.checks.node
    if r.ram_peak is not None:
        lines.append(f"  node RAM peak {format_size(r.ram_peak)} ({r.ram_peak / m:.2f} × model)"
                     + (f", predicted {r.predicted.ram_peak / m:.2f} × ({r.predicted.formula})"
                        if r.predicted else ""))
    if node is not None and node.pss_loaded is not None:
        lines.append(f"  node PSS with weights loaded {node.pss_loaded / m:.2f} × model; "
                     f"Σ RSS would say {(node.rss_loaded_sum or 0) / m:.2f} ×")
    for f in r.checks.ranks:
        peak = f.ram_peak
        lines.append(f"  rank {f.rank}: peak {'?' if peak is None else f'{peak / m:.2f}'} × "
                     f"model (predicted {(f.predicted or 0) / m:.2f} ×, {f.formula}), weights "
                     f"{f.verify}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry of ``python -m bigviz.runner.distributed``: one rank under torchrun, else launch.

    Returns:
        The exit code: 0 when the job finished and every rank's weights checked out.

    Example:
        >>> # main(["shared-mmap", "--nproc", "2", "--model", "gpt:50MB", "--out", "r.json"])
    """
    ns = parser().parse_args(argv)
    env = rank_env()
    if env is not None:  # one rank of a job (torchrun's or our own launcher's)
        if ns.out is None:
            ns.out = "bigviz-distributed.json"
        ns.max_shard_size = parse_size(ns.max_shard_size)
        return rank_main(ns, env)
    result = run_distributed(
        ns.strategy, nproc=ns.nproc, model=ns.model, max_shard_size=ns.max_shard_size,
        format=ns.format, dtype=ns.dtype, per_rank=ns.per_rank, work_dir=ns.work_dir,
        ram_budget=ns.ram_budget, interval_ms=ns.interval_ms, timeout=ns.timeout,
        seed=ns.seed, backend=ns.backend,
    )
    if ns.out:
        Path(ns.out).write_text(result.to_json(), encoding="utf-8")
    print(_summary(result))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
