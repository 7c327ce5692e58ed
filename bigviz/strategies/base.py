"""The Strategy interface and the context it runs in.

A :class:`Strategy` is one way of getting checkpoint weights into a model. It has a
``name``, a ``description``, the ``phases`` it records, a ``kind`` (``"single"``: one
worker process; ``"distributed"``: every rank of a ``torch.distributed`` job), a
:meth:`Strategy.predict` with its formula from DESIGN.md, and :meth:`Strategy.run`,
executed inside a fresh process under the recorder. The runner then runs the **first use**
phase (:func:`bigviz.strategies.weights.first_use`: every weight read once, which also
yields the checksums that prove the weights equal the checkpoint).

Example:
    >>> Strategy.kind
    'single'
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from bigviz._errors import StrategyError
from bigviz.data.result import Prediction
from bigviz.models import ModelLike
from bigviz.strategies.devices import DeviceMap

if TYPE_CHECKING:
    from torch import nn

__all__ = ["KINDS", "Kind", "RunContext", "Strategy"]

#: where a strategy runs: one worker process, or every rank of a distributed job
Kind = Literal["single", "distributed"]
KINDS: tuple[Kind, ...] = ("single", "distributed")


class Recorder(Protocol):
    """What a strategy needs of the recorder: phases and marks."""

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
    recorder: Recorder
    scratch: Path
    dtype: str = "float32"
    device_map: DeviceMap = "cpu"
    max_memory: dict[int | str, int] | None = None
    format: str = "safetensors"
    shard_size: int | None = None
    seed: int = 0
    notes: dict[str, Any] = field(default_factory=dict)
    #: for a checkpoint folder without config.json: the "package.module:function" that
    #: builds its model (pass it to build_model)
    factory: str | None = None

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
    #: ``"single"`` (one worker) or ``"distributed"`` (every rank of a job)
    kind: ClassVar[Kind] = "single"
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
        nproc: int = 1,
        per_rank: str = "naive",
    ) -> Prediction:
        """The expected peaks in bytes above baseline (DESIGN.md table): of the worker,
        or of the node (the sum of the ranks' proportional shares, PSS) for a
        distributed strategy.

        Args:
            info: the checkpoint's ``CheckpointInfo`` (``total_size`` = M, the largest
                shard = S).
            device_map: as passed to the run; distributed: ``"cpu"`` (gloo) or
                ``"cuda"`` (each rank on its own GPU).
            max_memory: as passed to the run (normalised).
            placement: bytes per device (``{"cpu": …, "cuda:0": …, "disk": …}``) for
                device-mapped strategies; computed from ``device_map`` when omitted.
            nproc: ranks on the node (1 for a single-process run).
            per_rank: the single-process strategy each rank of ``every-rank-loads`` runs.
        """
        raise NotImplementedError

    def predict_rank(
        self,
        info: Any,
        rank: int,
        device_map: DeviceMap = "cpu",
        *,
        max_memory: Mapping[int | str, int] | None = None,
        placement: Mapping[str, int] | None = None,
        nproc: int = 1,
        per_rank: str = "naive",
    ) -> Prediction:
        """One rank's (or the one worker's) own expected peak: RSS above its baseline,
        VRAM on its GPU. Arguments as for :meth:`predict`, plus the ``rank``, whose
        ``device_map`` is its own device (``"cpu"``, ``"cuda:N"``).

        Example:
            >>> # get("rank0-broadcast").predict_rank(info, 1, "cuda:1", nproc=2).vram
        """
        return self.predict(info, device_map, max_memory=max_memory, placement=placement,
                            nproc=nproc, per_rank=per_rank)

    def run(self, ctx: RunContext) -> nn.Module:
        """Load (or save) inside the worker under the recorder; return the model."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<Strategy {self.name}: {self.description}>"
