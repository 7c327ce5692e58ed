"""instrument=True: real loader calls on real files become automatic phases."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch
from torch import nn

from bigviz.recorder import Recording, record

ORIGINALS = {
    "torch.load": torch.load,
    "torch.save": torch.save,
    "load_file": safetensors.torch.load_file,
    "save_file": safetensors.torch.save_file,
    "safe_open": safetensors.safe_open,
    "Module.to": nn.Module.__dict__["to"],
    "Module.load_state_dict": nn.Module.__dict__["load_state_dict"],
}


def current() -> dict[str, object]:
    return {
        "torch.load": torch.load,
        "torch.save": torch.save,
        "load_file": safetensors.torch.load_file,
        "save_file": safetensors.torch.save_file,
        "safe_open": safetensors.safe_open,
        "Module.to": nn.Module.__dict__["to"],
        "Module.load_state_dict": nn.Module.__dict__["load_state_dict"],
    }


def auto_phases(r: Recording) -> list[str]:
    return [p.name for p in r.phases if p.auto]


@pytest.fixture
def state() -> dict[str, torch.Tensor]:
    return {"w": torch.randn(256, 256), "b": torch.zeros(256)}


def test_torch_load_of_a_real_file_becomes_a_phase_named_after_it(
    tmp_path: Path, state: dict[str, torch.Tensor]
) -> None:
    path = tmp_path / "pytorch_model-00001-of-00002.bin"
    torch.save(state, path)
    with record(sources=["ram"]) as rec, rec.phase("load weights"):
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(loaded["w"], state["w"])
    r = rec.recording
    (auto,) = [p for p in r.phases if p.auto]
    assert auto.name.startswith("torch.load pytorch_model-00001-of-00002.bin (")
    assert auto.detail["file"] == str(path)
    assert auto.detail["bytes"] == path.stat().st_size
    assert auto.detail["tensors"] == 2
    assert auto.parent == 0 and auto.depth == 1  # inside the user's phase
    assert auto.ram_peak_exact and auto.end is not None
    assert current() == ORIGINALS


def test_safetensors_save_load_and_safe_open(
    tmp_path: Path, state: dict[str, torch.Tensor]
) -> None:
    path = tmp_path / "model.safetensors"
    with record(sources=["ram"]) as rec:
        safetensors.torch.save_file(state, str(path))
        safetensors.torch.load_file(path)
        with safetensors.safe_open(str(path), framework="pt") as fh:
            w = fh.get_tensor("w")
    assert torch.equal(w, state["w"])
    names = auto_phases(rec.recording)
    assert len(names) == 3, names  # load_file's own safe_open is not a second phase
    assert names[0].startswith("safetensors.save_file model.safetensors")
    assert names[1].startswith("safetensors.load_file model.safetensors")
    assert names[2].startswith("safe_open model.safetensors")
    saved = rec.recording.phases[0]
    assert saved.detail["bytes"] == sum(t.numel() * t.element_size() for t in state.values())
    assert current() == ORIGINALS


def test_names_bound_by_from_import_are_patched_and_restored(
    tmp_path: Path, state: dict[str, torch.Tensor]
) -> None:
    # GIVEN a module that bound load_file at import time, as Transformers does
    mod_dir = tmp_path / "mods"
    mod_dir.mkdir()
    (mod_dir / "bigviz_test_loader.py").write_text(
        "from safetensors.torch import load_file as safe_load_file\n"
        "def load(path):\n    return safe_load_file(path)\n"
    )
    sys.path.insert(0, str(mod_dir))
    try:
        import bigviz_test_loader as loader  # type: ignore[import-not-found]

        path = tmp_path / "shard.safetensors"
        safetensors.torch.save_file(state, str(path))
        with record(sources=["ram"]) as rec:
            loader.load(str(path))
        assert auto_phases(rec.recording)[0].startswith("safetensors.load_file shard.safetensors")
        assert loader.safe_load_file is ORIGINALS["load_file"]
    finally:
        sys.path.remove(str(mod_dir))
        sys.modules.pop("bigviz_test_loader", None)


def test_module_to_and_load_state_dict(state: dict[str, torch.Tensor]) -> None:
    model = nn.Linear(256, 256)
    sd = {"weight": state["w"], "bias": state["b"]}
    with record(sources=["ram"]) as rec:
        model.load_state_dict(sd)
        model.to(torch.float64)
        # a copy big enough to be fresh pages (a 512 KiB one may reuse freed heap memory)
        big = nn.Linear(4096, 2048, bias=False, device="meta").to_empty(device="cpu")
        big.to(torch.float64)
    to_phase = rec.recording.phases[1]
    names = auto_phases(rec.recording)
    assert names[0] == "Linear.load_state_dict (2 tensors, 257.0 KiB)"
    assert names[1].startswith("Linear.to torch.float64")
    assert to_phase.detail["dtype"] == "torch.float64"
    assert to_phase.detail["bytes"] == (256 * 256 + 256) * 4
    # the float64 copy is real memory inside its phase
    big_to = [p for p in rec.recording.phases if p.name.startswith("Linear.to")][-1]
    assert big_to.detail["bytes"] == 4096 * 2048 * 4
    assert big_to.ram_growth is not None and big_to.ram_growth >= 4096 * 2048 * 8 - 2**21
    assert model.weight.dtype == torch.float64


def test_a_failing_call_keeps_its_error_and_patches_are_removed(tmp_path: Path) -> None:
    missing = tmp_path / "nope.bin"
    with pytest.raises(FileNotFoundError), record(sources=["ram"]) as rec:
        torch.load(missing)
    (p,) = rec.recording.phases
    assert p.auto and p.name == "torch.load nope.bin"
    assert p.error is not None and "FileNotFoundError" in p.error
    assert current() == ORIGINALS


def test_file_objects_and_instrument_off(state: dict[str, torch.Tensor]) -> None:
    buf = io.BytesIO()
    with record(sources=["ram"]) as rec:
        torch.save(state, buf)
    assert auto_phases(rec.recording)[0].startswith("torch.save <BytesIO>")
    with record(sources=["ram"], instrument=False) as rec2:
        buf.seek(0)
        torch.load(buf)
    assert rec2.recording.phases == []


def test_torch_imported_after_start_is_patched_at_the_next_phase(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from bigviz.recorder import record
        assert "torch" not in sys.modules
        with record(sources=["ram"]) as rec:
            import torch
            with rec.phase("save"):
                torch.save({{"x": torch.ones(3)}}, {str(tmp_path / "late.pt")!r})
        assert not hasattr(torch.save, "__bigviz_original__")
        print([p.name for p in rec.recording.phases if p.auto])
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "torch.save late.pt" in out.stdout
