"""``bigviz.advise``: which way of loading this model fits this machine, and how fast.

It ranks strategy × device map (× shard size, where the files may be resharded) by the
peak RAM and VRAM each strategy's own ``predict`` expects from the checkpoint's real
tensors, and by an expected time (bytes ÷ a measured read rate, see
:mod:`bigviz.advisor._timing`); marks what fits the budgets, with the formula behind
each number; and can run the pick in a fresh process under the RAM budget to check the
prediction (``verify=True``).

The RAM budget is the **whole worker's** resident memory, as the runner's ``ram_budget``
counts it: Python and torch (the worker's *baseline*, measured by running a 1 MB model
in a fresh worker unless ``baseline`` is given) plus the top of the strategy's predicted
range, plus a margin: the allowance a measurement may sit outside that range
(:data:`bigviz.data.result.ALLOWANCE`, 16 MiB).

Example:
    >>> # a = bigviz.advise("gpt:400MB", ram="2GB")
    >>> # print(a.text()); a.pick.strategy
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bigviz._errors import ConfigError, RunError
from bigviz.advisor._candidates import candidates, layouts, loaders
from bigviz.advisor._rank import Budgets, Candidate, judge, rank
from bigviz.advisor._render import HEADERS, RIGHT, format_table, html_table, rows, seconds_text
from bigviz.advisor._timing import RATES
from bigviz.data.result import ALLOWANCE
from bigviz.units import format_size, parse_size

if TYPE_CHECKING:
    from bigviz.data.result import RunResult
    from bigviz.models import ModelLike

__all__ = ["Advice", "Budgets", "Candidate", "advise", "measure_baseline"]

#: what a fit must leave free: the allowance a measurement may sit outside its range
MARGIN = int(ALLOWANCE)
#: worker baselines measured in this process, per (strategy, work dir)
_BASELINES: dict[tuple[str, str], int] = {}


def _mb(n: int | None) -> str:
    return format_size(n, binary=False)


@dataclass
class Advice:
    """The ranked candidates for one model and one machine, and the pick.

    Attributes:
        model: the model as given.
        model_bytes: M (unique tensor bytes).
        budgets: RAM, VRAM, disk, the worker baseline and the margin used.
        baseline_source: how the baseline was obtained (measured or given).
        candidates: every candidate, ranked (see :func:`bigviz.advisor._rank.rank`).
        reason: one sentence: why the pick, or why nothing fits.
        verified: the pick's measured run (``verify=True``), else ``None``.
    """

    model: str
    model_bytes: int
    budgets: Budgets
    baseline_source: str
    candidates: list[Candidate]
    reason: str = ""
    verified: RunResult | None = None
    baselines: dict[str, int] = field(default_factory=dict)

    @property
    def pick(self) -> Candidate | None:
        """The best candidate that fits, or ``None``."""
        return next((c for c in self.candidates if c.fits), None)

    def verdict(self) -> str:
        """One line on the verification run: measured vs predicted ('' without one)."""
        r, pick = self.verified, self.pick
        if r is None or pick is None:
            return ""
        budget = _mb(self.budgets.ram)
        if not r.ok:
            return (f"verify: {pick.label} ended {r.outcome} under a {budget} budget"
                    + (f": {r.error.splitlines()[0]}" if r.error else ""))
        check = r.checks.prediction
        pred = r.predicted
        if pred is not None:
            low, high = pred.bounds
            span = _mb(low) if low == high else f"{_mb(low)}–{_mb(high)}"
            predicted = f"{span} ({pred.range_formula})"
        else:
            predicted = _peak(pick)
        within = "unchecked" if check is None else (
            f"{'within' if check.agrees else 'outside'} that range ± {_mb(check.tolerance)}")
        return (f"verify: {pick.label} ran ok under a {budget} budget: measured peak "
                f"{_mb(r.ram_peak)} above a {_mb(r.baseline)} baseline (total "
                f"{_mb((r.ram_peak or 0) + r.baseline)}); predicted {predicted}, {within}; "
                f"took {r.seconds:.1f} s (estimate {seconds_text(pick)})")

    def text(self, limit: int | None = None) -> str:
        """The terminal form: header, the pick's sentence, the table (the first ``limit``
        rows; ``None``: all), the time model."""
        b = self.budgets
        vram = ", ".join(f"{d} {_mb(v)}" for d, v in sorted(b.vram.items()))
        head = (f"{self.model}: M = {_mb(self.model_bytes)}; budget RAM {_mb(b.ram)}"
                + (f", VRAM {vram}" if vram else "") + (", disk offload allowed" if b.disk
                                                        else ", no disk offload")
                + f"; worker baseline {_mb(b.baseline)} ({self.baseline_source})"
                + "".join(f", {s} {_mb(v)}" for s, v in sorted(self.baselines.items())
                          if v != b.baseline)
                + f"; margin {_mb(b.margin)}")
        shown = self.candidates if limit is None else self.candidates[:limit]
        more = len(self.candidates) - len(shown)
        lines = [head, self.reason, "", format_table(HEADERS, rows(shown), right=RIGHT)]
        if more:
            lines.append(f"... {more} more candidates (--all, or --json for every one)")
        lines += ["",
                 "peak RAM: above the worker's baseline, from each strategy's predict() on "
                 "the checkpoint's tensors; fits: baseline + top of range + margin <= budget.",
                 "time: an ESTIMATE until every weight was read once, bytes ÷ rates of "
                 "ANCHORS.md (warm page cache): "
                 + "; ".join(f"{k} {lo / 1e9:g}–{hi / 1e9:g} GB/s" for k, (lo, hi, _)
                             in RATES.items()) + "."]
        if self.verified is not None:
            lines += ["", self.verdict()]
        return "\n".join(lines)

    def html(self) -> str:
        """The dashboard form: the sentence and the table (HTML)."""
        import html as _html

        return (f"<div class='bigviz-advice-reason'>{_html.escape(self.reason)}</div>"
                + html_table(self.candidates, pick=self.pick)
                + "<div style='font-size:11px;color:#666'>time is an estimate (bytes ÷ "
                  "ANCHORS.md rates, warm page cache); peak RAM is above the worker "
                  f"baseline of {_html.escape(_mb(self.budgets.baseline))}</div>")

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        from bigviz.data.serde import to_plain

        pick = self.pick
        data: dict[str, Any] = {
            "model": self.model, "model_bytes": self.model_bytes,
            "budgets": to_plain(self.budgets), "baseline_source": self.baseline_source,
            "baselines": dict(self.baselines),
            "pick": None if pick is None else {**to_plain(pick), "label": pick.label},
            "reason": self.reason,
            "candidates": [{**to_plain(c), "label": c.label} for c in self.candidates],
            "time_model": {k: {"low": lo, "high": hi, "source": src}
                           for k, (lo, hi, src) in RATES.items()},
        }
        if self.verified is not None:
            data["verified"] = self.verified.to_dict()
            data["verdict"] = self.verdict()
        return data


def _positive(value: int | str, what: str, example: str) -> int:
    try:
        n = parse_size(value)
    except ConfigError as exc:
        raise ConfigError(f"{what} {value!r} is not a size ({exc}); give e.g. {example}") from None
    if n <= 0:
        raise ConfigError(f"{what} {value!r} must be a positive size, e.g. {example}")
    return n


def _vram(vram: Mapping[Any, Any] | str | None) -> dict[str, int]:
    if vram is None:
        return {}
    if isinstance(vram, str):
        from bigviz.units import parse_max_memory

        vram = parse_max_memory(vram) or {}
    out: dict[str, int] = {}
    for key, cap in dict(vram).items():
        text = str(key)
        idx = text[5:] if text.startswith("cuda:") else text
        if not idx.isdigit():
            raise ConfigError(f"VRAM budget key {key!r} is not a GPU; write e.g. 0=24GB "
                              "(GPU index = size), or {0: '24GB'}")
        out[f"cuda:{int(idx)}"] = _positive(cap, f"VRAM budget of GPU {idx}", "0=24GB")
    return out


def measure_baseline(strategy: str = "meta", *,
                     work_dir: str | os.PathLike[str] | None = None) -> int:
    """The RSS of a fresh bigviz worker before its first phase (its baseline), measured
    by running ``strategy`` on a 1 MB model; cached per process.

    Raises:
        RunError: the probe run did not finish.

    Example:
        >>> # measure_baseline() -> 273063936 (Python, torch, safetensors, accelerate)
    """
    key = (strategy, str(work_dir))
    if key not in _BASELINES:
        from bigviz.runner import run

        r = run(strategy, model="gpt:1MB", max_shard_size="1MB", work_dir=work_dir,
                timeout=300)
        if not r.ok or not r.baseline:
            raise RunError(f"measuring the worker baseline with {strategy!r} failed "
                           f"({r.outcome}: {r.error}); pass baseline='300MB' to skip it")
        _BASELINES[key] = int(r.baseline)
    return _BASELINES[key]


def _baselines(names: Sequence[str], baseline: int | str | None,
               work_dir: str | os.PathLike[str] | None) -> tuple[int, dict[str, int], str]:
    import bigviz.strategies as registry

    if baseline is not None:
        b = _positive(baseline, "baseline", "'300MB'")
        return b, {}, "given"
    plain = measure_baseline(work_dir=work_dir)
    extra: dict[str, int] = {}
    for name in names:
        # a strategy whose libraries the fork server imports for it starts heavier
        if registry.get(name).preload:
            try:
                extra[name] = measure_baseline(name, work_dir=work_dir)
            except RunError:
                continue
            # the fork server keeps what it imported: later runs start from a clean one
            from bigviz.runner import close

            close()
    return plain, extra, "measured: a fresh worker running a 1 MB model"


def _peak(c: Candidate) -> str:
    if c.ram_high is None or c.ram_low is None or c.ram_low == c.ram_high:
        return f"{_mb(c.ram_peak)} ({c.formula})"
    return f"{_mb(c.ram_low)}–{_mb(c.ram_high)} ({c.range_formula})"


def _reason(ranked: list[Candidate], b: Budgets) -> str:
    fits = [c for c in ranked if c.fits]
    if fits:
        p = fits[0]
        lazy = " (lazy: ≈ 0 s at load, bytes arrive on first use)" if p.lazy else ""
        out = [c for c in ranked if not c.fits and c.strategy == "naive"]
        tail = (f"; naive needs {_mb(out[0].ram_total)}" if out else "")
        return (f"pick: {p.label} — the fastest of {len(fits)} of {len(ranked)} candidates "
                f"that fit {_mb(b.ram)}: peak {_peak(p)} above the "
                f"{_mb(b.baseline_of(p.strategy))} baseline, {seconds_text(p)} estimated"
                f"{lazy}{tail}.")
    if not ranked:
        return "no candidate: no strategy can load this model here"
    best = ranked[0]
    disk = next((c for c in ranked if c.placement.get("disk") and c.ram_total + b.margin
                 <= b.ram and not b.disk), None)
    hint = (f"; with disk offload allowed (--disk), {disk.label} would need "
            f"{_mb(disk.ram_total)}" if disk else "")
    return (f"nothing fits {_mb(b.ram)}: the closest is {best.label}, {best.why}{hint}.")


def advise(
    model: ModelLike,
    *,
    ram: int | str,
    vram: Mapping[Any, Any] | str | None = None,
    disk: bool = False,
    shard_sizes: Sequence[int | str] | None = None,
    strategies: Sequence[str] | None = None,
    format: str = "safetensors",
    dtype: str | None = None,
    baseline: int | str | None = None,
    verify: bool = False,
    work_dir: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
) -> Advice:
    """Rank the ways of loading ``model`` on this machine and pick the best that fits.

    Args:
        model: anything :func:`bigviz.models.parse_spec` accepts: a zoo spec
            (``"gpt:400MB"``: predicted from the meta-device model and its shard plan,
            nothing is saved), a checkpoint folder or ``"hf:ORG/NAME[@REV]"`` from the
            local cache (predicted from its files as saved).
        ram: the RAM budget of the loading process (``"16GB"``), baseline included.
        vram: GPU caps, ``{0: "24GB"}`` or ``"0=24GB,1=24GB"``: adds cuda/auto/balanced maps.
        disk: allow disk offload (``auto`` with a CPU cap).
        shard_sizes: max shard sizes to consider: a zoo model's (default: about M/16,
            M/4 and 5 GB); for a folder, reshard targets besides the files as saved.
        strategies: the strategies to consider (default: every single-process loader).
        format: a zoo model's checkpoint format (``"safetensors"`` or ``"bin"``).
        dtype: a zoo model's dtype (default float32); a folder keeps its own.
        baseline: the worker's baseline RSS; ``None`` measures it (a 1 MB run, seconds).
        verify: run the pick in a fresh process under ``ram`` and attach the result.
        work_dir: the runner's work folder (probe and verify checkpoints).
        timeout: seconds for the verification run.

    Returns:
        The :class:`Advice` (``.pick``, ``.text()``, ``.html()``, ``.to_dict()``).

    Raises:
        ConfigError: a bad model, size, VRAM key or strategy list (one line, naming it).
        StrategyError: an unknown strategy.

    Example:
        >>> # a = advise("gpt:400MB", ram="500MB", disk=True, verify=True)
        >>> # a.pick.strategy, a.verified.outcome  -> ('dispatch', 'ok')
    """
    from bigviz.models import build_model, parse_spec, spec_name

    budget = _positive(ram, "RAM budget", "'16GB'")
    caps = _vram(vram)
    sizes = [_positive(s, "shard size", "'200MB'") for s in shard_sizes or ()] or None
    spec = parse_spec(model, dtype)
    names = loaders(strategies)
    if spec.kind != "folder":
        dtype = dtype or "float32"
    skeleton = build_model(model, dtype=dtype, device="meta") if (
        spec.kind != "folder" or spec.factory is not None or caps or disk) else None
    if spec.kind == "folder" and skeleton is None:
        try:  # an automatic map needs the skeleton; without one only named maps are planned
            skeleton = build_model(model, dtype=dtype, device="meta")
        except ConfigError:
            skeleton = None
    outs = layouts(spec, skeleton, dtype=dtype, fmt=format, shard_sizes=sizes)
    base, extra, source = _baselines(names, baseline, work_dir)
    budgets = Budgets(ram=budget, baseline=base, margin=MARGIN, vram=caps, disk=disk,
                      baselines=extra)
    found: list[Candidate] = []
    for lay in outs:
        room = budget - base - MARGIN
        found += candidates(lay, skeleton, strategies=names, model=model, dtype=dtype,
                            vram=caps, cpu_room=room)
    ranked = rank(judge(c, budgets) for c in found)
    advice = Advice(model=spec_name(model), model_bytes=int(outs[0].info.total_size),
                    budgets=budgets, baseline_source=source, candidates=ranked,
                    baselines=extra)
    advice.reason = _reason(ranked, budgets)
    if verify and advice.pick is not None:
        advice.verified = _verify(advice.pick, model, spec.kind, budget=budget, fmt=format,
                                  dtype=dtype, work_dir=work_dir, timeout=timeout)
    return advice


def _verify(pick: Candidate, model: ModelLike, kind: str, *, budget: int, fmt: str,
            dtype: str | None, work_dir: str | os.PathLike[str] | None,
            timeout: float | None) -> RunResult:
    from bigviz.runner import run

    kwargs: dict[str, Any] = {"device_map": pick.device_map, "ram_budget": budget,
                              "work_dir": work_dir, "timeout": timeout}
    if pick.max_memory:
        kwargs["max_memory"] = {int(k) if k.isdigit() else k: v
                                for k, v in pick.max_memory.items()}
    if pick.shard_size is not None:
        kwargs["max_shard_size"] = pick.shard_size
    if kind != "folder":  # a folder is loaded as saved (its own format and dtype)
        kwargs["format"], kwargs["dtype"] = fmt, dtype or "float32"
    import bigviz.strategies as registry
    from bigviz.runner import close

    result = run(pick.strategy, model=model, **kwargs)
    if registry.get(pick.strategy).preload:
        close()  # the fork server keeps the libraries it imported: later runs start clean
    return result
