"""No lost checkpoint, no leftovers, one-line errors (issue 14, items 2, 6, 7, 11, 12).

Racing saves, saves killed with SIGKILL, a mount point as the target, and paths no
save can use, each against real files (and a real tmpfs mount where the machine allows)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from bigviz import BigvizError, CheckpointError, ConfigError
from bigviz.checkpoint import _save, inspect_checkpoint, load_sharded, save_sharded


def _model(seed: int, width: int = 256) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.Linear(width, width))


def _weights_of(folder: Path, width: int = 256) -> torch.Tensor:
    fresh = _model(99, width)
    load_sharded(fresh, folder)
    return fresh[0].weight.detach().clone()


def test_two_racing_saves_without_overwrite_never_replace_each_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN two saves to one empty folder that both pass the "not empty" check first
    # (the first one's shards are held back until the second one has checked the folder)
    target = tmp_path / "ckpt"
    real = _save._write_shard
    checked = threading.Event()

    def slow_first(fmt: str, tensors: dict[str, torch.Tensor], path: Path,
                   meta: dict[str, str]) -> None:
        if threading.current_thread().name == "first":
            checked.wait(10)
        real(fmt, tensors, path, meta)

    monkeypatch.setattr(_save, "_write_shard", slow_first)
    errors: dict[str, BaseException] = {}

    def save(name: str, seed: int) -> None:
        try:
            save_sharded(_model(seed), target, max_shard_size="100kB")
        except BaseException as e:
            errors[name] = e

    first = threading.Thread(target=save, args=("first", 1), name="first")
    first.start()
    time.sleep(0.2)
    save("second", 2)  # checks the still-empty folder, writes and publishes
    checked.set()
    first.join(20)
    # THEN the second save's checkpoint is there, whole, and the first save failed
    # with a CheckpointError instead of silently replacing it
    assert "second" not in errors
    assert isinstance(errors.get("first"), CheckpointError)
    assert "another save published a checkpoint there" in str(errors["first"])
    assert torch.equal(_weights_of(target), _model(2)[0].weight.detach())
    # AND no temporary folder is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


_KILLED_SAVE = """
import sys, torch
from bigviz.checkpoint import save_sharded
torch.manual_seed(0)
m = torch.nn.Sequential(*[torch.nn.Linear(1024, 1024) for _ in range(12)])
print("ready", flush=True)
save_sharded(m, sys.argv[1], max_shard_size="4MB", format=sys.argv[2], overwrite=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_saves_killed_mid_write_leave_no_folder_behind_after_the_next_save(
    tmp_path: Path, fmt: str
) -> None:
    # GIVEN saves of a 50 MB model killed with SIGKILL at different moments
    target = tmp_path / "ckpt"
    save_sharded(_model(5), target, max_shard_size="100kB", format=fmt)
    # (each save also cleans what the previous killed one left: stop at a kill that
    # left a folder, so the last save below has one to clean)
    killed = 0
    leftovers: list[str] = []
    for delay in (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8):
        proc = subprocess.Popen([sys.executable, "-c", _KILLED_SAVE, str(target), fmt],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        proc.stdout.close()
        killed += proc.returncode == -signal.SIGKILL
        leftovers = [p.name for p in tmp_path.iterdir() if p.name != "ckpt"]
        # whatever the kill left, the checkpoint there is the previous one, whole
        assert len(inspect_checkpoint(target).files) > 1
        if leftovers:
            break
    # WHEN the next save into that folder runs
    info = save_sharded(_model(6), target, max_shard_size="100kB", format=fmt, overwrite=True)
    # THEN the checkpoint is whole, every folder a killed save left is gone, and it says so
    assert killed >= 1 and leftovers, "no kill landed mid-write: the test proved nothing"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    assert torch.equal(_weights_of(target), _model(6)[0].weight.detach())
    assert any(f"removed {len(leftovers)} temporary folder" in n for n in info.notes), (
        info.notes, leftovers)


def test_a_live_saves_temporary_folder_is_not_touched(tmp_path: Path) -> None:
    # GIVEN a temporary folder whose owner (this process) is alive
    mine = tmp_path / f".other.tmp-{os.getpid()}-abc"
    mine.mkdir()
    dead = tmp_path / ".other.tmp-999999999-abc"  # no such pid
    dead.mkdir()
    # WHEN another save runs in the same parent folder
    info = save_sharded(_model(1), tmp_path / "ckpt", max_shard_size="100kB")
    # THEN only the dead process's folder was removed
    assert mine.exists() and not dead.exists()
    assert any(".other.tmp-999999999-abc" in n for n in info.notes)


@pytest.fixture
def mount_point(tmp_path: Path) -> Path:
    target = tmp_path / "volume"
    target.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(target)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
    yield target
    subprocess.run(["umount", "-l", str(target)], check=False)


def test_a_mount_point_is_saved_into_with_each_file_atomic(mount_point: Path) -> None:
    # GIVEN an empty tmpfs mount point as the target
    # WHEN a sharded checkpoint is saved there, then replaced by a smaller one
    first = save_sharded(_model(1), mount_point, max_shard_size="100kB")
    second = save_sharded(_model(2, width=128), mount_point, max_shard_size="1MB",
                          overwrite=True)
    # THEN both saves worked inside the mount, the weaker guarantee is said, and no
    # temporary folder or stale shard of the first checkpoint is left
    assert len(first.files) > 1 and len(second.files) == 1
    assert any("mount point" in n and "not" in n for n in first.notes)
    assert sorted(os.listdir(mount_point)) == ["model.safetensors"]
    assert torch.equal(_weights_of(mount_point, 128), _model(2, width=128)[0].weight.detach())
    # AND without overwrite a non-empty mount point is refused
    with pytest.raises(CheckpointError, match="not empty"):
        save_sharded(_model(3), mount_point)


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda tmp: tmp / "afile" / "ckpt", "a part of the path is a file"),
        (lambda tmp: "/proc/self/bigviz-ckpt", "cannot|failed"),
        (lambda tmp: str(tmp / "a\0b"), "NUL character"),
        (lambda tmp: 5, "is a int"),
    ],
)
def test_unusable_paths_are_bigviz_errors(tmp_path: Path, make: object, pattern: str) -> None:
    # GIVEN a path no save can use (its parent is a file, /proc, a NUL byte, not a path)
    (tmp_path / "afile").write_text("x")
    path = make(tmp_path)  # type: ignore[operator]
    # WHEN a checkpoint is saved there THEN a one-line BigvizError names the problem
    with pytest.raises(BigvizError, match=pattern) as exc:
        save_sharded(_model(1), path, max_shard_size="100kB")
    assert isinstance(exc.value, (CheckpointError, ConfigError))
    assert "\n" not in str(exc.value)


