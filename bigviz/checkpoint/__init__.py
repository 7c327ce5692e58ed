"""Sharded checkpoints: save, inspect, validate, load and reshard — byte-compatible with
Transformers and huggingface_hub.

Example:
    >>> # info = bigviz.save_sharded(model, "ckpt/", max_shard_size="200MB")
    >>> # bigviz.inspect_checkpoint("ckpt/").summary()
    >>> # bigviz.load_sharded(model, "ckpt/", strict=True)
    >>> # bigviz.checkpoint.reshard("ckpt/", "ckpt-2gb/", max_shard_size="2GB")
"""

from __future__ import annotations

from bigviz.checkpoint._inspect import inspect_checkpoint, validate_checkpoint
from bigviz.checkpoint._load import load_sharded
from bigviz.checkpoint._plan import plan_shards
from bigviz.checkpoint._reshard import reshard
from bigviz.checkpoint._save import save_sharded
from bigviz.checkpoint._types import (
    CheckpointInfo,
    LoadReport,
    PlannedShard,
    ShardInfo,
    ShardPlan,
    TensorInfo,
)

__all__ = [
    "CheckpointInfo",
    "LoadReport",
    "PlannedShard",
    "ShardInfo",
    "ShardPlan",
    "TensorInfo",
    "inspect_checkpoint",
    "load_sharded",
    "plan_shards",
    "reshard",
    "save_sharded",
    "validate_checkpoint",
]
