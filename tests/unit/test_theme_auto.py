"""theme="auto": figures drawn for the theme JupyterLab shows, read from its settings files.

JupyterLab keeps the theme the user picked in
``<settings>/@jupyterlab/apputils-extension/themes.jupyterlab-settings`` (JSON with
comments); an administrator's default sits in ``<app>/settings/overrides.json``. Each test
points both at temporary folders, so the machine's own settings never leak in.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.image import imread

from bigviz import plots
from bigviz._errors import ConfigError
from bigviz.data.recording import Phase, Recording, Series
from bigviz.data.result import RunResult
from bigviz.plots.style import AUTO, LAB_THEME_SETTINGS, THEMES, active_theme, resolve_theme

MiB = 2**20


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty JupyterLab settings folder in $JUPYTERLAB_SETTINGS_DIR, no app overrides."""
    settings = tmp_path / "user-settings"
    settings.mkdir()
    monkeypatch.setenv("JUPYTERLAB_SETTINGS_DIR", str(settings))
    monkeypatch.setenv("JUPYTERLAB_DIR", str(tmp_path / "app"))
    return settings


def _pick(settings: Path, text: str) -> None:
    f = settings / LAB_THEME_SETTINGS
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(text, encoding="utf-8")


# what JupyterLab writes when Dark is picked in Settings → Theme, with the comments the
# settings editor keeps
DARK_AS_SAVED = """{
    // Theme
    // @jupyterlab/apputils-extension:themes
    // Theme manager settings.
    /* the theme to apply */
    "theme": "JupyterLab Dark",
    "theme-scrollbars": false,
}
"""


def test_dark_picked_in_jupyterlab_draws_dark(lab: Path) -> None:
    # GIVEN no choice yet: JupyterLab's own default, Light
    assert active_theme() == "light"
    # WHEN the user picks JupyterLab Dark (comments and a trailing comma in the file)
    _pick(lab, DARK_AS_SAVED)
    # THEN auto means dark, read again at each call (no restart needed)
    assert active_theme() == "dark" and resolve_theme(AUTO) == "dark"
    # AND back to Light is light again
    _pick(lab, '{"theme": "JupyterLab Light"}')
    assert active_theme() == "light"


@pytest.mark.parametrize(("text", "expected"), [
    ('{"theme": "Darcula Dark Pro"}', "dark"),  # any theme named "… Dark …"
    ('{"theme": "JupyterLab Light"}', "light"),
    ('{\n  // "theme": "JupyterLab Dark"\n  "theme-scrollbars": true\n}', "light"),
    ('{"theme": "Solarized // Dark"}', "dark"),  # "//" inside a string is no comment
    ('{"theme": "JupyterLab Dark"', "light"),  # cut short: unreadable, never an error
    ('["JupyterLab Dark"]', "light"),
    ("", "light"),
])
def test_the_settings_file_is_read_as_jupyterlab_writes_it(
    lab: Path, text: str, expected: str
) -> None:
    _pick(lab, text)
    assert active_theme() == expected