def test_a_read_only_folder_is_a_clear_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root ignores permission bits: use a read-only bind of a tmpfs instead
        target = tmp_path / "ro"
        target.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(target)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a read-only tmpfs here: {proc.stderr.strip()}")
        try:
            with pytest.raises(CheckpointError, match="read-only") as exc:
                save_sharded(_model(1), target / "ckpt", max_shard_size="100kB")
        finally:
            subprocess.run(["umount", "-l", str(target)], check=False)
    else:
        target = tmp_path / "ro"
        target.mkdir(mode=0o555)
        with pytest.raises(CheckpointError, match="permission denied") as exc:
            save_sharded(_model(1), target / "ckpt", max_shard_size="100kB")
    assert "\n" not in str(exc.value)


def test_a_full_disk_while_saving_bin_says_the_disk_is_full(mount_point: Path) -> None:
    # GIVEN a 64 MiB volume and a 96 MiB model saved as .bin
    torch.manual_seed(0)
    big = torch.nn.Sequential(*[torch.nn.Linear(2048, 2048) for _ in range(6)])
    # WHEN it is saved there THEN the error says the disk is full and nothing is left
    with pytest.raises(CheckpointError, match="the disk is full"):
        save_sharded(big, mount_point / "ckpt", max_shard_size="20MB", format="bin")
    assert os.listdir(mount_point) == []


def test_the_saved_checkpoint_is_still_readable_by_inspect(tmp_path: Path) -> None:
    # the staging refactor keeps the layout: an index, shards, nothing hidden
    info = save_sharded(_model(1), tmp_path / "ckpt", max_shard_size="100kB")
    again = inspect_checkpoint(tmp_path / "ckpt")
    assert again.total_size == info.total_size and info.notes == []


class _RowBuffer(torch.nn.Module):
    """A buffer that is a view of one row of a parameter (issue 14, item 15)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)
        self.register_buffer("row", self.lin.weight.data[1])


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_a_buffer_viewing_a_parameter_loads_back_into_its_model(tmp_path: Path, fmt: str) -> None:
    # GIVEN a model whose buffer is a row of its weight
    model = _RowBuffer()
    # WHEN it is saved and loaded into a fresh copy of the model
    save_sharded(model, tmp_path / "ck", format=fmt)  # type: ignore[arg-type]
    fresh = _RowBuffer()
    load_sharded(fresh, tmp_path / "ck")
    # THEN both the weight and the row come back (not the whole weight as the row)
    assert torch.equal(fresh.lin.weight, model.lin.weight)
    assert torch.equal(fresh.row, model.row)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_transposed_views_of_one_tensor_save_and_load(tmp_path: Path, fmt: str) -> None:
    base = torch.arange(12.0).reshape(3, 4)
    sd = {"a": base.t(), "b": base.t()[1]}
    save_sharded(sd, tmp_path / "ck", format=fmt)  # type: ignore[arg-type]
    got = {"a": torch.empty(4, 3), "b": torch.empty(3)}
    from safetensors.torch import load_file

    loaded = (load_file(str(tmp_path / "ck" / "model.safetensors")) if fmt == "safetensors"
              else torch.load(tmp_path / "ck" / "pytorch_model.bin", weights_only=True))
    got.update(loaded)
    assert torch.equal(got["a"], base.t()) and torch.equal(got["b"], base.t()[1])


def test_a_bin_save_of_a_small_view_does_not_write_its_whole_storage(tmp_path: Path) -> None:
    # GIVEN a 4-byte view of a 100 MB tensor
    big = torch.zeros(25_000_000)
    # WHEN it alone is saved as .bin
    info = save_sharded({"x": big[:1]}, tmp_path / "ck", format="bin")
    # THEN the file holds the 4 bytes (plus the pickle), as safetensors would, not 100 MB
    assert (tmp_path / "ck" / "pytorch_model.bin").stat().st_size < 64 * 1024
    assert info.total_size == 4


def test_complex128_to_safetensors_says_the_format_cannot_store_it(tmp_path: Path) -> None:
    sd = {"a": torch.ones(2), "z": torch.zeros(3, dtype=torch.complex128)}
    with pytest.raises(ConfigError, match=r"'z' is complex128, a dtype the safetensors format "
                                          r"cannot store; save with format='bin'"):
        save_sharded(sd, tmp_path / "ck")
    assert not (tmp_path / "ck").exists()
    # and .bin stores it
    save_sharded(sd, tmp_path / "ck", format="bin")
    assert torch.load(tmp_path / "ck" / "pytorch_model.bin", weights_only=True)["z"].dtype == (
        torch.complex128)
