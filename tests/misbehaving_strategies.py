"""Strategies that misbehave on purpose, imported by name inside the runner's workers
(tests/integration/test_run.py). No tests here."""

from __future__ import annotations

import ctypes
import time
from typing import Any

import torch
from torch import nn

from bigviz.data.result import Prediction
from bigviz.strategies import RunContext, Strategy
from bigviz.strategies.meta import load_assigned


class _Base(Strategy):
    def predict(self, info: Any, device_map: Any = "cpu", **kw: Any) -> Prediction:
        return Prediction(ram_peak=int(info.total_size), formula="M")


class Boom(_Base):
    """Raises inside its second phase."""

    name = "boom"

    def run(self, ctx: RunContext) -> nn.Module:
        with ctx.phase("build"):
            pass
        with ctx.phase("load shard 1/1"):
            raise RuntimeError("disk on fire")


class Corrupt(_Base):
    """Loads correctly, then changes one value: the runner must call it an error."""

    name = "corrupt"

    def run(self, ctx: RunContext) -> nn.Module:
        model = load_assigned(ctx, mmap=False)
        with torch.no_grad():
            model.get_parameter("transformer.h.0.mlp.c_fc.bias").view(-1)[0] += 1.0
        return model


class Segfault(_Base):
    """Dereferences NULL in its second phase."""

    name = "segfault"

    def run(self, ctx: RunContext) -> nn.Module:
        with ctx.phase("build"):
            pass
        with ctx.phase("load shard 1/1"):
            ctypes.string_at(0)
        raise AssertionError("unreachable")


class Sleepy(_Base):
    """Hangs in its second phase (for the timeout)."""

    name = "sleepy"

    def run(self, ctx: RunContext) -> nn.Module:
        with ctx.phase("build"):
            pass
        with ctx.phase("load shard 1/1"):
            time.sleep(60)
        raise AssertionError("unreachable")
