"""Loader-aware phases on the real libraries (issue 12 A).

Checkpoints are written by Transformers ``save_pretrained`` (sharded safetensors) and by
huggingface_hub ``save_torch_state_dict(..., safe_serialization=False)`` (sharded .bin)
for GPT-2, Llama, BERT and T5 configs with random weights (``tests/hf_zoo.py``), then
loaded by Transformers, Accelerate and huggingface_hub under ``bigviz.record``. The
references are the libraries' own files (the index's weight map, the files' sizes),
``/proc/self/smaps`` and the loaded models themselves.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")
accelerate = pytest.importorskip("accelerate")
huggingface_hub = pytest.importorskip("huggingface_hub")

from bigviz.data.recording import Phase, Recording  # noqa: E402
from bigviz.recorder import record  # noqa: E402
from bigviz.units import format_size  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hf_zoo import KINDS, model_class, save_hf  # noqa: E402

MiB = 2**20
SIZE = 50_000_000  # per model: the lower bound, so the suite stays fast
SHARD = "20MB"


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Path, Any]]]:
    """kind -> (folder written by save_pretrained, the model that was saved)."""
    root = tmp_path_factory.mktemp("hf")
    out = {}
    for kind in KINDS:
        model = save_hf(kind, root / kind, size=SIZE, max_shard_size=SHARD)
        out[kind] = (root / kind, model)
    yield out


@pytest.fixture(scope="module")
def gpt2_bin(saved: dict[str, tuple[Path, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """GPT-2 as sharded .bin files written by huggingface_hub, with its config."""
    folder, model = saved["gpt2"]
    out = tmp_path_factory.mktemp("bin")
    sd = {k: v.detach().clone() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    huggingface_hub.save_torch_state_dict(sd, out, safe_serialization=False, max_shard_size=SHARD)
    (out / "config.json").write_text((folder / "config.json").read_text())
    return out


def weight_files(folder: Path) -> list[str]:
    """The shards, in order, as the library's own index lists them."""
    for name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / name).exists():
            return sorted(set(json.loads((folder / name).read_text())["weight_map"].values()))
    return [f.name for f in folder.iterdir() if f.suffix in (".safetensors", ".bin")]


def children(rec: Recording, parent: Phase) -> list[Phase]:
    i = rec.phases.index(parent)
    return [p for p in rec.phases if p.parent == i]


def descendants(rec: Recording, parent: Phase) -> list[Phase]:
    out, todo = [], [rec.phases.index(parent)]
    while todo:
        i = todo.pop()
        kids = [j for j, p in enumerate(rec.phases) if p.parent == i]
        out += [rec.phases[j] for j in kids]
        todo += kids
    return out


def one(rec: Recording, prefix: str) -> Phase:
    found = [p for p in rec.phases if p.name.startswith(prefix)]
    assert len(found) == 1, [p.name for p in rec.phases]
    return found[0]


def assert_exact_and_nested(rec: Recording, top: Phase) -> None:
    """Peaks are the kernel's (VmHWM) and consistent: a parent's peak is at least each
    child's, and every phase's peak is at least its RSS at start and end."""
    assert top.ram_peak_exact and top.ram_peak is not None
    for p in [top, *descendants(rec, top)]:
        assert p.ram_peak_exact, p.name
        assert p.ram_peak is not None and p.ram_start is not None and p.ram_end is not None
        assert p.ram_peak >= max(p.ram_start, p.ram_end) - 4096, p.name
        if p.parent is not None:
            assert (rec.phases[p.parent].ram_peak or 0) >= p.ram_peak - 4096, p.name
    # the sampled timeline never exceeds the kernel's high-water mark of the phase
    sampled = rec.series["ram.rss"].max_between(top.start, top.end)
    assert sampled is None or sampled <= top.ram_peak + MiB


