"""The dashboard's state and behaviour, without a browser (the widgets are a thin skin).

The browser test (test_dashboard_browser.py) checks the same dashboard rendered by Voila.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ipywidgets")

from bigviz._errors import ConfigError
from bigviz.data.recording import Phase, Recording
from bigviz.widgets import CUSTOM, Dashboard, phase_table_html


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # checkpoints are saved once per (model, shard size) and reused across tests
    yield tmp_path_factory.mktemp("work")


def test_missing_ipywidgets_fails_only_when_a_dashboard_is_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN ipywidgets cannot be imported
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    # THEN the module and its tables still work
    html = phase_table_html(Recording(phases=[Phase("load", 0.0, 1.0)]))
    assert 'data-phase="load"' in html
    # AND making a dashboard says what to install
    with pytest.raises(ImportError, match="pip install ipywidgets"):
        Dashboard("gpt:20MB")


def test_user_strings_are_escaped_in_tables() -> None:
    rec = Recording(phases=[Phase("<script>alert(1)</script>", 0.0, 1.0)])
    html = phase_table_html(rec)
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_slider_shows_shard_count_and_largest_shard_live(work: Path) -> None:
    # GIVEN a dashboard on a ~20 MB model
    dash = Dashboard("gpt:20MB", shard_size="20MB", work_dir=work)
    assert dash.plan is not None
    one = dash.plan.n_shards
    # WHEN the slider moves to a quarter of that size
    dash.shard_w.value = 5e6
    # THEN the count and largest shard follow at once (no run), and the label says so
    assert dash.shard_size == 5_000_000
    assert dash.plan.n_shards > one
    assert dash.plan.largest_shard <= 5_000_000 or dash.plan.n_shards == 1
    assert f'data-n="{dash.plan.n_shards}"' in dash.shard_info.value
    # the slider spans from many shards to a single file for this model
    assert 10**dash.shard_w.min < dash.plan.total_size / 20
    assert 10**dash.shard_w.max >= dash.plan.total_size


def test_bad_model_spec_is_shown_and_blocks_run(work: Path) -> None:
    dash = Dashboard("gpt:20MB", work_dir=work)
    dash.model_w.value = "gpt:lots"
    assert dash.plan is None and dash.plan_error and "gpt:lots" in dash.plan_error
    assert "gpt:lots" in dash.shard_info.value
    assert dash.run_w.disabled
    with pytest.raises(ConfigError, match="gpt:lots"):
        dash.run()
    assert "gpt:lots" in dash.status
    # fixing the spec brings the plan and the Run button back
    dash.model_w.value = "mlp:10MB"
    assert dash.plan is not None and not dash.run_w.disabled


def test_settings_check_custom_json_strategies_and_budget(work: Path) -> None:
    dash = Dashboard("gpt:20MB", work_dir=work)
    dash.device_map_w.value = CUSTOM
    assert dash.device_json_box.layout.display == "flex"
    # the placeholder and the hint name this model's own modules, not made-up ones
    assert "transformer" in dash.device_json_w.placeholder
    assert "embed" not in dash.device_json_w.placeholder
    assert "<code>lm_head</code>" in dash.device_json_hint.value
    dash.device_json_w.value = "{not json"
    with pytest.raises(ConfigError, match="not JSON"):
        dash.settings()
    dash.device_json_w.value = '{"": "disk"}'
    dash.max_memory_w.value = "cpu=1GB"
    dash.ram_budget_w.value = "4GB"
    s = dash.settings()
    # the CPU-only defaults are greyed out for a custom map: dispatch was ticked instead
    assert s["strategies"] == ["dispatch"]
    assert s["device_maps"] == [{"": "disk"}] and s["max_memory"] == {"cpu": "1GB"}
    assert s["ram_budget"] == "4GB" and s["shard_sizes"] == [dash.shard_size]
    # an error names the box it came from
    dash.ram_budget_w.value = "4 parsecs"
    with pytest.raises(ConfigError, match=r"^RAM budget: .*'4 parsecs'"):
        dash.settings()
    dash.ram_budget_w.value = ""
    dash.max_memory_w.value = "cpu=lots"
    with pytest.raises(ConfigError, match=r"^max_memory: "):
        dash.settings()
    dash.max_memory_w.value = ""
    dash.strategies_w.value = ()
    with pytest.raises(ConfigError, match="no strategy"):
        dash.settings()


def test_disk_greys_out_cpu_only_strategies_and_back(work: Path) -> None:
    # GIVEN the default strategies on the cpu map
    dash = Dashboard("gpt:20MB", work_dir=work)
    defaults = ("naive", "sharded", "meta", "mmap")
    assert dash.strategies_w.value == defaults
    # WHEN disk is chosen
    dash.device_map_w.value = "disk"
    boxes = dash.strategies_w.boxes
    # THEN the CPU-only ones are greyed out with a tooltip saying why, dispatch is ticked
    for name in defaults:
        assert boxes[name].disabled and not boxes[name].value
        assert "CPU RAM only" in boxes[name].tooltip
    assert not boxes["dispatch"].disabled and dash.strategies_w.value == ("dispatch",)
    # AND the reason is said once, naming the four
    hint = dash.strategies_hint.value
    assert hint.count("CPU RAM only") == 1 and "naive, sharded, meta, mmap" in hint
    assert dash.settings()["strategies"] == ["dispatch"]
    # a greyed-out strategy cannot be run by setting it either
    dash.strategies_w.value = ("naive",)
    assert dash.strategies_w.value == ()
    dash.strategies_w.value = ("dispatch",)
    # WHEN the map goes back to cpu THEN the user's picks come back
    dash.strategies_w.value = defaults  # parked while disk is chosen
    assert dash.strategies_w.value == ()
    dash.device_map_w.value = "cpu"
    assert dash.strategies_w.value == defaults and not dash.strategies_hint.value
    # no GPU here (CI): no cuda entries are offered
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        assert not [m for m in dash.device_map_w.options if str(m).startswith("cuda")]


def test_bad_custom_map_is_refused_before_a_worker_starts(work: Path) -> None:
    dash = Dashboard("gpt:20MB", strategies=["dispatch"], work_dir=work)
    dash.device_map_w.value = CUSTOM
    dash.device_json_w.value = '{"encoder.layers": "cpu"}'
    # WHEN Run is clicked THEN nothing starts and the status names the valid modules
    dash.run_w.click()
    assert dash._job is None and not dash.running and dash.sweep is None
    assert dash.progress == [] and not dash.run_w.disabled
    assert "'encoder.layers' is not a module" in dash.status
    assert "transformer, lm_head" in dash.status and "…" not in dash.status
    # a map that leaves weights out is refused too, saying what to add
    dash.device_json_w.value = '{"transformer": "disk"}'
    with pytest.raises(ConfigError, match="add 'lm_head'"):
        dash.run()
    assert dash._job is None


def test_shard_line_uses_one_unit_system_and_explains_a_big_tensor(work: Path) -> None:
    dash = Dashboard("gpt:20MB", shard_size="20MB", work_dir=work)
    assert "MiB" not in dash.shard_info.value and "GiB" not in dash.shard_info.value
    # WHEN the maximum is below the largest tensor (the embedding)
    dash.shard_w.value = 10**dash.shard_w.min
    assert dash.plan is not None and dash.plan.largest_shard > dash.shard_size
    # THEN the line says why the largest shard is above the maximum
    info = dash.shard_info.value
    assert "bigviz-shard-over" in info and "never split" in info
    assert "tensor &#x27;transformer.wte.weight&#x27; alone is" in info or \
        "tensor 'transformer.wte.weight' alone is" in info
    assert "MiB" not in info
    # the baseline is shown beside the budget, before any run
    assert "baseline" in dash.baseline_w.value and "budget" in dash.baseline_w.value


@pytest.mark.slow
def test_run_is_non_blocking_and_fills_progress_results_and_exports(
    work: Path, tmp_path: Path
) -> None:
    # GIVEN a dashboard with three strategies and 5 MB shards
    dash = Dashboard("gpt:20MB", shard_size="5MB", strategies=["naive", "sharded", "meta"],
                     work_dir=work, out_dir=tmp_path / "reports")
    planned = dash.plan
    assert planned is not None
    # WHEN Run is clicked
    t0 = time.monotonic()
    dash.run_w.click()
    # THEN it returns at once, with the sweep going on in the background
    assert time.monotonic() - t0 < 1.0
    assert dash.running and dash.run_w.disabled and not dash.cancel_w.disabled
    sweep = dash.wait(timeout=180)
    assert sweep is not None and not dash.running
    assert [(r.strategy, r.outcome) for r in sweep.results] == [
        ("naive", "ok"), ("sharded", "ok"), ("meta", "ok")]
    # the checkpoint really has the shard count the slider showed before the run
    ckpt = Path(sweep.results[0].params["checkpoint"])
    assert len(list(ckpt.glob("*.safetensors"))) == planned.n_shards
    # one finished progress bar per run
    assert [(state, value) for _l, value, state in dash.progress] == [("ok", 1.0)] * 3
    # the live timeline, peak chart and timelines were drawn; the table has a row per run
    for image in (dash.live_w, dash.peaks_w, dash.timelines_w, dash.timeline_w):
        assert bytes(image.value[:4]) == b"\x89PNG"
    assert dash.results_w.layout.display == "flex"
    # each run's timeline is shown once: the live chart gives way to the results
    assert dash.live_w.layout.display == "none"
    assert dash.timelines_box.layout.display == "flex"  # three runs: the overlay compares
    # the measured worker baseline is now shown beside the budget
    assert "measured by the last run" in dash.baseline_w.value
    for name in ("naive", "sharded", "meta"):
        assert f'data-strategy="{name}"' in dash.table_w.value
    assert "done: 3 runs" in dash.status
    # picking another run draws its own timeline
    first = dash.timeline_w.value
    dash.pick_w.value = 2
    assert bytes(dash.timeline_w.value[:4]) == b"\x89PNG"
    assert bytes(dash.timeline_w.value) != bytes(first)
    # WHEN each export button is clicked THEN each report is written and linked
    for button in dash.export_w:
        button.click()
    suffixes = sorted(p.suffix for p in dash.exported)
    assert suffixes == [".html", ".json", ".md"]
    assert all(p.exists() and p.stat().st_size > 0 for p in dash.exported)
    assert dash.links_w.value.count("bigviz-report-link") == 3
    assert not dash.run_w.disabled and dash.cancel_w.disabled


@pytest.mark.slow
def test_cancel_stops_the_running_worker(work: Path) -> None:
    # GIVEN a run big enough to still be going when Cancel is clicked
    dash = Dashboard("gpt:200MB", shard_size="100MB", strategies=["naive", "meta"],
                     work_dir=work, redraw_s=10.0)
    dash.run()
    deadline = time.monotonic() + 120
    while not any(state == "running" for _l, _v, state in dash.progress):
        assert time.monotonic() < deadline and dash.running, dash.status
        time.sleep(0.02)
    # WHEN Cancel is clicked while the first worker runs
    dash.cancel_w.click()
    sweep = dash.wait(timeout=60)
    # THEN that run reads "cancelled" and no further run started
    assert sweep is not None
    assert [(r.strategy, r.outcome) for r in sweep.results] == [("naive", "cancelled")]
    assert dash.progress[0][2] == "cancelled"
    # AND the run that never started says "skipped", not an empty row
    _label, _bar, note = dash._rows[1]
    assert "skipped" in note.value
    # (the autouse fixture checks that no worker process is left running)


def test_a_run_that_cannot_start_says_why(work: Path) -> None:
    # GIVEN a device map naming a GPU this machine does not have (no GPU in CI)
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    dash = Dashboard("gpt:20MB", strategies=["dispatch"], device_map="cuda:3", work_dir=work)
    # THEN Run refuses it before any process starts, and the status line says why
    with pytest.raises(ConfigError, match=r"^device map: cuda:3 .*no CUDA device"):
        dash.run()
    assert "cuda" in dash.status and dash.sweep is None and dash._job is None
    assert not dash.running and not dash.run_w.disabled and dash.cancel_w.disabled
