"""Figures as bytes and text: the one SVG and PNG encoder of bigviz.

Reports (inline SVG in HTML, PNGs beside Markdown), the dashboard and the magics all
encode through these two functions, so a figure looks the same wherever it is shown.

Example:
    >>> from bigviz.plots import timeline  # doctest: +SKIP
    >>> to_png(timeline(result), dpi=96)  # doctest: +SKIP
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import matplotlib

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["to_png", "to_svg"]


def to_svg(fig: Figure, *, salt: str = "") -> str:
    """``fig`` as an ``<svg>`` element for inline use in HTML.

    Text stays text (``svg.fonttype = 'none'``): it is selectable, searchable, and
    matplotlib XML-escapes it. ``salt`` makes the clip-path ids unique per figure, since
    several SVGs share one HTML document, and keeps output deterministic.

    Example:
        >>> from bigviz.data.recording import Recording
        >>> from bigviz.plots import timeline
        >>> to_svg(timeline(Recording()), salt="a").startswith("<svg")
        True
    """
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg") :]


def to_png(fig: Figure, *, dpi: float | None = None) -> bytes:
    """``fig`` as PNG bytes, at the figure's own dpi unless ``dpi`` says otherwise: a bigviz
    figure drawn for ``px`` pixels (100 dpi) is exactly ``px`` pixels wide, so it is shown
    unscaled and its text stays >= 9 px.

    Any matplotlib figure works, pyplot's or a bare ``Figure``; no pyplot state is touched.

    Example:
        >>> from matplotlib.figure import Figure
        >>> to_png(Figure(figsize=(1, 1)))[:4]
        b'\\x89PNG'
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi if dpi is None else dpi,
                metadata={"Software": None})
    return buf.getvalue()
