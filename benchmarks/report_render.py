"""How fast do plots and reports render from long timelines? (issue 5)

Builds a synthetic run of ``--size`` samples per series (default 100,000: 100 s at 1 ms;
RSS, anonymous, file-backed, CUDA allocated/reserved, NVML used) with nested phases, and
prints, measured side by side in this one run:

* the timeline rendered to PNG with min/max downsampling vs drawing every sample
  (the ratio; the downsampled peak must equal the true peak);
* the HTML report of a 4-run sweep of such runs: seconds and file size;
* the JSON report: seconds to write and to load back.

* reports at scale (issue 15): one run of 10 s / 60 s / 10 min at 1 ms with 100 / 800 /
  10,000 phases (``step 1 … step N`` inside a ``load`` phase), written as HTML and as
  Markdown: seconds and size of each, against the targets (HTML <= 3 s and <= 3 MB for the
  10-minute run; render time growing no worse than linearly in samples and phases), and
  checks that every phase's exact peak is in the HTML and the drawn peak is the true one.

Run: ``.venv/bin/python benchmarks/report_render.py [--size 100000] [--scale-only]``.
"""

from __future__ import annotations

import argparse
import io
import itertools
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


#: (label, seconds at 1 ms, phases) of the reports-at-scale cases
SCALES = [("10 s", 10.0, 100), ("60 s", 60.0, 800), ("10 min", 600.0, 10_000)]
#: targets for the 10-minute run's HTML report
HTML_SECONDS, HTML_MB = 3.0, 3.0


