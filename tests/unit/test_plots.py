"""Figures render from saved reports, say their units, and never hide a peak."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _fixtures import recording, run_result, sweep

from bigviz import ConfigError, plots, report
from bigviz.data.recording import Recording
from bigviz.data.result import RunResult, Sweep
from bigviz.plots.style import LAYER_LABELS
from bigviz.tables.labels import short_labels
from bigviz.units import format_size


def _texts(fig: object) -> list[str]:
    """Every text drawn on a figure (titles, labels, annotations, legends, ticks)."""
    from matplotlib.text import Text

    return [t.get_text() for t in fig.findobj(Text)]  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    """A sweep with a GPU device map and a failed run, saved and loaded back."""
    s = sweep(
        ("naive", "meta", "mmap"),
        shard_sizes=(50_000_000, 500_000_000),
        device_maps=("cpu", "cuda:0"),
        outcomes={"naive": "oom"},
        seconds=0.6,
    )
    path = tmp_path_factory.mktemp("plots") / "sweep.json"
    report.write(s, path)
    back = report.load(path)
    assert isinstance(back, Sweep)
    return back


def test_timeline_from_loaded_json_shows_ram_vram_phases_prediction_and_kill(
    loaded: Sweep,
) -> None:
    # GIVEN an OOM-killed GPU run read back from JSON
    run = next(r for r in loaded.results if r.outcome == "oom" and r.device_map == "cuda:0")
    # WHEN its timeline is drawn
    fig = plots.timeline(run)
    texts = _texts(fig)
    ylabels = [ax.get_ylabel() for ax in fig.axes]
    # THEN RAM and VRAM panels say their binary unit, phases are labelled on the strip,
    # the prediction names its formula and the kill is flagged with the phase reached
    assert "RAM (GiB)" in ylabels
    assert any(y.startswith("VRAM (") and y.endswith("iB)") for y in ylabels)
    assert fig.axes[-1].get_xlabel() == "time (s)"
    for name in ("init", "load", "shard 1/3"):
        assert name in texts
    assert any(t.startswith("predicted peak (2 × M)") for t in texts)
    assert any("OOM-killed in " + str(run.phase_reached) in t for t in texts)
    assert "checkpoint opened" in texts
    assert any("GPU 0 used" in t for t in texts) and any("allocated" in t for t in texts)


def test_timeline_marks_every_phase_peak_at_its_exact_value() -> None:
    rec = recording(strategy="sharded", seconds=0.5)
    fig = plots.timeline(rec)
    ram_ax = fig.axes[0]
    # the phase peaks are horizontal segments at ram_peak (in GiB/MiB of the axis)
    unit = ram_ax.get_ylabel()
    div = 2**30 if "GiB" in unit else 2**20
    drawn = {
        round(float(seg[0][1]) * div)
        for coll in ram_ax.collections
        if type(coll).__name__ == "LineCollection"
        for seg in coll.get_segments()
        if len(seg) == 2 and seg[0][1] == seg[1][1]
    }
    expected = {p.ram_peak for p in rec.phases}
    assert all(any(abs(d - e) <= 1 for d in drawn) for e in expected if e is not None)


def test_peaks_has_one_bar_per_run_per_kind_and_binary_units(loaded: Sweep) -> None:
    fig = plots.peaks(loaded)
    ax = fig.axes[0]
    n = len(loaded.results)
    # anonymous, file-backed, VRAM (a GPU map is present) and predicted
    assert len(ax.containers) == 4
    assert all(len(c) == n for c in ax.containers)
    assert [t.get_text() for t in ax.get_xticklabels()] == short_labels(loaded.results)
    assert ax.get_ylabel() in ("peak above baseline (GiB)", "peak above baseline (MiB)")
    # the bar heights are the runs' anonymous peaks, in the axis unit
    div = 2**30 if "GiB" in ax.get_ylabel() else 2**20
    heights = [b.get_height() * div for b in ax.containers[0]]
    assert heights == pytest.approx([r.ram_anon_peak for r in loaded.results], rel=1e-9)
    assert "OOM-killed" in _texts(fig)


def test_peaks_without_gpu_has_no_vram_bars() -> None:
    fig = plots.peaks([run_result("naive", seconds=0.3), run_result("meta", seconds=0.3)])
    assert [c.get_label() for c in fig.axes[0].containers] == [
        "RAM anonymous",
        "RAM file-backed",
        "predicted RAM",
    ]


def test_sweep_curves_one_panel_per_device_map_log_x(loaded: Sweep) -> None:
    fig = plots.sweep_curves(loaded)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
    assert [ax.get_title(loc="left") for ax in panels] == [
        "device map: cpu",
        "device map: cuda:0",
    ]
    assert all(ax.get_xscale() == "log" for ax in panels)
    assert [t.get_text() for t in panels[0].get_xticklabels()] == ["50MB", "500MB"]
    legend = [t.get_text() for t in panels[0].get_legend().get_texts()]
    # naive only failed: it appears as crosses, not as a measured line
    assert {"meta", "mmap"} <= set(legend)


def test_overlay_draws_each_run_once(loaded: Sweep) -> None:
    runs = [r for r in loaded.results if r.device_map == "cpu"]
    fig = plots.overlay(runs)
    lines = fig.axes[0].get_lines()
    labels = [ln.get_label() for ln in lines if not str(ln.get_label()).startswith("_")]
    assert labels == short_labels(runs)
    assert fig.axes[0].get_ylabel() in ("RSS above baseline (GiB)", "RSS above baseline (MiB)")


def test_100k_samples_are_thinned_but_a_one_sample_spike_survives() -> None:
    # GIVEN 100 s at 1 ms with a single-sample spike
    rec = recording(strategy="meta", seconds=100.0, model_bytes=64 * 2**20)
    rss = rec.series["ram.rss"]
    spike_at = 61_234
    rss.v[spike_at] += 512 * 2**20
    rec.series["ram.anon"].v[spike_at] += 512 * 2**20
    # WHEN drawn
    fig = plots.timeline(rec, max_points=2000)
    ram_ax = fig.axes[0]
    line = next(ln for ln in ram_ax.get_lines() if ln.get_label() == "RSS")
    ys = np.asarray(line.get_ydata(), dtype=float)
    # THEN far fewer points are drawn, and the spike is one of them
    assert len(ys) <= 2002
    div = 2**30 if "GiB" in ram_ax.get_ylabel() else 2**20
    assert round(ys.max() * div) == max(rss.v)


def test_downsample_keeps_extremes_and_order() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(size=100_003)
    t = np.arange(len(v)) * 0.001
    ts, vs = plots.downsample(t, v, max_points=500)
    assert len(ts) <= 502
    assert vs.max() == v.max() and vs.min() == v.min()
    assert np.all(np.diff(ts) > 0)
    assert ts[0] == t[0] and ts[-1] == t[-1]
    with pytest.raises(ConfigError, match="max_points"):
        plots.downsample(t, v, max_points=2)


def test_small_recordings_use_mib_and_dollar_names_stay_literal() -> None:
    rec = recording(strategy="meta", seconds=0.3, model_bytes=20 * 2**20, phase_name="cost $5 $x")
    fig = plots.timeline(rec)
    assert fig.axes[0].get_ylabel() == "RAM (MiB)"
    fig.savefig(Path("/dev/null"), format="png")  # mathtext would choke on "$5 $x"
    assert any("$5" in t for t in _texts(fig))


def test_figures_are_not_kept_by_pyplot() -> None:
    from matplotlib import pyplot as plt

    before = set(plt.get_fignums())
    plots.timeline(recording(seconds=0.2))
    plots.peaks([run_result(seconds=0.2)])
    assert set(plt.get_fignums()) == before


def test_wrong_objects_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="Recording or a RunResult"):
        plots.timeline(Sweep())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no runs"):
        plots.peaks([])
    with pytest.raises(ConfigError, match="RunResults"):
        plots.peaks([Recording()])  # type: ignore[list-item]


def test_a_bare_recording_and_single_runs_render() -> None:
    assert plots.timeline(Recording(name="empty")).axes
    assert plots.sweep_curves([run_result(shard_size=None, seconds=0.2)]).axes
    assert isinstance(run_result(seconds=0.2), RunResult)



def test_a_tiny_models_growth_is_written_when_the_baseline_dwarfs_it() -> None:
    # GIVEN a 16 MiB load on top of ~340 MiB of imports, and an 800 MiB one
    tiny = run_result("meta", model_bytes=16 * 2**20, seconds=0.3)
    big = run_result("meta", model_bytes=800 * 2**20, seconds=0.3)
    # WHEN drawn THEN only the tiny one says its growth, computed from its own numbers
    note = [
        t.get_text() for t in plots.timeline(tiny).axes[0].texts if t.get_gid() == "growth-note"
    ]
    peak = max(p.ram_peak or 0 for p in tiny.recording.phases)
    assert note and note[0].startswith(
        f"growth above baseline: +{format_size(peak - tiny.baseline)}\n"
    )
    assert not [t for t in plots.timeline(big).axes[0].texts if t.get_gid() == "growth-note"]


def _stack_top_at(ax: object, t: float) -> float:
    """The highest filled area's top at time ``t`` (in the axis unit)."""
    from matplotlib.collections import PolyCollection

    tops = []
    for coll in ax.collections:  # type: ignore[attr-defined]
        if not isinstance(coll, PolyCollection) or coll.get_label() not in LAYER_LABELS:
            continue
        for path in coll.get_paths():
            xy = path.vertices
            near = xy[np.isclose(xy[:, 0], t, atol=1e-9)]
            if len(near):
                tops.append(float(near[:, 1].max()))
    return max(tops)


