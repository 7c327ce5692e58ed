"""The instrumentation's naming facts: shared bytes once, shard positions, mapped files."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import torch

from bigviz.recorder._instrument._checkpoint import files_of
from bigviz.recorder._instrument._core import shard_position, tensor_bytes
from bigviz.recorder._instrument._maps import mapped_files


def test_tied_and_viewed_tensors_count_once() -> None:
    # GIVEN a state dict where two keys are one tensor and a third is a view into it
    w = torch.zeros(1000, 16)
    sd = {"embed": w, "head": w, "row": w[3], "bias": torch.zeros(16), "n": 3}
    # WHEN its bytes are counted
    n, size = tensor_bytes(sd) or (0, 0)
    # THEN every tensor is counted, and memory once: 64,000 + 64 bytes
    assert n == 4
    assert size == 1000 * 16 * 4 + 16 * 4


def test_meta_tensors_count_their_size_and_no_tensors_is_none() -> None:
    sd = {"a": torch.empty(10, device="meta"), "b": torch.empty(10, device="meta")}
    assert tensor_bytes(sd) == (2, 80)
    assert tensor_bytes({"x": 1}) is None
    assert tensor_bytes([torch.ones(1)]) is None


def test_shard_position_from_the_file_list_or_the_name() -> None:
    files = ["/c/model-00001-of-00002.safetensors", "/c/model-00002-of-00002.safetensors"]
    assert shard_position("/c/model-00002-of-00002.safetensors", files) == (2, 2)
    assert shard_position("/x/pytorch_model-00003-of-00007.bin") == (3, 7)
    assert shard_position("/x/model.safetensors") is None
    assert shard_position("/x/w.bin", ["/x/w.bin"]) == (1, 1)


def test_mapped_files_sums_size_and_rss_of_the_files_mappings(tmp_path: Path) -> None:
    # GIVEN a maps text with two mappings of one file and one of another, and a pagemap
    # (8 bytes a page, bit 63: present) where 4 pages of the first mapping are present
    page = os.sysconf("SC_PAGE_SIZE")
    maps = tmp_path / "maps"
    maps.write_text(
        f"{16 * page:x}-{32 * page:x} r--p 00000000 08:01 12 /w/model.safetensors\n"
        f"{32 * page:x}-{40 * page:x} r--p 00010000 08:01 12 /w/model.safetensors\n"
        f"{40 * page:x}-{50 * page:x} r-xp 00000000 08:01 13 /usr/lib/libc.so\n"
        f"{50 * page:x}-{51 * page:x} rw-p 00000000 00:00 0 \n"
    )
    entries = [0] * 51
    for i in (16, 17, 20, 31, 40, 41, 50):  # 40.. belong to the other mappings
        entries[i] = (1 << 63) | i
    pagemap = tmp_path / "pagemap"
    pagemap.write_bytes(struct.pack(f"<{len(entries)}Q", *entries))
    # WHEN the checkpoint file is looked up THEN only its mappings count
    assert mapped_files(["/w/model.safetensors"], str(maps), str(pagemap)) == {
        "/w/model.safetensors": (24 * page, 4 * page)}
    assert mapped_files(["/w/other"], str(maps), str(pagemap)) == {}


def test_files_of_reads_the_index_in_shard_order(tmp_path: Path) -> None:
    # GIVEN a folder laid out as save_pretrained writes it
    (tmp_path / "model.safetensors.index.json").write_text(
        '{"metadata": {"total_size": 8}, "weight_map": {"b": "model-00002-of-00002.safetensors",'
        ' "a": "model-00001-of-00002.safetensors"}}')
    # THEN its files are the index's, in order; a lone file or nothing are handled too
    assert files_of(tmp_path) == [str(tmp_path / "model-00001-of-00002.safetensors"),
                                  str(tmp_path / "model-00002-of-00002.safetensors")]
    assert files_of(tmp_path / "missing") == []
    assert files_of(None) == []
