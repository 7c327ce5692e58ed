"""What a forked worker runs: prepare a checkpoint, or one strategy under the recorder.

Messages to the parent go through :class:`bigviz.runner.events.Channel`. A run sends
``baseline`` (RSS after imports, before the first phase), the recorder's own events
(``samples``, ``phase_start``, ``phase_end``, ``mark``) as they happen, and a final
``result`` with the whole Recording; a failure before that sends ``error``.

A process the strategy forks shares the worker's channel: if it leaves the strategy's
code (``sys.exit``, an exception, a return) it exits there, quietly, and never speaks on
the channel in the worker's name.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bigviz.runner import pagecache
from bigviz.runner.events import Channel
from bigviz.runner.memory import arm_budget, fixed_cost, process_cost, read_status

__all__ = ["cache_note", "child_main", "warm_up_cpu"]

#: how often a worker's recorder streams samples to the parent (ms)
WORKER_FLUSH_MS = 25.0


def child_main(job: dict[str, Any], fd: int) -> int:
    """Entry point in the forked child (the fork server calls it); returns the exit code.

    Example:
        >>> # child_main({"kind": "prepare", ...}, fd)
    """
    me = os.getpid()
    sock = socket.socket(fileno=fd)
    chan = Channel(sock)
    for p in job.get("sys_path", []):
        if p not in sys.path:
            sys.path.append(p)
    try:
        if job["kind"] == "prepare":
            chan.send({"type": "prepared", **prepare(job, _steps(chan))})
            return 0
        if job["kind"] == "prepare-folder":
            chan.send({"type": "prepared", **prepare_folder(job, _steps(chan))})
            return 0
        if job["kind"] == "run":
            return _run(job, chan)
        raise ValueError(f"unknown job kind {job['kind']!r}")
    except BaseException as exc:
        if os.getpid() != me:  # a child the strategy forked, unwinding: not the worker
            _exit_forked(exc)
        chan.send({
            "type": "error",
            "message": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        })
        return 1
    finally:
        sock.close()


def _exit_forked(exc: BaseException | None, tb: str | None = None) -> None:
    """End a process the strategy forked that left the strategy's code, with the status
    it asked for (``sys.exit(n)``; 1 after an exception, whose traceback it prints),
    without touching the worker's channel."""
    code = 0
    if isinstance(exc, SystemExit):
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    elif exc is not None or tb:
        sys.stderr.write(tb or traceback.format_exc())
        code = 1
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _steps(chan: Channel) -> Any:
    """Tell the parent which preparation step runs (a phase of the worker's timeline), so
    a worker killed meanwhile (the OOM killer) is reported with the step it was in."""
    index = iter(range(1 << 30))

    def step(name: str) -> None:
        chan.send({"type": "phase_start", "index": next(index), "name": name,
                   "t": time.monotonic()})

    return step


def prepare(job: dict[str, Any], step: Any = None) -> dict[str, Any]:
    """Build the model, record its checksums, save it sharded, write config.json."""
    from bigviz.checkpoint import save_sharded
    from bigviz.models import build_model, transformers_config
    from bigviz.strategies.weights import checksum

    step = step or (lambda name: None)
    target = Path(job["dir"])
    step(f"building the model ({job['model']}, {job['dtype']}) in memory")
    model = build_model(job["model"], dtype=job["dtype"], device="cpu", seed=job["seed"])
    step("taking the tensors' checksums")
    sums = {k: checksum(v) for k, v in model.state_dict().items()}
    step(f"writing the {job['format']} shards")
    ckpt = target / "checkpoint"
    info = save_sharded(model, ckpt, max_shard_size=job["shard_size"], format=job["format"],
                        overwrite=True)
    cfg = transformers_config(job["model"], job["dtype"])
    if cfg is not None:
        (ckpt / "config.json").write_text(json.dumps(cfg, indent=2))
    (target / "checksums.json").write_text(json.dumps(sums))
    return {"n_shards": len(info.files), "total_size": int(info.total_size)}