def smaps_mapped(paths: list[Path]) -> int:
    """Bytes of ``paths`` mapped now, read independently from /proc/self/maps ranges."""
    real = {os.path.realpath(p) for p in paths}
    total = 0
    with open("/proc/self/maps", encoding="utf-8") as f:
        for line in f:
            fields = line.split(None, 5)
            if len(fields) == 6 and fields[5].strip() in real:
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                total += hi - lo
    return total


@pytest.mark.parametrize("kind", KINDS)
def test_from_pretrained_is_a_phase_with_a_child_per_shard_and_lazy_bytes(
    saved: dict[str, tuple[Path, Any]], kind: str
) -> None:
    # GIVEN a sharded safetensors checkpoint written by save_pretrained
    folder, original = saved[kind]
    shards = weight_files(folder)
    assert len(shards) >= 2
    cls = model_class(kind)
    # WHEN from_pretrained loads it while recording
    with record(sources=["ram"]) as rec:
        model = cls.from_pretrained(folder)
    r = rec.recording
    # THEN the weights are the saved ones (the load is real)
    for k, v in original.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    # AND there is one from_pretrained phase, named after the class, folder and shards
    top = one(r, f"{cls.__name__}.from_pretrained {folder.name} ({len(shards)} shards, ")
    assert top.auto and top.depth == 0
    total = sum((folder / s).stat().st_size for s in shards)
    assert top.detail["bytes"] == total and format_size(total) in top.name
    # AND inside it one child per shard, in order, saying i/n, the file and its bytes
    opened = [p for p in descendants(r, top) if p.name.startswith("safe_open shard")]
    assert [p.detail["file"] for p in opened] == [str(folder / s) for s in shards]
    for i, (p, s) in enumerate(zip(opened, shards, strict=True), 1):
        size = (folder / s).stat().st_size
        assert p.name.startswith(f"safe_open shard {i}/{len(shards)} {s} ({format_size(size)}")
        # each shard is mapped (whole file, page-rounded), and the phase says so
        assert size <= p.detail["mapped_bytes"] < size + 2 * 4096
    # AND the steps between are phases: loading into the model, finishing (tying …)
    into = one(r, f"load weights into {cls.__name__} (")
    one(r, "finalize: missing keys")
    one(r, "tie weights")
    assert into.parent is not None and r.phases[into.parent].name.startswith("load checkpoint")
    # AND the load is lazy: the mapped bytes are not resident, and the phase says it
    assert top.detail["mapped_bytes"] >= total
    assert top.detail["lazy_bytes"] > 0.5 * total
    assert "mapped" in top.name and "arrives on first use" in top.name
    # the mapping is there to be measured independently, as the phase says
    assert smaps_mapped([folder / s for s in shards]) >= top.detail["mapped_bytes"] - 4096
    assert_exact_and_nested(r, top)
    del model


def test_the_lazy_bytes_arrive_later_and_a_later_recording_says_so(
    saved: dict[str, tuple[Path, Any]],
) -> None:
    # GIVEN a lazily loaded GPT-2 (its weights mapped, not read)
    folder, _ = saved["gpt2"]
    with record(sources=["ram"]):
        model = transformers.GPT2LMHeadModel.from_pretrained(folder)
    # WHEN a later recording uses every weight once
    with record(sources=["ram"]) as rec, torch.no_grad():
        total = sum(float(p.double().sum()) for p in model.parameters())
    assert total == total  # not NaN: the weights were read
    # THEN it marks what arrived, and the timeline's file-backed RAM grew by about that
    (mark,) = [m for m in rec.recording.marks if m.name.startswith("arrived on first use")]
    assert "GPT2LMHeadModel.from_pretrained" in mark.name
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    assert mark.detail["bytes"] >= 0.9 * weights
    file_rss = rec.recording.series["ram.file"]
    assert max(file_rss.v) - file_rss.v[0] >= 0.8 * weights


