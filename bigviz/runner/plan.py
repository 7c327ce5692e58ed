"""One plan and one sweep loop for single-process and distributed runs.

A plan crosses shard sizes × formats × strategies × device maps (single-process) or
shard sizes × formats × strategies on ``nproc`` ranks (distributed), checks every
combination before the first process starts, and lists the ones a strategy cannot run
(``sweep.meta["skipped"]``). :func:`sweep_plan` then saves each checkpoint once and runs
every combination in a fresh worker (:mod:`bigviz.runner.single`) or on fresh ranks
(:mod:`bigviz.runner.launcher`).

A checkpoint folder (or ``hf:`` id) is loaded as saved: its shard-size axis is "as saved"
(``None``), its format and dtype are its files' own, and other shard sizes reshard it into
the work folder (:func:`~bigviz.runner.checkpoints.prepare_folder`).

Example:
    >>> # p = plan_runs(Settings("gpt:1GB"), strategies=["naive", "meta"], shard_sizes=["200MB"])
    >>> # sweep_plan(p, Settings("gpt:1GB")).results
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import bigviz.strategies as registry
from bigviz._errors import ConfigError, StrategyError
from bigviz.data.result import TOLERANCE, RunResult, Sweep
from bigviz.models import ModelLike, model_bytes, parse_spec
from bigviz.options import AS_SAVED, is_as_saved
from bigviz.runner.checkpoints import (
    PreparationCancelled,
    as_saved_text,
    files_dtype,
    prepare_checkpoint,
    prepare_folder,
)
from bigviz.runner.launcher import check_rank_options, launch
from bigviz.runner.pagecache import CACHE_STATES
from bigviz.runner.results import dmap_label, single_result
from bigviz.runner.single import execute
from bigviz.runner.supervisor import EventCallback
from bigviz.runner.validate import (
    check_dtype,
    check_format,
    check_ranks_options,
    model_id,
    shard_bytes,
    work_folder,
)
from bigviz.strategies import Strategy, normalize_max_memory, validate_device_map
from bigviz.units import format_size, parse_size

__all__ = ["Plan", "PlannedRun", "Settings", "check_caches", "parse_shard", "partial_sweep",
           "plan_runs", "run_planned", "sweep_plan", "validate_single"]

ProgressCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Settings:
    """The options every run of a plan shares (checked: sizes in bytes).

    ``dtype`` ``None`` means float32 for the zoo and a checkpoint folder's own dtype;
    :meth:`resolved` fills it in, with ``folder`` (the checkpoint folder, resolved) and
    ``folder_format`` for a folder or ``hf:`` model.
    """

    model: ModelLike
    dtype: str | None = None
    budget: int | None = None
    work_dir: str | os.PathLike[str] | None = None
    interval_ms: float = 1.0
    timeout: float | None = None
    seed: int = 0
    nproc: int | None = None
    per_rank: str = "naive"
    backend: str | None = None
    factory: str | None = None
    folder: Path | None = None
    folder_format: str | None = None
    as_saved: str | None = None

    def resolved(self) -> Settings:
        """These settings with the model resolved: the dtype runs use, and for a checkpoint
        folder its path, format and how it is cut. Checks everything a run needs of the
        model before any process starts (no config.json and no factory, an architecture
        Transformers does not know, a corrupt shard header).

        Raises:
            ConfigError, CheckpointError: naming the model and the fix.
        """
        if self.folder is not None:
            return self
        spec = parse_spec(self.model, self.dtype, factory=self.factory)
        if spec.kind != "folder":
            return replace(self, dtype=check_dtype(self.dtype or "float32"))
        from bigviz.checkpoint import inspect_checkpoint
        from bigviz.models import build_model

        folder = Path(spec.path or "")
        info = inspect_checkpoint(folder)
        own = files_dtype(info, spec.spec)
        if self.dtype is not None and self.dtype != own:
            raise ConfigError(
                f"model {spec.spec!r} is saved in {own} and runs load its files as saved; "
                f"leave out dtype={self.dtype!r} (--dtype)")
        # the skeleton on meta: a missing config.json, an unknown architecture or a bad
        # factory is a one-line error now, not a failed run (nothing is materialised)
        build_model(str(folder), dtype=own, factory=self.factory, device="meta")
        return replace(self, dtype=own, folder=folder, folder_format=info.format,
                       as_saved=as_saved_text(info))


@dataclass
class PlannedRun:
    """One combination of a plan, checked."""

    strategy: Strategy
    shard: int | None  # None: a checkpoint folder's files as saved
    format: str
    device_map: Any = "cpu"
    max_memory: dict[int | str, int] | None = None
    as_saved: str | None = None  # how the files are cut ("3 × ≤ 9.8 MB"), when as saved
    cache: str = "as-is"  # the page cache of its files at the start: cold, warm, as-is

    def label(self, nproc: int | None) -> str:
        """What progress displays call this run."""
        if nproc is not None:
            size = (self.as_saved or "as saved" if self.shard is None
                    else format_size(self.shard, binary=False, precision=0))
            return f"{self.strategy.name} · {size} · {self.format} × {nproc}"
        params: dict[str, Any] = {} if self.as_saved is None else {"as_saved": self.as_saved}
        params["cache"] = {"asked": self.cache}
        return RunResult(strategy=self.strategy.name, outcome="ok", shard_size=self.shard,
                         format=self.format, device_map=dmap_label(self.device_map),
                         params=params).label


@dataclass
class Plan:
    """The runs of a sweep, what was skipped, and how the sweep is recorded."""

    runs: list[PlannedRun]
    skipped: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    command: str = ""


def parse_shard(size: int | str | None, settings: Settings) -> int | None:
    """A shard size in bytes, or ``None`` for "as saved" (``None``, ``"as saved"``,
    ``"as-saved"``), which only a checkpoint folder has.

    Raises:
        ConfigError: "as saved" for a model bigviz saves itself; SizeError: a bad size.

    Example:
        >>> parse_shard("20MB", Settings("gpt:10MB"))
        20000000
    """
    if size is None or (isinstance(size, str) and is_as_saved(size)):
        if settings.folder is None:
            what = "None (as saved)" if size is None else repr(size)
            raise ConfigError(
                f"shard size {what} applies to a checkpoint folder; model "
                f"{model_id(settings.model)!r} is saved by bigviz: give sizes like '200MB'")
        return None
    return shard_bytes(size)


def _shard_list(shard_sizes: Sequence[int | str | None] | None, settings: Settings,
                zoo_default: str = "500MB") -> list[int | None]:
    if shard_sizes is None:
        return [None] if settings.folder is not None else [parse_size(zoo_default)]
    if isinstance(shard_sizes, (str, int)):
        shard_sizes = [shard_sizes]
    out: list[int | None] = []
    for s in shard_sizes:
        v = parse_shard(s, settings)
        if v not in out:
            out.append(v)
    if not out:
        raise ConfigError("shard_sizes is empty; give sizes like ['200MB'] or leave it out")
    return out


def validate_single(
    strategy: Any, model: ModelLike, *, format: str, dtype: str, device_map: Any,
    max_memory: Mapping[Any, Any] | None,
) -> tuple[Strategy, Any, dict[int | str, int] | None]:
    """Check one single-process combination; return the strategy, the normalised device
    map and ``max_memory``.

    Raises:
        ConfigError, StrategyError: naming the bad option.
    """
    check_format(format)
    if parse_spec(model, None).kind != "folder":  # a folder loads in its files' dtype
        check_dtype(dtype)
        parse_spec(model, dtype)
    strat = registry.get(strategy, kind="single")
    dmap = validate_device_map(device_map)
    strat.check(model=model, format=format, device_map=dmap, dtype=dtype)
    # a factory's size needs a (meta) build here, so only when a cap must be checked
    size = model_bytes(model, dtype) if max_memory else None
    mm = normalize_max_memory(max_memory, model_bytes=size, device_map=dmap)
    return strat, dmap, mm


def plan_runs(
    settings: Settings, *, strategies: Sequence[str | Strategy],
    shard_sizes: Sequence[int | str] | None, device_maps: Sequence[Any], formats: Sequence[str],
    max_memory: Mapping[Any, Any] | None, ram_budget: int | str | None,
    caches: Sequence[str] = ("as-is",),
) -> Plan:
    """Every combination, checked before anything runs; each single-process run once
    per page-cache state in ``caches`` (``"cold"``, ``"warm"``, ``"as-is"``).

    Raises:
        ConfigError, StrategyError: a bad option, or no combination can run.
    """
    if isinstance(strategies, str):
        strategies = [strategies]
    if not strategies:
        raise ConfigError(f"strategies is empty; pick from {registry.names()}")
    settings = settings.resolved()
    caches = check_caches(caches)
    if settings.nproc is not None and caches != ["as-is"]:
        raise ConfigError(f"cache {caches!r} applies to single-process runs; leave out "
                          "cache (--cache) with nproc (--nproc)")
    if settings.nproc is not None:
        return _plan_ranks(settings, strategies, shard_sizes, device_maps, formats,
                           max_memory, ram_budget)
    model, dtype = settings.model, settings.dtype or "float32"
    names = [registry.get(s, kind="single").name for s in strategies]  # unknown names fail here
    for fmt in formats:
        check_format(fmt)
    shards = _shard_list(shard_sizes, settings)
    plan = Plan([])
    for shard in shards:
        # files as saved are in their own format; --format applies to resharded sizes
        fmts = [settings.folder_format or "safetensors"] if shard is None else list(formats)
        for fmt in fmts:
            for item, name in zip(strategies, names, strict=True):
                for dm in device_maps:
                    cand = registry.get(item)
                    # a combination the strategy cannot run anywhere is skipped; a missing
                    # package or GPU, or a bad option, is an error (validate_single raises it)
                    why = None if cand.unavailable() else cand.incompatible(
                        model=model, format=fmt, device_map=validate_device_map(dm),
                        dtype=dtype)
                    if why:
                        plan.skipped.append(f"{name} × {fmt} × {dm}: {why}")
                        continue
                    strat, dmap, mm = validate_single(item, model, format=fmt, dtype=dtype,
                                                      device_map=dm, max_memory=max_memory)
                    for cache in caches:
                        plan.runs.append(PlannedRun(strat, shard, fmt, dmap, mm,
                                                    as_saved=None if shard is not None
                                                    else settings.as_saved, cache=cache))
    if not plan.runs:
        raise StrategyError("no combination of this sweep can run: " + "; ".join(plan.skipped))
    plan.config = {
        "model": model_id(model), "strategies": names,
        "shard_sizes": [AS_SAVED if s is None else s for s in shards],
        "device_maps": list(device_maps), "formats": list(formats),
        "dtype": dtype, "ram_budget": settings.budget, "interval_ms": settings.interval_ms,
        "seed": settings.seed,
        "max_memory": {str(k): str(v) for k, v in dict(max_memory).items()}
        if max_memory else None,
        "cache": list(caches),
    }
    if settings.folder is not None:
        plan.config["checkpoint"] = str(settings.folder)
        plan.config["factory"] = settings.factory
    args = [repr(model_id(model))] + [
        f"{k}={v!r}" for k, v in (
            ("strategies", names),
            ("shard_sizes", None if shard_sizes is None else list(shard_sizes)),
            ("device_maps", list(device_maps)), ("formats", list(formats)),
            ("dtype", settings.dtype if settings.folder is None else None),
            ("factory", settings.factory),
            ("ram_budget", ram_budget), ("max_memory", max_memory),
            ("cache", None if list(caches) == ["as-is"] else list(caches))) if v is not None
    ]
    plan.command = f"bigviz.sweep({', '.join(args)})"
    return plan


def _plan_ranks(
    settings: Settings, strategies: Sequence[str | Strategy],
    shard_sizes: Sequence[int | str] | None,
    device_maps: Sequence[Any], formats: Sequence[str], max_memory: Mapping[Any, Any] | None,
    ram_budget: int | str | None,
) -> Plan:
    """:func:`plan_runs` for distributed strategies, each combination on ``nproc`` ranks."""
    model, nproc = settings.model, settings.nproc
    for dm in device_maps:
        check_ranks_options(nproc, dm, max_memory, model)
    assert nproc is not None
    known = registry.names(kind="distributed")
    names = [s.name if isinstance(s, Strategy) else str(s) for s in strategies]
    bad = [n for n in names if n not in known]
    if bad:
        raise StrategyError(f"strategies {bad} cannot run on ranks (nproc={nproc}); "
                            f"distributed strategies are {known}")
    for fmt in formats:
        check_format(fmt)
    shards = _shard_list(shard_sizes, settings)  # a folder: as saved unless sizes given
    # a format a strategy does not read (shared-mmap maps safetensors only) is skipped up
    # front, as single-process sweeps skip combinations a strategy cannot run; a folder's
    # files as saved are in their own format
    reads = {name: registry.get(name).formats for name in names}
    axes = [(shard, fmt) for shard in shards
            for fmt in ([settings.folder_format or "safetensors"] if shard is None
                        else formats)]
    plan = Plan([], skipped=list(dict.fromkeys(
        f"{name} × {fmt}: reads {' / '.join(reads[name])} files only"
        + (f" (the folder's files as saved are {fmt}: add a shard size to reshard a "
           f"{reads[name][0]} copy, e.g. shard_sizes=['as saved', '500MB'])"
           if shard is None else "")
        for shard, fmt in axes for name in names if fmt not in reads[name])))
    for shard, fmt in axes:
        for name in names:
            if fmt in reads[name]:
                strat = check_rank_options(
                    name, nproc=nproc, model=model, format=fmt,
                    dtype=settings.dtype or "float32",
                    per_rank=settings.per_rank, backend=settings.backend,
                    interval_ms=settings.interval_ms)
                plan.runs.append(PlannedRun(strat, shard, fmt, as_saved=None
                                            if shard is not None else settings.as_saved))
    if not plan.runs:
        raise StrategyError("no combination of this sweep can run: " + "; ".join(plan.skipped))
    plan.config = {
        "model": model_id(model), "strategies": names,
        "shard_sizes": [AS_SAVED if s is None else s for s in shards],
        "device_maps": ["cpu"], "formats": list(formats), "dtype": settings.dtype or "float32",
        "ram_budget": settings.budget, "interval_ms": settings.interval_ms,
        "seed": settings.seed, "nproc": nproc, "max_memory": None,
        "per_rank": settings.per_rank, "backend": settings.backend,
    }
    if settings.folder is not None:
        plan.config["checkpoint"] = str(settings.folder)
        plan.config["factory"] = settings.factory
    plan.command = (f"bigviz.sweep({model_id(model)!r}, strategies={names!r}, "
                    + (f"shard_sizes={list(shard_sizes)!r}, " if shard_sizes is not None
                       else "" if settings.folder is not None
                       else "shard_sizes=['500MB'], ")
                    + (f"factory={settings.factory!r}, " if settings.factory else "") +
                    f"formats={list(formats)!r}, "
                    f"nproc={nproc}"
                    + (f", per_rank={settings.per_rank!r}" if settings.per_rank != "naive"
                       else "")
                    + (f", backend={settings.backend!r}" if settings.backend else "") + ")")
    return plan


def sweep_plan(
    plan: Plan, settings: Settings, *, on_progress: ProgressCallback | None = None,
    on_event: EventCallback | None = None, cancel: threading.Event | None = None,
) -> Sweep:
    """Run every combination of ``plan`` in order, saving each checkpoint once; stop
    starting runs once ``cancel`` is set.

    ``on_progress`` gets ``{"stage": "prepare" | "run" | "done", "index", "total",
    "label", "result"}``; ``on_event`` each run's events with ``"run"`` (the label) and
    ``"index_in_sweep"`` added.

    A run whose fork server dies under it is a ``"crashed"`` result with a note, and the
    sweep goes on with a new server. An error that stops the sweep itself (a checkpoint
    that cannot be prepared, no worker that can start) propagates carrying the runs that
    finished: :func:`partial_sweep` gives them, so a report of them can still be written.
    """
    result = Sweep(
        config=plan.config,
        command=plan.command,
        started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        meta={"skipped": plan.skipped, "argv": shlex.join(sys.argv) if sys.argv else "",
              "work_dir": str(work_folder(settings.work_dir)), "tolerance": dict(TOLERANCE)},
    )
    total = len(plan.runs)

    def progress(**kw: Any) -> None:
        if on_progress is not None:
            on_progress({"total": total, **kw})

    folders: dict[tuple[int | None, str], Path] = {}
    try:
        for i, item in enumerate(plan.runs):
            if cancel is not None and cancel.is_set():
                break
            label = item.label(settings.nproc)
            key = (item.shard, item.format)
            if key not in folders:
                progress(stage="prepare", index=i, label=_preparing(settings, item),
                         result=None)
                try:
                    folders[key] = prepare_for(settings, item.shard, item.format, cancel=cancel)
                except PreparationCancelled:  # Ctrl-C while saving: nothing was kept
                    break
            progress(stage="run", index=i, label=label, result=None)
            r = run_planned(item, folders[key], settings, on_event=_tag(on_event, label, i),
                            cancel=cancel)
            result.results.append(r)
            progress(stage="done", index=i, label=label, result=r)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        result.meta["stopped"] = f"{type(exc).__name__}: {first}"
        setattr(exc, _PARTIAL, result)  # the finished runs travel with it
        raise
    return result


_PARTIAL = "bigviz_partial_sweep"


def partial_sweep(exc: BaseException) -> Sweep | None:
    """The runs a sweep finished before ``exc`` stopped it (``meta["stopped"]`` says
    why), or ``None`` when ``exc`` did not come out of a sweep.

    Example:
        >>> partial_sweep(ValueError("x")) is None
        True
    """
    found = getattr(exc, _PARTIAL, None)
    return found if isinstance(found, Sweep) else None


def _preparing(settings: Settings, item: PlannedRun) -> str:
    """What the progress display says while a checkpoint is being made ready."""
    if settings.folder is None:
        return f"saving {format_size(item.shard, binary=False)} {item.format} checkpoint"
    if item.shard is None:
        return f"checksums of {model_id(settings.model)} as saved (read-only)"
    return (f"resharding {model_id(settings.model)} into "
            f"{format_size(item.shard, binary=False)} {item.format} shards")


def prepare_for(settings: Settings, shard: int | None, fmt: str,
                cancel: threading.Event | None = None) -> Path:
    """The prepared folder (``checkpoint/`` + ``checksums.json``) of one combination:
    saved once from a zoo model, or a checkpoint folder as saved or resharded
    (``cancel`` stops it: PreparationCancelled)."""
    if settings.folder is not None:
        return prepare_folder(settings.folder, shard=shard,
                              format=None if shard is None else fmt,
                              work_dir=settings.work_dir, cancel=cancel)
    assert shard is not None  # parse_shard refuses "as saved" for the zoo
    return prepare_checkpoint(settings.model, max_shard_size=shard, format=fmt,
                              dtype=settings.dtype or "float32", work_dir=settings.work_dir,
                              seed=settings.seed, cancel=cancel)


def run_planned(
    item: PlannedRun, folder: Path, settings: Settings, *,
    on_event: EventCallback | None = None, cancel: threading.Event | None = None,
) -> RunResult:
    """Run one planned combination on its prepared checkpoint ``folder``."""
    if settings.nproc is not None:
        src = settings.folder  # a checkpoint folder: the ranks build from its path
        return launch(item.strategy, folder, nproc=settings.nproc,
                      model=str(settings.model if src is None else src),
                      shard=item.shard, format=item.format, dtype=settings.dtype or "float32",
                      per_rank=settings.per_rank, budget=settings.budget,
                      interval_ms=float(settings.interval_ms), on_event=on_event,
                      timeout=settings.timeout, cancel=cancel, seed=settings.seed,
                      backend=settings.backend, factory=settings.factory,
                      source=None if src is None else model_id(settings.model),
                      as_saved=item.as_saved)
    return _run_worker(item, folder, settings, on_event=on_event, cancel=cancel)


def _strategy_class(strat: Strategy) -> str | None:
    """``module:Class`` of a strategy the worker's registry may not have (a user's)."""
    cls = type(strat)
    if cls.__module__.startswith("bigviz.strategies") and strat.name in registry.names():
        return None
    return f"{cls.__module__}:{cls.__qualname__}"


def _run_worker(
    item: PlannedRun, folder: Path, settings: Settings, *, on_event: EventCallback | None,
    cancel: threading.Event | None,
) -> RunResult:
    from bigviz.checkpoint import inspect_checkpoint

    strat, shard, fmt, dmap, mm = (item.strategy, item.shard, item.format, item.device_map,
                                   item.max_memory)
    model = model_id(settings.model)
    # a folder as saved is a link to the user's folder: name the real files
    ckpt = (folder / "checkpoint").resolve()
    info = inspect_checkpoint(ckpt)
    scratch = work_folder(settings.work_dir) / "runs" / f"{strat.name}-{uuid.uuid4().hex[:8]}"
    size = "as saved" if shard is None else format_size(shard, binary=False)
    label = f"{strat.name} · {model} · {size} {fmt}"
    dtype = settings.dtype or "float32"
    # the worker builds from the resolved folder: it may not share this process's working
    # folder or HF_HOME (the fork server started earlier)
    built = str(settings.folder) if settings.folder is not None else model
    job = {
        "kind": "run", "strategy": strat.name, "model": built, "dtype": dtype,
        "factory": settings.factory,
        "seed": settings.seed, "checkpoint": str(ckpt),
        "checksums": str(folder / "checksums.json"),
        "device_map": dmap, "max_memory": [[k, v] for k, v in mm.items()] if mm else None,
        "shard_size": shard, "format": fmt, "interval_ms": settings.interval_ms,
        "scratch": str(scratch), "label": label, "sys_path": sys.path,
        "strategy_class": _strategy_class(strat),
        "preload": list(getattr(strat, "preload", ())) + _model_modules(settings),
        "cache": item.cache,
    }
    params: dict[str, Any] = {
        "model": model, "dtype": dtype, "max_shard_size": shard, "format": fmt,
        "device_map": dmap, "ram_budget": settings.budget, "seed": settings.seed,
        "max_memory": {str(k): v for k, v in mm.items()} if mm else None,
        "interval_ms": settings.interval_ms, "checkpoint": str(ckpt)}
    if settings.folder is not None:
        params["source"] = str(settings.folder)
        if settings.factory:
            params["factory"] = settings.factory
    if shard is None:
        params["as_saved"] = as_saved_text(info)
    try:
        out = execute(job, on_event=on_event, ram_budget=settings.budget,
                      timeout=settings.timeout, cancel=cancel)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    # what the worker measured of the page cache before its first phase (a worker that
    # died before it sent its result: what was asked, unmeasured)
    note = ((out.result or {}).get("notes") or {}).get("cache") \
        or out.recording.meta.get("cache")
    params["cache"] = note if isinstance(note, dict) else {
        "asked": item.cache, "text": f"{item.cache} (not measured)"}
    return single_result(strat, out, info=info, model=model, m_bytes=int(info.total_size),
                         shard=shard, format=fmt, dmap=dmap, mm=mm, budget=settings.budget,
                         params=params)


def check_caches(caches: str | Sequence[str]) -> list[str]:
    """The page-cache states asked for, checked (a string is one state).

    Raises:
        ConfigError: an empty list or a state that is not cold, warm or as-is.

    Example:
        >>> check_caches("cold"), check_caches(["cold", "warm"])
        (['cold'], ['cold', 'warm'])
    """
    items = [caches] if isinstance(caches, str) else list(caches)
    if not items:
        raise ConfigError("cache is empty; use cold, warm or as-is (e.g. cache=['cold', "
                          "'warm'])")
    for c in items:
        if c not in CACHE_STATES:
            raise ConfigError(f"cache {c!r} is not a page-cache state; use one of "
                              f"{', '.join(CACHE_STATES)} (e.g. --cache cold,warm)")
    return list(dict.fromkeys(items))


def _model_modules(settings: Settings) -> list[str]:
    """Modules a folder model's build imports (Transformers and the architecture's
    module, or the factory's): the fork server imports them once, so workers fork warm."""
    if settings.folder is None:
        return []
    if settings.factory:
        return [settings.factory.partition(":")[0]]
    from bigviz.models.folders import transformers_class

    try:
        return ["transformers", transformers_class(settings.folder).__module__]
    except ConfigError:  # the run reports it
        return []


def _tag(on_event: EventCallback | None, label: str, index: int) -> EventCallback | None:
    if on_event is None:
        return None
    cb = on_event

    def tagged(ev: dict[str, Any]) -> None:
        cb({**ev, "run": label, "index_in_sweep": index})

    return tagged
