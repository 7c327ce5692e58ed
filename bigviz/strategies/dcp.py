"""The DCP side of the distributed strategies: ``torch.distributed.checkpoint`` copies of
a prepared checkpoint, their checks, and ``dcp-consolidate``.

A prepared checkpoint folder may carry, beside its ``checkpoint/``, the copies some
strategies read, each saved once per node in a fresh process (the rank program runs the
code a strategy's ``prepared`` names before any baseline):

=============  ======================  =================================================
folder         saved by                read by
=============  ======================  =================================================
``dcp/``       :func:`save_dcp`        ``fsdp-dcp`` (``dcp.load``; :func:`check_dcp`
                                       compares its ``.metadata`` with the model)
``dcp-hf/``    :func:`save_dcp_hf`     ``dcp-consolidate`` (:func:`check_dcp_hf`,
                                       from the files' headers and DCP's metadata)
=============  ======================  =================================================

``dcp-consolidate`` profiles torch's ``_consolidate_safetensors_files``: it turns the
DCP checkpoint in DCP's safetensors layout into full-tensor files, file ``i`` by rank
``i % N``, streaming tensor by tensor (2 × T a rank, + ≤ 3 × T₂).
:func:`saved_checksums` reads written safetensors back in a fresh interpreter (also for
``fsdp-hf-save``, :mod:`bigviz.strategies.fsdp`).

Example:
    >>> from bigviz.strategies.dcp import DCP_DIR, DCP_HF_DIR
    >>> DCP_DIR, DCP_HF_DIR
    ('dcp', 'dcp-hf')
"""

from __future__ import annotations

import shutil
import uuid
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bigviz._errors import StrategyError
from bigviz.data.result import Prediction
from bigviz.models import build_model
from bigviz.strategies.devices import DeviceMap
from bigviz.strategies.ranks import DistContext, DistStrategy, node_sum
from bigviz.strategies.weights import load_shard, model_size

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "DCP_DIR",
    "DCP_HF_DIR",
    "DcpConsolidate",
    "check_dcp",
    "check_dcp_hf",
    "read_dcp_hf_metadata",
    "save_dcp",
    "save_dcp_hf",
    "saved_checksums",
]

#: the DCP copy of a prepared checkpoint, beside its ``checkpoint/`` folder
DCP_DIR = "dcp"

#: the DCP copy of a prepared checkpoint in DCP's safetensors layout (the input of
#: ``dcp-consolidate``), beside its ``checkpoint/`` folder
DCP_HF_DIR = "dcp-hf"


# -- saving a DCP copy of a checkpoint, once -------------------------------------------


def _save_once(checkpoint: str | Path, dest: str | Path,
               writer: Callable[[Path, Any], Any] | None = None) -> Path:
    """Read the whole checkpoint (mapped) and ``dcp.save`` it into ``dest`` in this one
    process, once: an existing ``dest`` is kept. Written to a temporary folder, then
    renamed (a concurrent saver's folder wins). ``writer(tmp, info)`` makes the storage
    writer; ``None``: DCP's own filesystem layout."""
    from torch.distributed.checkpoint import state_dict_saver

    from bigviz.checkpoint import inspect_checkpoint

    dest = Path(dest)
    if dest.is_dir():
        return dest
    info = inspect_checkpoint(Path(checkpoint))
    sd: dict[str, Any] = {}
    for path in info.shard_paths():
        sd.update(load_shard(Path(path), mmap=True))
    tmp = dest.with_name(f".{dest.name}-{uuid.uuid4().hex[:8]}")
    try:
        where: dict[str, Any] = ({"checkpoint_id": str(tmp)} if writer is None
                                 else {"storage_writer": writer(tmp, info)})
        with warnings.catch_warnings():  # "assuming ... a single process": it is one
            warnings.filterwarnings("ignore", message=".*single process", category=UserWarning)
            state_dict_saver.save(sd, no_dist=True, **where)
        try:
            tmp.rename(dest)
        except OSError:  # another process saved it first
            if not dest.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def save_dcp(checkpoint: str | Path, dest: str | Path) -> Path:
    """Save a safetensors/.bin checkpoint folder as a ``torch.distributed.checkpoint``
    folder ``dest`` (one process, no process group), once: an existing ``dest`` is kept.

    Run it in a fresh process (it holds the whole state dict): the rank program does so
    before its baseline for ``fsdp-dcp``. Written to a temporary folder, then renamed.

    Example:
        >>> # save_dcp(folder / "checkpoint", folder / "dcp")
    """
    return _save_once(checkpoint, dest)