def test_bin_shards_through_transformers_are_a_phase_each(gpt2_bin: Path) -> None:
    # GIVEN GPT-2 as .bin shards written by huggingface_hub
    shards = weight_files(gpt2_bin)
    assert all(s.endswith(".bin") for s in shards) and len(shards) >= 2
    # WHEN Transformers loads them
    with record(sources=["ram"]) as rec:
        transformers.GPT2LMHeadModel.from_pretrained(gpt2_bin)
    r = rec.recording
    top = one(r, "GPT2LMHeadModel.from_pretrained")
    # THEN each shard is a child "load shard i/n FILE (bytes)" under the checkpoint phase
    loads = [p for p in descendants(r, top) if p.name.startswith("load shard")]
    assert [p.detail["file"] for p in loads] == [str(gpt2_bin / s) for s in shards]
    for i, p in enumerate(loads, 1):
        assert p.name.startswith(f"load shard {i}/{len(shards)} {shards[i - 1]} (")
        assert p.detail["tensors"] > 0
    assert_exact_and_nested(r, top)


def test_hub_load_torch_model_materialises_shard_by_shard(
    saved: dict[str, tuple[Path, Any]], gpt2_bin: Path
) -> None:
    # GIVEN a randomly initialised GPT-2 and .bin shards written by huggingface_hub
    _, original = saved["gpt2"]
    model = transformers.GPT2LMHeadModel(original.config)
    shards = weight_files(gpt2_bin)
    # WHEN huggingface_hub's load_torch_model loads them into it
    with record(sources=["ram"]) as rec:
        huggingface_hub.load_torch_model(model, gpt2_bin, safe=False)
    r = rec.recording
    assert torch.equal(model.transformer.wte.weight, original.transformer.wte.weight)
    # THEN its phase holds one "load shard i/n" child per shard, each really read into RAM
    top = one(r, f"load_torch_model GPT2LMHeadModel ← {gpt2_bin.name} ({len(shards)} shards")
    loads = [p for p in children(r, top) if p.name.startswith("load shard")]
    assert len(loads) == len(shards)
    assert all(p.detail["tensor_bytes"] > 0 for p in loads)
    # (growth per shard is checked in a fresh process, test_profile_of_a_loading_script:
    # here the allocator may reuse what earlier tests freed)
    # AND the copies into the model are phases too
    assert any(p.name.startswith("GPT2LMHeadModel.load_state_dict") for p in children(r, top))
    assert_exact_and_nested(r, top)


def test_accelerate_load_checkpoint_and_dispatch(saved: dict[str, tuple[Path, Any]]) -> None:
    # GIVEN a skeleton on the meta device and a sharded safetensors checkpoint
    folder, original = saved["llama"]
    shards = weight_files(folder)
    with accelerate.init_empty_weights():
        model = transformers.LlamaForCausalLM(original.config)
    # WHEN Accelerate loads and dispatches it with device_map="auto"
    with record(sources=["ram"]) as rec:
        model = accelerate.load_checkpoint_and_dispatch(model, str(folder), device_map="auto")
    r = rec.recording
    assert torch.equal(model.lm_head.weight, original.lm_head.weight)
    # THEN the phases are what it did: the device map, the load shard by shard, dispatching
    top = one(r, f"load_checkpoint_and_dispatch LlamaForCausalLM ← {folder.name} "
                 f"({len(shards)} shards")
    assert top.auto and top.depth == 0
    inner = descendants(r, top)
    assert any(p.name.startswith("infer_auto_device_map LlamaForCausalLM") for p in inner)
    assert any(p.name.startswith("dispatch_model LlamaForCausalLM") for p in inner)
    ckpt = one(r, "load_checkpoint_in_model LlamaForCausalLM")
    loads = [p for p in children(r, ckpt) if p.name.startswith("load shard")]
    assert [p.detail["file"] for p in loads] == [str(folder / s) for s in shards]
    for i, p in enumerate(loads, 1):
        assert p.name.startswith(f"load shard {i}/{len(shards)} {shards[i - 1]}")
        assert p.detail["mapped_bytes"] >= (folder / shards[i - 1]).stat().st_size
    assert_exact_and_nested(r, top)


