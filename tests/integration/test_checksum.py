"""The weight checksum is exact and costs no memory: it is the "first use" pass."""

from __future__ import annotations

import numpy as np
import torch

import bigviz
from bigviz.strategies import checksum


def _reference(raw: bytes) -> int:
    n8 = len(raw) - len(raw) % 8
    total = int(np.frombuffer(raw[:n8], dtype="<i8").astype(object).sum()) if n8 else 0
    total += sum(raw[n8:])
    return (total + (1 << 63)) % (1 << 64) - (1 << 63)


def test_checksum_equals_a_plain_word_sum_for_aligned_and_misaligned_views() -> None:
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(4099, generator=gen)  # 16,396 bytes: not a multiple of 8
    raw = base.numpy().tobytes()
    assert checksum(base) == [len(raw), _reference(raw)]
    # a view starting 1 byte into another buffer holds the same bytes at an odd address
    shifted = torch.empty(len(raw) + 1, dtype=torch.uint8)
    shifted[1:] = base.view(torch.uint8)
    assert checksum(shifted[1:]) == [len(raw), _reference(raw)]
    # any changed byte changes the sum
    other = base.clone()
    other.view(torch.uint8)[5] ^= 1
    assert checksum(other) != checksum(base)


def test_checksum_of_an_odd_sized_weight_allocates_nothing_like_its_size() -> None:
    # GIVEN a 256 MiB weight whose byte count is a multiple of 4 but not of 8
    weight = torch.ones(64 * 2**20 + 1, dtype=torch.float32)
    # WHEN it is checksummed under the recorder
    with bigviz.record(instrument=False) as rec, rec.phase("checksum"):
        checksum(weight)
    # THEN the phase needed far less than the weight (a widening copy would need 512 MiB)
    growth = rec.recording.phase("checksum").ram_growth
    assert growth is not None and growth < 16 * 2**20
