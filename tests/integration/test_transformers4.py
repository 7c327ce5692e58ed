"""Loader phases on Transformers 4.4x (issue 12 A: "the versions we support, 4.4x and 5.x").

The main environment has Transformers 5.x; 4.46.3 lies in ``<repo>/.tf4`` (``make tf4``:
``pip install --target .tf4 --no-deps``), so each check runs in a child interpreter with
``PYTHONPATH=<repo>/.tf4:<repo>``: bigviz from this checkout, Transformers 4.46 from
``.tf4``, torch and the rest from the venv. Without ``.tf4`` the tests skip.

What a ``sys.setprofile`` trace of 4.46.3 ``GPT2LMHeadModel.from_pretrained`` of a sharded
folder showed (and what these tests hold bigviz to)::

    PreTrainedModel.from_pretrained
      PreTrainedModel._load_pretrained_model(model, None, keys, [shard files], …)
        for each shard file, in the index's order:
          modeling_utils.load_state_dict(shard)     safetensors: safe_open (metadata) +
                                                    load_file; .bin: torch.load(mmap=True
                                                    where the file is a zip archive)
          _load_state_dict_into_model(model, state_dict, prefix, assign)
              (_load_state_dict_into_meta_model with low_cpu_mem_usage / device_map)
      tie_weights

With torch 2.x and safetensors 0.4+, a same-dtype load is lazy: the shards are mapped and
the model's parameters are assigned the mapped tensors. 4.46 materialises shard by shard
when it cannot map (a legacy, non-zip ``.bin``: read in ``load_state_dict``) or when it
casts (``torch_dtype=float16``: copied in ``_load_state_dict_into_model``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TF4 = ROOT / ".tf4"
MiB = 2**20

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (TF4 / "transformers" / "__init__.py").is_file(),
        reason=f"Transformers 4.4x is not installed in {TF4} (run `make tf4`)",
    ),
]

CHILD = r'''
import json, os, sys
import torch
import transformers

mode, folder = sys.argv[1], sys.argv[2]
assert transformers.__version__.startswith("4."), transformers.__version__
import bigviz
assert os.path.dirname(os.path.dirname(os.path.abspath(bigviz.__file__))) == sys.argv[3]


def checksum(model):
    with torch.no_grad():
        return sum(float(p.double().sum()) for p in model.parameters())


if mode == "save":
    # GPT-2 of ~20 MB, random weights: sharded safetensors, zip .bin (what 4.46's
    # save_pretrained writes), and the same .bin shards in torch's legacy format
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=4, n_embd=320, n_head=5, vocab_size=1024,
                                     n_positions=64, bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(os.path.join(folder, "st"), max_shard_size="5MB")
    model.save_pretrained(os.path.join(folder, "bin"), max_shard_size="5MB",
                          safe_serialization=False)
    legacy = os.path.join(folder, "legacy")
    os.makedirs(legacy)
    for name in sorted(os.listdir(os.path.join(folder, "bin"))):
        src = os.path.join(folder, "bin", name)
        if name.endswith(".bin"):
            sd = torch.load(src, weights_only=True)
            torch.save(sd, os.path.join(legacy, name), _use_new_zipfile_serialization=False)
        else:
            with open(src, "rb") as f, open(os.path.join(legacy, name), "wb") as g:
                g.write(f.read())
    out = {"version": transformers.__version__, "checksum": checksum(model)}
else:
    kwargs = json.loads(sys.argv[4])
    if "torch_dtype" in kwargs:
        kwargs["torch_dtype"] = getattr(torch, kwargs["torch_dtype"])
    with bigviz.record(sources=["ram"]) as rec:
        model = transformers.GPT2LMHeadModel.from_pretrained(folder, **kwargs)
    r = rec.recording
    top = next(p for p in r.phases if p.name.startswith("GPT2LMHeadModel.from_pretrained"))
    sampled = r.series["ram.rss"].max_between(top.start, top.end)
    phases = [{"name": p.name, "parent": p.parent, "depth": p.depth, "auto": p.auto,
               "detail": {k: v for k, v in p.detail.items() if not k.startswith("_")},
               "ram_start": p.ram_start, "ram_end": p.ram_end, "ram_peak": p.ram_peak,
               "ram_growth": p.ram_growth, "ram_peak_exact": p.ram_peak_exact}
              for p in rec.recording.phases]
    out = {"version": transformers.__version__, "phases": phases, "sampled": sampled,
           "checksum": checksum(model), "dtype": str(model.transformer.wte.weight.dtype)}
print("BIGVIZ-JSON " + json.dumps(out))
'''


def child(tmp: Path, *args: str) -> dict[str, Any]:
    script = tmp / "tf4_child.py"
    script.write_text(CHILD)
    env = dict(os.environ, PYTHONPATH=f"{TF4}{os.pathsep}{ROOT}", TRANSFORMERS_OFFLINE="1",
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, str(script), args[0], args[1], str(ROOT), *args[2:]],
                          capture_output=True, text=True, timeout=240, env=env, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("BIGVIZ-JSON ")]
    out: dict[str, Any] = json.loads(line.removeprefix("BIGVIZ-JSON "))
    assert out["version"].startswith("4.46"), out["version"]
    return out


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    root = tmp_path_factory.mktemp("tf4")
    out = child(root, "save", str(root))
    return root, out["checksum"]


def weight_files(folder: Path) -> list[str]:
    for name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / name).exists():
            return sorted(set(json.loads((folder / name).read_text())["weight_map"].values()))
    raise AssertionError(f"no index in {folder}")


def load(saved: tuple[Path, float], kind: str, **kwargs: Any) -> tuple[Path, dict[str, Any]]:
    folder = saved[0] / kind
    return folder, child(saved[0], "load", str(folder), json.dumps(kwargs))


def descendants(phases: list[dict[str, Any]], i: int) -> list[tuple[int, dict[str, Any]]]:
    out, todo = [], [i]
    while todo:
        j = todo.pop()
        kids = [k for k, p in enumerate(phases) if p["parent"] == j]
        out += [(k, phases[k]) for k in kids]
        todo += kids
    return sorted(out, key=lambda kp: kp[0])


def check(folder: Path, out: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]],
                                                       list[dict[str, Any]]]:
    """The from_pretrained phase, its shard children and its "load weights into" steps,
    after the checks every 4.46 load shares."""
    phases = out["phases"]
    shards = weight_files(folder)
    assert len(shards) >= 4
    # one from_pretrained phase, a top-level automatic one, naming class, folder, shards
    tops = [i for i, p in enumerate(phases) if p["name"].startswith(
        f"GPT2LMHeadModel.from_pretrained {folder.name} ({len(shards)} shards, ")]
    assert len(tops) == 1, [p["name"] for p in phases]
    top = phases[tops[0]]
    assert top["auto"] and top["depth"] == 0 and top["parent"] is None
    assert top["detail"]["bytes"] == sum((folder / s).stat().st_size for s in shards)
    inner = descendants(phases, tops[0])
    # one child per shard file, in the index's order, each "load shard i/n FILE (bytes)"
    loads = [p for _, p in inner if p["name"].startswith("load shard")]
    assert [p["detail"]["file"] for p in loads] == [str(folder / s) for s in shards]
    for i, (p, s) in enumerate(zip(loads, shards, strict=True), 1):
        assert p["name"].startswith(f"load shard {i}/{len(shards)} {s} (")
        assert p["detail"]["bytes"] == (folder / s).stat().st_size
        assert p["detail"]["tensors"] > 0 and p["detail"]["tensor_bytes"] > 0
    # shard by shard: each load is followed by its own "load weights into" step
    intos = [p for _, p in inner if p["name"].startswith("load weights into GPT2LMHeadModel (")]
    assert len(intos) == len(shards)
    assert [p["detail"]["tensors"] for p in intos] == [p["detail"]["tensors"] for p in loads]
    order = [p["name"].split(" ")[0] + p["name"].split(" ")[1] for _, p in inner
             if p["name"].startswith(("load shard", "load weights into"))]
    assert order == ["loadshard", "loadweights"] * len(shards)
    assert any(p["name"].startswith("tie weights") for _, p in inner)
    # exact peaks (the kernel's VmHWM), nested consistently; the sampled timeline never
    # exceeds the from_pretrained phase's peak
    for p in [top, *(q for _, q in inner)]:
        assert p["ram_peak_exact"], p["name"]
        assert p["ram_peak"] >= max(p["ram_start"], p["ram_end"]) - 4096, p["name"]
        if p["parent"] is not None:
            assert phases[p["parent"]]["ram_peak"] >= p["ram_peak"] - 4096, p["name"]
    assert out["sampled"] is None or out["sampled"] <= top["ram_peak"] + MiB
    return top, loads, intos


def test_tf4_is_the_old_transformers_and_this_checkout() -> None:
    # the child really imports Transformers 4.46 from .tf4 and bigviz from the checkout
    probe = ("import transformers, huggingface_hub, bigviz; print(transformers.__version__, "
             "huggingface_hub.__version__, bigviz.__file__)")
    env = dict(os.environ, PYTHONPATH=f"{TF4}{os.pathsep}{ROOT}")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, env=env, cwd="/")
    assert proc.returncode == 0, proc.stderr[-2000:]
    tf, hub, where = proc.stdout.split()
    assert tf == "4.46.3" and hub.startswith("0.") and where == str(ROOT / "bigviz" /
                                                                     "__init__.py")


@pytest.mark.parametrize("kind", ["st", "bin"])
def test_a_same_dtype_load_has_a_child_per_shard_and_is_lazy(
    saved: tuple[Path, float], kind: str
) -> None:
    # GIVEN sharded safetensors / zip .bin files written by 4.46's save_pretrained
    # WHEN 4.46 from_pretrained loads them while recording
    folder, out = load(saved, kind)
    assert out["checksum"] == saved[1]  # the weights are the saved ones
    top, loads, _ = check(folder, out)
    # THEN each shard was mapped, not read (torch.load(mmap=True) / safetensors), the
    # model was assigned the mapped tensors, and the phases say the bytes arrive later
    total = top["detail"]["bytes"]
    assert top["detail"]["mapped_bytes"] >= 0.99 * total
    assert top["detail"]["lazy_bytes"] > 0.5 * total and "arrives on first use" in top["name"]
    for p in loads:
        assert p["detail"]["mapped_bytes"] >= p["detail"]["bytes"] - 4096
        assert (p["ram_growth"] or 0) < p["detail"]["tensor_bytes"] / 2, p["name"]


def test_legacy_bin_shards_materialise_shard_by_shard(saved: tuple[Path, float]) -> None:
    # GIVEN .bin shards in torch's legacy (non-zip) format, which cannot be mapped
    # WHEN 4.46 from_pretrained loads them while recording (a fresh process)
    folder, out = load(saved, "legacy")
    assert out["checksum"] == saved[1]
    top, loads, _ = check(folder, out)
    # THEN each shard child is a real read: RSS grows by about the shard's tensor bytes
    for p in loads:
        tb = p["detail"]["tensor_bytes"]
        assert 0.8 * tb <= (p["ram_growth"] or 0) <= tb + 4 * MiB, p["name"]
        assert "mapped" not in p["name"]
    # the model keeps them (assigned), so the load grows by about the checkpoint
    assert (top["ram_growth"] or 0) >= 0.8 * sum(p["detail"]["tensor_bytes"] for p in loads)
    assert "lazy_bytes" not in top["detail"]


def test_a_casting_load_materialises_into_the_model_shard_by_shard(
    saved: tuple[Path, float],
) -> None:
    # GIVEN sharded safetensors in float32 WHEN 4.46 loads them as float16
    folder, out = load(saved, "st", torch_dtype="float16")
    assert out["dtype"] == "torch.float16"
    assert out["checksum"] == pytest.approx(saved[1], rel=1e-2, abs=1.0)
    top, loads, intos = check(folder, out)
    assert "dtype=float16" in top["name"]
    # THEN each shard's "load weights into" step copies (casts) it into the model: RSS
    # grows by at least the float16 bytes of that shard, one shard at a time
    for p in intos:
        assert (p["ram_growth"] or 0) >= 0.4 * p["detail"]["bytes"], p["name"]
        assert p["detail"]["bytes"] > 0
    # each shard + its step grows RSS; no step holds more than its shard (mapped pages
    # read + the float16 copy, plus slack)
    for shard, step in zip(loads, intos, strict=True):
        assert (shard["ram_growth"] or 0) + (step["ram_growth"] or 0) > 0
        assert (step["ram_growth"] or 0) <= 1.5 * shard["detail"]["bytes"] + 4 * MiB
