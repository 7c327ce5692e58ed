"""``bigviz reshard SRC DST --max-shard-size 2GB``: rewrite a checkpoint with another shard size."""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bigviz._errors import ConfigError
from bigviz.commands._output import add_verb, print_json
from bigviz.data.serde import to_plain
from bigviz.units import format_size

if TYPE_CHECKING:
    from bigviz.checkpoint import ShardInfo

__all__ = ["add_parser", "run"]

EXAMPLES = """\
  bigviz reshard ./gpt2 ./gpt2-2gb --max-shard-size 2GB         # same format, new shard size
  bigviz reshard ./gpt2 ./gpt2-bin --max-shard-size 500MB --format bin
  bigviz reshard ./gpt2 ./gpt2-2gb --max-shard-size 2GB --overwrite

The files are what huggingface_hub's save_torch_state_dict writes for the checkpoint's state
dict (same split, names, index). Reads one input shard at a time, memory-mapped (peak RAM
about largest input shard + largest output shard); .bin files are read with
torch.load(weights_only=True), which runs no pickled code. config.json and the other
non-weight files of SRC are copied; nothing is written into SRC.
"""


def add_parser(subparsers: Any) -> None:
    """Register ``bigviz reshard``."""
    p = add_verb(
        subparsers,
        "reshard",
        help="rewrite a checkpoint with another shard size or format, one shard at a time",
        description=(
            "Rewrite a checkpoint folder (safetensors or .bin, sharded or one file; a\n"
            "Transformers save_pretrained folder too) into DST with a new maximum shard size,\n"
            "streaming one input shard at a time. The output is written into a temporary\n"
            "folder and moved into place at the end: an error or Ctrl-C leaves DST as it was."
        ),
        examples=EXAMPLES,
    )
    p.add_argument("src", metavar="SRC", help="the checkpoint folder (or index or weight file)")
    p.add_argument("dst", metavar="DST", help="the folder to write (missing or empty)")
    p.add_argument(
        "--max-shard-size",
        required=True,
        metavar="SIZE",
        help="largest shard, e.g. 2GB (decimal) or 2GiB (binary); a bigger tensor gets its own",
    )
    p.add_argument(
        "--format",
        choices=["safetensors", "bin"],
        default=None,
        help="output format (default: the source's)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty DST")
    p.add_argument("--json", action="store_true", help="print the written checkpoint as JSON")
    p.set_defaults(func=run)


def _peak_rss() -> int:
    # the kernel keeps it anyway: no recorder needed (Linux: KiB; macOS: bytes)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def run(args: argparse.Namespace) -> int:
    """``bigviz reshard``: one line per written shard, then a summary (or ``--json``)."""
    from bigviz.options import positive_size

    positive_size(args.max_shard_size, "--max-shard-size")  # before reading anything
    if not Path(args.src).exists():
        raise ConfigError(
            f"checkpoint {args.src!r} does not exist; give the folder that holds "
            "model.safetensors or pytorch_model.bin (or their sharded index)"
        )
    from bigviz.checkpoint import inspect_checkpoint, reshard

    out = sys.stdout

    def shard_line(s: ShardInfo) -> None:
        if not args.json:
            print(
                f"wrote {s.name}  {format_size(s.bytes)}  {s.n_keys} tensors", file=out, flush=True
            )

    start = time.perf_counter()
    source = inspect_checkpoint(args.src)
    info = reshard(
        args.src,
        args.dst,
        max_shard_size=args.max_shard_size,
        format=args.format,
        overwrite=args.overwrite,
        on_shard=shard_line,
    )
    seconds = time.perf_counter() - start
    bound = source.largest_shard + info.largest_shard + (64 << 20)
    if args.json:
        print_json({"checkpoint": to_plain(info), "seconds": seconds, "peak_rss": _peak_rss()})
        return 0
    index = f", index {info.index_file}" if info.index_file else ""
    print(
        f"{info.path}: {info.format}, {info.n_shards} shard(s){index}, {info.n_tensors} tensors, "
        f"{format_size(info.total_size)} total, largest shard {format_size(info.largest_shard)} "
        f"(was {source.n_shards} shard(s), largest {format_size(source.largest_shard)}), "
        f"{seconds:.1f} s",
        file=out,
    )
    print(
        f"peak RSS of this process {format_size(_peak_rss())} (VmHWM, Python and torch "
        f"included); streaming bound above baseline {format_size(bound)} "
        "(largest input + largest output shard + 64 MiB)",
        file=out,
    )
    return 0
