"""The Strategy interface and the helpers every strategy shares.

A :class:`Strategy` is one way of getting checkpoint weights into a model. It has a
``name``, a ``description``, the ``phases`` it records, a :meth:`Strategy.predict`
with its formula from DESIGN.md, and :meth:`Strategy.run`, executed inside a fresh
worker process under the recorder. The worker then runs the **first use** phase
(:func:`first_use`: every weight read once, which also yields the checksums that prove
the weights equal the checkpoint).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from bigviz._errors import ConfigError, StrategyError
from bigviz.data.result import Prediction
from bigviz.models import ModelLike
from bigviz.units import format_size, parse_size

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "DEVICE_MAP_FORMS",
    "DeviceMap",
    "RunContext",
    "Strategy",
    "checksum",
    "cuda_device_count",
    "first_use",
    "largest_shard",
    "load_shard",
    "normalize_max_memory",
    "validate_device_map",
]

DeviceMap = str | Mapping[str, str | int]

DEVICE_MAP_FORMS = (
    "'cpu', 'cuda', 'cuda:N', 'auto', 'balanced', 'sequential', 'disk', "
    "or a dict {module name: 'cpu' | 'cuda:N' | N | 'disk'}"
)
_NAMED_MAPS = ("cpu", "cuda", "auto", "balanced", "sequential", "disk")
_CUDA_RE = re.compile(r"^cuda:(\d+)$")


class _Recorder(Protocol):
    def phase(self, name: str, **detail: Any) -> contextlib.AbstractContextManager[Any]: ...

    def mark(self, name: str, **detail: Any) -> None: ...


@dataclass
class RunContext:
    """Everything a strategy needs inside the worker.

    ``checkpoint`` is the sharded checkpoint folder and ``info`` its
    :class:`~bigviz.checkpoint.CheckpointInfo`; ``scratch`` is a private folder of this
    run (disk offload, the ``save`` strategy's output), removed afterwards.
    """

    model: ModelLike
    checkpoint: Path
    info: Any
    recorder: _Recorder
    scratch: Path
    dtype: str = "float32"
    device_map: DeviceMap = "cpu"
    max_memory: dict[int | str, int] | None = None
    format: str = "safetensors"
    shard_size: int | None = None
    seed: int = 0
    notes: dict[str, Any] = field(default_factory=dict)

    def phase(self, name: str, **detail: Any) -> contextlib.AbstractContextManager[Any]:
        """A named phase of the timeline (nests)."""
        return self.recorder.phase(name, **detail)

    def shards(self) -> list[Path]:
        """The checkpoint's shard files in order."""
        return [Path(p) for p in self.info.shard_paths()]


class Strategy:
    """A way of loading (or saving) a checkpoint, measured in a fresh process.

    Subclasses set the class attributes and implement :meth:`predict` and :meth:`run`.

    Example:
        >>> import bigviz.strategies as s
        >>> s.get("meta").name
        'meta'
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    phases: ClassVar[tuple[str, ...]] = ()
    #: checkpoint formats it reads
    formats: ClassVar[tuple[str, ...]] = ("safetensors", "bin")
    #: whether device maps other than "cpu" are supported
    device_maps: ClassVar[bool] = False
    #: modules that must be importable, e.g. ("transformers",)
    requires: ClassVar[tuple[str, ...]] = ()
    #: modules the fork server imports once before forking this strategy's workers
    preload: ClassVar[tuple[str, ...]] = ()
    #: whether the runner runs the "first use" pass over the weights after run()
    first_use: ClassVar[bool] = True

    def unavailable(self) -> str | None:
        """Why this strategy cannot run here (a missing package), or ``None``."""
        import importlib.util

        for mod in self.requires:
            if importlib.util.find_spec(mod) is None:
                return f"strategy {self.name!r} needs {mod!r}: pip install {mod}"
        return None

    def warm_up(self, checkpoint: Path) -> None:
        """Import what :meth:`run` will need, before the baseline is taken: one-time
        imports are the cost of the library, not of the loading strategy."""
        for mod in self.requires:
            __import__(mod)

    def incompatible(
        self,
        *,
        model: ModelLike,
        format: str,
        device_map: DeviceMap,
        dtype: str = "float32",
    ) -> str | None:
        """Why this strategy cannot run with these options on any machine (a format it does
        not read, a device map it cannot place, a model it cannot load), or ``None``. A
        sweep skips such combinations; :meth:`check` refuses them."""
        if format not in self.formats:
            return (
                f"strategy {self.name!r} does not read format {format!r}; "
                f"use one of {list(self.formats)}"
            )
        if not self.device_maps and device_map != "cpu":
            return (
                f"strategy {self.name!r} loads into CPU RAM only, not device_map="
                f"{device_map!r}; use 'dispatch', 'accelerate' or 'transformers' for device maps"
            )
        return None

    def check(
        self,
        *,
        model: ModelLike,
        format: str,
        device_map: DeviceMap,
        dtype: str = "float32",
    ) -> None:
        """Refuse, before any process starts, options this strategy cannot run with.

        Raises:
            StrategyError: naming the option and what to use instead.
        """
        reason = self.unavailable() or self.incompatible(
            model=model, format=format, device_map=device_map, dtype=dtype)
        if reason:
            raise StrategyError(reason)

    def predict(
        self,
        info: Any,
        device_map: DeviceMap = "cpu",
        *,
        max_memory: Mapping[int | str, int] | None = None,
        placement: Mapping[str, int] | None = None,
    ) -> Prediction:
        """The expected peaks in bytes above baseline (DESIGN.md table).

        Args:
            info: the checkpoint's ``CheckpointInfo`` (``total_size`` = M, the largest
                shard = S).
            device_map: as passed to the run.
            max_memory: as passed to the run (normalised).
            placement: bytes per device (``{"cpu": …, "cuda:0": …, "disk": …}``) for
                device-mapped strategies; computed from ``device_map`` when omitted.
        """
        raise NotImplementedError

    def run(self, ctx: RunContext) -> nn.Module:
        """Load (or save) inside the worker under the recorder; return the model."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<Strategy {self.name}: {self.description}>"