def save_dcp_hf(checkpoint: str | Path, dest: str | Path) -> Path:
    """Save a checkpoint folder as a DCP checkpoint in DCP's safetensors layout
    (``HuggingFaceStorageWriter(save_distributed=True)``: files with DCP's sharding
    metadata, what ranks write before consolidation), one process, once: an existing
    ``dest`` is kept. Tensors keep the checkpoint's file split.

    Example:
        >>> # save_dcp_hf(folder / "checkpoint", folder / "dcp-hf")
    """
    def writer(tmp: Path, info: Any) -> Any:
        from torch.distributed.checkpoint.hf_storage import HuggingFaceStorageWriter

        files = _output_files(info)
        index = {k: files.index(str(t.shard)) + 1 for k, t in info.tensors.items()}
        return HuggingFaceStorageWriter(str(tmp), save_distributed=True,
                                        fqn_to_index_mapping=index)

    return _save_once(checkpoint, dest, writer)


# -- checking a DCP copy against the model or the checkpoint ---------------------------


def _refuse(folder: Path, what: str) -> StrategyError:
    return StrategyError(f"the DCP checkpoint {folder} {what}; it was saved from another "
                         "model: delete the folder and it is saved again")


def check_dcp(folder: Path, sd: Mapping[str, Any]) -> None:
    """Raise StrategyError unless the DCP checkpoint ``folder`` holds every weight of
    ``sd`` with its shape and dtype (read from its ``.metadata`` only).

    Example:
        >>> # check_dcp(folder / "dcp", fsdp.state_dict(ctx, model))
    """
    from torch.distributed.checkpoint.filesystem import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    meta = FileSystemReader(str(folder)).read_metadata().state_dict_metadata
    missing = [k for k in sd if k not in meta]
    wrong = []
    for key, t in sd.items():
        md = meta.get(key)
        if isinstance(md, TensorStorageMetadata) and (
                tuple(md.size) != tuple(t.shape) or md.properties.dtype != t.dtype):
            wrong.append(f"{key} {tuple(md.size)} {md.properties.dtype} "
                         f"(model: {tuple(t.shape)} {t.dtype})")
    if missing or wrong:
        what = (f"lacks {len(missing)} of the model's weights (e.g. {missing[:3]})"
                if missing else f"holds other shapes or dtypes: {wrong[:2]}")
        raise _refuse(folder, what)


def read_dcp_hf_metadata(folder: Path) -> dict[str, tuple[list[int], str]]:
    """``{name: (full shape, dtype name)}`` of every tensor in a DCP safetensors
    checkpoint ``folder``, from the files' headers and DCP's sharding metadata (the
    offsets of each saved slice), as torch's consolidation reads them.

    Raises:
        StrategyError: no safetensors file, or a file without DCP's metadata.

    Example:
        >>> # read_dcp_hf_metadata(folder / "dcp-hf")["lm_head.weight"]
        >>> # ([1024, 256], 'float32')
    """
    from safetensors.torch import _getdtype
    from torch.distributed.checkpoint._hf_utils import (
        DEFAULT_EXTRA_METADATA_KEY,
        DTYPE_KEY,
        SAVED_OFFSETS_KEY,
        SHAPE_KEY,
        _get_dcp_custom_metadata,
        _get_safetensors_file_metadata,
    )

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise StrategyError(f"no DCP safetensors checkpoint at {folder}; the rank program "
                            "saves it before the baseline (save_dcp_hf)")
    out: dict[str, tuple[list[int], str]] = {}
    for path in files:
        with open(path, "rb") as f:
            header, _ = _get_safetensors_file_metadata(f)
        custom = _get_dcp_custom_metadata(header)
        if not custom:
            raise StrategyError(f"{path} has no DCP sharding metadata; it was not saved with "
                                "HuggingFaceStorageWriter(save_distributed=True)")
        for key, val in header.items():
            if key == DEFAULT_EXTRA_METADATA_KEY:
                continue
            offsets = custom[key][SAVED_OFFSETS_KEY]
            ends = [int(s) + int(o) for s, o in zip(val[SHAPE_KEY], offsets, strict=True)]
            dtype = str(_getdtype(val[DTYPE_KEY])).removeprefix("torch.")
            if key in out:
                ends = [max(a, b) for a, b in zip(out[key][0], ends, strict=True)]
            out[key] = (ends, dtype)
    return out


