"""The dashboard's live figure: each run's RSS above its baseline while the sweep runs."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure

from bigviz.plots import style

__all__ = ["live"]

#: one line of the live figure: label, times (s), bytes above baseline, still running?
LiveLine = tuple[str, Sequence[float], Sequence[int], bool]


def live(lines: Sequence[LiveLine], *, px: int | None = None, theme: str = "light") -> Figure:
    """RSS above baseline of each run so far, the running one drawn thicker.

    Args:
        lines: ``(label, times, bytes above baseline, running)`` per run.
        px: figure width in pixels (at 100 dpi, so text stays >= 9 px).
        theme: ``"light"`` or ``"dark"`` (JupyterLab Dark).

    Raises:
        ConfigError: a bad ``px`` or ``theme``.

    Example:
        >>> fig = live([("meta", [0.0, 0.1], [0, 2**20], True)])
        >>> fig.axes[0].get_ylabel()
        'RSS above baseline (MiB)'
    """
    width = style.size_in(style.WIDTH, px)
    with style.themed(theme):
        fig = style.figure(width, 2.6)
        ax = fig.subplots()
        top = max((max(v) for _l, _t, v, _r in lines if len(v)), default=0) or 1
        div, unit = (2**30, "GiB") if top >= 2**30 else (2**20, "MiB")
        for label, t, v, running in lines:
            ax.plot(list(t), [x / div for x in v], lw=2.2 if running else 1.2,
                    label=style.plain(label))
        ax.set_xlabel("seconds since the run started")
        ax.set_ylabel(f"RSS above baseline ({unit})")
        ax.set_title("live: RAM of each run", fontsize=10, loc="left")
        ax.grid(color=style.current().grid)
        if lines:
            ax.legend(fontsize=8, loc="best")
        return style.finish(fig)
