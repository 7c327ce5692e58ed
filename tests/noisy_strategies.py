"""A strategy that warns three ways while it loads, imported by name inside the runner's
workers (tests/integration/test_run_warnings.py). No tests here."""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

from torch import nn

from bigviz.data.result import Prediction
from bigviz.strategies import RunContext, Strategy
from bigviz.strategies.meta import load_assigned


class Noisy(Strategy):
    """Loads like ``meta``, warning through ``warnings``, a library logger and fd 2."""

    name = "noisy"

    def predict(self, info: Any, device_map: Any = "cpu", **kw: Any) -> Prediction:
        return Prediction(ram_peak=int(info.total_size), formula="M")

    def run(self, ctx: RunContext) -> nn.Module:
        warnings.warn("this loader is deprecated", FutureWarning, stacklevel=1)
        logging.getLogger("somelib.loading").warning("a library logger warned")
        os.write(2, b"a line written straight to fd 2\n")
        return load_assigned(ctx, mmap=False)
