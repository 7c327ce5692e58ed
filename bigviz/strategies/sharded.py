"""``sharded``: random init, then load shard by shard, freeing each (≈ M + S)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bigviz.data.result import Prediction
from bigviz.models import build_model
from bigviz.strategies.base import RunContext, Strategy
from bigviz.strategies.devices import DeviceMap
from bigviz.strategies.weights import largest_shard, load_shard, model_size, require_loaded

if TYPE_CHECKING:
    from collections.abc import Mapping

    from torch import nn

__all__ = ["Sharded"]


class Sharded(Strategy):
    """Random init, then one shard at a time copied into the model and freed."""

    name = "sharded"
    description = "random init, load_state_dict one shard at a time, free each"
    phases = ("build", "load shard i/n", "first use")

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
        m, s = model_size(info), largest_shard(info)
        return Prediction(ram_peak=m + s, formula="M + S", ram_anon=m + s, ram_file=0,
                          notes=f"M = {m}, S = {s} (largest shard)",
                          low=m + s, high=m + 2 * s, high_formula="M + 2 S",
                          width="glibc may keep one freed shard cached (its mmap threshold "
                                "rises after the first large free, so the next shard comes "
                                "from the heap and is not returned): M + S measured with "
                                "50 MB shards of a 200 MB model, ≈ M + 2 S of a 400 MB one",
                          above="more than one freed shard kept in RAM",
                          below="less than the model plus one shard: the model was not "
                                "built whole in RAM, or a shard was never read whole")

    def run(self, ctx: RunContext) -> nn.Module:
        with ctx.phase("build"):
            model = build_model(ctx.model, dtype=ctx.dtype, factory=ctx.factory,
                                device="cpu", seed=ctx.seed + 1)
        shards = ctx.shards()
        for i, path in enumerate(shards, 1):
            with ctx.phase(f"load shard {i}/{len(shards)}", file=path.name):
                sd = load_shard(path, mmap=False)
                model.load_state_dict(sd, strict=False)
                del sd
        require_loaded(model, self.name)
        return model