# -- checkpoint helpers ---------------------------------------------------------


def largest_shard(info: Any) -> int:
    """Bytes of the largest shard file of a ``CheckpointInfo``."""
    sizes = [int(f.bytes) for f in getattr(info, "files", [])]
    return max(sizes) if sizes else int(info.total_size)


def model_size(info: Any) -> int:
    """M: unique tensor bytes of the checkpoint."""
    return int(info.total_size)


@functools.cache
def _safetensors_has_backend() -> bool:
    from safetensors.torch import load_file

    return "backend" in inspect.signature(load_file).parameters


def load_shard(path: Path, *, mmap: bool) -> dict[str, torch.Tensor]:
    """Read one shard file into a state dict.

    ``mmap=True``: zero-copy (safetensors' mmap backend, ``torch.load(mmap=True)``), pages
    arrive on first touch and are file-backed. ``mmap=False``: materialised into
    anonymous memory (safetensors' ``pread`` backend, plain ``torch.load``).
    """
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        if mmap:
            return load_file(path)
        if _safetensors_has_backend():
            return load_file(path, backend="pread")
        return {k: v.clone() for k, v in load_file(path).items()}
    sd = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    return dict(sd)


def tie(model: nn.Module) -> None:
    """Re-tie shared weights after loading (checkpoints store a tied tensor once)."""
    fn = getattr(model, "tie_weights", None)
    if callable(fn):
        fn()


def meta_leftovers(model: nn.Module) -> list[str]:
    """Names of parameters / persistent buffers still on the meta device."""
    names = [n for n, p in model.named_parameters() if p.is_meta]
    names += [n for n, b in model.named_buffers() if b.is_meta]
    return names


def assign_shard(model: nn.Module, sd: Mapping[str, torch.Tensor]) -> None:
    """``load_state_dict(assign=True)`` of one shard onto a meta model, checking keys."""
    result = model.load_state_dict(sd, strict=False, assign=True)
    if result.unexpected_keys:
        raise StrategyError(
            f"checkpoint keys not in the model: {result.unexpected_keys[:5]}; "
            "the checkpoint was saved from another model"
        )


def require_loaded(model: nn.Module, strategy: str) -> None:
    """Raise unless every weight has data (no meta tensors left)."""
    tie(model)
    left = meta_leftovers(model)
    if left:
        raise StrategyError(
            f"strategy {strategy!r} left {len(left)} weights unloaded ({left[:5]}); "
            "the checkpoint lacks them"
        )


# -- first use and checksums ----------------------------------------------------


