"""``naive``: random init, read the whole state dict, ``load_state_dict`` (≈ 2 × M)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bigviz.data.result import Prediction
from bigviz.models import build_model
from bigviz.strategies.base import RunContext, Strategy
from bigviz.strategies.devices import DeviceMap
from bigviz.strategies.weights import largest_shard, load_shard, model_size, require_loaded

if TYPE_CHECKING:
    from collections.abc import Mapping

    import torch
    from torch import nn

__all__ = ["Naive"]


class Naive(Strategy):
    """The textbook pipeline: the model's own weights plus a full state dict in RAM."""

    name = "naive"
    description = "random init, read every shard into one state dict, load_state_dict"
    phases = ("build", "read", "read shard i/n", "assign", "first use")

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
            ram_peak=2 * m,
            formula="2 × M",
            ram_anon=2 * m,
            ram_file=0,
            notes=f"M = {m} model bytes; S = {largest_shard(info)} is inside the 2nd copy",
            low=2 * m,
            high=2 * m,
            width="one value: the built model and the state dict read beside it are each "
                  "one whole copy (measured 2.00× to 2.01×)",
            above="more than two copies: a shard was held twice while it was read",
            below="less than two copies: the model or the state dict was never whole",
        )

    def run(self, ctx: RunContext) -> nn.Module:
        with ctx.phase("build"):
            model = build_model(ctx.model, dtype=ctx.dtype, factory=ctx.factory,
                                device="cpu", seed=ctx.seed + 1)
        shards = ctx.shards()
        state: dict[str, torch.Tensor] = {}
        with ctx.phase("read"):
            for i, path in enumerate(shards, 1):
                with ctx.phase(f"read shard {i}/{len(shards)}", file=path.name):
                    state.update(load_shard(path, mmap=False))
        with ctx.phase("assign"):
            model.load_state_dict(state, strict=False)
            del state
        require_loaded(model, self.name)
        return model
