"""Does ``bigviz profile`` tell the truth under forks and lock contention? (issue 13, items 1–2)

Two figures, each counted over many fresh runs of ``bigviz profile``:

* **doubled peaks** (item 1): a script that ``torch.load``s a file (default 200 MB) in
  the default, auto-instrumented mode; a run is "doubled" when the tree's peak exceeds the
  program's own process-wide peak (its ``VmHWM``) by more than half the file. Target 0/N.
* **spikes** (item 2): ``--no-instrument`` and default mode, a program doing N 300 MiB
  ``MADV_POPULATE_WRITE`` spikes, each in a marker phase (a ``clear_refs`` write waits for
  the mmap lock the populate holds). "shown": the timeline rose > 200 MiB inside the
  phase; "falsely exact": the phase says exact but its peak lacks the spike (< 290 MiB
  above the RSS before the populate began);
  the longest gap of the timeline. Targets: N/N shown, 0 falsely exact.

``--before DIR`` runs the same against another copy of bigviz (e.g. the last commit:
``mkdir /tmp/before && git archive HEAD bigviz | tar -x -C /tmp/before``), so the two
rows can be printed side by side.

Run: ``.venv/bin/python benchmarks/truth.py [--runs 20] [--size 200MB] [--spikes 20]
[--before /tmp/before]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

MiB = 2**20

LOAD = """
import sys, torch
state = torch.load(sys.argv[1], weights_only=True)
print(sum(t.numel() * t.element_size() for t in state.values()))
"""

SPIKES = """
import ctypes, mmap, os, sys, threading, time
fd = int(os.environ["BIGVIZ_PHASE_FD"])
libc = ctypes.CDLL(None, use_errno=True)
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
size = 300 << 20
for i in range(int(sys.argv[1])):
    m = mmap.mmap(-1, size)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    # a loader thread faults in 300 MiB holding the mmap lock (MADV_POPULATE_WRITE = 23);
    # the phase starts while it does: its clear_refs write waits for the lock
    th = threading.Thread(target=libc.madvise, args=(addr, size, 23))
    th.start()
    time.sleep(0.005)
    os.write(fd, f"BIGVIZ_PHASE start spike {i}\\n".encode())
    th.join()
    m.close()
    os.write(fd, f"BIGVIZ_PHASE end spike {i}\\n".encode())
    time.sleep(0.05)
"""

# runs in a child interpreter with the bigviz under test first on sys.path
PROFILE = """
import json, sys
from bigviz.recorder.profiler import profile_command
rec = profile_command(json.loads(sys.argv[1]), interval_ms=2.0,
                      instrument=sys.argv[2] == "1").recording
print(json.dumps(rec.to_dict()))
"""


def profile(cmd: list[str], *, instrument: bool, path: str | None) -> dict[str, Any]:
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = path
    # from an empty folder: `python -c`/`-m` put the working directory first on sys.path
    with tempfile.TemporaryDirectory() as cwd:
        out = subprocess.run(
            [sys.executable, "-c", PROFILE, json.dumps(cmd), "1" if instrument else "0"],
            capture_output=True, text=True, env=env, check=True, timeout=600, cwd=cwd,
        )  # fmt: skip
    data: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    return data


def doubled(file: Path, size: int, runs: int, path: str | None) -> tuple[int, float]:
    count, worst = 0, 0.0
    for _ in range(runs):
        rec = profile([sys.executable, "-c", LOAD, str(file)], instrument=True, path=path)
        tree = max(rec["series"]["ram.rss"]["v"])
        procs = rec["meta"]["processes"]
        own = procs[str(rec["pid"])]
        # the program's own peak: its VmHWM where known, else its highest sample
        root = max(own.get("ram_peak_process") or 0, own["ram_peak"])
        worst = max(worst, (tree - root) / size)
        count += tree - root > size / 2
    return count, worst


def spikes(n: int, instrument: bool, path: str | None) -> tuple[int, int, float]:
    with tempfile.TemporaryDirectory() as d:
        script = Path(d) / "spikes.py"
        script.write_text(SPIKES)
        rec = profile([sys.executable, str(script), str(n)], instrument=instrument, path=path)
    rss = rec["series"]["ram.rss"]
    shown = false_exact = 0
    for ph in rec["phases"]:
        if not ph["name"].startswith("spike"):
            continue
        vals = [v for t, v in zip(rss["t"], rss["v"], strict=True)
                if ph["start"] <= t <= ph["end"]]  # fmt: skip
        start = ph["ram_start"] or 0
        # the RSS before the spike's populate began (5 ms before the phase opened)
        base = min(v for t, v in zip(rss["t"], rss["v"], strict=True)
                   if ph["start"] - 0.04 <= t <= ph["start"])  # fmt: skip
        shown += bool(vals) and max(vals) - start > 200 * MiB
        false_exact += ph["ram_peak_exact"] and (ph["ram_peak"] or 0) - base < 290 * MiB
    gaps = [b - a for a, b in zip(rss["t"], rss["t"][1:], strict=False)]
    return shown, false_exact, max(gaps) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--size", default="200MB", help="size of the torch.load file")
    ap.add_argument("--spikes", type=int, default=20)
    ap.add_argument("--before", default=None, help="another bigviz tree to compare with")
    args = ap.parse_args()
    from bigviz.units import parse_size

    size = parse_size(args.size)
    import torch

    with tempfile.TemporaryDirectory() as d:
        file = Path(d) / "state.pt"
        torch.save({"w": torch.ones(size // 4, dtype=torch.float32)}, file)
        rows = [("before", args.before), ("after", None)] if args.before else [("after", None)]
        print(f"{'':8} {'doubled':>10} {'worst extra':>12} "
              f"{'spikes shown':>13} {'falsely exact':>14} {'max gap ms':>11}  mode")  # fmt: skip
        for label, path in rows:
            n, worst = doubled(file, size, args.runs, path)
            for instrument in (False, True):
                shown, bad, gap = spikes(args.spikes, instrument, path)
                mode = "default" if instrument else "--no-instrument"
                print(f"{label:8} {f'{n}/{args.runs}':>10} {worst:>11.2f}x "
                      f"{f'{shown}/{args.spikes}':>13} {f'{bad}/{args.spikes}':>14} "
                      f"{gap:>11.1f}  {mode}")  # fmt: skip


if __name__ == "__main__":
    main()
