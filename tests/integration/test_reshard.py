"""``bigviz.checkpoint.reshard`` and ``bigviz reshard``: the files are huggingface_hub's,
the peak RAM stays under largest input shard + largest output shard + 64 MiB (VmHWM, in a
fresh process), and bad input is one clear error that leaves nothing behind."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from _quiet import quiet_transformers  # noqa: F401  (autouse: every test here is quiet)

from bigviz._errors import CheckpointError, ConfigError
from bigviz.checkpoint import _reshard, inspect_checkpoint, reshard, save_sharded

transformers = pytest.importorskip("transformers")
hf = pytest.importorskip("huggingface_hub")
from safetensors import safe_open  # noqa: E402

MiB = 1 << 20
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~93 MB GPT-2 (random init, tied head) saved by Transformers in 20 MB shards."""
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    config = transformers.GPT2Config(
        n_layer=6,
        n_embd=512,
        n_head=8,
        vocab_size=8000,
        n_positions=512,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    folder = tmp_path_factory.mktemp("gpt2") / "ckpt"
    model.save_pretrained(folder, max_shard_size="20MB")
    transformers.utils.logging.enable_progress_bar()
    return folder


# ---------------------------------------------------------------------------------------------
# reading checkpoints independently of bigviz, for the comparisons


def _header(path: Path) -> tuple[dict[str, Any], int]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)), 8 + n


def _state_dict_in_file_order(folder: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors: shards in file order, each file's tensors in stored order."""
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))
    sd: dict[str, torch.Tensor] = {}
    for path in files:
        if path.suffix == ".bin":
            sd.update(torch.load(path, mmap=True, weights_only=True))
            continue
        header, _ = _header(path)
        header.pop("__metadata__", None)
        order = sorted(header, key=lambda k: header[k]["data_offsets"])
        with safe_open(str(path), framework="pt") as f:
            sd.update({k: f.get_tensor(k) for k in order})
    return sd


def _hub_save(sd: dict[str, torch.Tensor], folder: Path, size: str, fmt: str) -> None:
    folder.mkdir()
    hf.save_torch_state_dict(
        dict(sd), folder, max_shard_size=size, safe_serialization=fmt == "safetensors"
    )


def _weight_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(("model", "pytorch_model")))


def _assert_same_checkpoint(ours: Path, theirs: Path) -> None:
    # same file names
    assert _weight_files(ours) == _weight_files(theirs)
    for name in _weight_files(theirs):
        a, b = ours / name, theirs / name
        if name.endswith(".json"):
            # same index (hub writes it unsorted without newline, Transformers sorted)
            assert json.loads(a.read_text()) == json.loads(b.read_text()), name
        elif name.endswith(".safetensors"):
            # same header as parsed dicts (__metadata__ map order may vary), same data bytes
            (ha, sa), (hb, sb) = _header(a), _header(b)
            assert ha == hb, name
            assert a.read_bytes()[sa:] == b.read_bytes()[sb:], name
        else:
            ta = torch.load(a, weights_only=True)
            tb = torch.load(b, weights_only=True)
            assert list(ta) == list(tb), name
            for k in tb:
                assert ta[k].dtype == tb[k].dtype and torch.equal(ta[k], tb[k]), (name, k)
            # ties are stored as ties: the same names share storage in both
            assert _tie_groups(ta) == _tie_groups(tb), name


def _tie_groups(sd: dict[str, torch.Tensor]) -> list[list[str]]:
    by_ptr: dict[int, list[str]] = {}
    for k, v in sd.items():
        by_ptr.setdefault(_ptr(v), []).append(k)
    return sorted(sorted(g) for g in by_ptr.values() if len(g) > 1)


def _ptr(t: Any) -> int:
    return int(t.untyped_storage().data_ptr())


