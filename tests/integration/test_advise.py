"""``bigviz advise`` end to end: the pick is run in a fresh worker under the RAM budget and
its measurement is judged against the prediction by the runner (not by the advisor)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bigviz.cli import main
from tests.hf_zoo import save_hf


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.slow
def test_gpt_400mb_in_500mb_naive_is_not_proposed_and_the_pick_runs_ok(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN a 400 MB GPT and a 500 MB budget for the whole loading process (Python and torch
    # alone take ~270 MB of it: the baseline is measured by a 1 MB run), disk offload allowed
    # WHEN bigviz advise ranks the ways and verifies its pick in a fresh process
    code = main(["advise", "gpt:400MB", "--ram", "500MB", "--disk", "--verify", "--json",
                 "--work-dir", str(tmp_path)])
    data = json.loads(capsys.readouterr().out)
    # THEN naive (2 × M) is not proposed: it does not fit
    naive = [c for c in data["candidates"] if c["strategy"] == "naive"]
    assert naive and not any(c["fits"] for c in naive)
    assert data["pick"]["strategy"] != "naive"
    # AND the pick ran ok under the 500 MB budget, its peak within the predicted range
    run = data["verified"]
    assert code == 0, data["verdict"]
    assert run["outcome"] == "ok", run["error"]
    assert run["params"]["ram_budget"] == 500_000_000 or run["outcome"] == "ok"
    assert run["baseline"] + run["ram_peak"] <= 500_000_000
    assert run["checks"]["prediction"]["agrees"], run["checks"]["prediction"]
    # AND the measured baseline is the one the advice assumed, give or take the allowance
    assert abs(run["baseline"] - data["budgets"]["baseline"]) < 16 * 2**20
    assert data["verdict"].startswith(f"verify: {data['pick']['label']} ran ok")


@pytest.mark.slow
def test_a_transformers_checkpoint_pick_agrees_with_its_measurement(tmp_path: Path) -> None:
    import bigviz

    # GIVEN a ~40 MB GPT-2 written by Transformers' save_pretrained in 10 MB shards
    folder = tmp_path / "gpt2"
    save_hf("gpt2", folder, size=40_000_000, max_shard_size="10MB")
    before = _digests(folder)
    # WHEN advise picks for 1 GB and verifies the pick on the files as saved
    a = bigviz.advise(str(folder), ram="1GB", verify=True, work_dir=tmp_path / "work")
    # THEN the predictions come from the files (M = what the index says)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert a.model_bytes == index["metadata"]["total_size"]
    assert a.pick is not None and a.pick.shard_size is None  # as saved
    # AND the pick's measurement sits within its predicted range
    r = a.verified
    assert r is not None and r.ok, (r and r.error)
    assert r.checks.prediction is not None and r.checks.prediction.agrees, r.checks.prediction
    # AND nothing was written into the user's folder
    assert _digests(folder) == before


def test_bad_input_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for args, what in ((["gpt:20MB", "--ram", "abc"], "'abc'"),
                       (["gpt:20MB", "--ram=-1GB"], "'-1GB'"),  # argparse needs the =
                       (["gpt:lots", "--ram", "1GB"], "gpt:lots"),
                       (["./no/such/folder", "--ram", "1GB"], "no/such/folder")):
        # WHEN the command gets a bad value THEN it exits 2 with one line naming it
        assert main(["advise", *args, "--baseline", "270MB"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("bigviz advise: error:") and what in err
        assert "\n" not in err


def test_text_output_names_the_pick_and_the_estimate(capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    # GIVEN a small zoo model and a budget that holds one copy but not two
    code = main(["advise", "gpt:20MB", "--ram", "310MB", "--baseline", "270MB",
                 "--shard-sizes", "5MB"])
    out = capsys.readouterr().out
    # THEN it exits 0 with the pick's sentence on top and the estimate labelled as such
    assert code == 0
    lines = out.splitlines()
    assert lines[1].startswith("pick: ") and "naive needs" in lines[1]
    assert "ESTIMATE" in out and "2 × M" in out


def test_dashboard_advise_fills_the_inputs_with_the_pick(tmp_path: Path) -> None:
    pytest.importorskip("ipywidgets")
    from bigviz.widgets import Dashboard

    # GIVEN a dashboard on a 100 MB GPT and a typed RAM budget that holds one copy of the
    # model but not two (a worker's Python + torch take 270–350 MB of it, depending on what
    # the fork server imported for earlier runs)
    dash = Dashboard("gpt:100MB", strategies=["naive", "sharded", "meta", "mmap"],
                     ram_budget="480MB", work_dir=tmp_path)
    # WHEN Advise is clicked (the worker baseline is measured by a real 1 MB run)
    dash.advise_w.click()
    advice = dash.advice
    # THEN the inputs hold the pick: its strategy alone, its device map and shard size
    assert advice is not None and advice.pick is not None, dash.status
    pick = advice.pick
    assert dash.strategies_w.value == (pick.strategy,)
    assert dash.device_map_w.value == pick.device_map
    assert pick.shard_size is not None
    assert dash.plan is not None
    assert dash.plan.largest_shard == pick.largest_shard or pick.shard_size > dash.shard_size
    # AND the table shows every candidate, naive among those that do not fit
    html = dash.advice_w.value
    assert html.count("bigviz-advice-row") == len(advice.candidates)
    assert "data-fits='false' data-strategy='naive'" in html
    assert dash.status.startswith("pick: ")
    # AND Run would now sweep exactly the pick
    settings = dash.settings()
    assert settings["strategies"] == [pick.strategy]


def test_dashboard_advise_without_a_budget_says_what_to_type(tmp_path: Path) -> None:
    pytest.importorskip("ipywidgets")
    from bigviz.widgets import Dashboard

    dash = Dashboard("gpt:20MB", work_dir=tmp_path)
    dash.advise_w.click()
    assert "type a RAM budget" in dash.status and dash.advice is None
