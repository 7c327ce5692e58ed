"""The plain data of an advice, what "fits" means, and the ranking.

A :class:`Candidate` is one strategy × device map × shard size with its predicted peaks
(from the strategy's own ``predict``, above the worker's baseline) and time estimate.
:func:`judge` marks whether it fits the budgets; :func:`rank` orders candidates: the
ones that fit first, fastest first (upper estimate), then by RAM, then by VRAM; the ones
that do not fit after, closest to fitting first.

Example:
    >>> a = Candidate("naive", ram_peak=800, seconds=(1.0, 2.0))
    >>> b = Candidate("meta", ram_peak=400, seconds=(1.0, 2.0))
    >>> budgets = Budgets(ram=700, baseline=100, margin=50)
    >>> [judge(c, budgets).fits for c in (a, b)]
    [False, True]
    >>> [c.strategy for c in rank([a, b])]
    ['meta', 'naive']
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from bigviz.units import format_size

__all__ = ["Budgets", "Candidate", "judge", "rank"]


@dataclass
class Candidate:
    """One way to load the model, with what theory expects of it.

    Attributes:
        strategy: the strategy's name.
        device_map: ``"cpu"``, ``"cuda:N"``, ``"auto"``, ``"balanced"``.
        max_memory: the caps an automatic map is planned with (``{"cpu": bytes, "0": …}``).
        shard_size: the max shard size (``None``: the checkpoint's files as saved).
        largest_shard: S of that layout.
        ram_peak: predicted peak RAM above the worker's baseline (``formula``).
        ram_low, ram_high: the prediction's range (``range_formula``); a correct run
            measures within it, give or take the allowance.
        ram_total: ``baseline + ram_high``, what the RAM budget is compared with.
        ram_anon, ram_file: the prediction's anonymous / file-backed split.
        vram: predicted bytes per GPU.
        placement: bytes per device (``cpu``, ``cuda:N``, ``disk``).
        seconds: the time estimate (low, high), ``None`` without a time model.
        time_formula: how that estimate is made.
        lazy: the load returns at once and the bytes arrive on first use.
        fits: within every budget; ``why`` says what does not fit otherwise.
        headroom: RAM budget minus ``ram_total`` (negative: over).
    """

    strategy: str
    device_map: str = "cpu"
    max_memory: dict[str, int] | None = None
    shard_size: int | None = None
    largest_shard: int = 0
    ram_peak: int = 0
    ram_low: int | None = None
    ram_high: int | None = None
    range_formula: str = ""
    ram_total: int = 0
    formula: str = ""
    ram_anon: int | None = None
    ram_file: int | None = None
    vram: dict[str, int] = field(default_factory=dict)
    placement: dict[str, int] = field(default_factory=dict)
    seconds: tuple[float, float] | None = None
    time_formula: str = ""
    lazy: bool = False
    notes: str = ""
    fits: bool = False
    why: str = ""
    headroom: int = 0

    @property
    def worst(self) -> int:
        """The top of the predicted range (the nominal peak without one)."""
        return self.ram_peak if self.ram_high is None else max(self.ram_high, self.ram_peak)

    @property
    def label(self) -> str:
        """``"meta · cpu · 200MB"`` (``"as saved"`` for the files as they are)."""
        shard = "as saved" if self.shard_size is None else format_size(self.shard_size,
                                                                      binary=False)
        dm = self.device_map
        if self.max_memory:
            dm += " (" + ", ".join(f"{k}≤{format_size(v, binary=False)}"
                                   for k, v in self.max_memory.items()) + ")"
        return f"{self.strategy} · {dm} · {shard}"


@dataclass(frozen=True)
class Budgets:
    """What the machine offers: RAM (whole worker RSS, as the runner's ``ram_budget``),
    VRAM per GPU, whether disk offload is allowed, the worker's baseline RSS, and the
    margin a fit must leave."""

    ram: int
    baseline: int = 0
    margin: int = 0
    vram: dict[str, int] = field(default_factory=dict)
    disk: bool = False
    #: strategies whose worker starts heavier (their libraries preloaded): own baseline
    baselines: dict[str, int] = field(default_factory=dict)

    def baseline_of(self, strategy: str) -> int:
        """The baseline RSS of ``strategy``'s worker."""
        return self.baselines.get(strategy, self.baseline)


def judge(c: Candidate, b: Budgets) -> Candidate:
    """Mark ``c`` as fitting ``b`` or say why not (in place; returns ``c``).

    RAM fits when ``baseline + top of the predicted range + margin <= ram``; each GPU's
    share must fit its cap (a GPU without a cap does not fit); bytes on disk need ``disk``.
    """
    base = b.baseline_of(c.strategy)
    c.ram_total = base + c.worst
    c.headroom = b.ram - c.ram_total
    why: list[str] = []
    if c.ram_total + b.margin > b.ram:
        why.append(f"RAM {format_size(c.ram_total, binary=False)} (baseline "
                   f"{format_size(base, binary=False)} + {c.range_formula or c.formula}) + margin "
                   f"{format_size(b.margin, binary=False)} > {format_size(b.ram, binary=False)}")
    for dev, used in sorted(c.vram.items()):
        cap = b.vram.get(dev)
        if used and (cap is None or used > cap):
            why.append(f"{dev} {format_size(used, binary=False)} > "
                       + (format_size(cap, binary=False) if cap is not None else "no budget"))
    if c.placement.get("disk") and not b.disk:
        why.append(f"offloads {format_size(c.placement['disk'], binary=False)} to disk "
                   "(allow it with --disk / disk=True)")
    c.fits, c.why = not why, "; ".join(why)
    return c


def _key(c: Candidate) -> tuple[float, ...]:
    vram = float(sum(c.vram.values()))
    if c.fits:
        slow = c.seconds[1] if c.seconds is not None else float("inf")
        return (0.0, slow, float(c.ram_total), vram)
    # not fitting: the closest to fitting first (least RAM over budget)
    return (1.0, float(-c.headroom), vram, 0.0)


def rank(candidates: Iterable[Candidate]) -> list[Candidate]:
    """Candidates in order of preference (stable for equal keys): fitting ones by
    expected time (upper estimate), then RAM, then VRAM; the rest by how far over."""
    return sorted(candidates, key=_key)
