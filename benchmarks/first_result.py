"""Time to the first result in a fresh kernel (issue 17 item 4).

Each scenario runs in a fresh Python process (a new kernel), ``--repeat`` times, and
prints the seconds from the "click" (the call that starts a run) to the worker's first
sample on the timeline, to its first phase, and to the result:

* ``import only``: ``import bigviz``, then the click: the fork server starts on it (before
  issue 17, every first run in a kernel paid this);
* ``load_ext, click at once``: ``forkserver.prestart()`` as ``%load_ext bigviz`` does,
  then the click right away (the server's start is still under way: the run waits for it,
  it never starts a second one);
* ``dashboard, warm kernel``: a real :class:`bigviz.widgets.Dashboard` is opened (it
  prestarts the server with what its strategies import), the kernel then idles until the
  server is up and ``--idle`` seconds more (a user reading the page: the server imports
  the strategies' libraries meanwhile), then the click runs what the Run button runs
  (``bigviz.sweep(**dashboard.settings())``, without the widget redraws). Target: first
  sample within 1 s of the click.

The checkpoint is saved once beforehand (a first run of a model also saves it: that is
the model's cost, not the first result's). ``--strategy transformers`` shows the
preloading of Transformers.

    .venv/bin/python benchmarks/first_result.py                  # gpt:100MB, meta
    .venv/bin/python benchmarks/first_result.py --strategy transformers
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _targets import figure  # benchmarks/ is sys.path[0] when run as a script

TARGET_S = 1.0  # first sample within 1 s of the click, on a warm kernel
SCENARIOS = ("import only", "load_ext, click at once", "dashboard, warm kernel")


def child(scenario: str, model: str, shard: str, strategy: str, work: str,
          idle: float) -> dict[str, Any]:
    """One fresh kernel: set it up as ``scenario`` says, click, time the first result."""
    t_start = time.monotonic()
    import bigviz
    from bigviz.runner import forkserver

    seen: dict[str, float] = {}
    kwargs: dict[str, Any] = {"strategies": [strategy], "shard_sizes": [shard],
                              "work_dir": work}
    if scenario == "load_ext, click at once":
        forkserver.prestart()
    elif scenario == "dashboard, warm kernel":
        from bigviz.widgets import Dashboard

        dash = Dashboard(model, shard_size=shard, strategies=[strategy], work_dir=work)
        forkserver.get_server().ensure()  # the kernel idles while the server starts
        time.sleep(idle)  # ... and while the user reads the page
        settings = dash.settings()
        model = settings.pop("model")
        kwargs = settings
    setup = time.monotonic() - t_start

    def on_event(ev: dict[str, Any]) -> None:
        kind = str(ev.get("type"))
        if kind == "samples":
            seen.setdefault("sample", time.monotonic())
        elif kind == "phase_start":
            seen.setdefault("phase_start", time.monotonic())

    click = time.monotonic()
    sweep = bigviz.sweep(model, on_event=on_event, **kwargs)
    done = time.monotonic()
    r = sweep.results[0]
    return {"setup": setup, "sample": seen.get("sample", done) - click,
            "phase": seen.get("phase_start", done) - click, "result": done - click,
            "outcome": r.outcome}


def run_child(scenario: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", scenario, "--size", args.size,
           "--shard-size", args.shard_size, "--strategy", args.strategy,
           "--work-dir", args.work_dir, "--idle", str(args.idle)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"{scenario} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="100MB", help="zoo gpt model size (default 100MB)")
    ap.add_argument("--shard-size", default="20MB")
    ap.add_argument("--strategy", default="meta")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--idle", type=float, default=5.0,
                    help="seconds a warm kernel idles after the server is up (default 5)")
    ap.add_argument("--work-dir", default=str(Path.home() / ".cache" / "bigviz-bench-first"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    model = f"gpt:{args.size}"
    if args.child:
        print(json.dumps(child(args.child, model, args.shard_size, args.strategy,
                               args.work_dir, args.idle)))
        return 0

    import bigviz

    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; {model}, "
          f"{args.shard_size} shards, strategy {args.strategy}")
    bigviz.runner.prepare_checkpoint(model, max_shard_size=args.shard_size,
                                     work_dir=args.work_dir)
    bigviz.close()
    got: dict[str, list[dict[str, Any]]] = {s: [] for s in SCENARIOS}
    for _ in range(args.repeat):
        for scenario in SCENARIOS:
            got[scenario].append(run_child(scenario, args))
    head = (f"{'fresh kernel, then':<26}{'setup s':>9}{'click→1st sample':>18}"
            f"{'→1st phase':>12}{'→result':>10}  outcome")
    print()
    print(head)
    print("-" * len(head))
    for scenario in SCENARIOS:
        rows = got[scenario]

        def med(key: str, rows: list[dict[str, Any]] = rows) -> float:
            return statistics.median(float(r[key]) for r in rows)

        print(f"{scenario:<26}{med('setup'):>9.2f}{med('sample'):>18.2f}{med('phase'):>12.2f}"
              f"{med('result'):>10.2f}  {','.join(sorted({r['outcome'] for r in rows}))}")
    warm = statistics.median(float(r["sample"]) for r in got["dashboard, warm kernel"])
    figure("first result: click -> first sample, warm kernel (s)", round(warm, 2),
           f"<= {TARGET_S:g}", warm <= TARGET_S)
    print(f"\nwarm kernel: first sample {warm:.2f} s after the click "
          f"(target <= {TARGET_S:.0f} s: {'met' if warm <= TARGET_S else 'NOT met'}); "
          f"load average now {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
