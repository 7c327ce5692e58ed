"""``mmap``: meta build + zero-copy mapped shards (≈ M resident, file-backed)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bigviz.data.result import Prediction
from bigviz.strategies.base import RunContext, Strategy
from bigviz.strategies.devices import DeviceMap
from bigviz.strategies.meta import load_assigned
from bigviz.strategies.weights import model_size

if TYPE_CHECKING:
    from collections.abc import Mapping

    from torch import nn

__all__ = ["Mmap"]


class Mmap(Strategy):
    """safetensors mmap / ``torch.load(mmap=True)``: pages arrive on first touch."""

    name = "mmap"
    description = "build on meta, map each shard zero-copy (safetensors / torch.load mmap=True)"
    phases = ("build", "load shard i/n", "assign", "first use")

    def predict(
        self,
        info: Any,
        device_map: DeviceMap = "cpu",
        *,
        max_memory: Mapping[int | str, int] | None = None,
        placement: Mapping[str, int] | None = None,
        nproc: int = 1,
        per_rank: str = "naive",
    ) -> Prediction:
        m = model_size(info)
        return Prediction(
            ram_peak=m,
            formula="M, file-backed (≈ 0 until first use)",
            ram_anon=0,
            ram_file=m,
            notes="mapped pages are read on first touch and are reclaimable page cache",
            low=m,
            high=m,
            width="one value: first use touches every mapped page once; nothing is copied",
            above="anonymous copies beside the mapping: something materialised the weights",
            below="mapped pages never touched: first use did not read every weight",
        )

    def run(self, ctx: RunContext) -> nn.Module:
        return load_assigned(ctx, mmap=True)
