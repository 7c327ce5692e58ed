"""``bigviz sweep``: run loading strategies in fresh processes and compare them."""

from __future__ import annotations

import argparse
import shlex
import sys
import threading
from typing import TYPE_CHECKING, Any

from bigviz._errors import ConfigError
from bigviz.commands._output import Progress, add_verb, format_table
from bigviz.units import format_size, parse_max_memory, parse_size

if TYPE_CHECKING:
    from bigviz.data.result import RunResult

__all__ = ["add_parser", "parse_max_memory", "run", "summary_table"]

EXAMPLES = """\
  bigviz sweep --model gpt:1GB --strategies naive,sharded,meta,mmap \\
      --shard-sizes 100MB,500MB,2GB --device-map cpu --format safetensors \\
      --ram-budget 8GB --out report.html
  bigviz sweep --model gpt:400MB --out r.html --json r.json --md r.md
  bigviz sweep --model mypkg.models:build --strategies meta,dispatch --device-map cpu,disk
  bigviz sweep --model gpt:100MB --json - > sweep.json   # JSON on stdout, table on stderr
  bigviz sweep --model gpt:200MB --nproc 2 --strategies every-rank-loads,shared-mmap
"""


def add_parser(subparsers: Any) -> None:
    """Register ``bigviz sweep``."""
    p = add_verb(
        subparsers,
        "sweep",
        help="run loading strategies, each in a fresh process, and compare their peaks",
        description=(
            "Save the model once per (shard size, format), then load it with every strategy,\n"
            "each in its own fresh process under the recorder, and compare measured peaks\n"
            "with what theory predicts. Progress goes to stderr; the summary table to stdout."
        ),
        examples=EXAMPLES,
    )
    p.add_argument(
        "--model",
        default="gpt:400MB",
        metavar="SPEC",
        help="gpt:SIZE, mlp:SIZE, bert-base, or package.module:function (default: gpt:400MB)",
    )
    p.add_argument(
        "--strategies",
        default=None,
        metavar="LIST",
        help="comma-separated strategy names (default: naive,sharded,meta,mmap; with "
        "--nproc: every-rank-loads,rank0-broadcast,shared-mmap)",
    )
    p.add_argument(
        "--shard-sizes",
        default="200MB",
        metavar="LIST",
        help="comma-separated max shard sizes, e.g. 100MB,500MB,2GB (default: 200MB)",
    )
    p.add_argument(
        "--device-map",
        default="cpu",
        metavar="LIST",
        help="comma-separated device maps: cpu, cuda, cuda:N, auto, balanced, sequential, disk",
    )
    p.add_argument(
        "--format",
        default="safetensors",
        metavar="LIST",
        help="comma-separated checkpoint formats: safetensors, bin (default: safetensors)",
    )
    p.add_argument(
        "--dtype",
        default="float32",
        metavar="DTYPE",
        help="parameter dtype of the model: float32, bfloat16, float16 (default: float32)",
    )
    p.add_argument(
        "--ram-budget",
        default=None,
        metavar="SIZE",
        help="kill a run whose RAM exceeds this (e.g. 8GB); it is reported as budget_exceeded",
    )
    p.add_argument(
        "--max-memory",
        default=None,
        metavar="MAP",
        help="per-device caps for dispatch, e.g. cpu=2GB,0=10GB",
    )
    p.add_argument(
        "--nproc",
        default=None,
        type=int,
        metavar="N",
        help="run distributed strategies (every-rank-loads, rank0-broadcast, shared-mmap) "
        "on N torch.distributed ranks",
    )
    p.add_argument(
        "--timeout",
        default=None,
        type=float,
        metavar="SECONDS",
        help="stop a run (or a distributed job) that takes longer than this; outcome error",
    )
    p.add_argument("--work-dir", default=None, metavar="DIR", help="where checkpoints are saved")
    p.add_argument(
        "--out",
        default="bigviz-sweep.html",
        metavar="FILE",
        help="report file, format by suffix (default: bigviz-sweep.html)",
    )
    p.add_argument("--json", default=None, metavar="FILE", help="also write JSON ('-' = stdout)")
    p.add_argument("--md", default=None, metavar="FILE", help="also write a Markdown summary")
    p.set_defaults(func=run)