def test_save_pretrained_and_save_torch_state_dict_have_a_phase_per_shard(
    saved: dict[str, tuple[Path, Any]], tmp_path: Path
) -> None:
    # GIVEN a model WHEN save_pretrained and huggingface_hub save it sharded
    _, model = saved["bert"]
    (tmp_path / "bin").mkdir()
    with record(sources=["ram"]) as rec:
        model.save_pretrained(tmp_path / "st", max_shard_size=SHARD)
        huggingface_hub.save_torch_state_dict(model.state_dict(), tmp_path / "bin",
                                              safe_serialization=False, max_shard_size=SHARD)
    r = rec.recording
    # THEN each is a phase with one child per file it wrote
    top = one(r, "BertModel.save_pretrained st (")
    written = [p for p in descendants(r, top) if p.name.startswith("safetensors.save_file")]
    assert sorted(os.path.basename(p.detail["file"]) for p in written) == weight_files(
        tmp_path / "st")
    hub = one(r, "save_torch_state_dict → bin (")
    saves = [p for p in children(r, hub) if p.name.startswith("torch.save")]
    assert sorted(os.path.basename(p.detail["file"]) for p in saves) == weight_files(
        tmp_path / "bin")


def test_bytes_in_names_count_tied_weights_once(saved: dict[str, tuple[Path, Any]]) -> None:
    # GIVEN GPT-2, whose lm_head shares its storage with the token embedding
    folder, model = saved["gpt2"]
    sd = model.state_dict()
    assert sd["lm_head.weight"].data_ptr() == sd["transformer.wte.weight"].data_ptr()
    # WHEN its state dict is loaded back while recording
    with record(sources=["ram"]) as rec:
        model.load_state_dict(sd)
    # THEN the bytes named are those save_pretrained stored (shared storage once): the
    # index's total_size, written by Transformers
    total = json.loads((folder / "model.safetensors.index.json").read_text())["metadata"][
        "total_size"]
    persistent = sum(t.numel() * t.element_size() for k, t in sd.items()
                     if k != "lm_head.weight")
    assert total == persistent
    (p,) = rec.recording.phases
    assert p.detail["bytes"] == total
    assert p.name == f"GPT2LMHeadModel.load_state_dict ({len(sd)} tensors, {format_size(total)})"


def test_patches_are_undone(saved: dict[str, tuple[Path, Any]]) -> None:
    # GIVEN the library functions as they are
    import accelerate.utils.modeling as am
    import safetensors

    mu = transformers.modeling_utils
    before = (mu.PreTrainedModel.__dict__["from_pretrained"], mu.safe_open,
              am.load_checkpoint_in_model, am.safe_load_file, safetensors.safe_open)
    # WHEN a recording runs (and loads something)
    with record(sources=["ram"]):
        transformers.GPT2LMHeadModel.from_pretrained(saved["gpt2"][0])
    # THEN everything is back, bound names included
    after = (mu.PreTrainedModel.__dict__["from_pretrained"], mu.safe_open,
             am.load_checkpoint_in_model, am.safe_load_file, safetensors.safe_open)
    assert after == before


SCRIPT = """
import sys
import accelerate, transformers
folder, bins = sys.argv[1], sys.argv[2]
model = transformers.GPT2LMHeadModel.from_pretrained(folder)
config = transformers.GPT2Config.from_pretrained(folder)
with accelerate.init_empty_weights():
    skeleton = transformers.GPT2LMHeadModel(config)
accelerate.load_checkpoint_in_model(skeleton, bins, device_map={"": "cpu"})
print("loaded", sum(p.numel() for p in skeleton.parameters()))
"""