def checksum(t: torch.Tensor) -> list[int]:
    """An exact, order-independent checksum of a tensor's bytes: ``[nbytes, word sum]``.

    The bytes are summed as wrapping 64-bit words (the last ``nbytes % 8`` bytes one by
    one), which reads every byte once at memory speed and gives the same value wherever
    the same bytes are summed (CPU or GPU). No copy of the tensor is made: a checksum pass
    is the "first use" phase, and a temporary the size of a weight would show up in its
    peak (summing int32 words into an int64 total did exactly that).

    Example:
        >>> import torch
        >>> checksum(torch.zeros(3, dtype=torch.float32))
        [12, 0]
    """
    import torch

    data = t.detach()
    if not data.is_contiguous():
        data = data.contiguous()
    flat = data.reshape(-1).view(torch.uint8)
    nbytes = flat.numel()
    if nbytes == 0:
        return [0, 0]
    n8 = nbytes - nbytes % 8
    total = 0
    if n8:
        head = flat[:n8]
        if head.data_ptr() % 8 == 0:
            total += int(head.view(torch.int64).sum().item())
        else:  # misaligned view (an odd offset into a shard): copy small chunks only
            step = 1 << 23
            for i in range(0, n8, step):
                total += int(head[i : i + step].clone().view(torch.int64).sum().item())
    if n8 < nbytes:
        total += int(flat[n8:].to(torch.int64).sum().item())
    # wrap like the int64 sums above, so every path gives the same value
    total = (total + (1 << 63)) % (1 << 64) - (1 << 63)
    return [nbytes, total]


def _offload_stores(model: nn.Module) -> list[Any]:
    """accelerate's offloaded-weight stores (keyed by full state-dict name) found on the
    model's hooks: ``weights_map.dataset`` of every offloading ``AlignDevicesHook``."""
    stores: dict[int, Any] = {}
    for module in model.modules():
        hook = getattr(module, "_hf_hook", None)
        for h in list(getattr(hook, "hooks", [hook])) if hook is not None else []:
            wmap = getattr(h, "weights_map", None)
            if getattr(h, "offload", False) and wmap is not None:
                store = getattr(wmap, "dataset", wmap)
                stores[id(store)] = store
    return list(stores.values())


def iter_weights(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Every state-dict entry as ``(key, tensor)``, fetching disk-offloaded weights.

    Weights that accelerate offloaded sit on the meta device in the model; their data is
    read from accelerate's store (a memmap or the checkpoint itself), as at forward time.
    A tied weight is found under any of its names.
    """
    entries: list[tuple[str, torch.Tensor]] = []
    for mod_name, module in model.named_modules(remove_duplicate=False):
        skip: set[str] = set(getattr(module, "_non_persistent_buffers_set", set()))
        own = list(module.named_parameters(recurse=False))
        own += [(n, b) for n, b in module.named_buffers(recurse=False) if n not in skip]
        entries += [(f"{mod_name}.{name}" if mod_name else name, t) for name, t in own]
    stores: list[Any] | None = None
    aliases: dict[int, list[str]] = {}
    for key, t in entries:
        aliases.setdefault(id(t), []).append(key)
    for key, t in entries:
        if t.is_meta:
            if stores is None:
                stores = _offload_stores(model)
            t = _fetch(stores, [key, *(a for a in aliases[id(t)] if a != key)], t)
        yield key, t


def _fetch(stores: list[Any], names: list[str], meta: torch.Tensor) -> torch.Tensor:
    for store in stores:
        for name in names:
            try:
                found: torch.Tensor = store[name]
            except (KeyError, IndexError):
                continue
            return found
    return meta  # first_use reports it as not loaded


def first_use(model: nn.Module) -> dict[str, list[int]]:
    """Touch every weight once (a checksum pass) and return ``{key: checksum}``.

    Lazily mapped loads look nearly free until their pages are read; this pass is what
    makes their real cost visible, and its checksums prove the weights are right.
    """
    import torch

    out: dict[str, list[int]] = {}
    with torch.no_grad():
        for key, t in iter_weights(model):
            if t.is_meta:
                raise StrategyError(f"weight {key!r} is still on the meta device after loading")
            out[key] = checksum(t)
    return out


def compare_checksums(
    expected: Mapping[str, list[int]], got: Mapping[str, list[int]]
) -> str | None:
    """A message describing the first mismatches, or ``None`` when all agree."""
    missing = [k for k in expected if k not in got]
    wrong = [k for k in expected if k in got and list(got[k]) != list(expected[k])]
    if not missing and not wrong:
        return None
    parts = []
    if wrong:
        parts.append(f"{len(wrong)} weights differ from the checkpoint (e.g. {wrong[:3]})")
    if missing:
        parts.append(f"{len(missing)} checkpoint weights missing from the model ({missing[:3]})")
    return "; ".join(parts)


# -- devices --------------------------------------------------------------------


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
