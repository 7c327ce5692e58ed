"""Run strategies in fresh processes and compare them: :func:`run` and :func:`sweep`.

Each run forks a clean worker from a warm fork server (:mod:`bigviz.runner.forkserver`),
runs one strategy under the recorder there, streams the timeline back while it runs,
and returns a plain-data :class:`~bigviz.data.result.RunResult` whatever happens to the
worker: an exception, a segfault, the kernel's OOM killer, or the parent's RAM-budget
watchdog all become an outcome with the phase reached and the partial timeline.

Checkpoints are saved once per (model, dtype, shard size, format) into the work folder
(``work_dir``, default the per-user ``$XDG_CACHE_HOME/bigviz``, i.e. ``~/.cache/bigviz``;
a folder another user owns or may write into is refused) under a hash of those settings and
reused; the checksums of every tensor are stored beside them, and every load is checked
against them (wrong weights → outcome ``"error"``).

A checkpoint folder on disk (a Transformers ``save_pretrained`` folder, any folder
:func:`~bigviz.checkpoint.inspect_checkpoint` reads with a ``factory``) or
``hf:ORG/NAME[@REVISION]`` from the local Hugging Face cache is loaded **as saved**: no
re-save, its own dtype and format, checksums read from its files once into the work
folder, nothing ever written into it. Other shard sizes reshard it into the work folder.

The RAM budget applies to the worker's resident set (``VmRSS``: anonymous plus
file-backed pages, what the kernel's OOM accounting sees). The parent reads it every
5 ms and also checks each phase's exact peak as it ends; a run whose exact peak went
over is ``"budget_exceeded"`` even if it finished before the watchdog saw it.

A callback (``on_event``, ``on_progress``) that raises ``SystemExit`` (``sys.exit()`` in
a progress display) stops the work as ``cancel`` would, and the call then raises a
:class:`~bigviz.RunError` that says so: it never leaves bigviz as a bare ``SystemExit``.

Predictions come from each strategy's formula (DESIGN.md table). ``checks["prediction"]``
says whether measurement and prediction agree within :data:`TOLERANCE`.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bigviz._errors import ConfigError, RunError
from bigviz.data.result import TOLERANCE, RunResult, Sweep
from bigviz.models import ModelLike
from bigviz.runner import forkserver
from bigviz.runner.checkpoints import prepare_checkpoint, prepare_folder
from bigviz.runner.launcher import rank_settings
from bigviz.runner.plan import (
    PlannedRun,
    Settings,
    check_caches,
    parse_shard,
    plan_runs,
    prepare_for,
    run_planned,
    sweep_plan,
    validate_single,
)
from bigviz.runner.supervisor import EventCallback
from bigviz.runner.validate import check_ranks_options, parse_budget

if TYPE_CHECKING:
    from bigviz.strategies import Strategy

__all__ = ["TOLERANCE", "close", "prepare_checkpoint", "prepare_folder", "run", "sweep",
           "sweep_interruptibly"]


class _Stop(threading.Event):
    """The cancel event of one call: set by the caller's own ``cancel``, or by a
    callback that raised ``SystemExit``."""

    def __init__(self, user: threading.Event | None) -> None:
        super().__init__()
        self._user = user

    def is_set(self) -> bool:
        return super().is_set() or (self._user is not None and self._user.is_set())


class _Guard:
    """Wraps the caller's callbacks: a ``SystemExit`` in one stops the work (like
    ``cancel``) and is raised afterwards as a RunError that names the callback."""

    def __init__(self, cancel: threading.Event | None) -> None:
        self.stop = _Stop(cancel)
        self.raised: tuple[str, SystemExit] | None = None

    def wrap(self, cb: Callable[[Any], None] | None, name: str) -> Callable[[Any], None] | None:
        if cb is None:
            return None
        user_cb = cb

        def guarded(arg: Any) -> None:
            if self.raised is not None:
                return  # it asked to stop: quiet from here on
            try:
                user_cb(arg)
            except SystemExit as exc:
                self.raised = (name, exc)
                self.stop.set()

        return guarded

    def check(self, what: str) -> None:
        if self.raised is None:
            return
        name, exc = self.raised
        raise RunError(
            f"the {name} callback raised SystemExit({exc.code!r}): bigviz stopped the {what} "
            "there (the running worker was stopped, no further run started); to stop a "
            "sweep from a callback, set the `cancel` event instead") from exc


def close() -> None:
    """Stop the warm fork server now (it also stops at interpreter exit).

    Example:
        >>> import bigviz.runner
        >>> bigviz.close()
    """
    forkserver.close()


def run(
    strategy: str | Strategy,
    *,
    model: ModelLike = "gpt:100MB",
    max_shard_size: int | str | None = None,
    format: str = "safetensors",
    device_map: Any = "cpu",
    max_memory: Mapping[Any, Any] | None = None,
    ram_budget: int | str | None = None,
    dtype: str | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    interval_ms: float = 1.0,
    on_event: EventCallback | None = None,
    timeout: float | None = None,
    cancel: threading.Event | None = None,
    seed: int = 0,
    nproc: int | None = None,
    factory: str | None = None,
    cache: str = "as-is",
    per_rank: str | None = None,
    backend: str | None = None,
) -> RunResult:
    """Run one strategy in a fresh worker process and measure it.

    Args:
        strategy: a name from ``bigviz.strategies.names()``, or a Strategy instance
            whose class the worker can import by name.
        model: a zoo spec (``"gpt:1GB"``), ``"package.module:function"``, a
            module-level callable, a checkpoint folder (``"./my-model"``: Transformers
            layout, safetensors or ``.bin``, sharded or not) or ``"hf:ORG/NAME[@REVISION]"``
            from the local Hugging Face cache (never downloaded).
        max_shard_size: shard size of the checkpoint to load (saved once, reused);
            ``None`` (the default): 500 MB for a zoo model, a folder's files as saved
            (``"as saved"`` says so too); a size reshards a folder into the work folder.
        format: ``"safetensors"`` or ``"bin"`` (a folder as saved: its own format).
        device_map: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"``, ``"balanced"``,
            ``"sequential"``, ``"disk"`` or a dict (``dispatch``, ``accelerate``,
            ``transformers`` only).
        max_memory: per-device caps, e.g. ``{"cpu": "2GB", 0: "10GB"}``.
        ram_budget: kill the worker when its RSS exceeds this (``"8GB"``); outcome
            ``"budget_exceeded"``.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"`` for a zoo model (``None``:
            float32); a folder loads in its files' own dtype (leave it out).
        work_dir: where checkpoints, a folder's checksums and scratch files go (default
            ``~/.cache/bigviz``: see :func:`~bigviz.runner.validate.work_folder`).
        interval_ms: sampling interval of the timeline.
        on_event: called in this process with each streamed event (samples, phase
            start/end, marks) while the worker runs.
        timeout: seconds after which the worker is killed (outcome ``"error"``).
        cancel: set this event to stop the worker (outcome ``"cancelled"``).
        seed: seed of the synthetic weights.
        nproc: launch this many ``torch.distributed`` ranks instead of one worker, with a
            distributed strategy (``every-rank-loads``, ``rank0-broadcast``,
            ``shared-mmap``); see :func:`bigviz.runner.launcher.run_distributed`.
        factory: for a checkpoint folder without ``config.json``:
            ``"package.module:function"`` returning the ``nn.Module`` (it is imported and
            called, in this process on the meta device and in each worker: user code runs).
        cache: the page cache of the checkpoint's files when the load starts: ``"cold"``
            drops their pages first (``posix_fadvise(DONTNEED)``, no root needed),
            ``"warm"`` reads them in first, ``"as-is"`` (the default) leaves them as
            earlier runs left them. Every run measures the state it got
            (``params["cache"]``: ``"cold (0% cached)"``) and the bytes each top-level
            phase read from storage (``phase.detail["read_bytes"]``, ``"read_gbps"``).
        per_rank: with ``nproc``: what each rank of ``every-rank-loads`` runs,
            ``"naive"`` (the default), ``"sharded"`` or ``"meta"``.
        backend: with ``nproc``: ``"gloo"`` or ``"nccl"`` (default: NCCL when every
            rank has a GPU, else gloo).

    Returns:
        A :class:`RunResult`; its ``outcome`` says how the run ended.

    Raises:
        ConfigError: a bad model spec, size, format, dtype or budget.
        StrategyError: an unknown strategy, a device map naming a missing GPU, an
            impossible ``max_memory``, or options the strategy does not support.
        RunError: no worker could be started; a callback raised ``SystemExit``
            (the run was stopped); :class:`~bigviz.runner.checkpoints.PreparationCancelled`
            when ``cancel`` was set while the checkpoint was being saved.

    Example:
        >>> # r = bigviz.run("meta", model="gpt:2GB", max_shard_size="500MB", ram_budget="8GB")
        >>> # r.outcome, r.ram_peak / r.model_bytes
        >>> # bigviz.run("mmap", model="./my-gpt2").params["as_saved"]  -> '3 × ≤ 99.8 MB'
    """
    settings = Settings(model, dtype=dtype, budget=parse_budget(ram_budget), work_dir=work_dir,
                        interval_ms=interval_ms, timeout=timeout, seed=seed, nproc=nproc,
                        factory=factory,
                        **rank_settings(nproc, per_rank, backend)).resolved()
    guard = _Guard(cancel)
    result = _run(strategy, settings, guard, max_shard_size=max_shard_size, format=format,
                  device_map=device_map, max_memory=max_memory, ram_budget=ram_budget,
                  on_event=guard.wrap(on_event, "on_event"), cache=cache)
    guard.check("run")
    return result


def _run(strategy: str | Strategy, settings: Settings, guard: _Guard, *,
         max_shard_size: int | str | None, format: str, device_map: Any,
         max_memory: Mapping[Any, Any] | None, ram_budget: int | str | None,
         on_event: EventCallback | None, cache: str = "as-is") -> RunResult:
    model, nproc, work_dir, cancel = settings.model, settings.nproc, settings.work_dir, guard.stop
    interval_ms, timeout, seed = settings.interval_ms, settings.timeout, settings.seed
    caches = check_caches(cache)
    if len(caches) != 1:
        raise ConfigError(f"run(cache={cache!r}) takes one state: cold, warm or as-is "
                          "(sweep(cache=[...]) runs several)")
    if nproc is not None and caches != ["as-is"]:
        raise ConfigError(f"cache {cache!r} applies to single-process runs; leave it out "
                          "with nproc")
    if nproc is not None:
        from bigviz.runner.launcher import run_distributed

        check_ranks_options(nproc, device_map, max_memory, model)
        return run_distributed(
            str(strategy), nproc=nproc, model=str(model), max_shard_size=max_shard_size,
            format=format, dtype=settings.dtype, factory=settings.factory, work_dir=work_dir,
            ram_budget=ram_budget,
            interval_ms=interval_ms, on_event=on_event, timeout=timeout, cancel=cancel,
            seed=seed, per_rank=settings.per_rank, backend=settings.backend)
    shard = parse_shard(max_shard_size if max_shard_size is not None or settings.folder
                        else "500MB", settings)
    if shard is None:  # the files as saved, in their own format
        format = settings.folder_format or format
    strat, dmap, mm = validate_single(strategy, model, format=format,
                                      dtype=settings.dtype or "float32",
                                      device_map=device_map, max_memory=max_memory)
    folder = prepare_for(settings, shard, format, cancel=cancel)
    item = PlannedRun(strat, shard, format, dmap, mm,
                      as_saved=settings.as_saved if shard is None else None, cache=caches[0])
    return run_planned(item, folder, settings, on_event=on_event, cancel=cancel)


def sweep(
    model: ModelLike,
    *,
    strategies: Sequence[str | Strategy],
    shard_sizes: Sequence[int | str] | None = None,
    device_maps: Sequence[Any] = ("cpu",),
    formats: Sequence[str] = ("safetensors",),
    dtype: str | None = None,
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
    factory: str | None = None,
    cache: str | Sequence[str] = ("as-is",),
    per_rank: str | None = None,
    backend: str | None = None,
) -> Sweep:
    """Run every (shard size, format, strategy, device map) combination, each in a fresh
    worker, saving each checkpoint once.

    Combinations a strategy cannot run (``naive`` with ``device_map="cuda:0"``, a ``.bin``
    checkpoint for a safetensors-only strategy) are skipped and listed in
    ``sweep.meta["skipped"]``; everything else is checked before the first process starts.

    Args:
        model: as for :func:`run`.
        strategies: strategy names, e.g. ``["naive", "sharded", "meta", "mmap"]``.
        shard_sizes, device_maps, formats: the values to cross. ``shard_sizes`` ``None``
            (the default): ``["500MB"]`` for a zoo model, the files as saved for a
            checkpoint folder; ``"as saved"`` may sit beside sizes (``["as saved",
            "50MB"]``), which reshard the folder into the work folder once. A folder's
            files as saved keep their own format; ``formats`` applies to resharded sizes.
        on_progress: called with ``{"stage": "prepare" | "run" | "done", "index",
            "total", "label", "result"}`` before and after each step.
        on_event: each worker's events, with ``"run"`` (the label) and
            ``"index_in_sweep"`` added.
        cancel: set it to stop: the running worker is killed (its result has outcome
            ``"cancelled"``) and no further runs start.
        nproc: run distributed strategies on this many ranks (``device_maps`` must then
            be ``["cpu"]``); see :func:`run`.
        cache: a page-cache state or a list of them (``["cold", "warm"]``): each
            combination runs once per state; see :func:`run`.
        per_rank, backend: with ``nproc``, as for :func:`run`.
        Other arguments: as for :func:`run`.

    Returns:
        A :class:`Sweep` of :class:`RunResult` with the config and the call recorded.

    Raises:
        ConfigError, StrategyError: as for :func:`run`, before anything runs.

    Example:
        >>> # s = bigviz.sweep("gpt:1GB", strategies=["naive", "meta"], shard_sizes=["200MB"])
        >>> # [(r.strategy, r.outcome) for r in s.results]
        >>> # bigviz.sweep("./my-gpt2", strategies=["meta", "mmap", "transformers"])
    """
    settings = Settings(model, dtype=dtype, budget=parse_budget(ram_budget), work_dir=work_dir,
                        interval_ms=interval_ms, timeout=timeout, seed=seed, nproc=nproc,
                        factory=factory,
                        **rank_settings(nproc, per_rank, backend)).resolved()
    plan = plan_runs(settings, strategies=strategies, shard_sizes=shard_sizes,
                     device_maps=device_maps, formats=formats, max_memory=max_memory,
                     ram_budget=ram_budget, caches=check_caches(cache))
    guard = _Guard(cancel)
    result = sweep_plan(plan, settings, on_progress=guard.wrap(on_progress, "on_progress"),
                        on_event=guard.wrap(on_event, "on_event"), cancel=guard.stop)
    guard.check("sweep")
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
