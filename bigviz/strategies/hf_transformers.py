"""``transformers``: Transformers' own ``from_pretrained`` with a device map and dtype.

It needs a ``config.json`` beside the weights; bigviz writes one for ``gpt:`` specs (the
zoo GPT has GPT-2's names and shapes), so only ``gpt:<size>`` models run this adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bigviz.data.result import Prediction
from bigviz.models import ModelLike, build_model, parse_spec
from bigviz.strategies.base import RunContext, Strategy
from bigviz.strategies.devices import DeviceMap, device_name, disjoint_device_map, note_library_map
from bigviz.strategies.dispatch import placement_for, predict_placed
from bigviz.strategies.weights import model_size

if TYPE_CHECKING:
    from torch import nn

__all__ = ["TransformersLoad"]


class TransformersLoad(Strategy):
    """``AutoModelForCausalLM.from_pretrained(folder, dtype=…, device_map=…)``."""

    name = "transformers"
    description = "Transformers from_pretrained(device_map, dtype) of a GPT-2-shaped model"
    phases = ("load", "first use")
    requires = ("transformers",)
    preload = (
        "transformers",
        "transformers.models.auto.modeling_auto",
        "transformers.models.gpt2.modeling_gpt2",
    )
    device_maps = True

    def incompatible(self, *, model: ModelLike, format: str, device_map: DeviceMap,
                     dtype: str = "float32") -> str | None:
        reason = super().incompatible(model=model, format=format, device_map=device_map,
                                      dtype=dtype)
        if reason is None and parse_spec(model, dtype).kind != "gpt":
            return (f"strategy 'transformers' runs 'gpt:<size>' models only (they have a "
                    f"GPT-2 config), not {model!r}; use e.g. model='gpt:1GB'")
        return reason

    def warm_up(self, checkpoint: Path) -> None:
        # Resolving the model class imports transformers.models.gpt2 and friends
        # (~70 MB of Python objects, ~1 s): a library cost, kept out of the "load" phase.
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM
        from transformers.utils import logging

        # a worker's tqdm bar would land in the parent's stderr
        logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        config = AutoConfig.from_pretrained(str(checkpoint))
        with torch.device("meta"):
            AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]

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
        place = placement_for(info, device_map, max_memory, placement=placement)
        pred = predict_placed(info, place, mapped=True, name=self.name)
        if getattr(info, "format", "safetensors") != "safetensors":
            m = model_size(info)
            pred.notes += f"; .bin files: torch.load(mmap=True) in Transformers 5 (M = {m})"
        return pred

    def run(self, ctx: RunContext) -> nn.Module:
        import torch
        from transformers import AutoModelForCausalLM

        dmap: Any = ctx.device_map
        if isinstance(dmap, Mapping):
            # nested entries ({"": "cpu", "transformer.h.0": "disk"}) break accelerate's
            # hooks; the zoo GPT has GPT2LMHeadModel's module names, so flatten on it
            skeleton = build_model(ctx.model, dtype=ctx.dtype, device="meta")
            dmap = disjoint_device_map(skeleton, {k: device_name(v) for k, v in dmap.items()})
        elif dmap == "disk":  # from_pretrained takes "disk" only inside a dict
            dmap = {"": "disk"}
        kwargs: dict[str, Any] = {"dtype": getattr(torch, ctx.dtype), "device_map": dmap}
        if ctx.max_memory:
            kwargs["max_memory"] = dict(ctx.max_memory)
        if dmap not in ("cpu", None):
            kwargs["offload_folder"] = str(ctx.scratch / "offload")
        with ctx.phase("load", device_map=str(dmap)):
            model = AutoModelForCausalLM.from_pretrained(str(ctx.checkpoint), **kwargs)
        note_library_map(ctx, model)
        out: nn.Module = model
        return out
