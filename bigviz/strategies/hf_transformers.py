"""``transformers``: Transformers' own ``from_pretrained`` with a device map and dtype.

It needs a ``config.json`` beside the weights: a Transformers checkpoint folder has one,
and bigviz writes one for ``gpt:`` specs (the zoo GPT has GPT-2's names and shapes); the
class loaded is the one ``config.json``'s ``architectures`` names.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bigviz.data.result import Prediction
from bigviz.models import ModelLike, build_model, parse_spec
from bigviz.models.folders import transformers_class
from bigviz.strategies.base import RunContext, Strategy
from bigviz.strategies.devices import DeviceMap, device_name, disjoint_device_map, note_library_map
from bigviz.strategies.dispatch import aliased_bytes, placement_for, predict_placed
from bigviz.strategies.weights import model_size

if TYPE_CHECKING:
    from torch import nn

__all__ = ["TransformersLoad"]


class TransformersLoad(Strategy):
    """``<architectures[0]>.from_pretrained(folder, dtype=…, device_map=…)``."""

    name = "transformers"
    description = "Transformers from_pretrained(device_map, dtype) of the class config.json names"
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
        if reason is not None:
            return reason
        spec = parse_spec(model, None)
        if spec.kind == "folder":  # a Transformers folder: its config.json names the class
            if not (Path(spec.path or "") / "config.json").is_file():
                return (f"strategy 'transformers' needs a config.json beside the weights; "
                        f"{model!r} has none")
            return None
        if spec.kind != "gpt":
            return (f"strategy 'transformers' runs 'gpt:<size>' models and Transformers "
                    f"checkpoint folders, not {model!r}; use e.g. model='gpt:1GB'")
        return None

    def warm_up(self, checkpoint: Path) -> None:
        # Resolving the model class imports transformers.models.gpt2 and friends
        # (~70 MB of Python objects, ~1 s): a library cost, kept out of the "load" phase.
        import torch
        from transformers import AutoConfig
        from transformers.utils import logging

        # a worker's tqdm bar would land in the parent's stderr
        logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        config = AutoConfig.from_pretrained(str(checkpoint))
        with torch.device("meta"):
            transformers_class(checkpoint)(config)

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
        # Transformers 5 treats the names a checkpoint stores once for several (tied
        # lm_head / wte) as missing: _move_missing_keys_from_meta_to_device allocates
        # them (torch.empty_like), initialises them, then ties them away. Measured: the
        # anonymous peak is A + ~2 MiB for A = 19.9, 36.3, 54.0 MiB; 0 once tied.
        a = aliased_bytes(info)
        if a:
            pred.high = pred.bounds[1] + a
            pred.high_formula = pred.high_formula + " + A"
            pred.notes += f"; A = {a} bytes of tied weights stored once"
            pred.width += ("; Transformers allocates and initialises the tied weights the "
                           "checkpoint stores once (A, anonymous) before it ties them")
        pred.above = ("anonymous copies beyond the tied weights: Transformers materialised "
                      "mapped weights (a dtype or device conversion?)")
        return pred

    def run(self, ctx: RunContext) -> nn.Module:
        import torch

        dmap: Any = ctx.device_map
        if isinstance(dmap, Mapping):
            # nested entries ({"": "cpu", "transformer.h.0": "disk"}) break accelerate's
            # hooks; the zoo GPT has GPT2LMHeadModel's module names, so flatten on it
            skeleton = build_model(ctx.model, dtype=ctx.dtype, factory=ctx.factory,
                                   device="meta")
            dmap = disjoint_device_map(skeleton, {k: device_name(v) for k, v in dmap.items()})
        elif dmap == "disk":  # from_pretrained takes "disk" only inside a dict
            dmap = {"": "disk"}
        kwargs: dict[str, Any] = {"dtype": getattr(torch, ctx.dtype), "device_map": dmap}
        if ctx.max_memory:
            kwargs["max_memory"] = dict(ctx.max_memory)
        if dmap not in ("cpu", None):
            kwargs["offload_folder"] = str(ctx.scratch / "offload")
        with ctx.phase("load", device_map=str(dmap)):
            # the class config.json names (GPT2LMHeadModel, BertModel…), as a user loads it
            cls = transformers_class(ctx.checkpoint)
            model = cls.from_pretrained(str(ctx.checkpoint), **kwargs)
        note_library_map(ctx, model)
        out: nn.Module = model
        return out
