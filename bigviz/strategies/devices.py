"""Device maps: validate them, parse ``max_memory``, resolve automatic maps with
accelerate, and count the bytes each device gets.

Example:
    >>> validate_device_map("cpu")
    'cpu'
    >>> normalize_max_memory({"cpu": "1GB"})
    {'cpu': 1000000000}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bigviz._errors import ConfigError, StrategyError
from bigviz.units import format_size, parse_size

if TYPE_CHECKING:
    from torch import nn

    from bigviz.strategies.base import RunContext

__all__ = [
    "DEVICE_MAP_FORMS",
    "DeviceMap",
    "cuda_device_count",
    "device_name",
    "device_of",
    "disjoint_device_map",
    "module_sizes",
    "normalize_max_memory",
    "note_library_map",
    "placement_bytes",
    "resolve_device_map",
    "validate_device_map",
]

DeviceMap = str | Mapping[str, str | int]

DEVICE_MAP_FORMS = (
    "'cpu', 'cuda', 'cuda:N', 'auto', 'balanced', 'sequential', 'disk', "
    "or a dict {module name: 'cpu' | 'cuda:N' | N | 'disk'}"
)
_CUDA_RE = re.compile(r"^cuda:(\d+)$")


def cuda_device_count() -> int:
    """Number of CUDA devices torch sees (0 without a GPU or a CUDA build)."""
    import torch

    try:
        return int(torch.cuda.device_count())
    except Exception:  # a broken driver means no usable GPU, not a crash
        return 0


def _check_device(device: Any, what: str, n_cuda: int) -> str:
    if isinstance(device, int) and not isinstance(device, bool):
        device = f"cuda:{device}"
    if not isinstance(device, str):
        raise StrategyError(f"{what} {device!r} is not a device; use {DEVICE_MAP_FORMS}")
    dev: str = device
    if dev == "cuda":
        dev = "cuda:0"
    m = _CUDA_RE.match(dev)
    if m:
        idx = int(m.group(1))
        if n_cuda == 0:
            raise StrategyError(
                f"{dev} requested but no CUDA device is available; "
                "use device_map='cpu' or 'disk', or run on a machine with a GPU"
            )
        if idx >= n_cuda:
            raise StrategyError(
                f"{dev} requested but only {n_cuda} CUDA device"
                f"{'s are' if n_cuda > 1 else ' is'} available "
                f"(cuda:0{'' if n_cuda == 1 else f'..cuda:{n_cuda - 1}'})"
            )
        return dev
    if dev in ("cpu", "disk"):
        return dev
    raise StrategyError(f"{what} {dev!r} is not a device; use {DEVICE_MAP_FORMS}")


def validate_device_map(device_map: DeviceMap, *, n_cuda: int | None = None) -> DeviceMap:
    """Check a device map names devices that exist; return it normalised.

    Raises:
        StrategyError: an unknown form, or a GPU that is not there
            (``"cuda:3 requested but no CUDA device is available"``).

    Example:
        >>> validate_device_map("cpu")
        'cpu'
    """
    n = cuda_device_count() if n_cuda is None else n_cuda
    if isinstance(device_map, str):
        if device_map in ("cpu", "auto", "balanced", "sequential", "disk"):
            return device_map
        if device_map == "cuda" or _CUDA_RE.match(device_map):
            return _check_device(device_map, "device_map", n)
        raise StrategyError(f"device_map {device_map!r} is not valid; use {DEVICE_MAP_FORMS}")
    if isinstance(device_map, Mapping):
        if not device_map:
            raise StrategyError(f"device_map {{}} is empty; use {DEVICE_MAP_FORMS}")
        return {
            str(k): _check_device(v, f"device_map[{k!r}]", n) for k, v in device_map.items()
        }
    raise StrategyError(f"device_map {device_map!r} is not valid; use {DEVICE_MAP_FORMS}")


def normalize_max_memory(
    max_memory: Mapping[Any, Any] | None,
    *,
    n_cuda: int | None = None,
    model_bytes: int | None = None,
    device_map: DeviceMap = "cpu",
) -> dict[int | str, int] | None:
    """Parse ``max_memory`` into accelerate's form ``{0: bytes, "cpu": bytes, "disk": …}``.

    Raises:
        StrategyError: a device that is not there, a size that does not parse or is not
            positive, or a cap that makes the device map impossible (a single-device
            map whose device may hold less than the model).

    Example:
        >>> normalize_max_memory({"cpu": "1GB"})
        {'cpu': 1000000000}
    """
    if max_memory is None:
        return None
    n = cuda_device_count() if n_cuda is None else n_cuda
    out: dict[int | str, int] = {}
    for key, value in dict(max_memory).items():
        dev = _check_device(key, "max_memory key", n)
        try:
            size = parse_size(value)
        except ConfigError as exc:
            raise StrategyError(f"max_memory[{key!r}] = {value!r}: {exc}") from exc
        if size <= 0:
            raise StrategyError(f"max_memory[{key!r}] = {value!r} must be a positive size")
        m = _CUDA_RE.match(dev)
        out[int(m.group(1)) if m else dev] = size
    single = device_map if isinstance(device_map, str) else None
    if single == "cuda":
        single = "cuda:0"
    if single and single not in ("auto", "balanced", "sequential") and model_bytes:
        m = _CUDA_RE.match(single)
        cap = out.get(int(m.group(1)) if m else single)
        if cap is not None and cap < model_bytes:
            raise StrategyError(
                f"max_memory {single}={format_size(cap)} cannot hold the "
                f"{format_size(model_bytes)} model with device_map={single!r}; raise it, "
                "or use device_map='auto' to place the rest on other devices or disk"
            )
    return out


def placement_bytes(device_map: Mapping[str, str], sizes: Mapping[str, int]) -> dict[str, int]:
    """Bytes per device of a resolved module→device map, given per-module sizes
    (accelerate's ``compute_module_sizes``)."""
    out: dict[str, int] = {}
    for mod, dev in device_map.items():
        out[str(dev)] = out.get(str(dev), 0) + int(sizes.get(mod, 0))
    return out


def device_name(dev: Any) -> str:
    """``0`` / ``torch.device("cuda", 0)`` / ``"cuda:0"`` → ``"cuda:0"``; ``"cpu"``, ``"disk"``."""
    if isinstance(dev, int) and not isinstance(dev, bool):
        return f"cuda:{dev}"
    text = str(dev)
    return "cuda:0" if text == "cuda" else text


def note_library_map(ctx: RunContext, model: Any) -> None:
    """Record where a library put the weights (its ``hf_device_map``) and the bytes per
    device, from the checkpoint's per-module sizes, for the prediction."""
    hf_map = getattr(model, "hf_device_map", None)
    if not hf_map:
        hf_map = {"": "cpu"}
    dmap = {str(k): device_name(v) for k, v in hf_map.items()}
    ctx.notes["device_map"] = dmap
    sizes = dict(getattr(ctx.info, "module_sizes", {}) or {})
    if sizes:
        ctx.notes["placement"] = placement_bytes(dmap, sizes)


def device_of(key: str, device_map: Mapping[str, str]) -> str:
    """The device a state-dict key goes to: its longest module prefix in the map."""
    best, dev = -1, None
    for mod, d in device_map.items():
        if (mod == "" or key == mod or key.startswith(mod + ".")) and len(mod) > best:
            best, dev = len(mod), d
    if dev is None:
        raise StrategyError(f"device_map places no module holding {key!r}; add it (or '')")
    return str(dev)


def resolve_device_map(
    model: nn.Module,
    device_map: DeviceMap,
    *,
    max_memory: Mapping[int | str, int] | None = None,
    dtype: str | None = None,
    no_split: list[str] | None = None,
) -> dict[str, str]:
    """A module→device dict for ``device_map``, using accelerate for the automatic maps.

    ``"auto"`` and ``"balanced"`` balance over the GPUs with accelerate's
    ``get_balanced_memory`` (as Transformers does), ``"sequential"`` fills them in order;
    both then call ``infer_auto_device_map``, which puts what does not fit on ``"disk"``.
    """
    if isinstance(device_map, Mapping):
        flat = {str(k): ("cuda:" + str(v) if isinstance(v, int) else str(v))
                for k, v in device_map.items()}
        return disjoint_device_map(model, flat)
    if device_map in ("cpu", "disk"):
        return {"": device_map}
    if device_map == "cuda":
        return {"": "cuda:0"}
    if _CUDA_RE.match(device_map):
        return {"": device_map}
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory, get_max_memory

    mm: dict[int | str, int] = dict(get_max_memory(dict(max_memory) if max_memory else None))
    if device_map in ("auto", "balanced"):
        mm = dict(get_balanced_memory(model, max_memory=mm, no_split_module_classes=no_split,
                                      dtype=dtype))
    raw = infer_auto_device_map(model, max_memory=mm, no_split_module_classes=no_split,
                                dtype=dtype)
    return {k: ("cuda:" + str(v) if isinstance(v, int) else str(v)) for k, v in raw.items()}


def disjoint_device_map(model: nn.Module, device_map: Mapping[str, str]) -> dict[str, str]:
    """Rewrite a map whose entries nest (``{"": "cpu", "h.0": "disk"}``) into disjoint
    entries, the only form accelerate's ``dispatch_model`` handles: a hook on ``""``
    would otherwise try to move the disk-mapped weights to the CPU."""
    out: dict[str, str] = {}
    keys = list(device_map)

    def visit(name: str, module: nn.Module, inherited: str | None) -> None:
        dev = device_map.get(name, inherited)
        nested = any(k != name and (name == "" or k.startswith(name + ".")) for k in keys)
        if not nested:
            if dev is not None:
                out[name] = dev
            return
        own = [n for n, _ in module.named_parameters(recurse=False)]
        own += [n for n, _ in module.named_buffers(recurse=False)]
        for pname in own:
            if dev is not None:
                out[f"{name}.{pname}" if name else pname] = dev
        for cname, child in module.named_children():
            visit(f"{name}.{cname}" if name else cname, child, dev)

    visit("", model, None)
    return out


def module_sizes(model: nn.Module, dtype: str | None = None) -> dict[str, int]:
    """accelerate's ``compute_module_sizes`` as plain ints (tied weights counted once per
    module that holds them)."""
    from accelerate.utils import compute_module_sizes

    return {k: int(v) for k, v in compute_module_sizes(model, dtype=dtype).items()}
