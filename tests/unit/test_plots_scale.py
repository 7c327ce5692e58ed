"""Figures of long recordings with many phases: few artists, every peak kept, the width the
caller asks for, titles that never squeeze the plot, and a dark theme."""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from _fixtures import recording, run_result, sweep
from matplotlib.collections import LineCollection
from test_phase_groups import many_steps

from bigviz import plots
from bigviz._errors import ConfigError
from bigviz.data.recording import Phase
from bigviz.plots import style


def _png_width(data: bytes) -> int:
    return int(struct.unpack(">I", data[16:20])[0])


def _div(ax: Any) -> int:
    return 2**30 if "GiB" in ax.get_ylabel() else 2**20


def test_a_decimated_timeline_keeps_the_exact_peak_sample() -> None:
    # GIVEN 120 s at 1 ms (120,000 samples) with one single-sample spike
    rec = recording(strategy="meta", seconds=120.0, model_bytes=64 * 2**20)
    rss, anon = rec.series["ram.rss"], rec.series["ram.anon"]
    spike_at = 83_417
    rss.v[spike_at] += 300 * 2**20
    anon.v[spike_at] += 300 * 2**20
    # WHEN drawn at 600 px
    fig = plots.timeline(rec, px=600)
    ram_ax = fig.axes[0]
    line = next(ln for ln in ram_ax.get_lines() if ln.get_label() == "RSS")
    xs = np.asarray(line.get_xdata(), dtype=float)
    ys = np.asarray(line.get_ydata(), dtype=float)
    # THEN at most two points per pixel are drawn (each pixel's min and max), and the
    # exact spike sample, at its exact time, is one of them
    assert len(ys) <= 2 * 600 + 2
    top = int(np.argmax(ys))
    assert round(ys[top] * _div(ram_ax)) == max(rss.v) == rss.v[spike_at]
    assert xs[top] == rss.t[spike_at]


def test_800_phases_are_a_few_artists_and_every_step_peak_is_kept() -> None:
    # GIVEN a loop of 800 steps, too dense to draw one by one at 840 px
    rec = many_steps(800)
    fig = plots.timeline(rec)
    ram_ax, strip = fig.axes[0], fig.axes[-1]
    # THEN the bands are one collection per panel / strip row, not one per phase
    assert len(ram_ax.collections) < 10 and len(strip.collections) <= 3
    assert len(strip.texts) < 20
    # AND the group is named on the strip
    assert any(t.get_text().startswith("step 1 … step 800") for t in strip.texts) or any(
        t.get_text().startswith("step 1") for t in strip.texts)
    # AND its peak line, thinned to the pixels, still reaches the highest and lowest step peak
    group = [ln for ln in ram_ax.get_lines() if ln.get_gid() == "group-peaks"]
    assert len(group) == 1
    ys = np.asarray(group[0].get_ydata(), dtype=float) * _div(ram_ax)
    peaks = [p.ram_peak or 0 for p in rec.phases if p.name.startswith("step ")]
    assert round(ys.max()) == max(peaks) and round(ys.min()) == min(peaks)
    assert len(ys) <= 2 * 840 * 2 + 4


def test_a_few_repeated_phases_are_still_drawn_one_by_one() -> None:
    rec = many_steps(20)
    fig = plots.timeline(rec)
    ram_ax = fig.axes[0]
    assert not [ln for ln in ram_ax.get_lines() if ln.get_gid() == "group-peaks"]
    drawn = {round(float(seg[0][1]) * _div(ram_ax)) for c in ram_ax.collections
             if isinstance(c, LineCollection) for seg in c.get_segments()
             if len(seg) == 2 and seg[0][1] == seg[1][1]}
    for p in rec.phases:
        assert any(abs(d - (p.ram_peak or 0)) <= 1 for d in drawn), p.name


def test_figures_are_drawn_at_the_pixel_width_asked_with_text_of_9_px() -> None:
    from matplotlib.text import Text

    for px in (500, 900):
        fig = plots.timeline(run_result("meta", seconds=0.3), px=px)
        assert _png_width(plots.to_png(fig)) == px
        sizes = [float(t.get_fontsize()) for t in fig.findobj(Text) if t.get_text()]
        assert min(sizes) * style.DPI / 72 >= 9
    assert _png_width(plots.to_png(plots.peaks([run_result(seconds=0.2)]))) == style.WIDTH_PX
    assert _png_width(plots.to_png(plots.live([("a", [0, 1], [0, 1], True)], px=700))) == 700
    with pytest.raises(ConfigError, match="px=100 is too narrow"):
        plots.timeline(run_result(seconds=0.2), px=100)


