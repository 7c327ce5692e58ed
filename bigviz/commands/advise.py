"""``bigviz advise MODEL --ram 16GB``: which way of loading this model fits this machine."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bigviz.commands._output import add_verb, print_json

__all__ = ["add_parser", "run"]

EXAMPLES = """\
  bigviz advise gpt:400MB --ram 2GB                   # a zoo model: nothing is saved
  bigviz advise ./checkpoint --ram 16GB --vram 0=24GB # a folder as saved, one 24 GB GPU
  bigviz advise hf:gpt2 --ram 1GB --shard-sizes 100MB # a cached model, resharding allowed
  bigviz advise gpt:400MB --ram 500MB --disk --verify # allow disk offload, run the pick
  bigviz advise gpt:1GB --ram 4GB --json | jq .pick

Peak RAM is predicted by each strategy's own formula from the checkpoint's tensors, above
the worker's baseline (Python + torch, measured with a 1 MB run unless --baseline is
given); a candidate fits when baseline + the top of its range + 16 MiB <= --ram. Time is an
estimate: bytes ÷ the read rates of the reference measurements (warm page cache).
--verify runs the pick in a fresh process under --ram and prints measured vs predicted.
"""


def add_parser(subparsers: Any) -> None:
    """Register ``bigviz advise``."""
    p = add_verb(
        subparsers,
        "advise",
        help="rank strategy × device map × shard size by predicted RAM, VRAM and time",
        description=(
            "Rank the ways of loading MODEL (strategy × device map × shard size) by\n"
            "predicted peak RAM, peak VRAM and expected time, mark which fit the budgets,\n"
            "with the formula behind each number, and pick the fastest that fits."
        ),
        examples=EXAMPLES,
    )
    p.add_argument("model", metavar="MODEL",
                   help="gpt:400MB, mlp:1GB, bert-base, a checkpoint folder, or hf:ORG/NAME")
    p.add_argument("--ram", required=True, metavar="SIZE",
                   help="RAM the loading process may use, baseline included (e.g. 16GB)")
    p.add_argument("--vram", default=None, metavar="GPU=SIZE,...",
                   help="GPU memory budgets, e.g. 0=24GB,1=24GB (adds cuda/auto/balanced)")
    p.add_argument("--disk", action="store_true",
                   help="allow disk offload (device map auto with a CPU cap)")
    p.add_argument("--shard-sizes", default=None, metavar="SIZES",
                   help="shard sizes to consider, e.g. 100MB,1GB (a folder: reshard targets "
                        "besides its files as saved)")
    p.add_argument("--strategies", default=None, metavar="NAMES",
                   help="strategies to consider (default: every single-process loader)")
    p.add_argument("--baseline", default=None, metavar="SIZE",
                   help="the worker's baseline RSS (default: measured with a 1 MB run)")
    p.add_argument("--verify", action="store_true",
                   help="run the pick in a fresh process under --ram: measured vs predicted")
    p.add_argument("--all", action="store_true", help="show every candidate, not the top 15")
    p.add_argument("--work-dir", default=None, metavar="DIR",
                   help="where probe and verification checkpoints go")
    p.add_argument("--json", action="store_true", help="print the advice as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``bigviz advise``: the pick's sentence and the table (or ``--json``); exit 1 when
    nothing fits or the verification run was not ok."""
    from bigviz.advisor import advise
    from bigviz.options import parse_list, positive_size

    positive_size(args.ram, "--ram")

    advice = advise(
        args.model, ram=args.ram, vram=args.vram, disk=args.disk,
        shard_sizes=parse_list(args.shard_sizes, "--shard-sizes") if args.shard_sizes else None,
        strategies=parse_list(args.strategies, "--strategies") if args.strategies else None,
        baseline=args.baseline, verify=args.verify, work_dir=args.work_dir,
    )
    if args.json:
        print_json(advice.to_dict())
    else:
        print(advice.text(limit=None if args.all else 15), file=sys.stdout)
    if advice.pick is None:
        return 1
    return 0 if advice.verified is None or advice.verified.ok else 1