def test_profile_of_a_loading_script(
    saved: dict[str, tuple[Path, Any]], gpt2_bin: Path, tmp_path: Path
) -> None:
    import subprocess

    # GIVEN a plain script (no bigviz in it) that loads GPT-2 lazily with from_pretrained,
    # then materialises .bin shards into a meta skeleton with Accelerate
    folder, _ = saved["gpt2"]
    script = tmp_path / "load.py"
    script.write_text(SCRIPT)
    out = tmp_path / "rec.json"
    # WHEN `bigviz profile -- python load.py` runs it (a fresh interpreter)
    proc = subprocess.run(
        [sys.executable, "-m", "bigviz", "profile", "--out", str(out), "--", sys.executable,
         str(script), str(folder), str(gpt2_bin)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "loaded" in proc.stdout
    rec = Recording.from_json(out.read_text())
    # THEN from_pretrained is a phase with one child per shard, and it says it was lazy
    shards = weight_files(folder)
    top = one(rec, f"GPT2LMHeadModel.from_pretrained {folder.name} ({len(shards)} shards")
    opened = [p for p in descendants(rec, top) if p.name.startswith("safe_open shard")]
    assert len(opened) == len(shards)
    assert top.detail["lazy_bytes"] > 0 and "arrives on first use" in top.name
    # AND the summary says so in words
    assert f"lazy load: {top.name}" in proc.stderr
    # AND each .bin shard Accelerate materialised grew RSS by about its bytes (the model
    # keeps them all; a fresh process has no freed memory to reuse)
    loads = [p for p in rec.phases if p.name.startswith("load shard")]
    assert len(loads) == len(weight_files(gpt2_bin))
    for p in loads:
        assert p.ram_peak_exact
        assert 0.8 * p.detail["tensor_bytes"] <= (p.ram_growth or 0), p.name
        assert (p.ram_growth or 0) <= p.detail["tensor_bytes"] + 16 * MiB, p.name


def test_a_lazy_from_pretrained_cell_says_so(saved: dict[str, tuple[Path, Any]]) -> None:
    IPython = pytest.importorskip("IPython")
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    del IPython
    folder, _ = saved["t5"]
    sh = InteractiveShell.instance()
    try:
        sh.run_line_magic("load_ext", "bigviz")
        # GIVEN a notebook cell that loads a T5 checkpoint with from_pretrained
        cell = ("%%bigviz --name t5\nfrom transformers import T5ForConditionalGeneration\n"
                f"m = T5ForConditionalGeneration.from_pretrained({str(folder)!r})\n")
        # WHEN it runs under %%bigviz
        with capture_output() as cap:
            result = sh.run_cell(cell, store_history=True)
        assert result.error_in_exec is None
        html = "\n".join(o.data["text/html"] for o in cap.outputs if "text/html" in o.data)
        rec = sh.magics_manager.registry["BigvizMagics"].recordings[-1]
        # THEN the phase table shows from_pretrained and its shard children
        top = one(rec, f"T5ForConditionalGeneration.from_pretrained {folder.name} (")
        assert len([p for p in descendants(rec, top) if p.name.startswith("safe_open shard")]) \
            == len(weight_files(folder))
        assert 'data-phase="T5ForConditionalGeneration.from_pretrained' in html
        # AND the summary says the load was lazy, with the bytes still to arrive
        assert 'class="bigviz-lazy"' in html and "lazy load: T5ForConditionalGeneration" in html
        assert format_size(top.detail["lazy_bytes"]) in html
        # AND the first use in a later profiled cell shows the arrival
        with capture_output() as cap2:
            sh.run_cell("%%bigviz --name use\nimport torch\nwith torch.no_grad():\n"
                        "    s = sum(float(p.double().sum()) for p in m.parameters())\n",
                        store_history=True)
        html2 = "\n".join(o.data["text/html"] for o in cap2.outputs if "text/html" in o.data)
        assert "arrived on first use" in html2 and "T5ForConditionalGeneration" in html2
    finally:
        InteractiveShell.clear_instance()