def test_shared_memory_gets_its_own_layer_so_the_stack_meets_rss() -> None:
    # GIVEN a run whose checkpoint sits on tmpfs: from 40% of the run on, 30 MiB of its
    # RSS are shared memory (RssShmem), neither anonymous nor file-backed
    rec = recording(strategy="mmap", seconds=0.5)
    rss, anon, file = (rec.series[k] for k in ("ram.rss", "ram.anon", "ram.file"))
    cut = int(len(rss.v) * 0.4)
    shmem = 30 * 2**20
    rss.v[cut:] = [v + shmem for v in rss.v[cut:]]
    # WHEN drawn
    fig = plots.timeline(rec)
    ram_ax = fig.axes[0]
    div = 2**30 if "GiB" in ram_ax.get_ylabel() else 2**20
    # THEN a third, labelled layer appears, and the stack's top is the RSS at the last sample
    labels = ram_ax.get_legend_handles_labels()[1]
    assert LAYER_LABELS[2] == "RAM shared (RssShmem: tmpfs, /dev/shm)" in labels
    assert _stack_top_at(ram_ax, rss.t[-1]) * div == pytest.approx(rss.v[-1], rel=1e-9)
    assert anon.v[-1] + file.v[-1] + shmem == rss.v[-1]
    # AND without shared memory there is no such layer (the stack is anon + file = RSS)
    plain = plots.timeline(recording(strategy="mmap", seconds=0.5))
    assert LAYER_LABELS[2] not in plain.axes[0].get_legend_handles_labels()[1]