# ---------------------------------------------------------------------------------------------
# the files are huggingface_hub's


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_transformers_folder_resharded_equals_hub_save(
    gpt2_folder: Path, tmp_path: Path, fmt: str
) -> None:
    # GIVEN a Transformers save_pretrained folder in 20 MB shards
    source = inspect_checkpoint(gpt2_folder)
    assert source.n_shards >= 4
    before = {p.name: p.stat().st_mtime_ns for p in gpt2_folder.iterdir()}
    # WHEN it is resharded into 50 MB shards
    shards: list[str] = []
    info = reshard(
        gpt2_folder,
        tmp_path / "out",
        max_shard_size="50MB",
        format=fmt,
        on_shard=lambda s: shards.append(s.name),
    )
    # THEN the files are what huggingface_hub writes for that state dict
    sd = _state_dict_in_file_order(gpt2_folder)
    _hub_save(sd, tmp_path / "hub", "50MB", fmt)
    _assert_same_checkpoint(tmp_path / "out", tmp_path / "hub")
    assert info.n_shards == 2 and sorted(shards) == [f.name for f in info.files]
    assert info.total_size == source.total_size
    # AND the folder is still a Transformers folder, without the old weights or index
    names = sorted(os.listdir(tmp_path / "out"))
    assert {"config.json", "generation_config.json"} <= set(names)
    assert "model.safetensors.index.json" not in names or fmt == "safetensors"
    assert not any(n.endswith("-of-00005.safetensors") for n in names)
    assert set(names) == {"config.json", "generation_config.json", *_weight_files(tmp_path / "hub")}
    model = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out")
    assert torch.equal(
        model.transformer.h[0].mlp.c_fc.weight, sd["transformer.h.0.mlp.c_fc.weight"]
    )
    # AND the source was not touched, and no temporary folder is left
    assert {p.name: p.stat().st_mtime_ns for p in gpt2_folder.iterdir()} == before
    assert sorted(os.listdir(tmp_path)) == ["hub", "out"]


def _tied_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(300, 64, generator=g)
    sd = {"wte.weight": emb}
    for i in range(4):
        sd[f"h.{i}.w"] = torch.randn(64, 256, generator=g)
        sd[f"h.{i}.b"] = torch.randn(256, generator=g).to(torch.bfloat16)
        sd[f"h.{i}.n"] = torch.zeros(0)
    sd["steps"] = torch.tensor(7, dtype=torch.int64)
    sd["lm_head.weight"] = emb  # tied: one storage, two names
    return sd


@pytest.mark.parametrize(
    ("fmt_in", "fmt_out", "size"),
    [
        ("bin", "safetensors", "100kB"),
        ("bin", "bin", "150kB"),
        ("safetensors", "bin", "100kB"),
        ("safetensors", "safetensors", "70kB"),
        ("bin", "safetensors", "10MB"),  # one shard: plain name, no index, aliases in the file
    ],
)
def test_hub_checkpoints_with_ties_dtypes_and_empty_tensors(
    tmp_path: Path, fmt_in: str, fmt_out: str, size: str
) -> None:
    # GIVEN a huggingface_hub checkpoint of a tied state dict (bf16, int64 and empty tensors)
    _hub_save(_tied_state_dict(), tmp_path / "src", "40kB", fmt_in)
    # WHEN resharded
    info = reshard(tmp_path / "src", tmp_path / "out", max_shard_size=size, format=fmt_out)
    # THEN the files equal huggingface_hub's save of the state dict the source holds, ties
    # included (safetensors records dropped names; .bin stores them sharing storage)
    src = inspect_checkpoint(tmp_path / "src")
    assert list(src.aliases.values()) == (["lm_head.weight"] if fmt_in == "safetensors" else [])
    sd = _state_dict_in_file_order(tmp_path / "src")
    meta = None
    if fmt_in == "safetensors" and fmt_out == "bin":
        sd["wte.weight"] = sd["lm_head.weight"]
        # safetensors' empty tensors point at the next tensor's bytes, which torch.save
        # refuses (hub's own save fails); reshard gives them storages of their own
        sd = {k: torch.empty(v.shape, dtype=v.dtype) if v.nbytes == 0 else v for k, v in sd.items()}
    elif fmt_in == "safetensors":
        meta = dict(src.aliases)  # what huggingface_hub records for the names it dropped
    (tmp_path / "hub").mkdir()
    hf.save_torch_state_dict(
        sd,
        tmp_path / "hub",
        max_shard_size=size,
        metadata=meta,
        safe_serialization=fmt_out == "safetensors",
    )
    _assert_same_checkpoint(tmp_path / "out", tmp_path / "hub")
    assert sorted(sorted(g) for g in info.tied) == [["lm_head.weight", "wte.weight"]]
    if size == "10MB":
        assert [f.name for f in info.files] == ["model.safetensors"]
        assert info.index_file is None
    else:
        assert info.n_shards > 1


