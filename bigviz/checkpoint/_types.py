"""Plain-data results of the checkpoint functions (JSON round-trip through bigviz.data.serde)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bigviz.units import format_size

__all__ = ["CheckpointInfo", "LoadReport", "PlannedShard", "ShardInfo", "ShardPlan", "TensorInfo"]


@dataclass
class TensorInfo:
    """One tensor as stored: its shard file, dtype name (``"float32"``), shape, bytes."""

    shard: str
    dtype: str
    shape: list[int]
    nbytes: int


@dataclass
class ShardInfo:
    """One weight file of a checkpoint.

    Attributes:
        name: file name inside the checkpoint folder.
        bytes: tensor bytes held (unique storages for ``.bin``).
        file_size: size of the file on disk.
        n_keys: number of tensor names stored in the file.
    """

    name: str
    bytes: int
    file_size: int
    n_keys: int


@dataclass
class CheckpointInfo:
    """What a checkpoint folder holds, read from headers only.

    Attributes:
        path: the checkpoint folder (absolute).
        format: ``"safetensors"`` or ``"bin"``.
        files: weight files in shard order.
        index_file: name of the index file, ``None`` for a single file.
        total_size: unique tensor bytes in the files (an index's ``metadata.total_size``
            is checked against it, never trusted: a difference is in ``notes``).
        n_tensors: number of tensor names.
        largest_shard: tensor bytes of the largest file.
        dtypes: bytes per dtype name.
        tensors: every tensor name -> TensorInfo.
        module_sizes: ``{"": total, "transformer": …, "transformer.h.0": …}`` as in
            accelerate's ``compute_module_sizes`` (tensor names included).
        tied: groups of names stored once (shared storage in ``.bin``; names recorded as
            aliases in the metadata of safetensors files written by huggingface_hub/bigviz).
        aliases: ``{dropped_name: stored_name}`` for names left out because they alias
            another tensor.
        metadata: string metadata (index metadata minus ``total_size``, or the file header's).
        notes: things worth knowing that are not errors.
        unindexed: tensors stored in a shard but absent from the index, name -> shard
            file: not part of the checkpoint (not loaded; a model that needs one is told).
    """

    path: str
    format: str
    files: list[ShardInfo]
    index_file: str | None
    total_size: int
    n_tensors: int
    largest_shard: int
    dtypes: dict[str, int]
    tensors: dict[str, TensorInfo]
    module_sizes: dict[str, int]
    tied: list[list[str]] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    unindexed: dict[str, str] = field(default_factory=dict)

    @property
    def n_shards(self) -> int:
        """Number of weight files."""
        return len(self.files)

    def shard_paths(self) -> list[Path]:
        """Absolute paths of the weight files, in shard order.

        Example:
            >>> # for f in info.shard_paths(): sd = safetensors.torch.load_file(f)
        """
        return [Path(self.path) / f.name for f in self.files]

    def keys_by_shard(self) -> dict[str, list[str]]:
        """Tensor names per shard file name, in shard order."""
        out: dict[str, list[str]] = {f.name: [] for f in self.files}
        for key, t in self.tensors.items():
            out.setdefault(t.shard, []).append(key)
        return out

    def rows(self) -> list[dict[str, str | int]]:
        """One dict per file (name, bytes, file_size, n_keys, size) for a table."""
        return [
            {
                "name": f.name,
                "bytes": f.bytes,
                "file_size": f.file_size,
                "n_keys": f.n_keys,
                "size": format_size(f.bytes),
            }
            for f in self.files
        ]

    def summary(self) -> str:
        """A short human-readable description.

        Example:
            >>> # print(bigviz.inspect_checkpoint("ckpt/").summary())
        """
        dts = ", ".join(f"{k} {format_size(v)}" for k, v in sorted(self.dtypes.items()))
        lines = [
            f"{self.path}: {self.format}, {self.n_shards} file(s), {self.n_tensors} tensors, "
            f"{format_size(self.total_size)} total, "
            f"largest shard {format_size(self.largest_shard)}",
            f"  dtypes: {dts or '—'}",
        ]
        top = sorted(
            ((k, v) for k, v in self.module_sizes.items() if k and "." not in k),
            key=lambda kv: -kv[1],
        )[:8]
        if top:
            lines.append("  modules: " + ", ".join(f"{k} {format_size(v)}" for k, v in top))
        if self.tied:
            lines.append("  tied: " + "; ".join(" = ".join(g) for g in self.tied))
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


@dataclass
class PlannedShard:
    """One shard of a ShardPlan: its tensor names (in state-dict order) and unique bytes."""

    keys: list[str]
    bytes: int


@dataclass
class ShardPlan:
    """How a state dict splits into shards (huggingface_hub's rule), without any I/O."""

    shards: list[PlannedShard]
    total_size: int
    max_shard_size: int

    @property
    def n_shards(self) -> int:
        """Number of shard files."""
        return len(self.shards)

    @property
    def largest_shard(self) -> int:
        """Bytes of the largest shard (0 when empty)."""
        return max((s.bytes for s in self.shards), default=0)

    def filenames(self, format: str = "safetensors") -> list[str]:
        """File names for ``format`` (``"safetensors"`` or ``"bin"``), in shard order.

        Example:
            >>> ShardPlan([PlannedShard(["a"], 4), PlannedShard(["b"], 4)], 8, 4).filenames("bin")
            ['pytorch_model-00001-of-00002.bin', 'pytorch_model-00002-of-00002.bin']
        """
        from bigviz.checkpoint._format import PATTERNS, shard_filename

        if format not in PATTERNS:
            from bigviz._errors import ConfigError

            raise ConfigError(f"format {format!r} is not 'safetensors' or 'bin'")
        n = max(len(self.shards), 1)
        return [shard_filename(format, i, n) for i in range(len(self.shards))]

    def weight_map(self, format: str = "safetensors") -> dict[str, str]:
        """``{tensor name: file name}`` as the index would hold it (sorted by name)."""
        names = self.filenames(format)
        return dict(sorted((k, names[i]) for i, s in enumerate(self.shards) for k in s.keys))


@dataclass
class LoadReport:
    """What ``load_sharded`` did.

    Attributes:
        missing_keys: model names the checkpoint did not provide (tied copies excluded).
        unexpected_keys: checkpoint names the model does not have (not read).
        loaded_keys: number of model names filled.
        bytes_read: tensor bytes read from disk.
        files: weight files read, in order.
        seconds: wall time of the load.
        still_meta: parameters and buffers still on the meta device afterwards (e.g.
            non-persistent buffers a meta-built model must compute itself).
        notes: what was not loaded and why (a missing key stored in a shard the index
            does not list it in).
    """

    missing_keys: list[str]
    unexpected_keys: list[str]
    loaded_keys: int = 0
    bytes_read: int = 0
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    still_meta: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