def check_dcp_hf(folder: Path, info: Any) -> None:
    """Raise StrategyError unless the DCP safetensors checkpoint ``folder`` holds exactly
    the checkpoint's tensors with their shapes and dtypes."""
    meta = read_dcp_hf_metadata(folder)
    want = {k: (list(t.shape), str(t.dtype)) for k, t in info.tensors.items()}
    missing = sorted(set(want) - set(meta))
    extra = sorted(set(meta) - set(want))
    wrong = [f"{k} {meta[k][0]} {meta[k][1]} (checkpoint: {want[k][0]} {want[k][1]})"
             for k in want if k in meta and meta[k] != want[k]]
    if missing or extra or wrong:
        what = (f"lacks {len(missing)} of the checkpoint's tensors (e.g. {missing[:3]})"
                if missing else f"holds tensors the checkpoint lacks (e.g. {extra[:3]})"
                if extra else f"holds other shapes or dtypes: {wrong[:2]}")
        raise _refuse(folder, what)



# -- consolidating a DCP checkpoint into Hugging Face safetensors -------------------


def _output_files(info: Any) -> list[str]:
    """The checkpoint's own file names, in order: the consolidated files are named so."""
    return sorted({str(t.shard) for t in getattr(info, "tensors", {}).values()})


def _rank_files(info: Any, rank: int, nproc: int) -> list[str]:
    """The output files rank ``rank`` writes: file ``i`` goes to rank ``i % N`` (as
    ``consolidate_safetensors_files_on_every_rank`` assigns them)."""
    return [f for i, f in enumerate(_output_files(info)) if i % nproc == rank]


_SAVED_SUMS = """
import json, sys
from pathlib import Path
from safetensors import safe_open
from bigviz.strategies.weights import checksum
out = {}
for p in sorted(Path(sys.argv[1]).glob("*.safetensors")):
    with safe_open(str(p), framework="pt") as f:
        for k in f.keys():
            out[k] = checksum(f.get_tensor(k))
print(json.dumps(out))
"""


