"""How much RAM and time does ``bigviz.checkpoint.reshard`` take, next to its bound? (issue 12 B)

Saves a GPT-2-shaped float32 checkpoint (default 1 GB, safetensors), then, each in a fresh
process with a warm page cache, measures the exact peak RAM (VmHWM above the phase start,
``bigviz.record``) and the wall time of:

* ``reshard`` small input shards -> larger output shards (safetensors);
* ``reshard`` large input shards -> smaller output shards (safetensors);
* ``reshard`` to ``.bin`` (``torch.save`` writer);
* for reference, the non-streaming way: load every shard (``safetensors.torch.load_file``)
  into one state dict, then ``huggingface_hub.save_torch_state_dict`` — holds the model.

Prints each peak beside its bound (largest input shard + largest output shard + 64 MiB) and
the ratios peak/bound, peak/model, and time and throughput, side by side from this one run.
Target: every reshard peak <= its bound.

Run: ``.venv/bin/python benchmarks/reshard.py [--size 1GB] [--small 100MB] [--large 250MB]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 1024
MiB = 1 << 20

_CHILD = """
import json, os, sys, time
import bigviz
from bigviz.checkpoint import inspect_checkpoint, reshard
how, src, dst, size, fmt = sys.argv[1:6]
if how == "load+save":
    import huggingface_hub
    from safetensors.torch import load_file
source = inspect_checkpoint(src)
with bigviz.record(instrument=False, sources=["ram"]) as rec:
    start = time.perf_counter()
    with rec.phase(how):
        if how == "reshard":
            reshard(src, dst, max_shard_size=size, format=fmt)
        else:
            sd = {}
            for p in source.shard_paths():
                sd.update(load_file(p))
            os.mkdir(dst)
            limit = int(size) if size.isdigit() else size
            huggingface_hub.save_torch_state_dict(sd, dst, max_shard_size=limit)
            del sd
    seconds = time.perf_counter() - start
out = inspect_checkpoint(dst)
ph = rec.recording.phase(how)
print(json.dumps({"peak": ph.ram_growth, "exact": ph.ram_peak_exact, "seconds": seconds,
                  "in": source.largest_shard, "out": out.largest_shard,
                  "n_in": source.n_shards, "n_out": out.n_shards, "total": out.total_size}))
"""


def _parse_size(text: str) -> int:
    from bigviz.units import parse_size

    return parse_size(text)


def _fmt(n: float) -> str:
    from bigviz.units import format_size

    return format_size(int(n))


def _save_source(folder: Path, size: int, shard: str) -> None:
    import torch

    from bigviz.checkpoint import save_sharded

    g = torch.Generator().manual_seed(0)
    w = WIDTH
    sd: dict[str, torch.Tensor] = {"wte.weight": torch.randn(8192, w, generator=g)}
    i = 0
    while sum(t.nbytes for t in sd.values()) < size:
        sd[f"h.{i}.attn.weight"] = torch.randn(w, 3 * w, generator=g)
        sd[f"h.{i}.attn.bias"] = torch.randn(3 * w, generator=g)
        sd[f"h.{i}.mlp.fc.weight"] = torch.randn(w, 4 * w, generator=g)
        sd[f"h.{i}.mlp.proj.weight"] = torch.randn(4 * w, w, generator=g)
        sd[f"h.{i}.ln.weight"] = torch.ones(w)
        i += 1
    save_sharded(sd, folder, max_shard_size=shard)


def _warm(folder: Path) -> None:
    for p in sorted(folder.iterdir()):
        with open(p, "rb") as f:
            while f.read(64 * MiB):
                pass


def _child(how: str, src: Path, dst: Path, size: str, fmt: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_CHILD), how, str(src), str(dst), size, fmt],
        capture_output=True,
        text=True,
        env=env,
        cwd=dst.parent,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{how} {src.name} -> {size} {fmt} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="1GB", help="checkpoint size (default 1GB)")
    parser.add_argument("--small", default=None, help="small shard size (default size/10)")
    parser.add_argument("--large", default=None, help="large shard size (default size/4)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    size = _parse_size(args.size)
    small = args.small or str(max(size // 10, 1))
    large = args.large or str(max(size // 4, 1))
    work = Path(tempfile.mkdtemp(prefix="bigviz-bench-reshard-"))
    try:
        cases = [
            ("reshard", "src-small", large, "safetensors"),
            ("reshard", "src-large", small, "safetensors"),
            ("reshard", "src-small", large, "bin"),
            ("load+save", "src-small", large, "safetensors"),
        ]
        print(
            f"saving a {_fmt(size)} checkpoint in {_fmt(_parse_size(small))} and "
            f"{_fmt(_parse_size(large))} shards into {work} ...",
            flush=True,
        )
        _save_source(work / "src-small", size, small)
        _save_source(work / "src-large", size, large)
        rows = []
        for i, (how, src, out, fmt) in enumerate(cases):
            _warm(work / src)
            r = _child(how, work / src, work / f"out-{i}", out, fmt)
            bound = r["in"] + r["out"] + 64 * MiB
            rows.append((how, src, out, fmt, r, bound))
            shutil.rmtree(work / f"out-{i}")
        print()
        head = (
            f"{'how':<10} {'in shards':>16} {'out shards':>16} {'fmt':<11} {'peak':>10} "
            f"{'bound':>10} {'peak/bound':>10} {'peak/M':>7} {'time':>7} {'GB/s':>5}"
        )
        print(head)
        print("-" * len(head))
        for how, _src, _out, fmt, r, bound in rows:
            peak = r["peak"] or 0
            shards_in = f"{r['n_in']} x {_fmt(r['in'])}"
            shards_out = f"{r['n_out']} x {_fmt(r['out'])}"
            # the bound is reshard's; the load+save row shows what it would be held to
            bound_s = _fmt(bound) if how == "reshard" else "—"
            ratio_s = f"{peak / bound:.2f}" if how == "reshard" else f"({peak / bound:.2f})"
            print(
                f"{how:<10} {shards_in:>16} {shards_out:>16} {fmt:<11} {_fmt(peak):>10} "
                f"{bound_s:>10} {ratio_s:>10} {peak / r['total']:>7.2f} "
                f"{r['seconds']:>6.2f}s {r['total'] / r['seconds'] / 1e9:>5.2f}"
            )
        ok = all((r["peak"] or 0) <= bound for how, *_, r, bound in rows if how == "reshard")
        exact = all(r["exact"] for *_, r, _ in rows)
        print(
            f"\npeaks: VmHWM growth in a fresh process ({'exact' if exact else 'SAMPLED'}); "
            "M = model bytes; bound = largest input shard + largest output shard + 64 MiB"
        )
        print(f"target (every reshard peak <= bound): {'met' if ok else 'MISSED'}")
        return 0 if ok else 1
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