def test_the_package_exports_exactly_its_public_names() -> None:
    # GIVEN bigviz.plots, one module per figure behind one namespace
    import types

    # WHEN its public names are listed (submodules aside)
    public = {
        name
        for name, value in vars(plots).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }
    # THEN __all__ names every one of them and each resolves
    assert set(plots.__all__) == public
    for name in ("timeline", "ranks", "peaks", "sweep_curves", "overlay", "to_svg", "to_png"):
        assert callable(getattr(plots, name))


def test_a_markdown_reports_png_is_the_figure_plots_draws(loaded: Sweep, tmp_path: Path) -> None:
    # GIVEN a sweep written as a Markdown report, which puts PNG plots beside it
    out = tmp_path / "sweep.md"
    report.write(loaded, out)
    # WHEN its peaks image is compared with the peaks figure encoded by plots.to_png
    written = (tmp_path / "sweep.peaks.png").read_bytes()
    # THEN they are the same bytes: reports encode through the one encoder
    assert written == plots.to_png(plots.peaks(loaded))


def test_timeline_draws_the_ram_budget_as_absolute_rss_and_says_so() -> None:
    # GIVEN a run killed by a budget that lies between its baseline and its peak
    run = run_result("naive", outcome="budget_exceeded")
    rss = max(run.recording.series["ram.rss"].v)
    budget = (run.baseline + rss) // 2
    run.params["ram_budget"] = budget
    # WHEN its timeline is drawn
    fig = plots.timeline(run)
    ram = next(ax for ax in fig.axes if ax.get_ylabel().startswith("RAM ("))
    div = {"RAM (GiB)": 2**30, "RAM (MiB)": 2**20}[ram.get_ylabel()]
    lines = [ln for ln in ram.get_lines() if ln.get_gid() == "ram-budget"]
    # THEN one horizontal line sits at the budget (absolute, not above the baseline), and
    # the legend says what the budget is compared with
    assert len(lines) == 1
    assert list(lines[0].get_ydata()) == pytest.approx([budget / div] * 2)
    assert any(t.startswith(f"RAM budget {format_size(budget, binary=False)} (RSS, "
                            "baseline included)") for t in _texts(fig))
    # and a run without a budget draws none
    run.params.pop("ram_budget")
    fig = plots.timeline(run)
    assert not [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_gid() == "ram-budget"]
