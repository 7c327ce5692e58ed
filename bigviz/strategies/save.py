"""``save``: build a model in RAM and write it as a sharded checkpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from bigviz.data.result import Prediction
from bigviz.models import build_model
from bigviz.strategies.base import RunContext, Strategy
from bigviz.strategies.devices import DeviceMap
from bigviz.strategies.weights import largest_shard, model_size

if TYPE_CHECKING:
    from collections.abc import Mapping

    from torch import nn

__all__ = ["Save"]


class Save(Strategy):
    """Saving costs memory too: safetensors serialises each shard to bytes first."""

    name = "save"
    description = "build the model in RAM, save_sharded it (safetensors or .bin)"
    phases = ("build", "save")
    first_use = False

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
        if getattr(info, "format", "safetensors") == "safetensors":
            return Prediction(ram_peak=m + s, formula="M + S", ram_anon=m + s, ram_file=0,
                              notes="safetensors' save_file builds each shard as bytes first")
        return Prediction(ram_peak=m, formula="M", ram_anon=m, ram_file=0,
                          notes="torch.save streams tensors into the zip file")

    def run(self, ctx: RunContext) -> nn.Module:
        from bigviz.checkpoint import save_sharded

        with ctx.phase("build"):
            model = build_model(ctx.model, dtype=ctx.dtype, device="cpu", seed=ctx.seed)
        out = ctx.scratch / "saved"
        with ctx.phase("save", format=ctx.format):
            fmt: Literal["safetensors", "bin"] = "bin" if ctx.format == "bin" else "safetensors"
            save_sharded(model, out, max_shard_size=ctx.shard_size or "5GB", format=fmt,
                         overwrite=True)
        ctx.notes["saved_to"] = str(out)
        return model
