"""Run strategies in fresh processes and compare them: :func:`run` and :func:`sweep`.

Each run forks a clean worker from a warm fork server (:mod:`bigviz.runner.forkserver`),
runs one strategy under the recorder there, streams the timeline back while it runs,
and returns a plain-data :class:`~bigviz.data.result.RunResult` whatever happens to the
worker: an exception, a segfault, the kernel's OOM killer, or the parent's RAM-budget
watchdog all become an outcome with the phase reached and the partial timeline.

Checkpoints are saved once per (model, dtype, shard size, format) into the work folder
(``work_dir``, default ``$TMPDIR/bigviz-work``) under a hash of those settings and
reused; the checksums of every tensor are stored beside them, and every load is checked
against them (wrong weights → outcome ``"error"``).

The RAM budget applies to the worker's resident set (``VmRSS``: anonymous plus
file-backed pages, what the kernel's OOM accounting sees). The parent reads it every
5 ms and also checks each phase's exact peak as it ends; a run whose exact peak went
over is ``"budget_exceeded"`` even if it finished before the watchdog saw it.

Predictions come from each strategy's formula (DESIGN.md table). ``checks["prediction"]``
says whether measurement and prediction agree within :data:`TOLERANCE`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bigviz._errors import ConfigError, StrategyError
from bigviz.data.result import TOLERANCE, Checks, Prediction, PredictionCheck, RunResult, Sweep
from bigviz.models import ModelLike, model_bytes, parse_spec, spec_name
from bigviz.runner import forkserver
from bigviz.runner._runner import Outcome, execute, raise_if_failed, vram_peaks
from bigviz.units import format_size, parse_size

if TYPE_CHECKING:
    from bigviz.strategies import Strategy

__all__ = ["TOLERANCE", "close", "prepare_checkpoint", "run", "sweep"]

EventCallback = Callable[[dict[str, Any]], None]

_FORMATS = ("safetensors", "bin")
_DTYPES = ("float32", "bfloat16", "float16")


def close() -> None:
    """Stop the warm fork server now (it also stops at interpreter exit).

    Example:
        >>> import bigviz.runner
        >>> bigviz.close()
    """
    forkserver.close()


def _default_work_dir() -> Path:
    return Path(tempfile.gettempdir()) / "bigviz-work"


def _work(work_dir: str | os.PathLike[str] | None) -> Path:
    p = Path(work_dir) if work_dir is not None else _default_work_dir()
    p.mkdir(parents=True, exist_ok=True)
    return p


def _model_id(model: ModelLike) -> str:
    if callable(model) and not isinstance(model, str):
        return spec_name(model)
    return str(model)


def _check_format(fmt: str) -> str:
    if fmt not in _FORMATS:
        raise ConfigError(f"format {fmt!r} is not supported; use 'safetensors' or 'bin'")
    return fmt


def _check_dtype(dtype: str) -> str:
    if dtype not in _DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not supported; use one of {list(_DTYPES)}")
    return dtype


def _ckpt_key(model: ModelLike, dtype: str, shard: int, fmt: str, seed: int) -> str:
    spec = parse_spec(model, dtype)
    # the last item versions the stored checksums.json layout (2: copy-free word sums)
    blob = json.dumps([_model_id(model), spec.config, dtype, shard, fmt, seed, 2],
                      sort_keys=True)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
    safe = re.sub(r"[^A-Za-z0-9.]+", "-", _model_id(model)).strip("-")[:40]
    return f"{safe}-{dtype}-{fmt}-{shard}-{digest}"


def prepare_checkpoint(
    model: ModelLike,
    *,
    max_shard_size: int | str = "500MB",
    format: str = "safetensors",
    dtype: str = "float32",
    work_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
) -> Path:
    """Save ``model`` as a sharded checkpoint in the work folder once, and reuse it.

    The model is built and saved in a worker process (the caller's memory is untouched);
    tensor checksums go to ``checksums.json`` beside the ``checkpoint/`` folder, and a
    GPT-2 ``config.json`` into it for ``gpt:`` specs.

    Returns:
        The folder holding ``checkpoint/`` and ``checksums.json``.

    Raises:
        ConfigError: a bad spec, size, format or dtype.
        RunError: the worker failed to save.

    Example:
        >>> # d = prepare_checkpoint("gpt:100MB", max_shard_size="20MB")
    """
    _check_format(format)
    _check_dtype(dtype)
    shard = parse_size(max_shard_size)
    parse_spec(model, dtype)
    root = _work(work_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / _ckpt_key(model, dtype, shard, format, seed)
    if (final / "checksums.json").exists():
        return final
    tmp = root / f".tmp-{uuid.uuid4().hex[:8]}"
    job = {"kind": "prepare", "model": _model_id(model), "dtype": dtype, "seed": seed,
           "shard_size": shard, "format": format, "dir": str(tmp), "sys_path": sys.path,
           "label": f"prepare {final.name}"}
    try:
        out = execute(job)
        raise_if_failed(out, f"saving {_model_id(model)} as a {format} checkpoint")
        try:
            tmp.rename(final)
        except OSError:  # another process saved it first; theirs is as good as ours
            if not (final / "checksums.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


# -- validation before any process starts --------------------------------------------


def _validate(
    strategy: Any, model: ModelLike, *, format: str, dtype: str, device_map: Any,
    max_memory: Mapping[Any, Any] | None,
) -> tuple[Any, Any, dict[int | str, int] | None]:
    import bigviz.strategies as strategies
    from bigviz.strategies._base import normalize_max_memory, validate_device_map

    _check_format(format)
    _check_dtype(dtype)
    parse_spec(model, dtype)
    strat = strategies.get(strategy)
    dmap = validate_device_map(device_map)
    strat.check(model=model, format=format, device_map=dmap, dtype=dtype)
    # a factory's size needs a (meta) build here, so only when a cap must be checked
    size = model_bytes(model, dtype) if max_memory else None
    mm = normalize_max_memory(max_memory, model_bytes=size, device_map=dmap)
    return strat, dmap, mm


def _budget(ram_budget: int | str | None) -> int | None:
    if ram_budget is None:
        return None
    b = parse_size(ram_budget)
    if b <= 0:
        raise ConfigError(f"ram_budget {ram_budget!r} must be a positive size like '8GB'")
    return b


# -- one run --------------------------------------------------------------------------


def run(
    strategy: str | Strategy,
    *,
    model: ModelLike = "gpt:100MB",
    max_shard_size: int | str = "500MB",
    format: str = "safetensors",
    device_map: Any = "cpu",
    max_memory: Mapping[Any, Any] | None = None,
    ram_budget: int | str | None = None,
    dtype: str = "float32",
    work_dir: str | os.PathLike[str] | None = None,
    interval_ms: float = 1.0,
    on_event: EventCallback | None = None,
    timeout: float | None = None,
    cancel: threading.Event | None = None,
    seed: int = 0,
    nproc: int | None = None,
) -> RunResult:
    """Run one strategy in a fresh worker process and measure it.

    Args:
        strategy: a name from ``bigviz.strategies.names()``, or a Strategy instance
            whose class the worker can import by name.
        model: a zoo spec (``"gpt:1GB"``), ``"package.module:function"`` or a
            module-level callable.
        max_shard_size: shard size of the checkpoint to load (saved once, reused).
        format: ``"safetensors"`` or ``"bin"``.
        device_map: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"``, ``"balanced"``,
            ``"sequential"``, ``"disk"`` or a dict (``dispatch``, ``accelerate``,
            ``transformers`` only).
        max_memory: per-device caps, e.g. ``{"cpu": "2GB", 0: "10GB"}``.
        ram_budget: kill the worker when its RSS exceeds this (``"8GB"``); outcome
            ``"budget_exceeded"``.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``.
        work_dir: where checkpoints and scratch files go (default
            ``$TMPDIR/bigviz-work``).
        interval_ms: sampling interval of the timeline.
        on_event: called in this process with each streamed event (samples, phase
            start/end, marks) while the worker runs.
        timeout: seconds after which the worker is killed (outcome ``"error"``).
        cancel: set this event to stop the worker (outcome ``"cancelled"``).
        seed: seed of the synthetic weights.
        nproc: launch this many ``torch.distributed`` ranks instead of one worker, with a
            distributed strategy (``every-rank-loads``, ``rank0-broadcast``,
            ``shared-mmap``); see :func:`bigviz.runner.distributed.run_distributed`.

    Returns:
        A :class:`RunResult`; its ``outcome`` says how the run ended.

    Raises:
        ConfigError: a bad model spec, size, format, dtype or budget.
        StrategyError: an unknown strategy, a device map naming a missing GPU, an
            impossible ``max_memory``, or options the strategy does not support.
        RunError: no worker could be started.

    Example:
        >>> # r = bigviz.run("meta", model="gpt:2GB", max_shard_size="500MB", ram_budget="8GB")
        >>> # r.outcome, r.ram_peak / r.model_bytes
    """
    if nproc is not None:
        from bigviz.runner.distributed import run_distributed  # not at import: see its module

        _check_ranks_options(nproc, device_map, max_memory, model)
        return run_distributed(
            str(strategy), nproc=nproc, model=str(model), max_shard_size=max_shard_size,
            format=format, dtype=dtype, work_dir=work_dir, ram_budget=ram_budget,
            interval_ms=interval_ms, on_event=on_event, timeout=timeout, cancel=cancel,
            seed=seed)
    strat, dmap, mm = _validate(strategy, model, format=format, dtype=dtype,
                                device_map=device_map, max_memory=max_memory)
    shard = parse_size(max_shard_size)
    budget = _budget(ram_budget)
    folder = prepare_checkpoint(model, max_shard_size=shard, format=format, dtype=dtype,
                                work_dir=work_dir, seed=seed)
    return _run_prepared(strat, model, folder, shard=shard, format=format, dmap=dmap, mm=mm,
                         budget=budget, dtype=dtype, work_dir=_work(work_dir),
                         interval_ms=interval_ms, on_event=on_event, timeout=timeout,
                         cancel=cancel, seed=seed)


def _check_ranks(nproc: Any, model: Any) -> None:
    """What every distributed launch needs: a rank count, and a model a rank can import."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"nproc {nproc!r} must be a whole number of ranks >= 1, e.g. nproc=2")
    if not isinstance(model, str):
        raise ConfigError(f"model {model!r}: distributed ranks are separate programs, so pass "
                          "a spec string ('gpt:1GB') or 'package.module:function'")


def _check_ranks_options(nproc: Any, device_map: Any, max_memory: Any, model: Any) -> None:
    _check_ranks(nproc, model)
    if device_map not in ("cpu", None) or max_memory:
        raise ConfigError(
            f"device_map={device_map!r} / max_memory={max_memory!r} apply to single-process "
            "runs; distributed ranks load on CPU (gloo) or each on its own GPU (NCCL): "
            "leave them out with nproc"
        )


def _strategy_class(strat: Any) -> str | None:
    """``module:Class`` of a strategy the worker's registry may not have (a user's)."""
    import bigviz.strategies as registry

    cls = type(strat)
    if cls.__module__.startswith("bigviz.strategies") and strat.name in registry.names():
        return None
    return f"{cls.__module__}:{cls.__qualname__}"


def _dmap_label(dmap: Any) -> str:
    return dmap if isinstance(dmap, str) else json.dumps(dmap, sort_keys=True)


def _run_prepared(
    strat: Any, model: ModelLike, folder: Path, *, shard: int, format: str, dmap: Any,
    mm: dict[int | str, int] | None, budget: int | None, dtype: str, work_dir: Path,
    interval_ms: float, on_event: EventCallback | None, timeout: float | None,
    cancel: threading.Event | None, seed: int,
) -> RunResult:
    from bigviz.checkpoint import inspect_checkpoint

    ckpt = folder / "checkpoint"
    info = inspect_checkpoint(ckpt)
    m_bytes = int(info.total_size)
    scratch = work_dir / "runs" / f"{strat.name}-{uuid.uuid4().hex[:8]}"
    label = f"{strat.name} · {_model_id(model)} · {format_size(shard, binary=False)} {format}"
    job = {
        "kind": "run", "strategy": strat.name, "model": _model_id(model), "dtype": dtype,
        "seed": seed, "checkpoint": str(ckpt), "checksums": str(folder / "checksums.json"),
        "device_map": dmap, "max_memory": [[k, v] for k, v in mm.items()] if mm else None,
        "shard_size": shard, "format": format, "interval_ms": interval_ms,
        "scratch": str(scratch), "label": label, "sys_path": sys.path,
        "strategy_class": _strategy_class(strat),
        "preload": list(getattr(strat, "preload", ())),
    }
    params = {"model": _model_id(model), "dtype": dtype, "max_shard_size": shard,
              "format": format, "device_map": dmap, "ram_budget": budget, "seed": seed,
              "max_memory": {str(k): v for k, v in mm.items()} if mm else None,
              "interval_ms": interval_ms, "checkpoint": str(ckpt)}
    try:
        out = execute(job, on_event=on_event, ram_budget=budget, timeout=timeout, cancel=cancel)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return _result(strat, out, info=info, model=model, m_bytes=m_bytes, shard=shard,
                   format=format, dmap=dmap, mm=mm, budget=budget, params=params)


def _result(
    strat: Any, out: Outcome, *, info: Any, model: ModelLike, m_bytes: int, shard: int,
    format: str, dmap: Any, mm: dict[int | str, int] | None, budget: int | None,
    params: dict[str, Any],
) -> RunResult:
    rec = out.recording
    base = out.baseline
    baseline = int(base.get("rss", 0))
    notes = (out.result or {}).get("notes", {}) or {}
    # measured peaks above baseline: exact phase peaks (VmHWM), the samples, the watchdog
    # every phase, nested ones too: in a killed run the enclosing phase never ended
    exact = [p.ram_peak for p in rec.phases if p.ram_peak is not None]
    sampled = rec.peak("ram.rss")
    candidates = [*exact, out.watch_peak] + ([sampled] if sampled is not None else [])
    ram_abs = max(candidates) if candidates and baseline else None
    anon = _peak(rec, "ram.anon", [p.ram_anon_peak for p in rec.phases])
    file_ = _peak(rec, "ram.file", [p.ram_file_peak for p in rec.phases])
    vram = vram_peaks(rec.phases)
    placement = notes.get("placement")
    try:
        pred: Prediction | None = strat.predict(info, dmap, max_memory=mm, placement=placement)
    except Exception as exc:  # a prediction must never cost the measurement
        pred = Prediction(ram_peak=0, formula="unavailable", notes=f"predict failed: {exc}")
    outcome, error = out.outcome, out.error
    ram_peak = None if ram_abs is None else max(0, ram_abs - baseline)
    if outcome == "ok" and budget is not None and ram_abs is not None and ram_abs > budget:
        worst = max((p for p in rec.phases if p.ram_peak is not None),
                    key=lambda p: p.ram_peak or 0, default=None)
        outcome = "budget_exceeded"
        error = (f"would not fit in {format_size(budget, binary=False)}: reached "
                 f"{format_size(ram_abs, binary=False)}"
                 + (f" in phase {worst.name!r}" if worst else ""))
    tb = (out.result or {}).get("traceback") or out.traceback
    checks = Checks(
        weights="ok" if outcome == "ok" else ((out.result or {}).get("verify") or "unchecked"),
        exit_code=out.exit_code,
        spawn_to_first_phase_s=_overhead(out),
        after_first_use={k: max(0, int(v) - int(base.get(k, 0)))
                         for k, v in ((out.result or {}).get("after") or {}).items()},
        baseline_anon=int(base.get("anon", 0)),
        baseline_file=int(base.get("file", 0)),
        device_map=notes.get("device_map") or None,
        placement=placement or None,
        traceback=tb or None,
    )
    if outcome == "ok" and pred is not None and ram_peak is not None and pred.ram_peak:
        checks.prediction = PredictionCheck.judge(ram_peak, pred.ram_peak, m_bytes)
    return RunResult(
        strategy=strat.name,
        outcome=outcome,  # type: ignore[arg-type]
        model=_model_id(model),
        model_bytes=m_bytes,
        error=error,
        phase_reached=out.phase_reached,
        shard_size=shard,
        format=format,
        device_map=_dmap_label(dmap),
        baseline=baseline,
        ram_peak=ram_peak,
        ram_anon_peak=None if anon is None else max(0, anon - int(base.get("anon", 0))),
        ram_file_peak=None if file_ is None else max(0, file_ - int(base.get("file", 0))),
        vram_peak=vram,
        predicted=pred,
        seconds=round(out.seconds, 6),
        recording=rec,
        params=params,
        checks=checks,
    )


def _peak(rec: Any, series: str, phase_vals: list[int | None]) -> int | None:
    vals = [v for v in phase_vals if v is not None]
    s = rec.peak(series)
    if s is not None:
        vals.append(s)
    return max(vals) if vals else None


def _overhead(out: Outcome) -> float | None:
    """Seconds from asking for a worker to the start of its first phase."""
    rec = out.recording
    t0 = rec.meta.get("t0_monotonic")
    if isinstance(t0, (int, float)) and rec.phases:
        return round(float(t0) + rec.phases[0].start - out.t_spawn, 4)
    if out.t_first_phase is not None:
        return round(out.t_first_phase - out.t_spawn, 4)
    return None


# -- sweeps --------------------------------------------------------------------------


def sweep(
    model: ModelLike,
    *,
    strategies: Sequence[str | Strategy],
    shard_sizes: Sequence[int | str] = ("500MB",),
    device_maps: Sequence[Any] = ("cpu",),
    formats: Sequence[str] = ("safetensors",),
    dtype: str = "float32",
    max_memory: Mapping[Any, Any] | None = None,
    ram_budget: int | str | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    interval_ms: float = 1.0,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    on_event: EventCallback | None = None,
    cancel: threading.Event | None = None,
    timeout: float | None = None,
    seed: int = 0,
    nproc: int | None = None,
) -> Sweep:
    """Run every (shard size, format, strategy, device map) combination, each in a fresh
    worker, saving each checkpoint once.

    Combinations a strategy cannot run (``naive`` with ``device_map="cuda:0"``, a ``.bin``
    checkpoint for a safetensors-only strategy) are skipped and listed in
    ``sweep.meta["skipped"]``; everything else is checked before the first process starts.

    Args:
        model: as for :func:`run`.
        strategies: strategy names, e.g. ``["naive", "sharded", "meta", "mmap"]``.
        shard_sizes, device_maps, formats: the values to cross.
        on_progress: called with ``{"stage": "prepare" | "run" | "done", "index",
            "total", "label", "result"}`` before and after each step.
        on_event: each worker's events, with ``"run"`` (the label) and
            ``"index_in_sweep"`` added.
        cancel: set it to stop: the running worker is killed (its result has outcome
            ``"cancelled"``) and no further runs start.
        nproc: run distributed strategies on this many ranks (``device_maps`` must then
            be ``["cpu"]``); see :func:`run`.
        Other arguments: as for :func:`run`.

    Returns:
        A :class:`Sweep` of :class:`RunResult` with the config and the call recorded.

    Raises:
        ConfigError, StrategyError: as for :func:`run`, before anything runs.

    Example:
        >>> # s = bigviz.sweep("gpt:1GB", strategies=["naive", "meta"], shard_sizes=["200MB"])
        >>> # [(r.strategy, r.outcome) for r in s.results]
    """
    import bigviz.strategies as registry
    from bigviz.strategies._base import validate_device_map

    if isinstance(strategies, str):
        strategies = [strategies]
    if not strategies:
        raise ConfigError(f"strategies is empty; pick from {registry.names()}")
    if nproc is not None:
        return _sweep_ranks(model, strategies=strategies, shard_sizes=shard_sizes,
                            device_maps=device_maps, formats=formats, dtype=dtype,
                            max_memory=max_memory, ram_budget=ram_budget, work_dir=work_dir,
                            interval_ms=interval_ms, on_progress=on_progress,
                            on_event=on_event, cancel=cancel, timeout=timeout, seed=seed,
                            nproc=nproc)
    names = [registry.get(s).name for s in strategies]  # unknown names fail here
    for fmt in formats:
        _check_format(fmt)
    _check_dtype(dtype)
    parse_spec(model, dtype)
    shards = [parse_size(s) for s in shard_sizes]
    budget = _budget(ram_budget)
    plan: list[tuple[int, str, Any, Any, Any, dict[int | str, int] | None]] = []
    skipped: list[str] = []
    for shard in shards:
        for fmt in formats:
            for item, name in zip(strategies, names, strict=True):
                for dm in device_maps:
                    cand = registry.get(item)
                    # a combination the strategy cannot run anywhere is skipped; a missing
                    # package or GPU, or a bad option, is an error (_validate raises it)
                    why = None if cand.unavailable() else cand.incompatible(
                        model=model, format=fmt, device_map=validate_device_map(dm),
                        dtype=dtype)
                    if why:
                        skipped.append(f"{name} × {fmt} × {dm}: {why}")
                        continue
                    strat, dmap, mm = _validate(item, model, format=fmt, dtype=dtype,
                                                device_map=dm, max_memory=max_memory)
                    plan.append((shard, fmt, name, strat, dmap, mm))
    if not plan:
        raise StrategyError("no combination of this sweep can run: " + "; ".join(skipped))
    config = {
        "model": _model_id(model), "strategies": names,
        "shard_sizes": shards, "device_maps": list(device_maps), "formats": list(formats),
        "dtype": dtype, "ram_budget": budget, "interval_ms": interval_ms, "seed": seed,
        "max_memory": {str(k): str(v) for k, v in dict(max_memory).items()}
        if max_memory else None,
    }
    args = [repr(_model_id(model))] + [
        f"{k}={v!r}" for k, v in (
            ("strategies", names), ("shard_sizes", list(shard_sizes)),
            ("device_maps", list(device_maps)), ("formats", list(formats)), ("dtype", dtype),
            ("ram_budget", ram_budget), ("max_memory", max_memory)) if v is not None
    ]
    result = Sweep(
        config=config,
        command=f"bigviz.sweep({', '.join(args)})",
        started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        meta={"skipped": skipped, "argv": shlex.join(sys.argv) if sys.argv else "",
              "work_dir": str(_work(work_dir)), "tolerance": dict(TOLERANCE)},
    )
    total = len(plan)

    def progress(**kw: Any) -> None:
        if on_progress is not None:
            on_progress({"total": total, **kw})

    folders: dict[tuple[int, str], Path] = {}
    for i, (shard, fmt, _name, strat, dmap, mm) in enumerate(plan):
        if cancel is not None and cancel.is_set():
            break
        label = RunResult(strategy=strat.name, outcome="ok", shard_size=shard, format=fmt,
                          device_map=_dmap_label(dmap)).label
        if (shard, fmt) not in folders:
            progress(stage="prepare", index=i, label=f"saving {format_size(shard, binary=False)}"
                     f" {fmt} checkpoint", result=None)
            folders[(shard, fmt)] = prepare_checkpoint(
                model, max_shard_size=shard, format=fmt, dtype=dtype, work_dir=work_dir,
                seed=seed)
        progress(stage="run", index=i, label=label, result=None)
        tagged = _tag(on_event, label, i)
        r = _run_prepared(strat, model, folders[(shard, fmt)], shard=shard, format=fmt,
                          dmap=dmap, mm=mm, budget=budget, dtype=dtype, work_dir=_work(work_dir),
                          interval_ms=interval_ms, on_event=tagged, timeout=timeout,
                          cancel=cancel, seed=seed)
        result.results.append(r)
        progress(stage="done", index=i, label=label, result=r)
    return result


def sweep_interruptibly(
    model: ModelLike, *, thread_name: str = "bigviz-sweep", **kwargs: Any
) -> tuple[Sweep, bool]:
    """:func:`sweep` on a helper thread, so that Ctrl-C (or *Interrupt kernel*) cancels it
    cleanly: the running worker is killed, the finished runs are kept.

    Args:
        model: as for :func:`sweep`.
        thread_name: name of the helper thread.
        kwargs: the other arguments of :func:`sweep` (not ``cancel``: this sets it).

    Returns:
        The sweep of the runs that finished, and whether it was interrupted.

    Raises:
        Whatever :func:`sweep` raises, in the calling thread.

    Example:
        >>> # s, interrupted = sweep_interruptibly("gpt:100MB", strategies=["meta"])
    """
    cancel = threading.Event()
    finished = threading.Event()
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["sweep"] = sweep(model, **kwargs, cancel=cancel)
        except BaseException as exc:
            box["error"] = exc
        finally:
            finished.set()

    worker = threading.Thread(target=work, name=thread_name, daemon=True)
    worker.start()
    interrupted = False
    # wait on an Event, not Thread.join: a join interrupted by Ctrl-C can mark a live
    # thread as finished on Python 3.11 (bpo-45274's fix releases a lock it does not own)
    while not finished.is_set():
        try:
            finished.wait(0.2)
        except KeyboardInterrupt:
            if not interrupted:
                print("\ninterrupted: stopping the running worker …", file=sys.stderr,
                      flush=True)
            interrupted = True
            cancel.set()
    worker.join()
    if "error" in box:
        raise box["error"]
    result: Sweep = box["sweep"]
    return result, interrupted


def _sweep_ranks(
    model: ModelLike, *, strategies: Sequence[str | Strategy], shard_sizes: Sequence[int | str],
    device_maps: Sequence[Any], formats: Sequence[str], dtype: str,
    max_memory: Mapping[Any, Any] | None, ram_budget: int | str | None,
    work_dir: str | os.PathLike[str] | None, interval_ms: float,
    on_progress: Callable[[dict[str, Any]], None] | None, on_event: EventCallback | None,
    cancel: threading.Event | None, timeout: float | None, seed: int, nproc: int,
) -> Sweep:
    """:func:`sweep` over distributed strategies, each combination on ``nproc`` ranks."""
    from bigviz.runner.distributed import run_distributed
    from bigviz.strategies import distributed as dist

    for dm in device_maps:
        _check_ranks_options(nproc, dm, max_memory, model)
    known = dist.names()
    names = [str(s) for s in strategies]
    bad = [n for n in names if n not in known]
    if bad:
        raise StrategyError(f"strategies {bad} cannot run on ranks (nproc={nproc}); "
                            f"distributed strategies are {known}")
    for fmt in formats:
        _check_format(fmt)
    shards = [parse_size(s) for s in shard_sizes]
    # a format a strategy does not read (shared-mmap maps safetensors only) is skipped up
    # front, as sweep() skips combinations a strategy cannot run, not failed half-way
    reads = {name: dist.get(name).formats for name in names}
    skipped = [f"{name} × {fmt}: reads {' / '.join(reads[name])} files only"
               for fmt in formats for name in names if fmt not in reads[name]]
    plan = [(shard, fmt, name) for shard in shards for fmt in formats for name in names
            if fmt in reads[name]]
    if not plan:
        raise StrategyError("no combination of this sweep can run: " + "; ".join(skipped))
    result = Sweep(
        config={"model": _model_id(model), "strategies": names, "shard_sizes": shards,
                "device_maps": ["cpu"], "formats": list(formats), "dtype": dtype,
                "ram_budget": _budget(ram_budget), "interval_ms": interval_ms, "seed": seed,
                "nproc": nproc, "max_memory": None},
        command=(f"bigviz.sweep({_model_id(model)!r}, strategies={names!r}, "
                 f"shard_sizes={list(shard_sizes)!r}, formats={list(formats)!r}, "
                 f"nproc={nproc})"),
        started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        meta={"skipped": skipped, "argv": shlex.join(sys.argv) if sys.argv else "",
              "work_dir": str(_work(work_dir)), "tolerance": dict(TOLERANCE)},
    )
    for i, (shard, fmt, name) in enumerate(plan):
        if cancel is not None and cancel.is_set():
            break
        label = f"{name} · {format_size(shard, binary=False, precision=0)} · {fmt} × {nproc}"
        if on_progress is not None:
            on_progress({"total": len(plan), "stage": "run", "index": i, "label": label,
                         "result": None})
        r = run_distributed(name, nproc=nproc, model=str(model), max_shard_size=shard,
                            format=fmt, dtype=dtype, work_dir=work_dir, ram_budget=ram_budget,
                            interval_ms=interval_ms, on_event=_tag(on_event, label, i),
                            timeout=timeout, cancel=cancel, seed=seed)
        result.results.append(r)
        if on_progress is not None:
            on_progress({"total": len(plan), "stage": "done", "index": i, "label": label,
                         "result": r})
    return result


def _tag(on_event: EventCallback | None, label: str, index: int) -> EventCallback | None:
    if on_event is None:
        return None
    cb = on_event

    def tagged(ev: dict[str, Any]) -> None:
        cb({**ev, "run": label, "index_in_sweep": index})

    return tagged