def prepare_folder(job: dict[str, Any], step: Any = None) -> dict[str, Any]:
    """Checksums of a user's checkpoint folder, read from its files (mapped, read-only),
    and either a link to the folder (as saved) or a reshard of it, all in ``job["dir"]``.
    Nothing is written into the source folder."""
    from bigviz.checkpoint import inspect_checkpoint, reshard
    from bigviz.strategies.weights import checksum, load_shard

    step = step or (lambda name: None)
    src, target = Path(job["src"]), Path(job["dir"])
    info = inspect_checkpoint(src)
    target.mkdir(parents=True)
    sums: dict[str, list[int]] = {}
    for path in info.shard_paths():
        step(f"taking the checksums of {Path(path).name}")
        shard = load_shard(Path(path), mmap=True)
        for k, v in shard.items():
            sums[k] = checksum(v)
        del shard  # unmaps the file before the next one
    if job.get("shard_size") is None:
        (target / "checkpoint").symlink_to(src, target_is_directory=True)
        n = len(info.files)
    else:
        step("resharding")
        out = reshard(src, target / "checkpoint", max_shard_size=int(job["shard_size"]),
                      format=job.get("format"))
        n = len(out.files)
    (target / "checksums.json").write_text(json.dumps(sums))
    return {"n_shards": n, "total_size": int(info.total_size)}


def _max_memory(pairs: list[list[Any]] | None) -> dict[int | str, int] | None:
    if pairs is None:
        return None
    return {(int(k) if str(k).isdigit() else str(k)): int(v) for k, v in pairs}


def _run(job: dict[str, Any], chan: Channel) -> int:
    at_start = process_cost()  # the fixed cost counts from here (issue 13 item 6)
    import bigviz.recorder as record
    import bigviz.strategies as strategies
    from bigviz.checkpoint import inspect_checkpoint
    from bigviz.strategies.base import RunContext
    from bigviz.strategies.weights import compare_checksums, first_use

    if job.get("strategy_class"):  # a user strategy: import its class by name
        mod_name, _, qual = str(job["strategy_class"]).partition(":")
        obj: Any = __import__(mod_name, fromlist=["_"])
        for part in qual.split("."):
            obj = getattr(obj, part)
        strategy = obj()
    else:
        strategy = strategies.get(job["strategy"])
    _warm_up(job.get("device_map"))
    _warm_up_model(job)
    ckpt = Path(job["checkpoint"])
    strategy.warm_up(ckpt)  # its imports belong to the baseline, not to a phase
    info = inspect_checkpoint(ckpt)
    expected = json.loads(Path(job["checksums"]).read_text())
    scratch = Path(job["scratch"])
    scratch.mkdir(parents=True, exist_ok=True)
    # the page cache of the files this run loads, as asked (cold / warm / as-is), measured
    cache = pagecache.prepare(info.shard_paths(), job.get("cache") or "as-is")
    report = arm_budget(job.get("ram_budget"), scratch)  # the sidecar checks every sample
    chan.send({"type": "armed", "budget_report": report})  # a kill may precede the baseline
    worker = os.getpid()
    reads = _PhaseReads(chan.send)
    # samples stream to the parent every 25 ms (record()'s default is 100): a worker the
    # kernel's OOM killer ends loses what it had not sent, and the last 100 ms before an
    # OOM kill are the ones a user looks at (costs ~1.5 % of a load on a busy machine)
    rec = record.record(interval_ms=job["interval_ms"], on_event=reads.on_event,
                        name=job["label"], flush_ms=WORKER_FLUSH_MS)
    reads.recording = rec.recording
    rec.recording.meta["cache"] = cache_note(cache)
    error: str | None = None
    tb: str | None = None
    sums: dict[str, list[int]] | None = None
    model: Any = None
    ctx: RunContext | None = None
    warned: dict[str, Any] = {}  # the strategy's warnings, for the recording's meta
    with rec:
        arm_budget(None, scratch)  # armed for this recorder's sidecar only
        base = read_status()
        chan.send({"type": "baseline", "pid": os.getpid(), "rss": base.get("VmRSS", 0),
                   "anon": base.get("RssAnon", 0), "file": base.get("RssFile", 0),
                   "t": time.monotonic(), "t0": rec.recording.meta.get("t0_monotonic"),
                   "budget_report": report, "fixed_cost": fixed_cost(at_start, process_cost())})
        ctx = RunContext(
            model=job["model"], checkpoint=ckpt, info=info, recorder=rec, scratch=scratch,
            dtype=job["dtype"], device_map=job["device_map"],
            max_memory=_max_memory(job.get("max_memory")), format=job["format"],
            shard_size=job.get("shard_size"), seed=job["seed"], factory=job.get("factory"),
        )
        ctx.notes["cache"] = cache_note(cache)
        try:
            with _captured_warnings(scratch, warned):
                model = strategy.run(ctx)
                if strategy.first_use:
                    with rec.phase("first use", what="read every weight once (checksums)"):
                        sums = first_use(model)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            tb = traceback.format_exc()
    if os.getpid() != worker:  # a child the strategy forked returned through here
        _exit_forked(None, tb)
    after = read_status()
    rec.recording.meta.update(warned)
    verify: str | None = None
    if error is None:
        try:
            if strategy.first_use:
                assert sums is not None
                verify = compare_checksums(expected, sums)
            else:
                verify = _verify_saved(ctx.notes.get("saved_to"), model)
        except Exception as exc:
            verify = f"could not check the weights: {type(exc).__name__}: {exc}"
    chan.send({
        "type": "result",
        "recording": rec.recording.to_dict(),
        "error": error,
        "traceback": tb,
        "verify": verify,
        "after": {"rss": after.get("VmRSS", 0), "anon": after.get("RssAnon", 0),
                  "file": after.get("RssFile", 0)},
        "notes": ctx.notes if ctx is not None else {},
    })
    del model
    return 0