def test_a_tensor_larger_than_the_maximum_gets_a_shard_of_its_own(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(1)
    sd = {f"t{i}": torch.randn(1000 * (i % 3 + 1), generator=g) for i in range(12)}
    sd["big"] = torch.randn(40_000, generator=g)  # 160 kB
    order = ["t0", "t1", "big", *[f"t{i}" for i in range(2, 12)]]
    save_sharded({k: sd[k] for k in order}, tmp_path / "src", max_shard_size="30kB")
    info = reshard(tmp_path / "src", tmp_path / "out", max_shard_size="50kB")
    _hub_save(_state_dict_in_file_order(tmp_path / "src"), tmp_path / "hub", "50kB", "safetensors")
    _assert_same_checkpoint(tmp_path / "out", tmp_path / "hub")
    own = [f for f in info.files if f.n_keys == 1 and f.bytes == 160_000]
    assert len(own) == 1


def test_a_single_file_source_and_overwrite(tmp_path: Path) -> None:
    sd = {"a": torch.arange(30_000, dtype=torch.float32), "b": torch.ones(20_000)}
    save_sharded(sd, tmp_path / "src", max_shard_size="1GB")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    # WHEN resharding into a non-empty folder without overwrite: refused, nothing changes
    with pytest.raises(CheckpointError, match=r"not empty .*overwrite=True"):
        reshard(tmp_path / "src" / "model.safetensors", tmp_path / "out", max_shard_size="100kB")
    assert os.listdir(tmp_path / "out") == ["notes.txt"]
    # WHEN with overwrite: the shards replace it, the user's other file stays
    info = reshard(
        tmp_path / "src" / "model.safetensors",
        tmp_path / "out",
        max_shard_size="100kB",
        overwrite=True,
    )
    assert [f.name for f in info.files] == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"
    with safe_open(str(tmp_path / "out" / info.files[1].name), framework="pt") as f:
        assert torch.equal(f.get_tensor("b"), sd["b"])


# ---------------------------------------------------------------------------------------------
# memory: measured with bigviz.record in a fresh process

_MEASURE = """
import json, sys
import bigviz
from bigviz.checkpoint import inspect_checkpoint, reshard
src, dst, size, fmt = sys.argv[1:5]
# warm up what the first call imports, so the phase measures the streaming itself
reshard(src, dst + "-warm", max_shard_size="1GB", format=fmt)
with bigviz.record(instrument=False, sources=["ram"]) as rec:
    with rec.phase("reshard"):
        info = reshard(src, dst, max_shard_size=size, format=fmt)
ph = rec.recording.phase("reshard")
print(json.dumps({"growth": ph.ram_growth, "exact": ph.ram_peak_exact,
                  "in": inspect_checkpoint(src).largest_shard, "out": info.largest_shard,
                  "n": info.n_shards, "total": info.total_size}))
"""


def _measure(src: Path, dst: Path, size: str, fmt: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_MEASURE), str(src), str(dst), size, fmt],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=dst.parent,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fmt_in", "size_in", "size_out", "fmt_out"),
    [
        ("safetensors", "20MB", "50MB", "safetensors"),
        ("safetensors", "50MB", "20MB", "bin"),
        ("bin", "40MB", "25MB", "safetensors"),
    ],
)
def test_peak_ram_stays_under_largest_input_plus_largest_output_shard(
    tmp_path: Path, fmt_in: str, size_in: str, size_out: str, fmt_out: str
) -> None:
    # GIVEN a 160 MB checkpoint in several shards
    g = torch.Generator().manual_seed(0)
    sd = {f"layer.{i}.weight": torch.randn(1000, 1000, generator=g) for i in range(40)}
    save_sharded(sd, tmp_path / "src", max_shard_size=size_in, format=fmt_in)  # type: ignore[arg-type]
    del sd
    # WHEN a fresh process reshards it while recording its exact (VmHWM) peak
    r = _measure(tmp_path / "src", tmp_path / "out", size_out, fmt_out)
    # THEN the growth is within largest input shard + largest output shard + 64 MiB
    assert r["exact"] and r["total"] == 160_000_000 and r["n"] >= 3
    bound = r["in"] + r["out"] + 64 * MiB
    assert 0 < r["growth"] <= bound, f"{r['growth'] / MiB:.1f} MiB > {bound / MiB:.1f} MiB"
    # AND well under the whole model (which a load-then-save would hold)
    assert r["growth"] < r["total"]


# ---------------------------------------------------------------------------------------------
# bad input: one line, naming the value and the fix, nothing left behind


@pytest.fixture
def small_src(tmp_path: Path) -> Path:
    sd = {f"w{i}": torch.full((10_000,), float(i)) for i in range(6)}
    save_sharded(sd, tmp_path / "src", max_shard_size="100kB")
    (tmp_path / "src" / "config.json").write_text("{}")
    return tmp_path / "src"


def test_folder_without_weights(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"no checkpoint here .*config\.json.*expected"):
        reshard(tmp_path / "src", tmp_path / "out", max_shard_size="1MB")
    assert not (tmp_path / "out").exists()


