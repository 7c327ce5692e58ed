"""A checkpoint the user already has is a model under test: a Transformers folder or an
``hf:`` id from the local cache, loaded by every strategy as saved, never written to.

References nobody here wrote: the folders are written by Transformers' ``save_pretrained``
(and huggingface_hub's ``save_torch_state_dict`` for ``.bin``), the hub cache is laid out
as huggingface_hub stores a download, and the reference checksums are recomputed here
from the files with safetensors / torch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

import bigviz
from bigviz.cli import main
from bigviz.data.result import Sweep

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import hf_zoo
from hf_zoo import file_checksums, snapshot

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

SIX = ["naive", "sharded", "meta", "mmap", "transformers", "accelerate"]


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # GIVEN a ~40 MB GPT-2 saved by Transformers in 10 MB shards
    return hf_zoo.user_gpt2(tmp_path_factory, size=40_000_000, max_shard_size="10MB")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("work")


def _check_ok(sweep: Sweep, folder: Path) -> None:
    info = bigviz.inspect_checkpoint(folder)
    for r in sweep.results:
        assert r.outcome == "ok", (r.label, r.error)
        assert r.checks.weights == "ok", r.label
        assert r.checks.prediction is not None and r.checks.prediction.agrees, (
            r.label, r.ram_peak, r.predicted)
        assert r.model_bytes == info.total_size


def test_sweep_runs_every_strategy_on_the_files_as_saved(gpt2: Path, work: Path) -> None:
    before = snapshot(gpt2)
    info = bigviz.inspect_checkpoint(gpt2)
    assert info.n_shards >= 4
    # WHEN the six strategies run on the folder
    sweep = bigviz.sweep(str(gpt2), strategies=SIX, work_dir=work)
    # THEN every run is ok, its weights equal the files, and it agrees with its prediction
    assert [r.strategy for r in sweep.results] == SIX
    _check_ok(sweep, gpt2)
    for r in sweep.results:
        # AND the runs loaded the user's files themselves, in their own dtype and format
        assert r.shard_size is None and r.format == "safetensors"
        assert r.params["checkpoint"] == str(gpt2.resolve()) and r.params["dtype"] == "float32"
        assert r.label == f"{r.strategy} · as saved · safetensors"
        assert r.params["as_saved"].startswith(f"{info.n_shards} × ≤ ")
    # AND the reference checksums were read from the files (as safetensors reads them)
    ref = file_checksums(gpt2)
    stored = [json.loads(p.read_text()) for p in work.glob("checkpoints/folder-*/checksums.json")]
    assert stored == [ref]
    # AND the predictions come from the files' real tensors (GPT-2's tied head once)
    from_pretrained = hf_zoo.model_class("gpt2").from_pretrained(gpt2)
    params = from_pretrained.parameters()  # a tied weight once
    assert info.total_size == sum(t.numel() * t.element_size() for t in params)
    # AND nothing was written into the folder
    assert snapshot(gpt2) == before


def test_cli_sweep_on_a_folder_writes_reports_and_leaves_the_folder_alone(
    gpt2: Path, work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(gpt2)
    html, js = tmp_path / "r.html", tmp_path / "r.json"
    # WHEN bigviz sweep runs the six strategies on the folder
    code = main(["sweep", "--model", str(gpt2), "--strategies", ",".join(SIX), "--out",
                 str(html), "--json", str(js), "--work-dir", str(work)])
    out = capsys.readouterr().out
    # THEN it succeeds, every run agrees with its prediction, and the table says "as saved"
    assert code == 0, out
    sweep = Sweep.from_json(js.read_text())
    _check_ok(sweep, gpt2)
    assert sweep.config["shard_sizes"] == ["as saved"]
    assert "meta · as saved" in out and "NO" not in out.split("agrees")[1]
    # AND the report says how the files are cut
    assert "as saved (" in html.read_text()
    assert snapshot(gpt2) == before


def test_other_shard_sizes_reshard_into_the_work_folder_once(
    gpt2: Path, work: Path
) -> None:
    before = snapshot(gpt2)
    # WHEN a 25 MB shard size is asked for beside the files as saved
    sweep = bigviz.sweep(str(gpt2), strategies=["meta"], shard_sizes=["as saved", "25MB"],
                         work_dir=work)
    _check_ok(sweep, gpt2)
    saved, resharded = sweep.results
    assert saved.shard_size is None and resharded.shard_size == 25_000_000
    # THEN the resharded files are in the work folder, cut as huggingface_hub cuts them
    ckpt = Path(resharded.params["checkpoint"])
    assert work in ckpt.parents
    info = bigviz.inspect_checkpoint(ckpt)
    assert max(f.bytes for f in info.files) <= 25_000_000 < info.total_size
    assert (ckpt / "config.json").is_file()  # still a Transformers folder
    assert file_checksums(ckpt) == file_checksums(gpt2)
    # AND a second sweep reuses them
    stamp = (ckpt.parent / "checksums.json").stat().st_mtime_ns
    again = bigviz.sweep(str(gpt2), strategies=["mmap"], shard_sizes=["25MB"], work_dir=work)
    assert again.results[0].params["checkpoint"] == str(ckpt)
    assert (ckpt.parent / "checksums.json").stat().st_mtime_ns == stamp
    assert snapshot(gpt2) == before


def test_a_changed_folder_is_checked_again(tmp_path: Path, work: Path) -> None:
    folder = tmp_path / "tiny"
    hf_zoo.save_hf("gpt2", folder, size=2_000_000, max_shard_size="1MB")
    first = bigviz.sweep(str(folder), strategies=["meta"], work_dir=work)
    # WHEN the user saves other weights into the same folder
    hf_zoo.save_hf("gpt2", folder, size=2_000_000, max_shard_size="1MB", seed=1)
    second = bigviz.sweep(str(folder), strategies=["meta"], work_dir=work)
    # THEN the new files are checked against their own checksums, not the old ones
    assert first.results[0].outcome == second.results[0].outcome == "ok"
    assert second.results[0].checks.weights == "ok"
    stored = work.glob("checkpoints/folder-tiny-*/checksums.json")
    sums = [json.loads(p.read_text()) for p in stored]
    assert len(sums) == 2 and file_checksums(folder) in sums


def test_hf_id_from_the_local_cache(tmp_path: Path, work: Path,
                                    monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN a Llama checkpoint laid out in a hub cache as huggingface_hub stores it
    home, snap = hf_zoo.cached_llama(tmp_path, monkeypatch, size=8_000_000,
                                     max_shard_size="3MB")
    from huggingface_hub import snapshot_download

    # (huggingface_hub, offline, finds the same snapshot)
    found = snapshot_download("acme/tiny-llama", local_files_only=True, cache_dir=home / "hub")
    assert Path(found) == snap
    before = snapshot(home)
    # WHEN the id is swept (its rotary buffers are computed, not saved)
    sweep = bigviz.sweep("hf:acme/tiny-llama", strategies=["naive", "mmap", "transformers"],
                         work_dir=work)
    # THEN the cached files load and check out; the cache is untouched
    _check_ok(sweep, snap)
    assert {r.model for r in sweep.results} == {"hf:acme/tiny-llama"}
    assert snapshot(home) == before
    # AND bigviz inspect reads the id too
    assert main(["inspect", "hf:acme/tiny-llama", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["checkpoint"]["total_size"] == bigviz.inspect_checkpoint(snap).total_size


def test_bert_bin_folder(tmp_path: Path, work: Path) -> None:
    # GIVEN BERT as .bin shards written by huggingface_hub, with its config.json
    from huggingface_hub import save_torch_state_dict

    model = hf_zoo.model_class("bert")(hf_zoo.config("bert", 6_000_000))
    folder = tmp_path / "bert-bin"
    folder.mkdir()
    save_torch_state_dict(model.state_dict(), folder, safe_serialization=False,
                          max_shard_size="2MB")
    model.config.architectures = ["BertModel"]  # what save_pretrained records
    model.config.save_pretrained(folder)
    before = snapshot(folder)
    # WHEN strategies load the .bin files as saved
    sweep = bigviz.sweep(str(folder), strategies=["sharded", "mmap", "transformers"],
                         work_dir=work)
    # THEN they run in the files' format, their weights equal the files
    _check_ok(sweep, folder)
    assert {r.format for r in sweep.results} == {"bin"}
    assert snapshot(folder) == before


def test_folder_without_config_takes_a_factory(tmp_path: Path, work: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a plain torch model saved by bigviz (no config.json) and its factory module
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "user_models.py").write_text(
        "from torch import nn\n\n\ndef build():\n"
        "    return nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 256))\n")
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    import user_models

    folder = tmp_path / "plain"
    bigviz.save_sharded(user_models.build(), folder, max_shard_size="300kB")
    # WHEN it runs with the factory
    sweep = bigviz.sweep(str(folder), strategies=["naive", "meta"], work_dir=work,
                         factory="user_models:build")
    # THEN it loads and checks out; the factory is recorded
    _check_ok(sweep, folder)
    assert sweep.results[0].params["factory"] == "user_models:build"
    # AND without it the error says what to pass
    with pytest.raises(bigviz.ConfigError, match="--factory"):
        bigviz.sweep(str(folder), strategies=["meta"], work_dir=work)


def _cli_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()  # what the set-up printed (save_pretrained's progress bar)
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("case", ["no-weights", "no-config", "unknown-arch", "uncached",
                                  "corrupt", "dtype"])
def test_bad_checkpoints_are_one_line_errors_and_nothing_is_written(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "ckpt"
    model = str(folder)
    expected: dict[str, Any] = {"code": 2}
    if case == "no-weights":
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        expected["needle"] = "holds no weights"
    else:
        hf_zoo.save_hf("gpt2", folder, size=1_000_000, max_shard_size="300kB")
    if case == "no-config":
        (folder / "config.json").unlink()
        (folder / "generation_config.json").unlink()
        expected["needle"] = "has no config.json"
    elif case == "unknown-arch":
        cfg = json.loads((folder / "config.json").read_text())
        cfg["architectures"] = ["NoSuchModelForCausalLM"]
        (folder / "config.json").write_text(json.dumps(cfg))
        expected["needle"] = "unknown to the installed Transformers"
    elif case == "uncached":
        monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-home"))
        monkeypatch.delenv("HF_HUB_CACHE", raising=False)
        model = "hf:acme/not-downloaded"
        expected["needle"] = "hf download acme/not-downloaded"
    elif case == "corrupt":
        shard = sorted(folder.glob("model-*.safetensors"))[1]
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
        expected.update(code=1, needle="truncated")
    elif case == "dtype":
        expected["needle"] = "is saved in float32"
    before = snapshot(folder)
    work = tmp_path / "work"
    argv = ["sweep", "--model", model, "--strategies", "meta", "--work-dir", str(work),
            "--out", str(tmp_path / "r.html")]
    if case == "dtype":
        argv += ["--dtype", "bfloat16"]
    # WHEN bigviz sweep is pointed at it
    code, err = _cli_error(argv, capsys)
    # THEN one line names the problem and the fix, with the exit code of its kind
    assert code == expected["code"], err
    assert len(err.splitlines()) == 1 and expected["needle"] in err, err
    # AND nothing was written into the folder, and no report was written
    assert snapshot(folder) == before
    assert not (tmp_path / "r.html").exists()


def test_dashboard_model_box_takes_a_folder(gpt2: Path) -> None:
    pytest.importorskip("ipywidgets")
    from bigviz import widgets

    # WHEN the dashboard's model box gets a checkpoint folder
    dash = widgets.Dashboard(str(gpt2))
    info = bigviz.inspect_checkpoint(gpt2)
    # THEN it shows the files as saved, no shard-size slider, and runs them as saved
    assert f"as saved</b> ({info.n_shards} × ≤ " in dash.shard_info.value
    assert dash.shard_w.disabled and not dash.run_w.disabled
    assert dash.settings()["shard_sizes"] is None
    # AND a zoo model brings the slider back
    dash.model_w.value = "gpt:10MB"
    assert not dash.shard_w.disabled and dash.settings()["shard_sizes"] == [dash.shard_size]