def cache_note(state: pagecache.CacheState) -> dict[str, Any]:
    """The page-cache state of a run's files as plain data (``params["cache"]``).

    Example:
        >>> cache_note(pagecache.CacheState("cold", 0, 10))["text"]
        'cold (0% cached)'
    """
    return {"asked": state.asked, "cached": state.cached, "total": state.total,
            "fraction": state.cached_fraction, "text": state.describe()}


class _PhaseReads:
    """The recorder's ``on_event``: passes every event on, and gives each top-level
    phase the bytes this process read from storage meanwhile (``/proc/self/io``
    ``read_bytes``: page-cache misses, mmap faults included) and their rate, in the
    phase's ``detail`` (``read_bytes``, ``read_gbps``), in the event sent and the
    recording kept."""

    def __init__(self, send: Any) -> None:
        self.send = send
        self.recording: Any = None
        self._at: dict[int, tuple[int, float]] = {}

    def on_event(self, ev: dict[str, Any]) -> None:
        kind = ev.get("type")
        if kind == "phase_start" and ev.get("parent") is None:
            got = pagecache.read_bytes()
            if got is not None:
                self._at[int(ev["index"])] = (got, float(ev.get("t", 0.0)))
        elif kind == "phase_end" and int(ev.get("index", -1)) in self._at:
            start, _t = self._at.pop(int(ev["index"]))
            now = pagecache.read_bytes()
            ph = ev.get("phase") or {}
            if now is not None and isinstance(ph, dict):
                n = max(0, now - start)
                secs = (ph.get("end") or 0.0) - (ph.get("start") or 0.0)
                extra = {"read_bytes": n,
                         "read_gbps": round(n / secs / 1e9, 4) if secs > 0 else None}
                ph["detail"] = {**(ph.get("detail") or {}), **extra}
                if self.recording is not None:
                    phases = self.recording.phases
                    i = int(ev["index"])
                    if 0 <= i < len(phases):
                        phases[i].detail.update(extra)
        self.send(ev)


#: warnings kept per run (the rest are counted), and the characters kept of each
MAX_WARNINGS, MAX_WARNING_CHARS = 20, 300