def _list(text: str, what: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise ConfigError(f"{what} {text!r} is empty; give a comma-separated list")
    return items


def _run_text(r: RunResult) -> str:
    if r.outcome != "ok":
        return f"{r.outcome} in {r.phase_reached or 'start'}" + (
            f": {r.error.splitlines()[0][:80]}" if r.error else ""
        )
    pred = f" (predicted {format_size(r.predicted.ram_peak)})" if r.predicted else ""
    return f"ok, peak {format_size(r.ram_peak)}{pred}, {r.seconds:.1f} s"


def summary_table(results: list[RunResult]) -> str:
    """The end-of-sweep table: one row per run, peaks above baseline beside predictions.

    Example:
        >>> print(summary_table([]).splitlines()[0].split()[:3])
        ['run', 'outcome', 'peak']
    """
    rows = []
    for r in results:
        pred = r.predicted
        check = r.checks.prediction
        agrees = "" if check is None else ("yes" if check.agrees else "NO")
        rows.append(
            [
                r.label,
                r.outcome,
                format_size(r.ram_peak),
                format_size(r.ram_anon_peak),
                format_size(r.ram_file_peak),
                ", ".join(f"{d} {format_size(v)}" for d, v in r.vram_peak.items()) or "—",
                f"{format_size(pred.ram_peak)} ({_short_formula(pred.formula)})" if pred else "—",
                agrees,
                f"{r.seconds:.1f}",
            ]
        )
    headers = ["run", "outcome", "peak RAM", "anon", "file", "VRAM", "predicted", "agrees", "s"]
    return format_table(headers, rows, right=[2, 3, 4, 8])


def _short_formula(formula: str, width: int = 24) -> str:
    """The formula's head for a table cell: the part before a comma (its explanation),
    cut at ``width`` characters; parentheses inside it ("N × (2 × M)") are kept."""
    head = formula.split(", ")[0]
    return head if len(head) <= width else head[: width - 1] + "…"


def run(args: argparse.Namespace) -> int:
    """``bigviz sweep``: run, show progress on stderr, print the table, write the reports."""
    from bigviz.commands.report import check_out

    if args.timeout is not None and not args.timeout > 0:
        raise ConfigError(f"--timeout {args.timeout} must be a positive number of seconds")
    if args.nproc is not None and args.nproc < 1:
        raise ConfigError(f"--nproc {args.nproc} must be a number of ranks >= 1, e.g. --nproc 2")
    default = (
        "every-rank-loads,rank0-broadcast,shared-mmap"
        if args.nproc is not None
        else "naive,sharded,meta,mmap"
    )
    strategies = _list(args.strategies or default, "--strategies")
    shard_sizes = _list(args.shard_sizes, "--shard-sizes")
    for size in shard_sizes:
        parse_size(size)
    device_maps = _list(args.device_map, "--device-map")
    formats = _list(args.format, "--format")
    max_memory = parse_max_memory(args.max_memory)
    if args.ram_budget is not None:
        parse_size(args.ram_budget)
    outputs = [check_out(args.out)]
    json_stdout = args.json == "-"
    if args.json and not json_stdout:
        outputs.append(check_out(args.json, flag="--json"))
    if args.md:
        outputs.append(check_out(args.md, flag="--md"))
    # with JSON on stdout, everything for people goes to stderr
    human = sys.stderr if json_stdout else sys.stdout

    from bigviz import report
    from bigviz.runner import sweep_interruptibly

    progress: Progress | None = None
    lock = threading.Lock()
    live: dict[str, Any] = {"phase": "", "baseline": 0, "rss": 0}

    def on_progress(ev: dict[str, Any]) -> None:
        nonlocal progress
        with lock:
            if progress is None:
                progress = Progress(int(ev.get("total", 1)))
            i = int(ev.get("index", 0)) + 1
            stage = ev.get("stage")
            if stage == "prepare":
                progress.start(i, str(ev.get("label", "")))
            elif stage == "run":
                live.update(phase="starting", rss=0, baseline=0)
                progress.start(i, str(ev.get("label", "")))
            elif stage == "done" and ev.get("result") is not None:
                progress.finish(i, str(ev.get("label", "")), _run_text(ev["result"]))

    def on_event(ev: dict[str, Any]) -> None:
        kind = ev.get("type")
        with lock:
            if kind == "phase_start":
                live["phase"] = str(ev.get("name", ""))
            elif kind == "baseline":
                live["baseline"] = int(ev.get("rss") or 0)
            elif kind == "samples":
                rss = (ev.get("series") or {}).get("ram.rss")
                if rss and rss[1]:
                    live["rss"] = int(rss[1][-1])
            else:
                return
            if progress is not None:
                above = max(live["rss"] - live["baseline"], 0) if live["rss"] else 0
                progress.update(f"{live['phase']} · {format_size(above)} above baseline")

    # the sweep runs on a helper thread so that Ctrl-C cancels it cleanly: the running
    # worker is killed, finished runs are kept and reported
    sweep, interrupted = sweep_interruptibly(
        args.model,
        thread_name="bigviz-cli-sweep",
        strategies=strategies,
        shard_sizes=shard_sizes,
        device_maps=device_maps,
        formats=formats,
        dtype=args.dtype,
        max_memory=max_memory,
        ram_budget=args.ram_budget,
        work_dir=args.work_dir,
        nproc=args.nproc,
        timeout=args.timeout,
        on_progress=on_progress,
        on_event=on_event,
    )
    argv = getattr(args, "argv", None)
    if argv:
        sweep.command = "bigviz " + shlex.join(argv)

    print("\n" + summary_table(sweep.results), file=human)
    for skipped in sweep.meta.get("skipped", []):
        print(f"skipped: {skipped}", file=human)
    finding = report.key_finding(sweep.results)
    if finding:
        print(f"\n{finding}", file=human)
    for path in outputs:
        written = report.write(sweep, path)
        print(f"report written to {written}", file=human)
    if json_stdout:
        sys.stdout.write(report.dumps(sweep) + "\n")
        sys.stdout.flush()
    if interrupted:
        return 130
    failed = [r for r in sweep.results if r.outcome in ("error", "crashed")]
    return 1 if failed else 0
