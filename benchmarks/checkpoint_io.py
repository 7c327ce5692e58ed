"""How fast are bigviz's sharded save and load, next to safetensors and a raw read? (issue 3)

Builds a GPT-2-shaped float32 state dict (default 2 GB, 2048 wide), then measures, each in
a fresh process (so no run inherits another's allocator state or faulted-in memory):

save
* ``bigviz.save_sharded`` (atomic: temporary folder, fsync of every file, rename);
* ``safetensors.torch.save_file`` of the same shards, without and with an fsync after
  (the two alternate, as each run's disk writeback spills into the next).

load, from the page cache (the files are read once first), into fresh memory
* raw: ``readinto`` of each file into a fresh ``torch.empty`` buffer — the floor set by page
  faults on fresh anonymous memory;
* ``safetensors.torch.load_file(backend="pread")`` (materialised);
* ``bigviz.load_sharded(meta_model, assign=True)`` (materialised), with its reader threads
  and with one thread;
* ``bigviz.load_sharded(model, assign=False)`` into a model whose memory already exists;
* ``safetensors.torch.load_file`` (mmap, lazy: nothing is read until used), for reference.

Prints median throughput and ratios measured side by side in this one run. Target: the
materialising bigviz load reaches >= 0.9 of the raw read.

Run: ``.venv/bin/python benchmarks/checkpoint_io.py [--size 2GB] [--shard 500MB] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

WIDTH = 2048


def _parse_size(text: str) -> int:
    from bigviz.units import parse_size

    return parse_size(text)


def _shapes(size: int) -> list[tuple[str, tuple[int, ...]]]:
    """GPT-2 block shapes (fp32) until ``size`` bytes are reached."""
    w = WIDTH
    block = [
        ("attn.c_attn.weight", (w, 3 * w)),
        ("attn.c_attn.bias", (3 * w,)),
        ("attn.c_proj.weight", (w, w)),
        ("attn.c_proj.bias", (w,)),
        ("ln_1.weight", (w,)),
        ("mlp.c_fc.weight", (w, 4 * w)),
        ("mlp.c_fc.bias", (4 * w,)),
        ("mlp.c_proj.weight", (4 * w, w)),
        ("mlp.c_proj.bias", (w,)),
        ("ln_2.weight", (w,)),
    ]
    per_block = sum(4 * _numel(s) for _, s in block)
    n = max(1, -(-size // per_block))
    return [(f"h.{i}.{name}", shape) for i in range(n) for name, shape in block]


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _state_dict(size: int) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(0)
    return {name: torch.randn(shape, generator=g) for name, shape in _shapes(size)}


def _meta_model(size: int) -> Any:
    import torch
    from torch import nn

    root = nn.Module()
    for name, shape in _shapes(size):
        *mods, leaf = name.split(".")
        m = root
        for part in mods:
            if not hasattr(m, part):
                m.add_module(part, nn.Module())
            m = getattr(m, part)
        m.register_parameter(
            leaf, nn.Parameter(torch.empty(shape, device="meta"), requires_grad=False)
        )
    return root


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


# ---------------------------------------------------------------------------------------------
# children: each measures one thing in a fresh process and prints {"seconds": …, "bytes": …}


def child(kind: str, folder: Path, size: int, shard: int) -> dict[str, float]:
    import torch

    import bigviz

    ck = folder / "bigviz"
    if kind.startswith("save"):
        sd = _state_dict(size)
        nbytes = sum(t.nbytes for t in sd.values())
        if kind == "save-bigviz":
            t0 = time.perf_counter()
            bigviz.save_sharded(sd, ck, max_shard_size=shard, overwrite=True)
            return {"seconds": time.perf_counter() - t0, "bytes": nbytes}
        from safetensors.torch import save_file

        out = folder / "st"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        plan = bigviz.plan_shards(sd, shard)
        t0 = time.perf_counter()
        paths = []
        for name, s in zip(plan.filenames(), plan.shards, strict=True):
            save_file({k: sd[k] for k in s.keys}, str(out / name), metadata={"format": "pt"})
            paths.append(out / name)
        t1 = time.perf_counter()
        for p in paths:
            fd = os.open(p, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        t2 = time.perf_counter()
        shutil.rmtree(out)
        return {"seconds": t1 - t0, "seconds_fsync": t2 - t0, "bytes": nbytes}

    files = _files(ck)
    nbytes = sum(p.stat().st_size for p in files)
    keep: list[Any] = []
    if kind == "load-raw":
        t0 = time.perf_counter()
        for p in files:
            buf = torch.empty(p.stat().st_size, dtype=torch.uint8)
            mv = memoryview(buf.numpy())  # type: ignore[arg-type]
            with open(p, "rb", buffering=0) as f:
                got = 0
                while got < len(mv):
                    got += f.readinto(mv[got:]) or 0
            keep.append(buf)
        dt = time.perf_counter() - t0
    elif kind in ("load-st-pread", "load-st-mmap"):
        from safetensors.torch import load_file

        t0 = time.perf_counter()
        for p in files:
            if kind == "load-st-pread":
                keep.append(load_file(p, backend="pread"))
            else:
                keep.append(load_file(p))
        dt = time.perf_counter() - t0
    elif kind in ("load-bigviz", "load-bigviz-1t"):
        model = _meta_model(size)
        threads = 1 if kind == "load-bigviz-1t" else None
        t0 = time.perf_counter()
        report = bigviz.load_sharded(model, ck, assign=True, threads=threads)
        dt = time.perf_counter() - t0
        nbytes = report.bytes_read
        keep.append(model)
    elif kind == "load-bigviz-inplace":
        model = _meta_model(size).to_empty(device="cpu")
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()  # memory exists and is faulted in, as after a random init
        t0 = time.perf_counter()
        report = bigviz.load_sharded(model, ck, assign=False)
        dt = time.perf_counter() - t0
        nbytes = report.bytes_read
        keep.append(model)
    else:
        raise SystemExit(f"unknown kind {kind}")
    return {"seconds": dt, "bytes": nbytes}


def run_child(kind: str, folder: Path, size: int, shard: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", kind, "--dir", str(folder)]
    cmd += ["--size", str(size), "--shard", str(shard)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{out.stderr[-3000:]}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="2GB", help="model size (default 2GB)")
    ap.add_argument("--shard", default="500MB", help="max shard size (default 500MB)")
    ap.add_argument("--repeats", type=int, default=3, help="load runs per kind (default 3)")
    ap.add_argument("--save-repeats", type=int, default=2, help="save runs per kind (default 2)")
    ap.add_argument("--dir", default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    size, shard = _parse_size(args.size), _parse_size(args.shard)
    if args.child:
        print(json.dumps(child(args.child, Path(args.dir), size, shard)))
        return

    folder = Path(args.dir or tempfile.mkdtemp(prefix="bigviz-ckbench-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        gb = 1e9
        print(f"model {size / gb:.2f} GB (GPT-2 shaped, fp32), shards {shard / gb:.2f} GB")
        # saves alternate (a slow disk's writeback from one run spills into the next)
        runs_b, runs_s = [], []
        for _ in range(args.save_repeats):
            runs_s.append(run_child("save-st", folder, size, shard))
            runs_b.append(run_child("save-bigviz", folder, size, shard))
        nbytes = runs_b[0]["bytes"]
        t_b = statistics.median(r["seconds"] for r in runs_b)
        t_s = statistics.median(r["seconds"] for r in runs_s)
        t_sf = statistics.median(r["seconds_fsync"] for r in runs_s)
        print(f"\nsave, median of {args.save_repeats} fresh processes each")
        print(f"  bigviz.save_sharded (fsync, atomic)  {nbytes / t_b / gb:6.2f} GB/s")
        print(f"  safetensors save_file                {nbytes / t_s / gb:6.2f} GB/s")
        print(f"  safetensors save_file + fsync        {nbytes / t_sf / gb:6.2f} GB/s")
        print(f"  ratio bigviz / (save_file + fsync)   {t_sf / t_b:6.2f}")
        print(f"  ratio bigviz / save_file             {t_s / t_b:6.2f}")

        # warm the page cache so every load reads the same cached bytes
        for p in _files(folder / "bigviz"):
            with open(p, "rb") as f:
                while f.read(64 << 20):
                    pass
        kinds = [
            "load-raw",
            "load-st-pread",
            "load-bigviz",
            "load-bigviz-1t",
            "load-bigviz-inplace",
            "load-st-mmap",
        ]
        rates: dict[str, list[float]] = {k: [] for k in kinds}
        for _ in range(args.repeats):
            for k in kinds:
                r = run_child(k, folder, size, shard)
                rates[k].append(r["bytes"] / r["seconds"])
        med = {k: statistics.median(v) for k, v in rates.items()}
        labels = {
            "load-raw": "raw readinto, fresh buffer",
            "load-st-pread": "safetensors load_file(backend=pread)",
            "load-bigviz": "bigviz.load_sharded(meta, assign=True)",
            "load-bigviz-1t": "  same, threads=1",
            "load-bigviz-inplace": "bigviz.load_sharded(model) in place",
            "load-st-mmap": "safetensors load_file (mmap, lazy)",
        }
        print(f"\nload from page cache, median of {args.repeats} fresh processes (GB/s, x raw)")
        for k in kinds:
            spread = f"{min(rates[k]) / gb:5.2f}-{max(rates[k]) / gb:5.2f}"
            ratio = med[k] / med["load-raw"]
            print(f"  {labels[k]:40s} {med[k] / gb:6.2f} GB/s  [{spread}]  {ratio:5.2f}x")
        best = {k: max(v) for k, v in rates.items()}
        ratio_med = med["load-bigviz"] / med["load-raw"]
        ratio_best = best["load-bigviz"] / best["load-raw"]
        verdict = "OK" if ratio_med >= 0.9 else "BELOW TARGET"
        print(
            f"\ntarget: materialising bigviz load >= 0.9 x raw: {ratio_med:.2f} on medians "
            f"({verdict}), {ratio_best:.2f} on best runs"
        )
        print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    finally:
        if not args.dir:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
