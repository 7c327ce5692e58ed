"""The CUDA allocator source, driven through a stand-in for ``torch.cuda`` (no GPU here).

On a machine with a GPU the same paths run against the real allocator; these tests pin
the logic: lazy switch-on when CUDA initialises mid-recording, exact per-device peaks
with a reset per phase, and the sampled series.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bigviz.recorder import CudaSource, record
from bigviz.recorder.sources import cuda as cuda_source
from bigviz.testing import FakeClock, FakeSource


class FakeCuda:
    """The slice of ``torch.cuda`` the source uses, with a real high-water mark."""

    def __init__(self, devices: int) -> None:
        self.initialised = False
        self.alloc = [0] * devices
        self.peak = [0] * devices

    def is_initialized(self) -> bool:
        return self.initialised

    def device_count(self) -> int:
        return len(self.alloc)

    def memory_allocated(self, i: int) -> int:
        return self.alloc[i]

    def memory_reserved(self, i: int) -> int:
        return self.alloc[i] + 2 << 20

    def max_memory_allocated(self, i: int) -> int:
        return self.peak[i]

    def reset_peak_memory_stats(self, i: int) -> None:
        self.peak[i] = self.alloc[i]

    def get_device_name(self, i: int) -> str:
        return f"Fake GPU {i}"

    def change(self, i: int, delta: int) -> None:
        self.alloc[i] += delta
        self.peak[i] = max(self.peak[i], self.alloc[i])


@pytest.fixture
def cuda(monkeypatch: pytest.MonkeyPatch) -> FakeCuda:
    fake = FakeCuda(2)
    torch = SimpleNamespace(cuda=fake, version=SimpleNamespace(cuda="12.8"), __version__="x")
    monkeypatch.setattr(cuda_source, "_torch", lambda: torch)
    return fake


def test_cuda_switches_on_when_initialised_and_peaks_are_exact(cuda: FakeCuda) -> None:
    clock = FakeClock()
    ram = FakeSource(clock, rss=100)
    rec = record(sources=[ram, CudaSource()], clock=clock, background=False, instrument=False)
    with rec:
        (before,) = [s for s in rec.recording.sources if s.name == "cuda"]
        assert not before.available and "not initialised" in (before.reason or "")
        with rec.phase("build on cpu") as cpu:
            clock.advance(0.02)
        cuda.initialised = True  # the first tensor on a GPU
        with rec.phase("to gpu") as to_gpu:
            cuda.change(1, 4000)  # a transient copy...
            cuda.change(1, -3000)  # ...freed before the phase ends
            clock.advance(0.02)
            with rec.phase("inner") as inner:
                cuda.change(0, 700)
                clock.advance(0.02)
        with rec.phase("idle") as idle:
            clock.advance(0.02)
    r = rec.recording
    assert cpu.vram_peak == {}
    assert to_gpu.vram_start == {"cuda:0": 0, "cuda:1": 0}
    assert to_gpu.vram_peak == {"cuda:0": 700, "cuda:1": 4000}
    assert inner.vram_peak == {"cuda:0": 700, "cuda:1": 1000}
    assert idle.vram_peak == {"cuda:0": 700, "cuda:1": 1000}
    (info,) = [s for s in r.sources if s.name == "cuda"]
    assert info.available and info.exact and info.reason is None
    assert r.series["cuda:1.allocated"].max() == 1000
    assert r.series["cuda:0.reserved"].v[-1] == 700 + 2 << 20
    assert r.meta["gpu_names"] == ["Fake GPU 0", "Fake GPU 1"]
    assert r.meta["vram_peak"] == {"cuda:0": 700, "cuda:1": 4000}
    assert "vram_peak" in r.meta["exact"]


def test_cpu_only_torch_build_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = SimpleNamespace(
        cuda=FakeCuda(0), version=SimpleNamespace(cuda=None), __version__="2.13.0+cpu"
    )
    monkeypatch.setattr(cuda_source, "_torch", lambda: torch)
    (info,) = CudaSource().start(clock=FakeClock(), interval_ms=1.0)
    assert not info.available
    assert "2.13.0+cpu" in (info.reason or "") and "no CUDA support" in (info.reason or "")


def test_torch_mid_import_is_not_read_and_does_not_switch_cuda_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN torch half-imported (the user's thread is inside `import torch`; no .version yet)
    half = SimpleNamespace(__spec__=SimpleNamespace(_initializing=True))
    monkeypatch.setitem(cuda_source.sys.modules, "torch", half)
    src = CudaSource()
    # WHEN the background poll runs
    # THEN it neither raises nor reads the module, and says torch is not imported yet
    assert src.poll() == {}
    assert src.start(clock=lambda: 0.0, interval_ms=1.0)[0].reason.startswith("torch is not")
    # AND once the import finishes the source looks again (it was not switched off for good)
    done = SimpleNamespace(
        __spec__=SimpleNamespace(_initializing=False),
        version=SimpleNamespace(cuda=None),
        __version__="2.13.0+cpu",
    )
    monkeypatch.setitem(cuda_source.sys.modules, "torch", done)
    assert src.poll() == {}
    assert "no CUDA support" in src.start(clock=lambda: 0.0, interval_ms=1.0)[0].reason