@contextlib.contextmanager
def _captured_warnings(scratch: Path, meta: dict[str, Any]) -> Iterator[None]:
    """Capture what the strategy warns (Python ``warnings``, library logging, anything
    written to stderr, fd 2 included) into ``meta["warnings"]``, one line each, in order,
    instead of letting it reach the parent's stderr (in Jupyter: pink boxes in whatever
    cell runs then). Kept when the strategy fails too."""
    import warnings

    sys.stderr.flush()
    saved = os.dup(2)
    path = scratch / "stderr.txt"
    with open(path, "w+b") as sink, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
            _keep_warnings(meta, [f"{w.category.__name__}: {w.message}" for w in caught]
                           + text.splitlines())
            with contextlib.suppress(OSError):
                path.unlink()


def _keep_warnings(meta: dict[str, Any], lines: list[str]) -> None:
    """``meta["warnings"]``: the non-empty ``lines``, each once, in order, capped."""
    seen: list[str] = []
    for line in (ln.strip() for ln in lines):
        if len(line) > MAX_WARNING_CHARS:
            line = line[:MAX_WARNING_CHARS - 1] + "…"
        if line and line not in seen:
            seen.append(line)
    if len(seen) > MAX_WARNINGS:
        seen[MAX_WARNINGS:] = [f"… and {len(seen) - MAX_WARNINGS} more lines"]
    if seen:
        meta["warnings"] = seen


def _warm_up(device_map: Any = None) -> None:
    """Start torch's intra-op thread pool, and the CUDA context when the run uses a GPU,
    before the baseline: they are fixed costs of any torch / CUDA process (hundreds of MB
    of host RAM for a CUDA context), not of a strategy. The fork server cannot start
    either: forking after them is unsafe."""
    import torch

    warm_up_cpu()
    values = list(device_map.values()) if isinstance(device_map, dict) else [device_map]
    wants_gpu = any(
        (isinstance(v, int) and not isinstance(v, bool)) or str(v).startswith("cuda")
        or v in ("auto", "balanced", "sequential")
        for v in values
    )
    if wants_gpu and torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            torch.empty(1, device=f"cuda:{i}")
        torch.cuda.synchronize()


def _warm_up_model(job: dict[str, Any]) -> None:
    """Build a checkpoint folder's skeleton once on the meta device before the baseline:
    the first build imports Transformers' architecture module (or the user's factory)
    and fills its caches, tens of MiB that are the library's cost, not the strategy's
    (they were ~90 MiB of a 4 MiB GPT-2's "build" phase)."""
    from bigviz.models import build_model
    from bigviz.models.folders import is_folder_spec

    if isinstance(job.get("model"), str) and is_folder_spec(job["model"]):
        skeleton = build_model(job["model"], dtype=job["dtype"], factory=job.get("factory"),
                               device="meta")
        del skeleton


def warm_up_cpu() -> None:
    """The CPU part of :func:`_warm_up`, shared with the distributed ranks: torch's
    intra-op thread pool, and the first module build.

    Example:
        >>> # warm_up_cpu()  # before a baseline is taken
    """
    import torch

    from bigviz.models import build_model
    from bigviz.strategies.weights import checksum

    x = torch.empty(1 << 20)
    x.fill_(1.0)
    float(x.sum())
    del x
    # The first module build, seeded randn and to_empty in a process cost ~30 MiB of
    # one-time allocator and RNG state: a fixed cost of the process, not of the strategy
    # (it tripled the measured build of a 20 MB model).
    tiny = build_model("mlp:1MB", device="cpu")
    for p in tiny.parameters():
        checksum(p)
    del tiny


def _verify_saved(saved_to: Any, model: Any) -> str | None:
    """Check a checkpoint the ``save`` strategy wrote equals the model it saved."""
    from bigviz.checkpoint import inspect_checkpoint
    from bigviz.strategies.weights import checksum, compare_checksums, load_shard

    if not saved_to:
        return "the save strategy did not report where it saved"
    info = inspect_checkpoint(saved_to)
    saved: dict[str, list[int]] = {}
    for path in info.shard_paths():
        for k, v in load_shard(Path(path), mmap=True).items():
            saved[k] = checksum(v)
    have = {k: checksum(v) for k, v in model.state_dict().items()}
    return compare_checksums(saved, have)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(f"{os.path.basename(__file__)} runs inside the bigviz fork server only")
