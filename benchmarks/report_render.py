"""How fast do plots and reports render from long timelines? (issue 5)

Builds a synthetic run of ``--size`` samples per series (default 100,000: 100 s at 1 ms;
RSS, anonymous, file-backed, CUDA allocated/reserved, NVML used) with nested phases, and
prints, measured side by side in this one run:

* the timeline rendered to PNG with min/max downsampling vs drawing every sample
  (the ratio; the downsampled peak must equal the true peak);
* the HTML report of a 4-run sweep of such runs: seconds and file size;
* the JSON report: seconds to write and to load back.

Run: ``.venv/bin/python benchmarks/report_render.py [--size 100000]``.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np

from bigviz import plots, report
from bigviz.data.recording import Phase, Recording, Series
from bigviz.data.result import Prediction, RunResult, Sweep

MiB = 2**20


def make_run(strategy: str, n: int, seed: int) -> RunResult:
    rng = np.random.default_rng(seed)
    t = [round(i * 0.001, 6) for i in range(n)]
    ramp = np.minimum(1.0, np.arange(n) / (0.8 * n))
    anon = (300 * MiB + ramp * 800 * MiB + rng.integers(0, 64 * 1024, n)).astype(int)
    file = (10 * MiB + ramp * 200 * MiB).astype(int)
    alloc = (ramp * 600 * MiB).astype(int)
    series = {
        "ram.rss": Series("ram.rss", t, (anon + file).tolist()),
        "ram.anon": Series("ram.anon", list(t), anon.tolist()),
        "ram.file": Series("ram.file", list(t), file.tolist()),
        "cuda:0.allocated": Series("cuda:0.allocated", list(t), alloc.tolist()),
        "cuda:0.reserved": Series("cuda:0.reserved", list(t), (alloc + 64 * MiB).tolist()),
        "nvml:0.used": Series("nvml:0.used", list(t), (alloc + 600 * MiB).tolist()),
    }
    end = t[-1]
    phases = [Phase("init", 0.0, end * 0.1, ram_peak=int(anon[n // 10] + file[n // 10]))]
    phases.append(Phase("load", end * 0.1, end, ram_peak=int((anon + file).max())))
    for k in range(8):
        s0 = end * (0.1 + 0.1 * k)
        phases.append(Phase(f"shard {k + 1}/8", s0, s0 + end * 0.09, parent=1, depth=1))
    rec = Recording(name=strategy, duration=end, series=series, phases=phases)
    return RunResult(
        strategy=strategy,
        outcome="ok",
        model="gpt:800MiB",
        shard_size=200_000_000,
        baseline=310 * MiB,
        ram_peak=int((anon + file).max()) - 310 * MiB,
        ram_anon_peak=int(anon.max()) - 300 * MiB,
        ram_file_peak=int(file.max()) - 10 * MiB,
        vram_peak={"cuda:0": int(alloc.max())},
        predicted=Prediction(ram_peak=1000 * MiB, formula="M"),
        recording=rec,
        seconds=end,
    )


def timed(fn: object) -> float:
    t0 = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000, help="samples per series")
    args = parser.parse_args()
    n = args.size
    run = make_run("meta", n, 0)

    def draw(max_points: int) -> float:
        fig = plots.timeline(run, max_points=max_points)
        return timed(lambda: fig.savefig(io.BytesIO(), format="png", dpi=100))

    build_fast = timed(lambda: plots.timeline(run))
    fast = draw(plots.MAX_POINTS)
    build_full = timed(lambda: plots.timeline(run, max_points=n + 1))
    full = draw(n + 1)
    t_ds, v_ds = plots.downsample(
        run.recording.series["ram.rss"].t, run.recording.series["ram.rss"].v
    )
    assert v_ds.max() == max(run.recording.series["ram.rss"].v), "downsampling lost the peak"
    print(f"timeline, {n:,} samples per series")
    print(f"  downsampled ({len(t_ds):,} points): build {build_fast:.3f} s, PNG {fast:.3f} s")
    print(f"  every sample:                 build {build_full:.3f} s, PNG {full:.3f} s")
    print(f"  speed-up: {(build_full + full) / (build_fast + fast):.1f}×; peak kept: yes")

    sweep = Sweep(
        results=[make_run(s, n, i) for i, s in enumerate(["naive", "sharded", "meta", "mmap"])],
        command="benchmarks/report_render.py",
    )
    with tempfile.TemporaryDirectory(prefix="bigviz-bench-") as d:
        html_s = timed(lambda: report.write(sweep, Path(d) / "r.html"))
        json_s = timed(lambda: report.write(sweep, Path(d) / "r.json"))
        load_s = timed(lambda: report.load(Path(d) / "r.json"))
        html_mb = (Path(d) / "r.html").stat().st_size / 1e6
        json_mb = (Path(d) / "r.json").stat().st_size / 1e6
    print("sweep of 4 runs")
    print(f"  HTML: {html_s:.2f} s, {html_mb:.1f} MB")
    print(f"  JSON: write {json_s:.2f} s, load {load_s:.2f} s, {json_mb:.1f} MB")


if __name__ == "__main__":
    main()
