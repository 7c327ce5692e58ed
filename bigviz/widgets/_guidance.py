"""What the dashboard offers and refuses before anything runs, as plain functions.

No ipywidgets here: which strategies fit a device map (each strategy's own
:meth:`~bigviz.strategies.Strategy.incompatible` and ``unavailable``, the rules a sweep
applies), which named device maps this machine can use, the module names of the model's
meta-device skeleton, and the check of a custom device map against them. The dashboard
greys out, lists and refuses from these; the unit tests call them without a browser.

Example:
    >>> from bigviz.widgets._guidance import strategy_reasons
    >>> strategy_reasons(["naive", "dispatch"], model="gpt:20MB", format="safetensors",
    ...                  device_map="disk")["dispatch"] is None
    True
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bigviz._errors import BigvizError, ConfigError

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "check_custom_map",
    "group_reasons",
    "map_placeholder",
    "module_names",
    "offered_device_maps",
    "strategy_reasons",
    "top_level_names",
]


def strategy_reasons(
    names: Sequence[str], *, model: str, format: str, device_map: Any,
) -> dict[str, str | None]:
    """Why each strategy cannot run with these options (``None``: it can), from the
    strategy's own ``unavailable()`` / ``incompatible()``, as :func:`bigviz.sweep` skips.

    Example:
        >>> strategy_reasons(["naive"], model="gpt:20MB", format="safetensors",
        ...                  device_map="cpu")
        {'naive': None}
    """
    import bigviz.strategies as registry

    out: dict[str, str | None] = {}
    for name in names:
        strategy = registry.get(name)
        try:
            out[name] = strategy.unavailable() or strategy.incompatible(
                model=model, format=format, device_map=device_map)
        except BigvizError as exc:  # e.g. a model spec the strategy cannot parse
            out[name] = str(exc)
    return out


def group_reasons(reasons: Mapping[str, str | None]) -> list[tuple[str, list[str]]]:
    """The reasons with the strategy's own name taken out, each once with the strategies
    it applies to: one sentence for ``naive, sharded, meta, mmap``, not four.

    Example:
        >>> group_reasons({"a": "strategy 'a' loads into CPU RAM only",
        ...                "b": "strategy 'b' loads into CPU RAM only", "c": None})
        [('loads into CPU RAM only', ['a', 'b'])]
    """
    groups: dict[str, list[str]] = {}
    for name, reason in reasons.items():
        if reason:
            text = reason.replace(f"strategy {name!r} ", "", 1)
            groups.setdefault(text, []).append(name)
    return list(groups.items())


def offered_device_maps(n_cuda: int | None = None) -> list[str]:
    """The named device maps to offer: the options spec's choices, without ``cuda`` and
    ``cuda:N`` when this machine has no GPU (``n_cuda``: the GPU count, default: torch's).

    Example:
        >>> offered_device_maps(0)
        ['cpu', 'auto', 'balanced', 'sequential', 'disk']
    """
    from bigviz import options
    from bigviz.strategies.devices import cuda_device_count

    n = cuda_device_count() if n_cuda is None else n_cuda
    return [m for m in options.device_map_choices()
            if not m.startswith("cuda") or (n > 0 and (m == "cuda" or int(m[5:]) < n))]


def top_level_names(module: nn.Module) -> list[str]:
    """The model's top-level module (and own parameter) names, in model order.

    Example:
        >>> from bigviz.models import build_model
        >>> top_level_names(build_model("gpt:20MB", device="meta"))
        ['transformer', 'lm_head']
    """
    names = [n for n, _ in module.named_children()]
    names += [n for n, _ in module.named_parameters(recurse=False)]
    return names


def module_names(module: nn.Module) -> list[str]:
    """Every name a custom device map may use: modules, parameters and buffers, at any
    depth (tied weights under each name that holds them).

    Example:
        >>> from bigviz.models import build_model
        >>> "transformer.h.0" in module_names(build_model("gpt:20MB", device="meta"))
        True
    """
    names = [n for n, _ in module.named_modules(remove_duplicate=False) if n]
    names += [n for n, _ in module.named_parameters(remove_duplicate=False)]
    names += [n for n, _ in module.named_buffers(remove_duplicate=False)]
    return list(dict.fromkeys(names))


def map_placeholder(module: nn.Module) -> str:
    """A custom-map example with the model's own top-level names (every one on the CPU
    but the largest, offloaded to disk).

    Example:
        >>> from bigviz.models import build_model
        >>> map_placeholder(build_model("gpt:20MB", device="meta"))
        '{"transformer": "disk", "lm_head": "cpu"}'
    """
    import json

    tops = top_level_names(module)
    sizes = {n: sum(p.numel() for p in getattr(module, n).parameters())
             if n in dict(module.named_children()) else 0 for n in tops}
    biggest = max(tops, key=lambda n: sizes[n], default="")
    return json.dumps({n: "disk" if n == biggest else "cpu" for n in tops}) if tops else \
        '{"": "cpu"}'


def check_custom_map(
    device_map: Mapping[str, Any], module: nn.Module, *, n_cuda: int | None = None,
) -> dict[str, Any]:
    """Check a custom device map against the model before any worker starts: its devices
    exist, every name is one of the model's, and every weight is placed.

    Returns:
        the map, normalised (``0`` → ``"cuda:0"``).

    Raises:
        ConfigError: starting ``custom device map:``, naming the bad entry and the
            model's top-level module names.

    Example:
        >>> from bigviz.models import build_model
        >>> gpt = build_model("gpt:20MB", device="meta")
        >>> check_custom_map({"transformer": "cpu", "lm_head": "disk"}, gpt)
        {'transformer': 'cpu', 'lm_head': 'disk'}
    """
    from bigviz.strategies.devices import device_of, validate_device_map

    tops = top_level_names(module)
    valid = f"this model's top-level modules are {', '.join(tops) or '(none)'}"
    try:
        checked = validate_device_map(dict(device_map), n_cuda=n_cuda)
    except BigvizError as exc:
        raise ConfigError(f"custom device map: {exc}") from exc
    assert isinstance(checked, Mapping)
    known = set(module_names(module))
    for key in checked:
        if key != "" and key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3)
            hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
            raise ConfigError(f"custom device map: {key!r} is not a module of this model{hint}; "
                              f"{valid}, e.g. {map_placeholder(module)}")
    flat = {str(k): str(v) for k, v in checked.items()}
    unplaced: list[str] = []
    for key in module.state_dict(keep_vars=True):
        try:
            device_of(key, flat)
        except BigvizError:
            unplaced.append(key)
    if unplaced:
        first = list(dict.fromkeys(k.split(".")[0] for k in unplaced))
        raise ConfigError(
            f"custom device map: no device for {len(unplaced)} weight"
            f"{'s' if len(unplaced) != 1 else ''} (under {', '.join(first)}); add "
            f"{', '.join(repr(n) for n in first)} or \"\" for the rest; {valid}")
    return dict(checked)