def saved_checksums(folder: Path) -> dict[str, list[int]]:
    """Checksums of every tensor of the safetensors files in ``folder``, computed in a
    fresh interpreter (no rank's memory holds the files).

    Raises:
        StrategyError: the files could not be read.

    Example:
        >>> # saved_checksums(Path("out/consolidated"))["lm_head.weight"]
    """
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run([sys.executable, "-c", _SAVED_SUMS, str(folder)], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise StrategyError(f"reading back the consolidated files in {folder} failed: "
                            f"{done.stderr.strip()[-1000:]}")
    sums: dict[str, list[int]] = json.loads(done.stdout)
    return sums


class DcpConsolidate(DistStrategy):
    """Consolidate a DCP checkpoint into full-tensor Hugging Face safetensors files with
    torch's own consolidation (:mod:`torch.distributed.checkpoint._consolidate_hf_safetensors`),
    each rank writing its share of the output files."""

    name = "dcp-consolidate"
    description = ("torch.distributed.checkpoint's consolidation of a DCP safetensors "
                   "checkpoint into full-tensor HF files; file i written by rank i % N")
    phases: ClassVar[tuple[str, ...]] = ("read metadata", "consolidate <file>",
                                         "write index", "first use", "loaded")
    formats = ("safetensors",)

    def warm_up(self, checkpoint: Path) -> None:
        """Import the consolidation code and safetensors (part of the baseline)."""
        import safetensors.torch  # noqa: F401
        import torch.distributed.checkpoint._consolidate_hf_safetensors  # noqa: F401

    def prepared(self, folder: Path) -> tuple[Path, str]:
        """The DCP safetensors copy of the prepared checkpoint ``folder`` (the input), and
        the code that saves it once, in a fresh process."""
        dest = Path(folder) / DCP_HF_DIR
        code = (f"from bigviz.strategies.dcp import save_dcp_hf; "
                f"save_dcp_hf({str(Path(folder) / 'checkpoint')!r}, {str(dest)!r})")
        return dest, code

    def _predict_rank(self, info: Any, rank: int, device_map: DeviceMap, *, nproc: int,
                      per_rank: str) -> Prediction:
        files = set(_rank_files(info, rank, nproc))
        sizes = sorted((int(t.nbytes) for t in info.tensors.values() if t.shard in files),
                       reverse=True)
        t = sizes[0] if sizes else 0
        t2 = sizes[1] if len(sizes) > 1 else 0
        return Prediction(
            ram_peak=2 * t, formula="2 × T", ram_anon=2 * t, ram_file=0,
            low=2 * t, high=2 * t + 3 * t2, low_formula="2 × T",
            high_formula="2 × T + 3 × T₂",
            width="one tensor at a time: its full-size buffer and the item read into it "
                  "(2 T; the DCP copy holds whole tensors); the streaming of the smaller "
                  "tensors peaks at 3 × T₂ (a buffer and item still referenced when the "
                  "next buffer is allocated), which glibc's heap keeps after free; the "
                  "files themselves are read() and write()n, page cache only",
            above="more than two full tensors: a whole file or the state dict was held",
            below="less than a full tensor and its item: the rank wrote no file",
            notes=f"rank {rank}: writes {len(files)} of {len(_output_files(info))} files; "
                  f"T = {t} (its largest tensor), T₂ = {t2} (its second largest)")

    def _predict_node(self, info: Any, device_map: DeviceMap, *, nproc: int,
                      per_rank: str) -> Prediction:
        parts = self._rank_parts(info, nproc)
        return node_sum(
            parts, formula="Σ ranks 2 × T_r", high_formula="Σ ranks (2 × T_r + 3 × T₂_r)",
            low=max((p.bounds[0] for p in parts), default=0), low_formula="max 2 × T_r",
            width="the ranks stream their own files; their peaks need not coincide",
            above="more than every rank's two largest tensors: a file was held whole",
            below="no rank held a full tensor",
            notes=f"N = {nproc}; independent of M: consolidation streams tensor by tensor")

    def run_rank(self, ctx: DistContext) -> nn.Module:
        import json

        import torch.distributed as dist
        from torch import nn
        from torch.distributed.checkpoint._consolidate_hf_safetensors import (
            _consolidate_safetensors_files,
        )

        src = ctx.checkpoint.parent / DCP_HF_DIR
        dest = self._dest(ctx)
        try:
            with ctx.phase("read metadata", folder=str(src), how="safetensors headers and "
                           "DCP sharding metadata"):
                check_dcp_hf(src, ctx.info)
            if ctx.rank == 0:
                dest.mkdir(parents=True, exist_ok=True)
            dist.barrier(group=ctx.group)
            for name in _rank_files(ctx.info, ctx.rank, ctx.world_size):
                keys = [k for k, t in ctx.info.tensors.items() if t.shard == name]
                with ctx.phase(f"consolidate {name}", tensors=len(keys),
                               how="_consolidate_safetensors_files"):
                    _consolidate_safetensors_files(str(src), str(dest),
                                                   dict.fromkeys(keys, name), 1)
            dist.barrier(group=ctx.group)  # every file is written
            if ctx.rank == 0:
                with ctx.phase("write index", file="model.safetensors.index.json"):
                    index = {"metadata": {"total_size": model_size(ctx.info)},
                             "weight_map": {k: str(t.shard)
                                            for k, t in sorted(ctx.info.tensors.items())}}
                    (dest / "model.safetensors.index.json").write_text(
                        json.dumps(index, indent=2), encoding="utf-8")
        except BaseException:
            if ctx.rank == 0:
                shutil.rmtree(dest, ignore_errors=True)
            raise
        return nn.Module()  # nothing is loaded: the files are the result

    @staticmethod
    def _dest(ctx: DistContext) -> Path:
        return ctx.scratch.parent / "consolidated"  # shared by the ranks of this run

    def rank_first_use(self, ctx: DistContext, model: nn.Module) -> dict[str, list[int]]:
        """Checksums of the consolidated files, read by rank 0 in a fresh interpreter and
        sent to every rank (a collective); the files are removed afterwards."""
        import torch.distributed as dist

        dest = self._dest(ctx)
        box: list[Any] = [None]
        try:
            if ctx.rank == 0:
                try:
                    box[0] = saved_checksums(dest)
                except StrategyError as exc:
                    box[0] = str(exc)
            dist.broadcast_object_list(box, src=0, group=ctx.group)
        finally:
            if ctx.rank == 0:
                shutil.rmtree(dest, ignore_errors=True)
        if isinstance(box[0], str):
            raise StrategyError(box[0])
        sums: dict[str, list[int]] = box[0]
        # a tied weight is stored once; report it under each of its names (meta build)
        meta = build_model(ctx.model, dtype=ctx.dtype, factory=ctx.factory, device="meta")
        aliases: dict[int, list[str]] = {}
        for key, t in meta.state_dict(keep_vars=True).items():
            aliases.setdefault(id(t), []).append(key)
        for names in aliases.values():
            found = [n for n in names if n in sums]
            for n in names:
                if found and n not in sums:
                    sums[n] = sums[found[0]]
        return sums
