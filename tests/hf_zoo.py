"""Real Transformers checkpoints for tests, built from configs (random init, no download).

``save_hf(kind, folder, size=...)`` writes what ``save_pretrained`` writes for a GPT-2,
Llama, BERT or T5 model of about ``size`` bytes; ``hub_cache(home, repo, folder)`` lays
a folder out as a model in huggingface_hub's cache (``refs/``, ``snapshots/``, ``blobs/``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import torch

KINDS = ("gpt2", "llama", "bert", "t5")


def config(kind: str, size: int = 2_000_000) -> Any:
    """A config of ``kind`` whose fp32 weights are roughly ``size`` bytes."""
    import transformers

    # width d, layers L: ~12·d²·L block bytes/4; a vocabulary of 1024 adds 4·1024·d bytes
    d = 64
    while 4 * (12 * d * d * 2 + 1024 * d) < size and d < 2048:
        d += 64
    layers = max(2, min(8, size // (4 * (12 * d * d + 1024 * d) // 1)))
    heads = max(1, d // 64)
    if kind == "gpt2":
        return transformers.GPT2Config(n_layer=layers, n_embd=d, n_head=heads, vocab_size=1024,
                                       n_positions=64, bos_token_id=0, eos_token_id=0)
    if kind == "llama":
        return transformers.LlamaConfig(hidden_size=d, intermediate_size=4 * d,
                                        num_hidden_layers=layers, num_attention_heads=heads,
                                        num_key_value_heads=heads, vocab_size=1024,
                                        max_position_embeddings=64, tie_word_embeddings=False)
    if kind == "bert":
        return transformers.BertConfig(hidden_size=d, intermediate_size=4 * d,
                                       num_hidden_layers=layers, num_attention_heads=heads,
                                       vocab_size=1024, max_position_embeddings=64)
    if kind == "t5":
        return transformers.T5Config(d_model=d, d_ff=4 * d, d_kv=64, num_layers=layers,
                                     num_decoder_layers=layers, num_heads=heads, vocab_size=1024)
    raise ValueError(kind)


def model_class(kind: str) -> Any:
    import transformers

    return {
        "gpt2": transformers.GPT2LMHeadModel,
        "llama": transformers.LlamaForCausalLM,
        "bert": transformers.BertModel,
        "t5": transformers.T5ForConditionalGeneration,
    }[kind]


def save_hf(kind: str, folder: Path, *, size: int = 2_000_000, max_shard_size: str = "1MB",
            seed: int = 0) -> torch.nn.Module:
    """Build a ``kind`` model with random weights and ``save_pretrained`` it sharded."""
    torch.manual_seed(seed)
    model = model_class(kind)(config(kind, size)).eval()
    model.save_pretrained(folder, max_shard_size=max_shard_size)
    return model


def hub_cache(home: Path, repo: str, folder: Path, *, revision: str = "main") -> Path:
    """Lay ``folder``'s files out as ``repo`` at ``revision`` in a hub cache under
    ``home`` (the ``HF_HOME``), the way huggingface_hub stores a download: content in
    ``blobs/``, ``snapshots/COMMIT/`` of relative symlinks, ``refs/REVISION`` = COMMIT.
    Returns the snapshot folder."""
    storage = home / "hub" / ("models--" + repo.replace("/", "--"))
    commit = hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()
    snap = storage / "snapshots" / commit
    (storage / "blobs").mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True, exist_ok=True)
    for f in sorted(folder.iterdir()):
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        blob = storage / "blobs" / digest
        if not blob.exists():
            shutil.copyfile(f, blob)
        link = snap / f.name
        if not link.exists():
            os.symlink(os.path.relpath(blob, snap), link)
    (storage / "refs").mkdir(exist_ok=True)
    (storage / "refs" / revision).write_text(commit)
    return snap


def user_gpt2(tmp_path_factory: Any, *, size: int, max_shard_size: str) -> Path:
    """A GPT-2 of about ``size`` bytes that Transformers' ``save_pretrained`` wrote into a
    fresh ``user/my-gpt2`` folder in ``max_shard_size`` safetensors shards (with an index
    when there are several): the folder a user already has (a module fixture's body)."""
    folder = Path(tmp_path_factory.mktemp("user")) / "my-gpt2"
    save_hf("gpt2", folder, size=size, max_shard_size=max_shard_size)
    return folder


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every entry under ``folder`` with its size and modification time (links followed),
    and the folder's own listing size and mtime: equal snapshots mean nothing was written."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root) / name
            st = p.stat()
            out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns)
    st = folder.stat()
    out["."] = (len(os.listdir(folder)), st.st_mtime_ns)
    return out


def file_checksums(folder: Path) -> dict[str, list[int]]:
    """Each tensor's checksum, read here from the folder's files with safetensors
    (``*.safetensors``) or torch (``*.bin``)."""
    from safetensors.torch import load_file

    from bigviz.strategies.weights import checksum

    sums: dict[str, list[int]] = {}
    for f in sorted(folder.iterdir()):
        if f.suffix == ".safetensors":
            sums.update({k: checksum(v) for k, v in load_file(f).items()})
        elif f.suffix == ".bin":
            sd = torch.load(f, map_location="cpu", weights_only=True)
            sums.update({k: checksum(v) for k, v in sd.items()})
    return sums


def cached_llama(tmp_path: Path, monkeypatch: Any, *, size: int,
                 max_shard_size: str) -> tuple[Path, Path]:
    """A Llama (rotary buffers computed, not saved) of about ``size`` bytes, saved under
    ``tmp_path`` and laid out as ``acme/tiny-llama`` in a hub cache there, which
    ``HF_HOME`` now names (``monkeypatch`` undoes it). Returns ``(home, snapshot)``."""
    src = tmp_path / "llama"
    save_hf("llama", src, size=size, max_shard_size=max_shard_size)
    home = tmp_path / "hf-home"
    snap = hub_cache(home, "acme/tiny-llama", src)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    return home, snap
