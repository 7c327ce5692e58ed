"""Run every bigviz benchmark, one after another, each in its own process.

Usage::

    python benchmarks/run_all.py                 # each benchmark at its default size
    python benchmarks/run_all.py --size 256MB    # all of them small (a smoke run)
    python benchmarks/run_all.py recorder_overhead checkpoint_io   # a selection

Each benchmark prints its own ratios measured side by side in one run; this script only
sequences them (so they never compete for the 2 cores) and reports which failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "names", nargs="*", help="benchmarks to run (file names without .py); default: all"
    )
    parser.add_argument(
        "--size", help="model/checkpoint size passed to every benchmark, e.g. 256MB"
    )
    args = parser.parse_args(argv)
    scripts = sorted(p for p in HERE.glob("*.py") if p.name != Path(__file__).name)
    if args.names:
        known = {p.stem: p for p in scripts}
        unknown = [n for n in args.names if n not in known]
        if unknown:
            parser.error(f"unknown benchmark(s) {unknown}; choose from {sorted(known)}")
        scripts = [known[n] for n in args.names]
    failed = []
    for script in scripts:
        cmd = [sys.executable, str(script)]
        if args.size:
            cmd += ["--size", args.size]
        print(f"\n=== {script.stem}: {' '.join(cmd[1:])}", flush=True)
        start = time.monotonic()
        rc = subprocess.call(cmd)
        print(f"=== {script.stem}: exit {rc} after {time.monotonic() - start:.0f} s", flush=True)
        if rc != 0:
            failed.append(script.stem)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
