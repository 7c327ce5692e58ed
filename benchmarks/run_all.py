"""Run every bigviz benchmark, one after another, each in its own process, then print
every figure that has a target against it, with the load average it was measured at.

Usage::

    python benchmarks/run_all.py                 # each benchmark at its default size
    python benchmarks/run_all.py --size 256MB    # all of them small (a smoke run)
    python benchmarks/run_all.py recorder_overhead checkpoint_io   # a selection

Each benchmark prints its own ratios measured side by side in one run; this script
sequences them (so they never compete for the 2 cores), runs ``recorder_overhead`` twice
(the machine as it is, then with every core busy: one busy-loop process per CPU but the
loader's), and closes with the table of figures vs targets (``_targets.py``; issue 17) and
which benchmarks failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _targets import ENV  # noqa: E402  (benchmarks/ is not a package)


def _runs(script: Path, size: str | None) -> list[list[str]]:
    """The command lines to run for one benchmark (arguments after the interpreter)."""
    base = [str(script)] + (["--size", size] if size else [])
    if script.stem == "recorder_overhead":  # 9 loads a mode: single loads vary +-10 % here
        busy = max(1, (os.cpu_count() or 2) - 1)
        base += ["--repeats", "9"]
        return [base, [*base, "--hog", str(busy)]]
    return [base]


def print_targets(path: Path) -> int:
    """The closing table of figures vs targets; returns how many were not met."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        print("\nno figure with a target was measured")
        return 0
    width = max(len(r["figure"]) for r in rows)
    print(f"\n{'figure':<{width}}  {'value':>9}  {'target':>8}  {'':<7} load avg  detail")
    print("-" * (width + 46))
    for r in rows:
        met = "met" if r["met"] else "NOT met"
        print(f"{r['figure']:<{width}}  {r['value']!s:>9}  {r['target']:>8}  {met:<7} "
              f"{r['load']:>8.2f}  {r['detail']}")  # fmt: skip
    missed = sum(not r["met"] for r in rows)
    print(f"{len(rows) - missed} of {len(rows)} targets met (load averages: 1 minute, "
          f"{os.cpu_count()} CPUs, when each figure was printed)")  # fmt: skip
    return missed


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
    scripts = sorted(
        p for p in HERE.glob("*.py") if p.name != Path(__file__).name and p.name[0] != "_"
    )
    if args.names:
        known = {p.stem: p for p in scripts}
        unknown = [n for n in args.names if n not in known]
        if unknown:
            parser.error(f"unknown benchmark(s) {unknown}; choose from {sorted(known)}")
        scripts = [known[n] for n in args.names]
    failed = []
    with tempfile.TemporaryDirectory(prefix="bigviz-bench-") as tmp:
        targets = Path(tmp) / "targets.jsonl"
        targets.touch()
        env = {**os.environ, ENV: str(targets)}
        for script in scripts:
            for run in _runs(script, args.size):
                cmd = [sys.executable, *run]
                print(f"\n=== {script.stem}: {' '.join(run)}", flush=True)
                start = time.monotonic()
                rc = subprocess.call(cmd, env=env)
                print(f"=== {script.stem}: exit {rc} after {time.monotonic() - start:.0f} s",
                      flush=True)  # fmt: skip
                if rc != 0:
                    failed.append(script.stem)
        print_targets(targets)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0  # a missed target is a finding the table prints, not a failure


if __name__ == "__main__":
    raise SystemExit(main())
