"""bigviz.checkpoint: layout, atomic saves, safety, validation and loading.

Real tensors, real files, real processes. Interop with Transformers / huggingface_hub is in
test_checkpoint_interop.py, property tests in test_checkpoint_props.py.
"""

from __future__ import annotations

import errno
import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import bigviz
from bigviz import CheckpointError, ConfigError
from bigviz.checkpoint import (
    CheckpointInfo,
    LoadReport,
    ShardPlan,
    inspect_checkpoint,
    load_sharded,
    plan_shards,
    save_sharded,
    validate_checkpoint,
)


class Net(nn.Module):
    """A small model with a tied weight (like an LM head tied to the embedding)."""

    def __init__(self, vocab: int = 64, width: int = 32, layers: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.embed.weight
        self.register_buffer("steps", torch.arange(5, dtype=torch.int64))


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa
    )


def files_of(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


@pytest.fixture
def net() -> Net:
    torch.manual_seed(0)
    return Net()


# ------------------------------------------------------------------------------------------
# layout


def test_sharded_layout_names_index_and_metadata(tmp_path: Path, net: Net) -> None:
    # GIVEN a model of ~14 KB with a tied head  WHEN saved in 5 kB shards
    info = save_sharded(net, tmp_path / "ck", max_shard_size="5kB")
    ck = tmp_path / "ck"
    # THEN files are model-0000i-of-0000n.safetensors plus a sorted index
    n = info.n_shards
    assert n > 1
    names = sorted(p.name for p in ck.iterdir())
    assert names == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)] + [
        "model.safetensors.index.json"
    ]
    text = (ck / "model.safetensors.index.json").read_text()
    index = json.loads(text)
    assert text.endswith("}\n")
    assert list(index["weight_map"]) == sorted(index["weight_map"])
    # the tied head is stored once: total_size counts unique bytes
    sd = net.state_dict()
    unique = sum(v.nbytes for k, v in sd.items() if k != "head.weight")
    assert index["metadata"]["total_size"] == unique == info.total_size
    assert "head.weight" not in index["weight_map"]
    assert index["metadata"]["head.weight"] == "embed.weight"
    # every safetensors file says format=pt (what Transformers checks)
    from safetensors import safe_open

    for p in info.shard_paths():
        with safe_open(str(p), framework="pt") as f:
            assert f.metadata() == {"format": "pt"}
    assert info.shard_paths()[0].name == f"model-00001-of-{n:05d}.safetensors"


def test_single_shard_keeps_plain_name_and_writes_no_index(tmp_path: Path, net: Net) -> None:
    info = save_sharded(net, tmp_path / "a", metadata={"note": "hi"})
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["model.safetensors"]
    assert info.index_file is None and info.n_shards == 1
    assert info.metadata["note"] == "hi"
    info_bin = save_sharded(net, tmp_path / "b", format="bin")
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["pytorch_model.bin"]
    assert info_bin.format == "bin"
    # .bin keeps both tied names (torch.save stores the storage once)
    assert ["embed.weight", "head.weight"] in info_bin.tied


def test_oversize_tensor_gets_its_own_shard() -> None:
    plan = plan_shards({"a": 3, "big": 50, "b": 3, "c": 5}, 10)
    assert [s.keys for s in plan.shards] == [["big"], ["a", "b"], ["c"]]
    assert plan.largest_shard == 50 and plan.total_size == 61 and plan.n_shards == 3
    assert plan.filenames("bin")[0] == "pytorch_model-00001-of-00003.bin"
    assert plan.weight_map()["c"] == "model-00003-of-00003.safetensors"


def test_plan_decimal_and_binary_sizes_differ() -> None:
    sizes = {"a": 1000, "b": 24}
    assert plan_shards(sizes, "1kB").n_shards == 2  # 1000 + 24 > 1000
    assert plan_shards(sizes, "1KiB").n_shards == 1  # 1024
    with pytest.raises(bigviz.SizeError):
        plan_shards(sizes, "1 kilobyte")


def test_plan_of_meta_module_counts_tied_weight_once() -> None:
    with torch.device("meta"):
        model = Net()
    plan = plan_shards(model, "1GB")
    expected = (
        sum(p.nelement() * p.element_size() for p in model.parameters())
        + model.steps.nelement() * 8
    )
    assert plan.total_size == expected


