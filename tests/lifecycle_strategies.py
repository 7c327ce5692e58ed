"""Strategies that leave processes behind, or linger, on purpose; imported by name inside
the runner's workers (tests/integration/test_lifecycle.py). No tests here.

Each one writes what the test needs to know (its pids) into ``lifecycle-NAME.json`` in
the work folder, found as the first folder above the run's scratch folder holding a
``LIFECYCLE`` file (the test puts it there).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from torch import nn

from bigviz.data.result import Prediction
from bigviz.strategies import RunContext, Strategy
from bigviz.strategies.meta import load_assigned


def note(ctx: RunContext, name: str, **facts: Any) -> None:
    """Write ``facts`` (with this worker's pid) to ``WORK/lifecycle-NAME.json``."""
    work = next(p for p in Path(ctx.scratch).resolve().parents if (p / "LIFECYCLE").exists())
    tmp = work / f".lifecycle-{name}.json.tmp"
    tmp.write_text(json.dumps({"worker": os.getpid(), **facts}))
    os.replace(tmp, work / f"lifecycle-{name}.json")


class _Base(Strategy):
    def predict(self, info: Any, device_map: Any = "cpu", **kw: Any) -> Prediction:
        return Prediction(ram_peak=int(info.total_size), formula="M")


class SpawnsThenHangs(_Base):
    """Starts ``sleep 1000`` and hangs (for the timeout)."""

    name = "lifecycle-spawns-then-hangs"

    def run(self, ctx: RunContext) -> nn.Module:
        with ctx.phase("build"):
            sleeper = subprocess.Popen(["sleep", "1000"])
            note(ctx, "spawned", sleep=sleeper.pid)
        with ctx.phase("hang"):
            time.sleep(60)
        raise AssertionError("unreachable")


class LeavesAChild(_Base):
    """Loads correctly, leaving a forked child (that sleeps) and a ``sleep 1000`` behind."""

    name = "lifecycle-leaves-a-child"

    def run(self, ctx: RunContext) -> nn.Module:
        sleeper = subprocess.Popen(["sleep", "1000"])
        pid = os.fork()
        if pid == 0:
            time.sleep(1000)
            os._exit(0)
        note(ctx, "left", sleep=sleeper.pid, forked=pid)
        return load_assigned(ctx, mmap=False)


class ForkedChildExits(_Base):
    """Forks a child inside its phase that leaves through ``sys.exit(3)``: the worker's
    recording and its channel must not notice."""

    name = "lifecycle-forked-child-exits"

    def run(self, ctx: RunContext) -> nn.Module:
        with ctx.phase("fork"):
            pid = os.fork()
            if pid == 0:
                sys.exit(3)  # unwinds through the phase, the recorder and the worker
            _, status = os.waitpid(pid, 0)
            note(ctx, "forked", code=os.waitstatus_to_exitcode(status))
        return load_assigned(ctx, mmap=False)


class Lingers(_Base):
    """Loads correctly, slowly: tells the test it started, then waits up to 20 s for the
    test to kill its fork server (the test kills the server well before)."""

    name = "lifecycle-lingers"

    def run(self, ctx: RunContext) -> nn.Module:
        with ctx.phase("linger"):
            note(ctx, "lingering", server=os.getppid())
            time.sleep(20)
        return load_assigned(ctx, mmap=False)
