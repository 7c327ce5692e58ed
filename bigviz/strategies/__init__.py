"""Loading strategies, one module each, and their registry.

=================  ==========================================================  ===========
name               what it does                                                CPU RAM peak
=================  ==========================================================  ===========
``naive``          random init, whole state dict, ``load_state_dict``          ≈ 2 M
``sharded``        random init, shard by shard, free each                      ≈ M + S
``meta``           meta build, shards read and assigned (``assign=True``)      ≈ M
``mmap``           meta build, shards mapped zero-copy                         ≈ M file-backed
``dispatch``       meta build + device map (cpu / cuda:N / disk offload)       ≈ C + S
``save``           build in RAM, ``save_sharded``                              ≈ M + S
``transformers``   Transformers ``from_pretrained`` (when installed)           measured
``accelerate``     Accelerate ``load_checkpoint_and_dispatch`` (when installed) measured
=================  ==========================================================  ===========

(M = model bytes, S = largest shard, C = bytes a device map puts on the CPU.)

Distributed strategies (``kind = "distributed"``, :mod:`bigviz.strategies.ranks`) run in
every rank of a ``torch.distributed`` job: ``every-rank-loads``, ``rank0-broadcast``,
``shared-mmap``, and the FSDP2 ones (:mod:`bigviz.strategies.fsdp`): ``fsdp-broadcast``,
``fsdp-dcp``, ``fsdp-hf`` (and ``fsdp-dcp-save``, ``fsdp-hf-save``: saving), and
:mod:`bigviz.strategies.dcp`'s ``dcp-consolidate`` (a DCP checkpoint consolidated into
Hugging Face safetensors). One
registry holds both kinds: :func:`get` finds either, :func:`names` and :func:`available`
list one kind (single-process by default).

Modules: :mod:`~bigviz.strategies.base` (Strategy, RunContext),
:mod:`~bigviz.strategies.devices` (device maps, ``max_memory``),
:mod:`~bigviz.strategies.weights` (shards, first use, checksums), then one per strategy.

Example:
    >>> import bigviz.strategies as strategies
    >>> strategies.names()[:4]
    ['naive', 'sharded', 'meta', 'mmap']
    >>> strategies.get("meta").predict  # doctest: +ELLIPSIS
    <bound method Meta.predict of ...>
    >>> strategies.get("shared-mmap").kind
    'distributed'
"""

from __future__ import annotations

from bigviz._errors import StrategyError
from bigviz.strategies.base import KINDS, Kind, RunContext, Strategy
from bigviz.strategies.dcp import DcpConsolidate
from bigviz.strategies.devices import DeviceMap, normalize_max_memory, validate_device_map
from bigviz.strategies.dispatch import Dispatch
from bigviz.strategies.fsdp import (
    FsdpBroadcast,
    FsdpDcp,
    FsdpDcpSave,
    FsdpHf,
    FsdpHfSave,
)
from bigviz.strategies.hf_accelerate import AccelerateLoad
from bigviz.strategies.hf_transformers import TransformersLoad
from bigviz.strategies.meta import Meta
from bigviz.strategies.mmap import Mmap
from bigviz.strategies.naive import Naive
from bigviz.strategies.ranks import (
    PER_RANK,
    DistContext,
    EveryRankLoads,
    Rank0Broadcast,
    SharedMmap,
)
from bigviz.strategies.save import Save
from bigviz.strategies.sharded import Sharded
from bigviz.strategies.weights import checksum, first_use

__all__ = [
    "KINDS",
    "PER_RANK",
    "DeviceMap",
    "DistContext",
    "Kind",
    "RunContext",
    "Strategy",
    "available",
    "checksum",
    "first_use",
    "get",
    "names",
    "normalize_max_memory",
    "register",
    "validate_device_map",
]

_REGISTRY: dict[str, Strategy] = {}


def register(strategy: Strategy, *, replace: bool = False) -> Strategy:
    """Add a strategy to the registry (its class must be importable by the worker).

    Raises:
        StrategyError: the name is taken (pass ``replace=True``) or empty.
    """
    if not strategy.name:
        raise StrategyError(f"strategy {strategy!r} has no name; set the class attribute 'name'")
    if strategy.name in _REGISTRY and not replace:
        raise StrategyError(f"a strategy named {strategy.name!r} exists; pass replace=True")
    _REGISTRY[strategy.name] = strategy
    return strategy


for _cls in (Naive, Sharded, Meta, Mmap, Dispatch, Save, TransformersLoad, AccelerateLoad,
             EveryRankLoads, Rank0Broadcast, SharedMmap, FsdpBroadcast, FsdpDcp, FsdpHf,
             FsdpDcpSave, FsdpHfSave, DcpConsolidate):
    register(_cls())


def names(*, kind: Kind | None = "single") -> list[str]:
    """Registered strategy names of one ``kind`` (``None``: every kind), built-ins first.

    Example:
        >>> names(kind="distributed")[:3]
        ['every-rank-loads', 'rank0-broadcast', 'shared-mmap']
    """
    return [n for n, s in _REGISTRY.items() if kind is None or s.kind == kind]


def available(*, kind: Kind | None = "single") -> list[str]:
    """Names of the strategies of one ``kind`` that can run here (their packages are
    installed).

    Example:
        >>> "naive" in available()
        True
    """
    return [n for n in names(kind=kind) if _REGISTRY[n].unavailable() is None]


def get(name: str | Strategy, *, kind: Kind | None = None) -> Strategy:
    """The strategy called ``name`` (a Strategy passes through), of any kind unless
    ``kind`` is given.

    Raises:
        StrategyError: an unknown name, or one of another kind, listing the valid ones.

    Example:
        >>> get("naive").name
        'naive'
        >>> get("shared-mmap", kind="distributed").kind
        'distributed'
    """
    if kind is not None and kind not in KINDS:
        raise StrategyError(f"kind {kind!r} is not a strategy kind; use one of {list(KINDS)}")
    if isinstance(name, Strategy):
        found: Strategy | None = name
    else:
        found = _REGISTRY.get(name) if isinstance(name, str) else None
    if found is not None and (kind is None or found.kind == kind):
        return found
    if kind == "distributed":
        raise StrategyError(
            f"unknown distributed strategy {name!r}; valid: {', '.join(names(kind=kind))}")
    raise StrategyError(
        f"unknown strategy {name!r}; valid strategies: {', '.join(names(kind=kind or 'single'))}"
    )
