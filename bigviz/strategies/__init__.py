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

Example:
    >>> import bigviz.strategies as strategies
    >>> strategies.names()[:4]
    ['naive', 'sharded', 'meta', 'mmap']
    >>> strategies.get("meta").predict  # doctest: +ELLIPSIS
    <bound method Meta.predict of ...>
"""

from __future__ import annotations

from bigviz._errors import StrategyError
from bigviz.strategies._base import (
    DeviceMap,
    RunContext,
    Strategy,
    checksum,
    first_use,
    normalize_max_memory,
    validate_device_map,
)
from bigviz.strategies.dispatch import Dispatch
from bigviz.strategies.hf_accelerate import AccelerateLoad
from bigviz.strategies.hf_transformers import TransformersLoad
from bigviz.strategies.meta import Meta
from bigviz.strategies.mmap import Mmap
from bigviz.strategies.naive import Naive
from bigviz.strategies.save import Save
from bigviz.strategies.sharded import Sharded

__all__ = [
    "DeviceMap",
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


for _cls in (Naive, Sharded, Meta, Mmap, Dispatch, Save, TransformersLoad, AccelerateLoad):
    register(_cls())


def names() -> list[str]:
    """Every registered strategy name, built-ins first."""
    return list(_REGISTRY)


def available() -> list[str]:
    """Names of the strategies that can run here (their packages are installed)."""
    return [n for n, s in _REGISTRY.items() if s.unavailable() is None]


def get(name: str | Strategy) -> Strategy:
    """The strategy called ``name`` (a Strategy passes through).

    Raises:
        StrategyError: an unknown name, listing the valid ones.

    Example:
        >>> get("naive").name
        'naive'
    """
    if isinstance(name, Strategy):
        return name
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise StrategyError(
            f"unknown strategy {name!r}; valid strategies: {', '.join(names())}"
        ) from None
