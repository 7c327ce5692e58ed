"""Figures made from what a recording gathered: a phase's sampled peaks, the recording's meta.

Example:
    >>> from bigviz.data.recording import Phase
    >>> store = SampleStore()
    >>> store.add({"ram.anon": ([1.0, 2.0, 3.0], [5, 9, 7])}, t0=0.0, source="ram")
    >>> ph = Phase("load", start=1.5, end=3.0)
    >>> fill_sampled(ph, store.series)
    >>> ph.ram_anon_peak
    9
"""

from __future__ import annotations

import contextlib
import copy
import importlib.metadata
import operator
import os
import platform
import socket
import sys
from array import array
from collections.abc import Mapping, Sequence
from typing import Any

from bigviz.data.recording import Phase, Recording
from bigviz.recorder._options import plain_detail
from bigviz.recorder._store import SampleStore, SeriesStore, median
from bigviz.recorder.sources import Source

__all__ = ["fill_meta", "fill_sampled", "platform_name", "snapshot"]


def platform_name() -> str:
    """``platform.platform()``'s answer without its fork.

    ``platform.platform()`` asks for the processor, which on Linux runs ``uname -p`` in a
    child process: a fork of the *measured* process, whose pages the fork shares for a
    few ms, so ``bigviz profile`` summed them twice (issue 13). Here: ``os.uname()`` and
    the C library's own version string, no child process.

    Example:
        >>> platform_name().startswith(platform.system())
        True
    """
    if not hasattr(os, "uname"):  # Windows: platform.platform() does not fork there
        return platform.platform()
    u = os.uname()
    name = f"{u.sysname}-{u.release}-{u.machine}"
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""  # "glibc 2.36"
    except (ValueError, OSError, AttributeError):
        libc = ""
    return f"{name}-with-{libc.replace(' ', '')}" if libc else name


def fill_sampled(ph: Phase, series: Mapping[str, SeriesStore]) -> None:
    """Set the figures of ``ph`` that only the timeline gives (and its RAM peak when that
    is not exact): the max of each series between the phase's start and end."""
    start, end = ph.start, ph.end

    def smax(name: str) -> int | None:
        ser = series.get(name)
        return ser.max_between(start, end) if ser is not None else None

    ph.ram_anon_peak = smax("ram.anon")
    ph.ram_file_peak = smax("ram.file")
    if not ph.ram_peak_exact:
        vals = [v for v in (smax("ram.rss"), ph.ram_start, ph.ram_end) if v is not None]
        ph.ram_peak = max(vals) if vals else None
    nvml: dict[str, int] = {}
    for key in series:
        if key.startswith("nvml:") and key.endswith(".used"):
            v = smax(key)
            if v is not None:
                nvml[key[: -len(".used")]] = v
    ph.nvml_peak = nvml


def fill_meta(
    m: dict[str, Any],
    *,
    interval_ms: float,
    store: SampleStore | None,
    exact: set[str],
    root_peaks: Mapping[str, int],
    sources: Sequence[Source],
    names: Sequence[str],
) -> None:
    """Fill a recording's ``meta``: the machine, versions, the sampling rate achieved, what
    the timeline cost, which figures are exact, the whole recording's peaks.

    Args:
        m: the ``Recording.meta`` to fill.
        interval_ms: the interval asked for.
        store: the timeline (``None`` once released).
        exact: the peak keys with an exact high-water mark.
        root_peaks: the marks folded over the whole recording.
        sources: every source, for their own facts.
        names: the source names asked for.
    """
    m["host"] = socket.gethostname()
    m["platform"] = platform_name()
    m["cpu_count"] = os.cpu_count()
    try:
        m["ram_total"] = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        m["ram_total"] = None
    m["python"] = platform.python_version()
    torch = sys.modules.get("torch")
    if torch is not None:
        m["torch"] = str(torch.__version__)
        m["cuda"] = getattr(torch.version, "cuda", None)
    else:
        try:
            m["torch"] = importlib.metadata.version("torch")
        except importlib.metadata.PackageNotFoundError:
            m["torch"] = None
        m["cuda"] = None
    m["interval_requested_ms"] = interval_ms
    store = store if store is not None else SampleStore()
    rss = store.series.get("ram.rss")
    if rss is not None and len(rss) > 2:
        t = rss.t
        # gaps as an array, not a list of floats (an hour at 1 ms: 3.6 M of them)
        gaps = array("d", map(operator.sub, t[1:], t[:-1]))
        m["interval_achieved_ms"] = round(median(gaps) * 1000, 4)
        span = t[-1] - t[0]
        m["samples_per_s"] = round((len(t) - 1) / span, 1) if span > 0 else None
        m["max_gap_ms"] = round(max(gaps) * 1000, 3)
        del gaps
    else:
        m["interval_achieved_ms"] = None
    m["samples"] = {k: len(s) for k, s in store.series.items()}
    # what the timeline costs inside the measured process (in its RSS, too)
    n_samples = store.samples()
    m["recorder_bytes"] = store.nbytes()
    m["recorder_bytes_per_sample"] = (
        round(m["recorder_bytes"] / n_samples, 2) if n_samples else None
    )
    exact_figs: list[str] = []
    sampled_figs = ["series", "ram_anon_peak", "ram_file_peak", "nvml_peak"]
    (exact_figs if "ram" in exact else sampled_figs).append("ram_peak")
    (exact_figs if any(k.startswith("cuda:") for k in exact) else sampled_figs).append("vram_peak")
    m["exact"] = exact_figs
    m["sampled"] = sampled_figs
    rp = root_peaks
    m["ram_peak"] = rp.get("ram") if "ram" in exact else (rss.max() if rss else None)
    m["ram_peak_exact"] = "ram" in exact
    m["vram_peak"] = {k: v for k, v in rp.items() if k.startswith("cuda:")}
    gpus: list[str] = []
    for src in sources:
        with contextlib.suppress(Exception):
            extra = src.meta()
            gpus = gpus or list(extra.get("gpu_names", []) or extra.get("cuda_devices", []))
            m.update(plain_detail(extra))
    m["gpu_names"] = gpus
    m["sources_requested"] = list(names)


def snapshot(rec: Recording, store: SampleStore | None, duration: float) -> Recording:
    """A consistent copy of a recording still being made, its timeline built from ``store``."""
    snap = copy.copy(rec)
    snap.series = store.to_series() if store is not None else {}
    snap.phases = copy.deepcopy(rec.phases)
    snap.marks = copy.deepcopy(rec.marks)
    snap.sources = copy.deepcopy(rec.sources)
    snap.meta = copy.deepcopy(rec.meta)
    snap.errors = list(rec.errors)
    snap.duration = duration
    return snap
