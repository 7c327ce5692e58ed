"""The expected-time model of ``bigviz advise``: bytes moved ÷ a rate from ANCHORS.md.

An **estimate**, stated as a range (low–high seconds, warm page cache), never a
measurement: each strategy's time is a sum of ``bytes ÷ rate`` terms, and the formula
says which bytes and which rate. The rates are the reference measurements of
``/work/shared/ANCHORS.md`` (2 cores, warm page cache):

==============  ============  =============================================================
rate            GB/s          where it comes from
==============  ============  =============================================================
``read``        1.4 – 2.7     materialising reads: safetensors ``pread`` 1.37, bigviz's
                              threaded ``load_sharded`` 2.74 (second round, warm)
``fill``        1.4 – 1.7     writing M into fresh pages (a CPU build): the fresh-buffer rate,
                              4 KiB page faults
``copy``        4.4           ``load_state_dict`` copying into already-touched parameters
``mapped``      5.2 – 7.5     first use of mapped weights: from_pretrained + one read of every
                              weight 5.21, page cache 7.52 (lazy loads cost ≈ 0 s until then)
``accelerate``  1.8 – 2.6     Accelerate ``load_checkpoint_and_dispatch`` on cpu: 4.45 GB in
                              1.7–2.5 s
``offload``     0.18 – 0.23   bytes written to disk offload: Accelerate ``auto`` with half of
                              4.45 GB offloaded took 12–14 s, minus its 1.7–2.5 s CPU load
==============  ============  =============================================================

A cold page cache reads at 1.0–1.6 GB/s instead; GPU copies have no anchor and are not
counted.

Example:
    >>> t = estimate("meta", model_bytes=2_700_000_000, placement={"cpu": 2_700_000_000})
    >>> (round(t.low, 1), round(t.high, 1), t.lazy)
    (1.0, 1.9, False)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["RATES", "TimeEstimate", "estimate"]

GB = 1e9

#: name -> (low, high) bytes per second, and where the figure comes from (ANCHORS.md)
RATES: dict[str, tuple[float, float, str]] = {
    "read": (1.4 * GB, 2.7 * GB, "materialising read, warm (safetensors pread … threaded)"),
    "fill": (1.4 * GB, 1.7 * GB, "fresh pages (CPU build), 4 KiB page faults"),
    "copy": (4.4 * GB, 4.4 * GB, "copy into touched parameters (load_state_dict)"),
    "mapped": (5.2 * GB, 7.5 * GB, "first use of mapped weights, warm page cache"),
    "accelerate": (1.8 * GB, 2.6 * GB, "Accelerate load_checkpoint_and_dispatch, cpu"),
    "offload": (0.18 * GB, 0.23 * GB, "disk offload writes (Accelerate auto + disk row)"),
}


@dataclass(frozen=True)
class TimeEstimate:
    """Seconds until every weight was read once, as a range, and the formula behind it.

    ``lazy``: the load itself returns in ≈ 0 s and the bytes arrive on first use.
    """

    low: float | None
    high: float | None
    formula: str
    lazy: bool = False

    def text(self) -> str:
        """``"1.0–1.9 s"`` (``"?"`` without a model)."""
        if self.low is None or self.high is None:
            return "?"
        return f"{self.low:.1f}–{self.high:.1f} s"


def _terms(terms: list[tuple[int, str]], formula: str, *, lazy: bool = False) -> TimeEstimate:
    # the low time goes with the high rate
    low = sum(b / RATES[r][1] for b, r in terms)
    high = sum(b / RATES[r][0] for b, r in terms)
    return TimeEstimate(low, high, formula, lazy)


def _gb(lo_hi: str) -> str:
    lo, hi, _ = RATES[lo_hi]
    return f"{lo / GB:g}" if lo == hi else f"{lo / GB:g}–{hi / GB:g}"


def estimate(strategy: str, *, model_bytes: int, placement: Mapping[str, int],
             mapped: bool = True) -> TimeEstimate:
    """The expected time of ``strategy`` loading ``model_bytes`` placed as ``placement``
    (bytes per device: ``"cpu"``, ``"cuda:N"``, ``"disk"``).

    Args:
        strategy: a registered strategy name; one without a time model gets ``"?"``.
        model_bytes: M.
        placement: where the bytes go (disk bytes are written once, then read back).
        mapped: whether the checkpoint is safetensors (Accelerate then maps it).

    Example:
        >>> estimate("mmap", model_bytes=750_000_000, placement={"cpu": 750_000_000}).formula
        'M ÷ 5.2–7.5 GB/s at first use (lazy: ≈ 0 s at load)'
    """
    m = int(model_bytes)
    disk = int(placement.get("disk", 0))
    if strategy in ("naive", "sharded"):
        return _terms([(m, "fill"), (m, "read"), (m, "copy")],
                      f"M ÷ {_gb('fill')} (build) + M ÷ {_gb('read')} (read) "
                      f"+ M ÷ {_gb('copy')} GB/s (copy)")
    if strategy == "meta":
        return _terms([(m, "read")], f"M ÷ {_gb('read')} GB/s (read)")
    if strategy in ("mmap", "transformers") and not disk:
        return _terms([(m, "mapped")], f"M ÷ {_gb('mapped')} GB/s at first use "
                                       "(lazy: ≈ 0 s at load)", lazy=True)
    if strategy == "accelerate" and mapped and not disk:
        return _terms([(m, "accelerate")], f"M ÷ {_gb('accelerate')} GB/s")
    if strategy in ("dispatch", "accelerate", "transformers"):
        if not disk:
            return _terms([(m, "read")], f"M ÷ {_gb('read')} GB/s (read)")
        return _terms([(m, "read"), (disk, "offload"), (disk, "mapped")],
                      f"M ÷ {_gb('read')} (read) + D ÷ {_gb('offload')} (offload write) "
                      f"+ D ÷ {_gb('mapped')} GB/s (read back), D = {disk} bytes on disk")
    return TimeEstimate(None, None, f"no time model for {strategy!r}")