def _axes_widths(fig: Any) -> list[float]:
    fig.canvas.draw()
    return [ax.get_position().width for ax in fig.axes if ax.get_visible()]


def test_a_200_character_title_does_not_squeeze_the_plot() -> None:
    long = "custom map " + "x" * 60 + " " + "model.layers.0.self_attn: cpu, " * 5
    long = long[:200]
    assert len(long) == 200
    run = run_result("meta", seconds=0.3)
    draws: list[Callable[[str], Any]] = [
                 lambda t: plots.timeline(run, title=t),
                 lambda t: plots.peaks([run], title=t),
                 lambda t: plots.overlay([run], title=t)]
    for draw in draws:
        short_w, long_w = _axes_widths(draw("short")), _axes_widths(draw(long))
        assert long_w == pytest.approx(short_w, abs=1e-3)
    # a long custom device map names its panel without narrowing it either
    s = sweep(("meta",), shard_sizes=(50_000_000, 500_000_000), device_maps=("cpu",),
              seconds=0.2)
    plain = _axes_widths(plots.sweep_curves(s))
    for r in s.results:
        r.device_map = '{"model.embed_tokens": "cpu", ' + '"model.layers.0": "disk", ' * 6 + "}"
    assert _axes_widths(plots.sweep_curves(s)) == pytest.approx(plain, abs=1e-3)


def test_the_dark_theme_draws_light_text_on_a_dark_figure() -> None:
    from matplotlib.colors import to_rgb

    def lum(c: Any) -> float:
        r, g, b = to_rgb(c)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    run = run_result("meta", seconds=0.3)
    for fig in (plots.timeline(run, theme="dark"), plots.peaks([run], theme="dark"),
                plots.live([("a", [0, 1], [0, 1], True)], theme="dark")):
        assert lum(fig.get_facecolor()) < 0.15
        assert all(lum(ax.get_facecolor()) < 0.15 for ax in fig.axes)
        fig.canvas.draw()
        for ax in fig.axes:
            labels = [t for t in ax.get_xticklabels() + ax.get_yticklabels() if t.get_text()]
            assert all(lum(t.get_color()) > 0.6 for t in labels)
            assert lum(ax.yaxis.label.get_color()) > 0.6
        # the PNG's background is the theme's, not a white block
        png = plots.to_png(fig)
        from matplotlib.image import imread

        corner = imread(io.BytesIO(png))[2, 2, :3]
        assert float(np.mean(corner)) < 0.15
    light = plots.timeline(run)
    assert lum(light.get_facecolor()) > 0.9
    with pytest.raises(ConfigError, match="theme='blue' is not known"):
        plots.timeline(run, theme="blue")


def test_an_open_phase_in_a_dense_group_is_drawn_to_the_end() -> None:
    rec = many_steps(600)
    rec.phases.append(Phase("step 601", rec.duration - 0.001, None, parent=1, depth=1))
    fig = plots.timeline(rec)
    assert fig.axes[-1].get_xlim()[1] == pytest.approx(rec.duration, rel=1e-3)


@pytest.mark.slow  # builds a real dashboard (~10 s on 2 busy cores)
def test_the_dashboard_draws_its_figures_dark_at_its_width_when_asked() -> None:
    pytest.importorskip("ipywidgets")
    from matplotlib.image import imread

    from bigviz.widgets import Dashboard

    # GIVEN a dashboard for JupyterLab Dark in a 700 px output, shown a finished sweep
    dash = Dashboard("gpt:20MB", theme="dark", figure_px=700)
    s = sweep(("naive", "meta"), seconds=0.3)
    dash._job = SimpleNamespace(sweep=s, running=False, error=None)  # type: ignore[assignment]
    dash._show_results(s)
    # THEN its charts are 700 px wide on a dark background, not white blocks
    for png in (dash.peaks_w.value, dash.timelines_w.value, dash.timeline_w.value):
        assert _png_width(png) == 700
        assert float(np.mean(imread(io.BytesIO(png))[2, 2, :3])) < 0.15
    # AND an unknown theme is a one-line error before any widget is built
    with pytest.raises(ConfigError, match="theme='blue' is not known"):
        Dashboard("gpt:20MB", theme="blue")