def test_corrupt_shard(small_src: Path, tmp_path: Path) -> None:
    shard = small_src / "model-00002-of-00003.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"model-00002-of-00003.safetensors.*truncated"):
        reshard(small_src, tmp_path / "out", max_shard_size="1MB")
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_corrupt_bin_shard(tmp_path: Path) -> None:
    save_sharded({"a": torch.ones(50_000)}, tmp_path / "src", max_shard_size="1GB", format="bin")
    path = tmp_path / "src" / "pytorch_model.bin"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: cannot read .*re-save"):
        reshard(tmp_path / "src", tmp_path / "out", max_shard_size="1MB")
    assert sorted(os.listdir(tmp_path)) == ["src"]


@pytest.mark.parametrize(
    ("size", "message"),
    [
        (0, r"max_shard_size 0 must be above 0; give a size such as '2GB'"),
        ("0MB", r"'0MB' must be above 0"),
        (-5, r"size -5 is negative"),
        ("-1GB", r"'-1GB' is not understood"),
        ("2 gigs", r"'2 gigs'"),
    ],
)
def test_bad_max_shard_size(small_src: Path, tmp_path: Path, size: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        reshard(small_src, tmp_path / "out", max_shard_size=size)
    assert not (tmp_path / "out").exists()


def test_unknown_format(small_src: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"format 'pt' is not 'safetensors' or 'bin'"):
        reshard(small_src, tmp_path / "out", max_shard_size="1MB", format="pt")


def test_destination_is_the_source_or_holds_it(small_src: Path) -> None:
    for dst in (small_src, small_src.parent):
        with pytest.raises(CheckpointError, match=r"would delete the source"):
            reshard(small_src, dst, max_shard_size="1MB", overwrite=True)
    assert (small_src / "model.safetensors.index.json").exists()


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_failure_midway_leaves_no_partial_checkpoint(
    small_src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: BaseException
) -> None:
    # GIVEN an existing checkpoint in DST, and a writer that fails on the second shard
    save_sharded({"old": torch.zeros(3)}, tmp_path / "out")
    before = sorted(os.listdir(tmp_path / "out"))
    real = _reshard._write_shard
    calls = []

    def failing(*args: Any) -> None:
        calls.append(args)
        if len(calls) == 2:
            raise exc
        real(*args)

    monkeypatch.setattr(_reshard, "_write_shard", failing)
    # WHEN resharding with overwrite fails midway
    with pytest.raises(CheckpointError if isinstance(exc, OSError) else KeyboardInterrupt) as e:
        reshard(small_src, tmp_path / "out", max_shard_size="50kB", overwrite=True)
    # THEN the old checkpoint is intact and no temporary folder is left
    if isinstance(exc, OSError):
        assert "No space left" in str(e.value) and "no partial checkpoint" in str(e.value)
        assert "\n" not in str(e.value)
    assert sorted(os.listdir(tmp_path / "out")) == before
    assert sorted(os.listdir(tmp_path)) == ["out", "src"]


# ---------------------------------------------------------------------------------------------
# the CLI verb


def test_cli_prints_a_line_per_shard_and_a_summary(
    small_src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bigviz.cli import main

    code = main(["reshard", str(small_src), str(tmp_path / "out"), "--max-shard-size", "100kB"])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert [ln.split()[1] for ln in lines if ln.startswith("wrote ")] == [
        f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)
    ]
    assert "3 shard(s), index model.safetensors.index.json" in out and "234.4 KiB total" in out
    assert "peak RSS" in out
    assert (tmp_path / "out" / "config.json").exists()


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--max-shard-size", "0"], 2, "must be positive"),
        (["--max-shard-size", "1MB", "--format", "pt"], 2, "invalid choice: 'pt'"),
        ([], 2, "--max-shard-size"),
    ],
)
def test_cli_errors_are_one_line(
    small_src: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    code: int,
    message: str,
) -> None:
    from bigviz.cli import main

    assert main(["reshard", str(small_src), str(tmp_path / "out"), *extra]) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("bigviz reshard: error:") and message in err and "\n" not in err


def test_cli_corrupt_source_exits_1(
    small_src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bigviz.cli import main

    (small_src / "model-00001-of-00003.safetensors").write_bytes(b"\x00" * 4)
    args = ["reshard", str(small_src), str(tmp_path / "out"), "--max-shard-size", "1MB"]
    assert main(args) == 1
    assert "truncated" in capsys.readouterr().err


def test_cli_help_shows_examples(capsys: pytest.CaptureFixture[str]) -> None:
    from bigviz.cli import main

    assert main(["reshard", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: bigviz reshard")
    assert "bigviz reshard ./gpt2 ./gpt2-2gb --max-shard-size 2GB" in out.split("examples:")[1]
