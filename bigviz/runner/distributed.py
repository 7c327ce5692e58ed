"""The command line of distributed runs: ``python -m bigviz.runner.distributed``.

Under ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` …) it runs one
rank (:mod:`bigviz.runner.rank`), so multi-node jobs need nothing extra::

    torchrun --nnodes 2 --nproc_per_node 4 ... -m bigviz.runner.distributed shared-mmap \\
        --model gpt:1GB --out result.json

Without those variables it launches the ranks itself (:mod:`bigviz.runner.launcher`):
``python -m bigviz.runner.distributed shared-mmap --nproc 2 --model gpt:100MB``.
With ``--nnodes N --node-rank K --master-addr HOST --master-port PORT --node-dir DIR`` it
launches node K's ranks of an N-node job (one such launch per node, like torchrun's own
flags); node 0's result holds every node's totals (``checks.nodes``) and the cluster's.

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
from bigviz.runner.launcher import Cluster, run_distributed
from bigviz.runner.rank import rank_env, rank_main, rank_shard_size
from bigviz.units import format_size

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
    p.add_argument("--max-shard-size", default=None,
                   help="default: 500MB; a checkpoint folder's files as saved")
    p.add_argument("--format", default="safetensors", choices=("safetensors", "bin"))
    p.add_argument("--dtype", default=None,
                   help="default: float32; a checkpoint folder loads in its own dtype")
    p.add_argument("--factory", default=None,
                   help="for a checkpoint folder without config.json: package.module:function")
    p.add_argument("--per-rank", default="naive", choices=strategies.PER_RANK)
    p.add_argument("--work-dir", default=None)
    p.add_argument("--ram-budget", default=None)
    p.add_argument("--interval-ms", type=float, default=1.0)
    p.add_argument("--timeout", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default=None, choices=("gloo", "nccl"))
    p.add_argument("--out", default=None, help="write the RunResult JSON here")
    p.add_argument("--nnodes", type=int, default=1,
                   help="nodes of the job, one launch per node (not under torchrun)")
    p.add_argument("--node-rank", type=int, default=0, help="this node's index, 0..nnodes-1")
    p.add_argument("--master-addr", default="127.0.0.1",
                   help="host of node 0, where the ranks meet (default: 127.0.0.1)")
    p.add_argument("--master-port", type=int, default=None,
                   help="rendezvous port, the same on every node (default: a free one, "
                        "single node only)")
    p.add_argument("--node-dir", default=None,
                   help="folder every node's launcher reads and writes (shared file system "
                        "across hosts): the job's result and each node's totals")
    p.add_argument("--rendezvous-timeout", type=float, default=300.0,
                   help="stop the job when the other nodes have not joined after this many "
                        "seconds (default: 300)")
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
    for n in r.checks.nodes:
        peak = n.ram_peak
        lines.append(f"  node {n.node} ({n.host}, ranks {n.ranks}): RAM peak "
                     f"{'?' if peak is None else f'{peak / m:.2f}'} × model ({n.sampled})")
    where = f"cluster ({len(r.checks.nodes)} nodes)" if r.checks.nodes else "node"
    if r.ram_peak is not None:
        lines.append(f"  {where} RAM peak {format_size(r.ram_peak)} "
                     f"({r.ram_peak / m:.2f} × model)"
                     + (f", predicted {r.predicted.ram_peak / m:.2f} × ({r.predicted.formula})"
                        if r.predicted else ""))
    if node is not None and node.pss_loaded is not None:
        lines.append(f"  {where} PSS with weights loaded {node.pss_loaded / m:.2f} × model; "
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
        ns.max_shard_size = rank_shard_size(ns.max_shard_size)
        return rank_main(ns, env)
    result = run_distributed(
        ns.strategy, nproc=ns.nproc, model=ns.model, max_shard_size=ns.max_shard_size,
        format=ns.format, dtype=ns.dtype, per_rank=ns.per_rank, work_dir=ns.work_dir,
        ram_budget=ns.ram_budget, interval_ms=ns.interval_ms, timeout=ns.timeout,
        seed=ns.seed, backend=ns.backend, factory=ns.factory,
        cluster=Cluster(ns.nnodes, ns.node_rank, ns.master_addr, ns.master_port,
                        None if ns.node_dir is None else Path(ns.node_dir),
                        ns.rendezvous_timeout),
    )
    if ns.out:
        Path(ns.out).write_text(result.to_json(), encoding="utf-8")
    print(_summary(result))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