def test_the_settings_folder_is_found_where_jupyterlab_looks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JUPYTERLAB_SETTINGS_DIR", raising=False)
    monkeypatch.setenv("JUPYTERLAB_DIR", str(tmp_path / "app"))
    # GIVEN a Jupyter config folder elsewhere ($JUPYTER_CONFIG_DIR)
    config = tmp_path / "config"
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(config))
    _pick(config / "lab" / "user-settings", DARK_AS_SAVED)
    assert active_theme() == "dark"
    # AND the default one, ~/.jupyter
    monkeypatch.delenv("JUPYTER_CONFIG_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert active_theme() == "light"
    _pick(tmp_path / "home" / ".jupyter" / "lab" / "user-settings", DARK_AS_SAVED)
    assert active_theme() == "dark"
    # AND a folder given explicitly wins
    assert active_theme(tmp_path / "nowhere") == "light"


def test_an_administrators_default_counts_until_the_user_picks(lab: Path, tmp_path: Path) -> None:
    overrides = tmp_path / "app" / "settings" / "overrides.json"
    overrides.parent.mkdir(parents=True)
    overrides.write_text(json.dumps(
        {"@jupyterlab/apputils-extension:themes": {"theme": "JupyterLab Dark"}}))
    assert active_theme() == "dark"
    _pick(lab, '{"theme": "JupyterLab Light"}')  # the user's own choice
    assert active_theme() == "light"


def _run() -> RunResult:
    t = [i / 1000 for i in range(400)]
    rss = [300 * MiB + min(i, 200) * MiB // 2 for i in range(400)]
    rec = Recording(name="load", series={"ram.rss": Series("ram.rss", t, rss)},
                    phases=[Phase("load", 0.05, 0.3, ram_start=rss[50], ram_peak=max(rss))])
    return RunResult("meta", "ok", recording=rec, baseline=300 * MiB, ram_peak=100 * MiB)


def _background(png: bytes) -> list[float]:
    """The colour of a PNG's top-left corner: its figure's background."""
    return [float(c) for c in imread(io.BytesIO(png))[2, 2, :3]]


def _corner(fig: Figure) -> list[float]:
    return _background(plots.to_png(fig, dpi=100))


def test_figures_drawn_with_auto_follow_the_active_theme(lab: Path) -> None:
    run = _run()
    # GIVEN JupyterLab Light: an auto figure is the light one
    light = _corner(plots.timeline(run, theme="auto"))
    assert np.allclose(light, to_rgb(THEMES["light"].background), atol=0.02)
    # WHEN the user switches to Dark THEN the next auto figure is dark, with light text
    _pick(lab, DARK_AS_SAVED)
    fig = plots.timeline(run, theme="auto")
    assert np.allclose(_corner(fig), to_rgb(THEMES["dark"].background), atol=0.02)
    (title,) = [t for t in fig.texts if t.get_text() == fig.get_suptitle()]
    assert to_rgb(title.get_color()) == to_rgb(THEMES["dark"].ink)
    # AND the other figures take auto as well
    assert np.allclose(_corner(plots.peaks([run], theme="auto")),
                       to_rgb(THEMES["dark"].background), atol=0.02)


def test_an_unknown_theme_names_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"theme='blue' is not known; use one of auto, light"):
        plots.timeline(_run(), theme="blue")


def test_a_timeline_names_its_baseline_as_asked() -> None:
    def keys(fig: Figure) -> list[str]:
        legends = [ax.get_legend() for ax in fig.axes]
        return [t.get_text() for legend in legends if legend is not None
                for t in legend.get_texts()]

    assert "baseline (after imports)" in keys(plots.timeline(_run()))
    named = keys(plots.timeline(_run(), baseline_label="baseline (RSS at the cell's start)"))
    assert "baseline (RSS at the cell's start)" in named
    assert "baseline (after imports)" not in named


@pytest.mark.slow  # builds a real dashboard (~10 s on 2 busy cores)
def test_the_dashboard_draws_for_the_active_theme_by_default(lab: Path) -> None:
    pytest.importorskip("ipywidgets")
    from types import SimpleNamespace

    from bigviz.data.result import Sweep
    from bigviz.widgets import Dashboard

    # GIVEN a dashboard made with no theme, in a JupyterLab showing Light
    dash = Dashboard("gpt:20MB")
    s = Sweep(results=[_run(), RunResult("naive", "ok", recording=_run().recording,
                                         baseline=300 * MiB, ram_peak=200 * MiB)])
    dash._job = SimpleNamespace(sweep=s, running=False, error=None)  # type: ignore[assignment]
    dash._show_results(s)
    light = to_rgb(THEMES["light"].background)
    assert np.allclose(_background(dash.peaks_w.value), light, atol=0.02)
    # WHEN the user switches JupyterLab to Dark THEN the next figures it draws are dark
    _pick(lab, DARK_AS_SAVED)
    dash._show_results(s)
    dark = to_rgb(THEMES["dark"].background)
    for png in (dash.peaks_w.value, dash.timelines_w.value, dash.timeline_w.value):
        assert np.allclose(_background(png), dark, atol=0.02)

