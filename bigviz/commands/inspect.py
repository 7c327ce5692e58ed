"""``bigviz inspect DIR``: what a checkpoint holds, and what each strategy will cost to load it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bigviz._errors import BigvizError, ConfigError
from bigviz.commands._output import add_verb, format_table, print_json
from bigviz.data.serde import to_plain
from bigviz.units import format_size

if TYPE_CHECKING:
    from bigviz.checkpoint import CheckpointInfo

__all__ = ["add_parser", "predictions", "run"]

EXAMPLES = """\
  bigviz inspect ./checkpoint                       # shards, dtypes, modules, predicted peaks
  bigviz inspect ./checkpoint --depth 3             # a deeper per-module table
  bigviz inspect ./checkpoint --device-map cuda:0   # predictions when weights go to a GPU
  bigviz inspect ./checkpoint --json | jq .predictions
  bigviz inspect hf:openai-community/gpt2           # a model in the local Hugging Face cache

Reads safetensors headers only; .bin files are memory-mapped with
torch.load(mmap=True, weights_only=True), which runs no pickled code and copies no data.
"""


def add_parser(subparsers: Any) -> None:
    """Register ``bigviz inspect``."""
    p = add_verb(
        subparsers,
        "inspect",
        help="a checkpoint's shards, sizes, dtypes, per-module sizes and predicted peaks",
        description=(
            "Describe a sharded (or single-file) checkpoint folder written by bigviz,\n"
            "Transformers or huggingface_hub, without loading its tensors, and predict the\n"
            "peak RAM of each loading strategy for it."
        ),
        examples=EXAMPLES,
    )
    p.add_argument("dir", metavar="DIR",
                   help="the checkpoint folder, or hf:ORG/NAME[@REVISION] from the local "
                   "Hugging Face cache (never downloaded)")
    p.add_argument(
        "--depth",
        type=int,
        default=2,
        metavar="N",
        help="module table depth: 1 = top level only (default: 2)",
    )
    p.add_argument(
        "--device-map",
        default="cpu",
        metavar="MAP",
        help="device map for the predictions: cpu, cuda, cuda:N, disk, auto (default: cpu)",
    )
    p.add_argument("--json", action="store_true", help="print everything as JSON")
    p.set_defaults(func=run)


def _device_map(text: str) -> str:
    from bigviz.strategies import validate_device_map

    # predictions for a GPU are useful on a machine without one: check the form only
    dm = validate_device_map(text, n_cuda=1024)
    return str(dm)


def predictions(info: CheckpointInfo, device_map: str) -> dict[str, dict[str, Any]]:
    """Each registered strategy's predicted peaks for ``info`` (bytes above baseline).

    A strategy that cannot take this device map, or whose library is missing, gets
    ``{"unavailable": reason}`` instead of a prediction.

    Example:
        >>> # predictions(bigviz.inspect_checkpoint("ckpt/"), "cpu")["naive"]["formula"]
        >>> # '2 × M'
    """
    import bigviz.strategies as strategies

    out: dict[str, dict[str, Any]] = {}
    for name in strategies.names():
        strat = strategies.get(name)
        why = strat.unavailable()
        if why is None and device_map != "cpu" and not strat.device_maps:
            why = "loads into CPU RAM only"
        if why is not None:
            out[name] = {"unavailable": why}
            continue
        try:
            pred = strat.predict(info, device_map)
        except BigvizError as exc:
            out[name] = {"unavailable": str(exc)}
            continue
        out[name] = to_plain(pred)
    return out


def _module_rows(info: CheckpointInfo, depth: int) -> list[list[str]]:
    total = info.module_sizes.get("", info.total_size) or 1
    keys = [k for k in info.module_sizes if k and k.count(".") < depth]
    # tensor names are in module_sizes too; a module table lists modules
    keys = [k for k in keys if k not in info.tensors or k.count(".") == 0]
    rows = []
    for k in sorted(keys):
        size = info.module_sizes[k]
        rows.append([k, format_size(size), f"{100.0 * size / total:.1f}%"])
    return rows


def run(args: argparse.Namespace) -> int:
    """``bigviz inspect``: print the checkpoint's tables, or ``--json``."""
    folder = Path(args.dir)
    if args.dir.startswith("hf:"):
        from bigviz.models.folders import resolve_hf

        folder = resolve_hf(args.dir)  # the cached snapshot; a one-line error when missing
    if not folder.exists():
        raise ConfigError(
            f"checkpoint folder {args.dir!r} does not exist; give the folder that holds "
            "model.safetensors or pytorch_model.bin (or their sharded index)"
        )
    if args.depth < 1:
        raise ConfigError(f"--depth {args.depth} must be >= 1 (1 = top-level modules)")
    device_map = _device_map(args.device_map)
    from bigviz.checkpoint import inspect_checkpoint

    info = inspect_checkpoint(folder)
    preds = predictions(info, device_map)
    if args.json:
        data = to_plain(info)
        print_json({"checkpoint": data, "device_map": device_map, "predictions": preds})
        return 0
    out = sys.stdout
    index = f" (index {info.index_file})" if info.index_file else ""
    print(
        f"{info.path}: {info.format}, {info.n_shards} file(s){index}, {info.n_tensors} tensors, "
        f"{format_size(info.total_size)} total, largest shard {format_size(info.largest_shard)}",
        file=out,
    )
    for note in info.notes:  # a forged total_size, shards the index leaves out, …
        print(note if note.startswith("warning:") else f"note: {note}", file=out)
    rows = [
        [f.name, str(f.n_keys), format_size(f.bytes), format_size(f.file_size)] for f in info.files
    ]
    print(
        "\n" + format_table(["file", "tensors", "bytes", "on disk"], rows, right=[1, 2, 3]),
        file=out,
    )
    total = info.total_size or 1
    rows = [
        [k, format_size(v), f"{100.0 * v / total:.1f}%"]
        for k, v in sorted(info.dtypes.items(), key=lambda kv: -kv[1])
    ]
    print("\n" + format_table(["dtype", "bytes", "share"], rows, right=[1, 2]), file=out)
    mrows = _module_rows(info, args.depth)
    if mrows:
        shown = mrows[:40]
        print(
            "\n"
            + format_table(
                [f"module (depth <= {args.depth})", "bytes", "share"], shown, right=[1, 2]
            ),
            file=out,
        )
        if len(mrows) > len(shown):
            print(f"... {len(mrows) - len(shown)} more (use --json for all)", file=out)
    m, s = format_size(info.total_size), format_size(info.largest_shard)
    print(
        f"\npredicted peak RAM above baseline, device map {device_map!r} (M = {m}, S = {s}):",
        file=out,
    )
    rows = []
    for name, p in preds.items():
        if "unavailable" in p:
            rows.append([name, f"({p['unavailable'][:60]})", "", "", "", ""])
            continue
        vram = ", ".join(f"{d} {format_size(b)}" for d, b in p.get("vram", {}).items())
        rows.append(
            [
                name,
                p["formula"],
                format_size(p["ram_peak"]),
                format_size(p.get("ram_anon")),
                format_size(p.get("ram_file")),
                vram or "—",
            ]
        )
    print(
        format_table(
            ["strategy", "formula", "RAM peak", "anon", "file-backed", "VRAM"],
            rows,
            right=[2, 3, 4],
        ),
        file=out,
    )
    if info.tied:
        print("\ntied: " + "; ".join(" = ".join(g) for g in info.tied), file=out)
    for note in info.notes:
        print(f"note: {note}", file=out)
    return 0