def make_long(seconds: float, n_phases: int, seed: int = 0) -> RunResult:
    """One run of ``seconds`` at 1 ms (RSS, anonymous, file-backed) with ``n_phases`` phases:
    ``init``, ``load`` and ``step 1 … step N`` inside it, each with its own exact peak."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 1000)
    t = np.round(np.arange(n) * 0.001, 6)
    saw = (np.arange(n) % 997) / 997.0
    anon = (300 * MiB + saw * 400 * MiB + rng.integers(0, 256 * 1024, n)).astype(np.int64)
    file = (20 * MiB + np.minimum(1.0, np.arange(n) / n * 2) * 100 * MiB).astype(np.int64)
    rss = anon + file
    spike = int(n * 0.6173)
    rss[spike] += 700 * MiB  # a one-sample spike: the plots must keep it
    anon[spike] += 700 * MiB
    tl = t.tolist()
    series = {
        "ram.rss": Series("ram.rss", tl, rss.tolist()),
        "ram.anon": Series("ram.anon", list(tl), anon.tolist()),
        "ram.file": Series("ram.file", list(tl), file.tolist()),
    }
    end = float(t[-1])
    steps = max(1, n_phases - 2)
    load_start = end * 0.05
    edges = np.linspace(load_start, end, steps + 1)
    cut = np.searchsorted(t, edges)
    phases = [
        Phase("init", 0.0, load_start, ram_start=int(rss[0]),
              ram_peak=int(rss[: cut[0] + 1].max()), ram_peak_exact=True),
        Phase("load", load_start, end, ram_start=int(rss[cut[0]]),
              ram_peak=int(rss[cut[0]:].max()), ram_peak_exact=True),
    ]
    for k in range(steps):
        a, b = int(cut[k]), max(int(cut[k + 1]), int(cut[k]) + 1)
        phases.append(Phase(f"step {k + 1}", float(edges[k]), float(edges[k + 1]), parent=1,
                            depth=1, ram_start=int(rss[a]), ram_end=int(rss[b - 1]),
                            ram_peak=int(rss[a:b].max()) + k % 7, ram_peak_exact=True))
    rec = Recording(name="long", duration=end, series=series, phases=phases)
    return RunResult(strategy="sharded", outcome="ok", model="gpt:800MiB", baseline=310 * MiB,
                     ram_peak=int(rss.max()) - 310 * MiB, recording=rec, seconds=end)


def scale_cases() -> None:
    """Reports of long recordings with many phases, against the issue-15 targets."""
    print("reports at scale (one run, 1 ms samples; HTML and Markdown with its PNGs; "
          "best of 2, after a warm-up)")
    print(f"  {'recording':>9} {'samples':>9} {'phases':>7} {'HTML s':>7} {'HTML MB':>8} "
          f"{'MD s':>6} {'MD+PNG MB':>9} {'peaks in HTML':>14}")
    measured: list[tuple[int, int, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="bigviz-bench-") as d:  # fonts, imports: once
        report.write(make_long(2.0, 10), Path(d) / "warm.html")
        report.write(make_long(2.0, 10), Path(d) / "warm.md")
    for label, seconds, n_phases in SCALES:
        run = make_long(seconds, n_phases)
        rec = run.recording
        with tempfile.TemporaryDirectory(prefix="bigviz-bench-") as d:
            html_path, md_path = Path(d) / "r.html", Path(d) / "r.md"
            # best of two: the machine may be busy with something else for a moment
            html_s = min(timed(lambda: report.write(run, html_path)) for _ in range(2))  # noqa: B023
            md_s = min(timed(lambda: report.write(run, md_path)) for _ in range(2))  # noqa: B023
            text = html_path.read_text()
            html_mb = html_path.stat().st_size / 1e6
            md_mb = sum(p.stat().st_size for p in Path(d).iterdir() if p.name != "r.html") / 1e6
        peaks = [p.ram_peak for p in rec.phases if p.ram_peak is not None]
        found = sum(f'data-v="{v}"' in text for v in peaks)
        n = len(rec.series["ram.rss"].v)
        measured.append((n, len(rec.phases), html_s, md_s))
        print(f"  {label:>9} {n:>9,} {len(rec.phases):>7,} {html_s:>7.2f} {html_mb:>8.2f} "
              f"{md_s:>6.2f} {md_mb:>9.2f} {found:>7,}/{len(peaks):<6,}")
        if seconds == SCALES[-1][1]:
            ok_s, ok_mb = html_s <= HTML_SECONDS, html_mb <= HTML_MB
            print(f"  target, 10-minute HTML: <= {HTML_SECONDS:.0f} s -> {html_s:.2f} s "
                  f"({'met' if ok_s else 'MISSED'}); <= {HTML_MB:.0f} MB -> {html_mb:.2f} MB "
                  f"({'met' if ok_mb else 'MISSED'})")
        if found != len(peaks):
            print(f"  MISSED: {len(peaks) - found} phase peaks are not in the HTML table")
    # growth: time per (samples + phases) should not rise from one size to the next
    for (n0, p0, h0, m0), (n1, p1, h1, m1) in itertools.pairwise(measured):
        size_x = max(n1 / n0, p1 / p0)
        print(f"  growth {n0:,}->{n1:,} samples, {p0:,}->{p1:,} phases (x{size_x:.0f} input): "
              f"HTML x{h1 / h0:.1f}, MD x{m1 / m0:.1f} "
              f"({'linear or better' if max(h1 / h0, m1 / m0) <= size_x else 'WORSE than linear'})")
    run = make_long(60.0, 800)
    fig = plots.timeline(run)
    line = next(ln for ln in fig.axes[0].get_lines() if ln.get_label() == "RSS")
    div = 2**30 if "GiB" in fig.axes[0].get_ylabel() else 2**20
    drawn = round(float(np.max(np.asarray(line.get_ydata(), dtype=float))) * div)
    rss = run.recording.series["ram.rss"].v
    print(f"  60 s plot: {len(np.asarray(line.get_ydata())):,} of {len(rss):,} RSS points drawn; "
          f"peak kept: {'yes' if drawn == max(rss) else 'NO'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000, help="samples per series")
    parser.add_argument("--scale-only", action="store_true",
                        help="only the reports-at-scale cases (issue 15)")
    args = parser.parse_args()
    if args.scale_only:
        scale_cases()
        return
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
    scale_cases()


if __name__ == "__main__":
    main()