def test_module_sizes_match_accelerate(tmp_path: Path) -> None:
    from accelerate.utils import compute_module_sizes

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Sequential(nn.Linear(16, 4), nn.LayerNorm(4)))
    info = save_sharded(model, tmp_path / "ck", max_shard_size=300)
    assert info.module_sizes == dict(compute_module_sizes(model))


# ------------------------------------------------------------------------------------------
# atomic saves


def test_refuses_non_empty_folder_unless_overwrite(tmp_path: Path, net: Net) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="overwrite=True"):
        save_sharded(net, ck)
    assert files_of(ck) == {"notes.txt": b"mine"}
    # overwrite replaces the weights (no stale shards) and keeps the other files
    save_sharded(net, ck, max_shard_size="5kB", overwrite=True)
    assert len(list(ck.glob("model-*.safetensors"))) > 1
    save_sharded(net, ck, overwrite=True)
    assert sorted(files_of(ck)) == ["model.safetensors", "notes.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("exchange", [True, False])
def test_save_through_symlinked_folder_writes_into_its_target(
    tmp_path: Path, net: Net, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    from bigviz.checkpoint import _staging

    if not exchange:
        monkeypatch.setattr(_staging, "_exchange", lambda a, b: False)
    # GIVEN a checkpoint on a "big disk" and a link to it elsewhere
    (tmp_path / "disk").mkdir()
    (tmp_path / "links").mkdir()
    real = tmp_path / "disk" / "ck"
    save_sharded({"old": torch.ones(3)}, real)
    link = tmp_path / "links" / "ck"
    link.symlink_to(real, target_is_directory=True)
    # WHEN the new checkpoint is saved through the link
    info = save_sharded(net, link, overwrite=True)
    # THEN the real folder holds it, the link is still a link, and nothing is left over
    assert link.is_symlink() and Path(info.path) == real.resolve()
    assert "old" not in inspect_checkpoint(real).tensors
    assert inspect_checkpoint(link).n_tensors == info.n_tensors
    assert sorted(p.name for p in (tmp_path / "links").iterdir()) == ["ck"]
    assert sorted(p.name for p in (tmp_path / "disk").iterdir()) == ["ck"]


@pytest.mark.parametrize("exchange", [True, False])
def test_overwrite_replaces_other_format_and_keeps_config(
    tmp_path: Path, net: Net, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    from bigviz.checkpoint import _staging

    if not exchange:  # filesystems without renameat2(RENAME_EXCHANGE): two renames
        monkeypatch.setattr(_staging, "_exchange", lambda a, b: False)
    ck = tmp_path / "ck"
    save_sharded(net, ck, format="bin", max_shard_size="5kB")
    (ck / "config.json").write_text('{"a": 1}')
    (ck / "sub").mkdir()
    (ck / "sub" / "tok.txt").write_text("t")
    info = save_sharded(net, ck, overwrite=True)
    assert info.format == "safetensors" and info.notes == []
    assert sorted(p.name for p in ck.iterdir()) == ["config.json", "model.safetensors", "sub"]
    assert (ck / "sub" / "tok.txt").read_text() == "t"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_failure_mid_save_keeps_old_checkpoint(
    tmp_path: Path, net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an existing checkpoint
    ck = tmp_path / "ck"
    save_sharded(net, ck, max_shard_size="5kB")
    before = files_of(ck)
    # WHEN the disk fills up while the second shard of a new save is written
    from bigviz.checkpoint import _save

    real = _save._write_shard
    calls = []

    def flaky(fmt: str, tensors: dict[str, torch.Tensor], path: Path, meta: dict[str, str]) -> None:
        calls.append(path.name)
        if len(calls) == 2:
            path.write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(fmt, tensors, path, meta)

    monkeypatch.setattr(_save, "_write_shard", flaky)
    with torch.no_grad():
        net.embed.weight.add_(1.0)
    with pytest.raises(CheckpointError, match="No space left") as err:
        save_sharded(net, ck, max_shard_size="5kB", overwrite=True)
    # THEN the error says the old checkpoint is untouched, and it is; nothing else is left
    assert "untouched" in str(err.value)
    assert files_of(ck) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


@pytest.mark.slow
def test_real_file_size_limit_in_child_process(tmp_path: Path, net: Net) -> None:
    # A real out-of-space condition: the child may write at most 64 KiB per file.
    ck = tmp_path / "ck"
    save_sharded(net, ck)
    before = files_of(ck)
    script = textwrap.dedent(
        f"""
        import resource, signal, torch
        from bigviz import save_sharded, CheckpointError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        sd = {{"w": torch.ones(100_000)}}  # 400 kB > 64 KiB
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
        try:
            save_sharded(sd, {str(ck)!r}, overwrite=True)
        except CheckpointError as e:
            print("REFUSED", e)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert "REFUSED" in out.stdout, out.stderr
    assert files_of(ck) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_save_rejects_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="empty"):
        save_sharded({}, tmp_path / "a")
    with pytest.raises(ConfigError, match="'x'"):
        save_sharded({"x": [1, 2]}, tmp_path / "a")  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="meta"):
        save_sharded({"x": torch.empty(3, device="meta")}, tmp_path / "a")
    with pytest.raises(ConfigError, match="reserved"):
        save_sharded({"x": torch.ones(2)}, tmp_path / "a", metadata={"format": "np"})
    with pytest.raises(ConfigError, match="'npz'"):
        save_sharded({"x": torch.ones(2)}, tmp_path / "a", format="npz")  # type: ignore[arg-type]
    (tmp_path / "f").write_text("x")
    with pytest.raises(CheckpointError, match="not a folder"):
        save_sharded({"x": torch.ones(2)}, tmp_path / "f")
    assert not (tmp_path / "a").exists()


# ------------------------------------------------------------------------------------------
# loading


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
@pytest.mark.parametrize("assign", [False, True])
def test_round_trip_keeps_weights_and_ties(
    tmp_path: Path, net: Net, fmt: str, assign: bool
) -> None:
    save_sharded(net, tmp_path / "ck", max_shard_size="5kB", format=fmt)  # type: ignore[arg-type]
    if assign:
        with torch.device("meta"):
            fresh = Net()
    else:
        torch.manual_seed(1)
        fresh = Net()
    report = load_sharded(fresh, tmp_path / "ck", assign=assign)
    assert isinstance(report, LoadReport)
    assert report.missing_keys == [] and report.unexpected_keys == []
    assert report.still_meta == []
    assert same_weights(net, fresh)
    assert fresh.head.weight is fresh.embed.weight
    assert fresh.embed.weight.requires_grad and not any(
        t.is_meta for t in fresh.state_dict().values()
    )
    assert report.files == [p.name for p in inspect_checkpoint(tmp_path / "ck").shard_paths()]


@pytest.mark.parametrize("chunk", [7, 512, 1 << 20])
@pytest.mark.parametrize("threads", [1, 3])
def test_batched_threaded_reads_are_exact(
    tmp_path: Path, net: Net, monkeypatch: pytest.MonkeyPatch, chunk: int, threads: int
) -> None:
    # Small read chunks force reads split across tensors and threads (as with big files).
    from bigviz.checkpoint import _load

    monkeypatch.setattr(_load, "_CHUNK", chunk)
    save_sharded(net, tmp_path / "ck", max_shard_size="5kB")
    for assign in (False, True):
        if assign:
            with torch.device("meta"):
                fresh = Net()
        else:
            torch.manual_seed(1)
            fresh = Net()
        report = load_sharded(fresh, tmp_path / "ck", assign=assign, threads=threads)
        assert same_weights(net, fresh)
        assert report.bytes_read == inspect_checkpoint(tmp_path / "ck").total_size


def test_reader_handles_more_buffers_than_iov_max(tmp_path: Path) -> None:
    from bigviz.checkpoint._load import read_into

    data = os.urandom(3 * 3000 + 100)
    (tmp_path / "f").write_bytes(data)
    bufs = [bytearray(3) for _ in range(3000)]
    pieces = [(100 + 3 * i, memoryview(b)) for i, b in enumerate(bufs)]
    assert read_into(tmp_path / "f", pieces[::-1], threads=2) == 9000
    assert b"".join(bufs) == data[100:]


def test_assign_gives_each_tensor_its_own_storage(tmp_path: Path, net: Net) -> None:
    # A loaded weight must not pin a whole shard (torch.save of one weight saves its storage).
    save_sharded(net, tmp_path / "ck")
    with torch.device("meta"):
        fresh = Net()
    load_sharded(fresh, tmp_path / "ck", assign=True)
    w = fresh.blocks[0].weight
    assert w.untyped_storage().nbytes() == w.nelement() * w.element_size()


def test_strict_mismatch_fails_before_touching_the_model(tmp_path: Path, net: Net) -> None:
    save_sharded(net, tmp_path / "ck")
    torch.manual_seed(1)
    other = Net(layers=4)  # one block more: 2 missing keys
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"blocks\.3\.weight"):
        load_sharded(other, tmp_path / "ck")
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())
    # non-strict loads what matches and reports the rest
    report = load_sharded(other, tmp_path / "ck", strict=False)
    assert report.missing_keys == ["blocks.3.bias", "blocks.3.weight"]
    assert torch.equal(other.blocks[0].weight, net.blocks[0].weight)


def test_unexpected_keys_are_listed_and_not_read(tmp_path: Path, net: Net) -> None:
    save_sharded(net, tmp_path / "ck")
    torch.manual_seed(1)
    smaller = Net(layers=2)
    report = load_sharded(smaller, tmp_path / "ck", strict=False)
    assert report.unexpected_keys == ["blocks.2.bias", "blocks.2.weight"]
    info = inspect_checkpoint(tmp_path / "ck")
    skipped = info.tensors["blocks.2.bias"].nbytes + info.tensors["blocks.2.weight"].nbytes
    assert report.bytes_read == info.total_size - skipped


def test_shape_and_dtype_mismatch_name_file_and_key(tmp_path: Path, net: Net) -> None:
    save_sharded(net, tmp_path / "ck")
    wide = Net(width=16)
    with pytest.raises(CheckpointError, match=r"model.safetensors: 'blocks.0.weight' has shape"):
        validate_checkpoint(tmp_path / "ck", wide)
    half = Net().to(torch.float16)
    with pytest.raises(CheckpointError, match=r"'blocks.0.weight' is float32 .* float16"):
        load_sharded(half, tmp_path / "ck")
    load_sharded(half, tmp_path / "ck", allow_dtype_cast=True)
    assert torch.equal(half.blocks[0].weight, net.blocks[0].weight.half())


def test_meta_model_needs_assign(tmp_path: Path, net: Net) -> None:
    save_sharded(net, tmp_path / "ck")
    with torch.device("meta"):
        fresh = Net()
    with pytest.raises(CheckpointError, match="assign=True"):
        load_sharded(fresh, tmp_path / "ck")
    # a non-persistent buffer is not in any checkpoint: the report says it is still meta
    fresh.register_buffer("cache", torch.empty(3, device="meta"), persistent=False)
    report = load_sharded(fresh, tmp_path / "ck", assign=True)
    assert report.still_meta == ["cache"]


def test_alias_recorded_in_metadata_fills_untied_model(tmp_path: Path) -> None:
    # A checkpoint saved from a tied model loads into an untied one: the dropped name is
    # filled from the stored one through the metadata alias.
    torch.manual_seed(0)
    tied = Net()
    save_sharded(tied, tmp_path / "ck", max_shard_size="5kB")

    class Untied(Net):
        def __init__(self) -> None:
            super().__init__()
            self.head.weight = nn.Parameter(torch.zeros_like(self.embed.weight))

    untied = Untied()
    report = load_sharded(untied, tmp_path / "ck")
    assert report.missing_keys == []
    assert torch.equal(untied.head.weight, tied.embed.weight)
    assert untied.head.weight.data_ptr() != untied.embed.weight.data_ptr()


# ------------------------------------------------------------------------------------------
# safety: nothing executed


#: the global _Evil's pickle asks for (what torch.load's refusal must name)
_EVIL_GLOBAL = "io.open"


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path: Path, net: Net) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    marker = tmp_path / "pwned"
    torch.save({"w": torch.ones(2), "evil": _Evil(str(marker))}, ck / "pytorch_model.bin")
    for call in (
        lambda: inspect_checkpoint(ck),
        lambda: validate_checkpoint(ck),
        lambda: load_sharded(net, ck),
    ):
        with pytest.raises(CheckpointError, match="refused to unpickle") as err:
            call()
        assert "pytorch_model.bin" in str(err.value)
        # the message names what the pickle asked for, not torch's documentation link
        assert f"asks to call {_EVIL_GLOBAL}" in str(err.value)
        assert "http" not in str(err.value)
        assert not marker.exists()
    # the payload is real: an unrestricted torch.load would have run it
    unsafe = torch.load(ck / "pytorch_model.bin", weights_only=False)
    unsafe["evil"].close()
    assert marker.exists()


def test_bin_with_non_tensor_values_is_refused(tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    torch.save({"w": torch.ones(2), "step": 3}, ck / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="'step' is a int, not a tensor"):
        inspect_checkpoint(ck)


# ------------------------------------------------------------------------------------------
# validation: every bad input names file and key


@pytest.fixture
def sharded(tmp_path: Path, net: Net) -> Path:
    ck = tmp_path / "ck"
    save_sharded(net, ck, max_shard_size="5kB")
    return ck


def _index(ck: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((ck / "model.safetensors.index.json").read_text())
    return data


def _write_index(ck: Path, data: object) -> None:
    (ck / "model.safetensors.index.json").write_text(json.dumps(data))


def test_missing_shard(sharded: Path) -> None:
    (sharded / "model-00002-of-00004.safetensors").unlink()
    with pytest.raises(
        CheckpointError, match=r"shard 'model-00002-of-00004.safetensors' .* missing"
    ):
        validate_checkpoint(sharded)


def test_truncated_safetensors(sharded: Path) -> None:
    p = sharded / "model-00003-of-00004.safetensors"
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=r"model-00003-of-00004.safetensors: truncated"):
        validate_checkpoint(sharded)
    p.write_bytes(b"\x01\x00")
    with pytest.raises(CheckpointError, match=r"00003-of-00004.safetensors: truncated"):
        inspect_checkpoint(sharded)


def test_corrupt_safetensors_header(sharded: Path) -> None:
    p = sharded / "model-00001-of-00004.safetensors"
    data = bytearray(p.read_bytes())
    data[8] = ord("[")  # header JSON no longer parses
    p.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"00001-of-00004.safetensors: corrupt"):
        validate_checkpoint(sharded)


def test_bad_offsets_name_the_key(tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    save_sharded({"a": torch.ones(4), "b": torch.ones(4)}, ck)
    p = ck / "model.safetensors"
    raw = p.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header["b"]["shape"] = [5]
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    p.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])
    with pytest.raises(CheckpointError, match=r"model.safetensors: tensor 'b' has offsets"):
        validate_checkpoint(ck)


def test_header_above_safetensors_limit(tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "model.safetensors").write_bytes(struct.pack("<Q", 100_000_001) + b"{}" + b" " * 6)
    with pytest.raises(CheckpointError, match=r"100,000,001 bytes is larger than the 100,000,000"):
        inspect_checkpoint(ck)


def test_bad_index_json(sharded: Path) -> None:
    (sharded / "model.safetensors.index.json").write_text('{"weight_map": {"a": ')
    with pytest.raises(
        CheckpointError, match=r"model.safetensors.index.json: index is not valid JSON"
    ):
        validate_checkpoint(sharded)
    _write_index(sharded, {"weight_map": ["a"]})
    with pytest.raises(CheckpointError, match="'weight_map' object"):
        validate_checkpoint(sharded)


@pytest.mark.parametrize(
    "bad", ["../outside.safetensors", "/etc/passwd.safetensors", "sub/../../x.safetensors"]
)
def test_weight_map_escaping_folder(sharded: Path, bad: str) -> None:
    data = _index(sharded)
    wm = data["weight_map"]
    assert isinstance(wm, dict)
    wm["embed.weight"] = bad
    _write_index(sharded, data)
    with pytest.raises(CheckpointError, match=r"'embed.weight' points to .*outside the checkpoint"):
        load_sharded(Net(), sharded)


def test_weight_map_name_with_nul_byte(sharded: Path) -> None:
    data = _index(sharded)
    wm = data["weight_map"]
    assert isinstance(wm, dict)
    wm["embed.weight"] = "model\u0000.safetensors"
    _write_index(sharded, data)
    with pytest.raises(CheckpointError, match=r"'embed.weight' points to .*NUL byte"):
        inspect_checkpoint(sharded)


def test_weight_map_with_wrong_extension(sharded: Path) -> None:
    data = _index(sharded)
    wm = data["weight_map"]
    assert isinstance(wm, dict)
    wm["embed.weight"] = "pytorch_model.bin"
    _write_index(sharded, data)
    with pytest.raises(CheckpointError, match=r"may only name '.safetensors' files"):
        inspect_checkpoint(sharded)


def test_symlink_out_of_folder(tmp_path: Path, sharded: Path) -> None:
    shard = sharded / "model-00001-of-00004.safetensors"
    outside = tmp_path / "elsewhere.safetensors"
    shard.rename(outside)
    shard.symlink_to(outside)
    with pytest.raises(CheckpointError, match=r"outside the checkpoint folder .*symlink"):
        validate_checkpoint(sharded)


def test_fifo_or_device_is_a_clear_error_not_a_hang(tmp_path: Path, net: Net) -> None:
    import signal

    def too_slow(signum: int, frame: object) -> None:
        raise TimeoutError("inspect_checkpoint blocked on a FIFO")

    # GIVEN a FIFO where a weight file would be, and a device instead of a folder
    ck = tmp_path / "ck"
    ck.mkdir()
    os.mkfifo(ck / "model.safetensors")
    old = signal.signal(signal.SIGALRM, too_slow)
    signal.setitimer(signal.ITIMER_REAL, 10.0)
    try:
        # WHEN they are inspected THEN each is a CheckpointError at once, no waiting
        with pytest.raises(CheckpointError, match="no checkpoint here"):
            inspect_checkpoint(ck)
        with pytest.raises(CheckpointError, match="not a checkpoint folder or file"):
            inspect_checkpoint(ck / "model.safetensors")
        with pytest.raises(CheckpointError, match="not a checkpoint folder or file"):
            inspect_checkpoint("/dev/null")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_hf_cache_snapshot_symlinks_are_allowed(tmp_path: Path, net: Net) -> None:
    # The Hugging Face cache links snapshots/<rev>/file -> ../../blobs/<hash>.
    repo = tmp_path / "models--org--tiny"
    snap = repo / "snapshots" / "abc123"
    (repo / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    save_sharded(net, tmp_path / "src")
    (tmp_path / "src" / "model.safetensors").rename(repo / "blobs" / "f00d")
    (snap / "model.safetensors").symlink_to(Path("../../blobs/f00d"))
    assert inspect_checkpoint(snap).n_tensors == len(net.state_dict()) - 1


def test_key_in_index_absent_from_shard(sharded: Path) -> None:
    data = _index(sharded)
    wm = data["weight_map"]
    assert isinstance(wm, dict)
    wm["ghost.weight"] = "model-00002-of-00004.safetensors"
    _write_index(sharded, data)
    with pytest.raises(
        CheckpointError, match=r"'ghost.weight' is listed in shard 'model-00002-of-00004"
    ):
        validate_checkpoint(sharded)


def test_empty_folder_and_no_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="empty"):
        inspect_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"no checkpoint here \(found: config.json\)"):
        inspect_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no such"):
        inspect_checkpoint(tmp_path / "nope")


def test_shards_without_index(sharded: Path) -> None:
    (sharded / "model.safetensors.index.json").unlink()
    with pytest.raises(CheckpointError, match="index is missing"):
        inspect_checkpoint(sharded)


def test_both_formats_present_prefers_safetensors(tmp_path: Path, net: Net) -> None:
    ck = tmp_path / "ck"
    save_sharded(net, ck)
    save_sharded(net, tmp_path / "b", format="bin")
    (tmp_path / "b" / "pytorch_model.bin").rename(ck / "pytorch_model.bin")
    info = inspect_checkpoint(ck)
    assert info.format == "safetensors"
    assert any("both formats" in n and "using safetensors" in n for n in info.notes)
    assert inspect_checkpoint(ck, format="bin").format == "bin"


def test_info_is_plain_data(tmp_path: Path, net: Net) -> None:
    from bigviz.data.serde import from_plain, to_plain

    info = save_sharded(net, tmp_path / "ck", max_shard_size="5kB")
    plain = json.loads(json.dumps(to_plain(info)))
    assert from_plain(CheckpointInfo, plain) == info
    assert "4 file(s)" in info.summary()
    assert [r["name"] for r in info.rows()] == [p.name for p in info.shard_paths()]
    assert isinstance(plan_shards(net), ShardPlan)


def test_public_names_are_exported() -> None:
    import bigviz.checkpoint as ck

    for name in ck.__all__:
        assert getattr(bigviz, name) is getattr(ck, name)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_load_to_cuda(tmp_path: Path, net: Net) -> None:
    save_sharded(net, tmp_path / "ck", max_shard_size="5kB")
    with torch.device("meta"):
        fresh = Net()
    load_sharded(fresh, tmp_path / "ck", assign=True, device="cuda")
    assert fresh.embed.weight.is_cuda and fresh.head.weight is fresh.embed.weight
    assert torch.equal(fresh.embed.weight.cpu(), net.embed.weight)
    on_gpu = Net().cuda()
    load_sharded(on_gpu, tmp_path / "ck")
    assert torch.equal(on_gpu.blocks[1].weight.cpu(), net.blocks[1].weight)
