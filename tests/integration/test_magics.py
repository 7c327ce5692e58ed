"""The magics, driven through a real IPython ``InteractiveShell`` (the memray habit).

Each test runs cells exactly as a notebook would and checks what the magic displayed
(images, tables, links) and that the cell itself behaves as without the magic.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

IPython = pytest.importorskip("IPython")
from IPython.core.error import UsageError  # noqa: E402
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402
from IPython.utils.capture import CapturedIO, capture_output  # noqa: E402


@pytest.fixture
def shell() -> Iterator[Any]:
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "bigviz")
    yield sh
    InteractiveShell.clear_instance()


def run(sh: Any, code: str) -> tuple[Any, CapturedIO]:
    with capture_output() as cap:
        result = sh.run_cell(code, store_history=True)
    return result, cap


def mimes(cap: CapturedIO) -> list[str]:
    return [m for out in cap.outputs for m in out.data]


def html_outputs(cap: CapturedIO) -> str:
    return "\n".join(out.data["text/html"] for out in cap.outputs if "text/html" in out.data)


def timeline_png(cap: CapturedIO) -> bytes:
    """The PNG of the one timeline ``%%bigviz`` showed: an interactive view (its samples
    in ``data-bigviz``, its script with it) whose static fallback is that PNG."""
    import base64

    views = [out.data["text/html"] for out in cap.outputs
             if 'class="bigviz-itl-box"' in out.data.get("text/html", "")]
    assert len(views) == 1, mimes(cap)
    (view,) = views
    assert 'data-bigviz="' in view and "<canvas" in view and "<script>" in view
    m = re.search(r'<div class="bigviz-itl-fallback"><img [^>]*src="data:image/png;base64,'
                  r'([A-Za-z0-9+/=]+)"', view)
    assert m is not None, view[-500:]
    png = base64.b64decode(m.group(1))
    assert png[:4] == b"\x89PNG"
    return png



def test_cell_is_profiled_and_its_value_still_displays(shell: Any, tmp_path: Path) -> None:
    # GIVEN a cell that saves and loads a real 32 MiB tensor
    path = tmp_path / "w.pt"
    cell = (f"%%bigviz --name io\nimport torch\ntorch.save(torch.ones(2**23), {str(path)!r})\n"
            f"t = torch.load({str(path)!r})\nint(t.sum())\n")
    # WHEN it runs under %%bigviz
    result, cap = run(shell, cell)
    # THEN the cell's value is the cell's result, as without the magic
    assert result.error_in_exec is None
    assert result.result == 2**23
    assert shell.user_ns["t"].numel() == 2**23
    # AND an interactive timeline (the static PNG its fallback) and a phase table were
    # displayed under it
    timeline_png(cap)
    table = html_outputs(cap)
    assert 'class="bigviz-phases"' in table
    # the automatic phases name what happened: the load of our file
    phases = re.findall(r'data-phase="([^"]*)"', table)
    assert any("torch.load" in p and "w.pt" in p for p in phases), phases
    rec = shell.magics_manager.registry["BigvizMagics"].recordings[-1]
    load = next(p for p in rec.phases if "torch.load" in p.name)
    assert load.ram_growth is not None and load.ram_growth >= 30 * 2**20


def test_an_unnamed_cell_is_named_by_its_in_number(shell: Any) -> None:
    run(shell, "x0 = 1")  # GIVEN a cell before it
    # WHEN an unnamed cell is profiled (and fails, so its traceback names it too)
    result, cap = run(shell, "%%bigviz\nbuf = bytearray(2**20)\nraise KeyError('k')\n")
    # THEN its recording and report carry its own In [N], the number its prompt shows
    rec = shell.magics_manager.registry["BigvizMagics"].recordings[-1]
    assert result.execution_count == 2
    assert rec.name == "cell [2]" and rec.meta["cell"]["execution_count"] == 2
    plain = re.sub(r"\x1b\[[0-9;]*m", "", cap.stdout + cap.stderr)
    assert "Cell In[2], line 2" in plain, plain[-800:]  # line 2 of the code


def test_semicolon_still_silences_the_value(shell: Any) -> None:
    result, cap = run(shell, "%%bigviz\nx = 41\nx + 1;\n")
    assert result.result is None
    assert "Out[" not in cap.stdout
    assert shell.user_ns["x"] == 41


def test_exception_propagates_with_the_users_line_and_timeline_still_shows(shell: Any) -> None:
    # GIVEN a cell that fails on its third line
    result, cap = run(shell, "%%bigviz\nbefore = 1\nbuf = bytearray(2**20)\n"
                             "raise ValueError('boom from the cell')\nafter = 2\n")
    # THEN the cell fails as without the magic (a notebook's Run All stops here)
    assert isinstance(result.error_in_exec, ValueError)
    assert shell.user_ns["before"] == 1 and "after" not in shell.user_ns
    # AND the traceback shows the user's line
    plain = re.sub(r"\x1b\[[0-9;]*m", "", cap.stdout + cap.stderr)
    assert "raise ValueError('boom from the cell')" in plain
    # AND what was recorded up to the failure is still shown
    timeline_png(cap)


def _background(png: bytes | str) -> float:
    """Mean of the top-left pixel's RGB: the figure's background (0 black, 1 white)."""
    import base64
    import io

    from matplotlib.image import imread

    data = base64.b64decode(png) if isinstance(png, str) else png
    return float(imread(io.BytesIO(data))[2, 2, :3].mean())


def test_figures_are_drawn_for_the_theme_jupyterlab_shows(
    shell: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a kernel whose JupyterLab has JupyterLab Dark picked (its settings file, as
    # JupyterLab writes it, comments included)
    settings = tmp_path / "lab"
    f = settings / "@jupyterlab" / "apputils-extension" / "themes.jupyterlab-settings"
    f.parent.mkdir(parents=True)
    f.write_text('{\n  // Theme\n  "theme": "JupyterLab Dark",\n}\n')
    monkeypatch.setenv("JUPYTERLAB_SETTINGS_DIR", str(settings))
    monkeypatch.setenv("JUPYTERLAB_DIR", str(tmp_path / "app"))  # no admin overrides
    # WHEN a cell is profiled THEN its timeline's static figure is dark, not a white block
    _r, cap = run(shell, "%%bigviz --name dark\nbuf = bytearray(8 * 2**20)\n")
    assert _background(timeline_png(cap)) < 0.15
    # AND so is the compare figure
    _r, cap = run(shell, "%bigviz compare")
    (png,) = [out.data["image/png"] for out in cap.outputs if "image/png" in out.data]
    assert _background(png) < 0.15
    # AND --theme light overrides the detection
    _r, cap = run(shell, "%%bigviz --name forced --theme light\nbuf2 = bytearray(2**20)\n")
    assert _background(timeline_png(cap)) > 0.9
    # AND back in JupyterLab Light the default draws light again
    f.write_text('{"theme": "JupyterLab Light"}')
    _r, cap = run(shell, "%%bigviz --name light\nbuf3 = bytearray(2**20)\n")
    assert _background(timeline_png(cap)) > 0.9


def test_bad_cell_arguments_raise_usage_error_and_the_cell_does_not_run(shell: Any) -> None:
    for line, expected in (("--interval 0", "interval"), ("--bogus", "unrecognized"),
                           ("--interval fast", "invalid float"),
                           ("--report /no/such/dir/r.html", "does not exist"),
                           ("--report r.pdf", ".html")):
        result, _cap = run(shell, f"%%bigviz {line}\nran = True\n")
        assert isinstance(result.error_in_exec, UsageError), line
        assert expected in str(result.error_in_exec)
        assert "ran" not in shell.user_ns


def test_bad_line_arguments_raise_usage_error_naming_the_value(shell: Any) -> None:
    result, _ = run(shell, "%bigviz sweep --shard-sizes 12XB --strategies meta")
    assert isinstance(result.error_in_exec, UsageError)
    assert "12XB" in str(result.error_in_exec)
    result, _ = run(shell, "%bigviz frobnicate")
    assert isinstance(result.error_in_exec, UsageError)
    assert "invalid choice" in str(result.error_in_exec)
    result, _ = run(shell, "%bigviz compare")
    assert isinstance(result.error_in_exec, UsageError)
    assert "%%bigviz" in str(result.error_in_exec)


def test_help_shows_the_argparse_options(shell: Any) -> None:
    _result, cap = run(shell, "%bigviz?")
    for option in ("--no-instrument", "--interval MS", "--report PATH", "--shard-sizes",
                   "--ram-budget", "dashboard", "compare", "export"):
        assert option in cap.stdout, option
    # -h inside the magic prints that command's help and does nothing else
    result, cap = run(shell, "%bigviz sweep -h")
    assert result.error_in_exec is None
    assert "--device-map" in cap.stdout


def test_compare_and_export_cover_the_profiled_cells(shell: Any, tmp_path: Path) -> None:
    # GIVEN two profiled cells of different sizes
    run(shell, "%%bigviz --name small\na = bytearray(4 * 2**20)\n")
    run(shell, "%%bigviz --name big\nb = bytearray(48 * 2**20)\n")
    # WHEN they are compared THEN one overlay figure and a row per cell are shown
    result, cap = run(shell, "%bigviz compare --last 2")
    assert result.error_in_exec is None
    assert mimes(cap).count("image/png") == 1
    rows = re.findall(r'<tr data-strategy="([^"]*)"', html_outputs(cap))
    assert rows == ["small", "big"]
    # WHEN the kernel's recordings are exported THEN the report holds both, with a link
    out = tmp_path / "kernel.html"
    result, cap = run(shell, f"%bigviz export {out}")
    assert result.error_in_exec is None
    page = out.read_text()
    assert "small" in page and "big" in page
    assert "bigviz-report-link" in html_outputs(cap)
    out_json = tmp_path / "kernel.json"
    run(shell, f"%bigviz export {out_json}")
    from bigviz import report

    runs = report.load(out_json)
    assert isinstance(runs, list) and [r.strategy for r in runs] == ["small", "big"]
    # the bigger cell really needed more memory
    assert (runs[1].ram_peak or 0) > (runs[0].ram_peak or 0) + 30 * 2**20


def test_report_option_writes_the_cell_report(shell: Any, tmp_path: Path) -> None:
    out = tmp_path / "cell.json"
    result, _cap = run(shell, f"%%bigviz --name saved --report {out}\nq = 1\n")
    assert result.error_in_exec is None
    from bigviz import report

    # the same report as `%bigviz export` of this one cell: the cell as a run, with its code
    (saved,) = report.load(out)  # type: ignore[misc]
    assert saved.recording.name == "saved"
    assert saved.recording.meta["cell"]["code"] == "q = 1\n"


MiB = 2**20


def _rss() -> int:
    """This process's RSS now, from the kernel (the reference, read outside the magic)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    pytest.skip("no /proc/self/status here")


def test_cell_growth_is_measured_from_the_cells_start_and_the_baseline_is_shown(
    shell: Any, tmp_path: Path
) -> None:
    from bigviz.tables.findings import cell_of
    from bigviz.units import format_size

    run(shell, "import torch")  # imported before: the cell's growth is its tensor's
    # GIVEN a cell that allocates 300 MiB first and only then reaches an automatic phase
    # (building a model is no phase, saving it is)
    cell = (f"%%bigviz --name build\nw = torch.ones(300 * 2**18)\n"
            f"torch.save(w[:1024].clone(), {str(tmp_path / 'w.pt')!r})\n")
    before = _rss()
    result, cap = run(shell, cell)
    after = _rss()  # the tensor is still alive: this is the cell's growth, measured outside
    assert result.error_in_exec is None
    rec = shell.magics_manager.registry["BigvizMagics"].recordings[-1]
    facts = cell_of(rec)
    assert facts is not None and facts.baseline is not None and facts.growth is not None
    # the first automatic phase starts after the 300 MiB: growth from there would be ~0
    first = next(p for p in rec.phases if p.auto)
    assert (first.ram_start or 0) - facts.baseline >= 290 * MiB
    # THEN the growth is measured from the cell's start: the 300 MiB tensor, and within
    # 16 MiB of the growth the kernel reports around the cell (the cell's peak ≈ its end)
    assert 290 * MiB <= facts.growth <= 316 * MiB, format_size(facts.growth)
    assert abs(facts.growth - (after - before)) <= 16 * MiB, (facts.growth, after - before)
    # the baseline is the RSS at the cell's start (the recorder's own start costs < 16 MiB)
    assert before <= facts.baseline + 1 * MiB and facts.baseline - before <= 16 * MiB
    # AND the magic prints the growth and its baseline under the timeline
    shown = html_outputs(cap)
    line = re.search(r'<p class="bigviz-cell">(.*?)</p>', shown)
    assert line is not None, shown
    text = line.group(1).replace("&#x27;", "'")
    assert f"RSS {format_size(facts.baseline)} at the cell's start (its baseline)" in text
    assert f"+{format_size(facts.growth)} above it" in text
    # AND the interactive timeline draws that baseline (bytes in its data)
    assert f'&quot;baseline&quot;:{facts.baseline}' in html_outputs(cap)
    timeline_png(cap)
    # AND `%bigviz compare` / export take the same figure: the cell as a run above its start
    from bigviz.magics import _cell_runs

    (as_run,) = _cell_runs(shell.magics_manager.registry["BigvizMagics"].cells[-1:])
    assert as_run.baseline == facts.baseline and as_run.ram_peak == facts.growth
    assert (as_run.ram_anon_peak or 0) >= 280 * MiB


def test_export_of_unrelated_cells_compares_nothing_and_carries_each_cells_code(
    shell: Any, tmp_path: Path
) -> None:
    import html as _html

    from bigviz import report

    run(shell, "import torch")
    # GIVEN two unrelated cells: one builds and saves (64 MiB), one loads a small file
    # and holds markup in its code
    path = tmp_path / "w.pt"
    build = f"w = torch.ones(64 * 2**18)\ntorch.save(w[:2**18].clone(), {str(path)!r})\n"
    load = f"x = torch.load({str(path)!r})\nnote = '<b>x & y</b>' if 1 < 2 else ''\n"
    run(shell, f"%%bigviz --name \"build + save\"\n{build}")
    run(shell, f"%%bigviz --name load\n{load}")
    # WHEN the kernel's cells are exported as HTML, Markdown and JSON
    for suffix in ("html", "md", "json"):
        result, _cap = run(shell, f"%bigviz export {tmp_path / ('kernel.' + suffix)}")
        assert result.error_in_exec is None
    page = (tmp_path / "kernel.html").read_text()
    md = (tmp_path / "kernel.md").read_text()
    for text in (page, md):
        # THEN no cell "cuts" another's peak, and no strategy facts are invented for cells
        assert "cuts peak RAM" not in text
        assert "shard size" not in text.lower() and "one file" not in text
        assert "format —" not in text and "predicted" not in text
        # AND the footnote says what a cell's baseline is
        assert "RSS just before the cell" in text.replace("&#x27;", "'")
        assert "after imports" not in text
        # AND each cell's code is in it, HTML-escaped, inside a collapsed <details>
        folded = re.findall(r"<details[^>]*><summary>Code of (.*?)</summary>(.*?)</details>",
                            text, flags=re.S)
        assert len(folded) == 2, folded
        codes = "\n".join(body for _name, body in folded)
        assert _html.escape("note = '<b>x & y</b>' if 1 < 2", quote=False) in codes \
            or _html.escape("note = '<b>x & y</b>' if 1 < 2") in codes
        assert "<b>x & y</b>" not in text
    # AND the anonymous and file-backed columns hold numbers (the HTML's data-v values)
    table = re.search(r'<table class="sortable summary cells">(.*?)</table>', page, re.S)
    assert table is not None
    rows = re.findall(r"<tr><td>(.*?)</tr>", table.group(1), re.S)
    assert len(rows) == 2
    for row in rows:
        values = re.findall(r'data-v="([^"]*)"', row)
        # RSS at start, peak, anonymous, file-backed: all measured
        assert all(v != "" for v in values[:4]), row
    build_row = re.findall(r'data-v="([^"]*)"', rows[0])
    assert int(build_row[1]) >= 60 * MiB and int(build_row[2]) >= 56 * MiB
    md_rows = [r for r in md.splitlines() if r.startswith(("| build", "| load"))]
    assert len(md_rows) == 2 and all("—" not in r for r in md_rows), md_rows
    # AND the JSON keeps each cell's code and start
    runs = report.load(tmp_path / "kernel.json")
    assert isinstance(runs, list)
    assert [r.recording.meta["cell"]["code"] for r in runs] == [build, load]
    assert all(r.baseline == r.recording.meta["cell"]["start"]["rss"] for r in runs)


def test_dashboard_magic_displays_a_widget(shell: Any) -> None:
    result, cap = run(shell, "%bigviz dashboard --model gpt:20MB")
    assert result.error_in_exec is None
    assert "application/vnd.jupyter.widget-view+json" in mimes(cap)
    dash = shell.magics_manager.registry["BigvizMagics"].dashboards[-1]
    assert dash.plan is not None and dash.plan.total_size > 19 * 10**6


@pytest.mark.slow
def test_sweep_magic_runs_and_shows_peaks_table_and_report(shell: Any, tmp_path: Path) -> None:
    out = tmp_path / "sweep.html"
    result, cap = run(shell, f"%bigviz sweep --model gpt:20MB --strategies naive,meta "
                             f"--shard-sizes 5MB,20MB --work-dir {tmp_path / 'work'} --out {out}")
    assert result.error_in_exec is None, cap.stdout
    # a peaks chart and a peak-vs-shard-size chart (two shard sizes)
    assert mimes(cap).count("image/png") == 2
    rows = re.findall(r'<tr data-strategy="([^"]*)" data-outcome="([^"]*)"', html_outputs(cap))
    assert sorted(rows) == sorted([("naive", "ok"), ("meta", "ok")] * 2)
    bars = shell.magics_manager.registry["BigvizMagics"].bars
    assert bars is not None and bars.lines()[3].startswith("[4/4] ")  # a bar per run
    assert out.exists() and "<svg" in out.read_text()
    sweep = shell.magics_manager.registry["BigvizMagics"].sweeps[-1]
    assert sweep.command.startswith("%bigviz sweep --model gpt:20MB")
    naive = [r for r in sweep.results if r.strategy == "naive"]
    meta = [r for r in sweep.results if r.strategy == "meta"]
    # the point of meta loading, as the table shows it
    assert all((m.ram_peak or 0) < (n.ram_peak or 0) for m, n in zip(meta, naive, strict=True))


@pytest.mark.slow
def test_interrupting_a_sweep_cancels_the_worker_and_keeps_finished_runs(
    shell: Any, tmp_path: Path
) -> None:
    # GIVEN a two-run sweep whose second run (naive, 100 MB) takes a while
    line = (f"%bigviz sweep --model gpt:100MB --strategies meta,naive --shard-sizes 50MB "
            f"--work-dir {tmp_path / 'work'}")
    sent = threading.Event()
    magics = shell.magics_manager.registry["BigvizMagics"]

    def first_run_done() -> bool:
        progress = magics.progress
        return progress is not None and bool(progress.runs) and progress.runs[0].finished

    with capture_output() as cap:
        def interrupt_after_first_run() -> None:
            deadline = time.monotonic() + 120
            while not first_run_done() and time.monotonic() < deadline:
                time.sleep(0.01)
            sent.set()
            os.kill(os.getpid(), signal.SIGINT)  # what "Interrupt kernel" does

        watcher = threading.Thread(target=interrupt_after_first_run, name="test-interrupter")
        watcher.start()
        result = shell.run_cell(line, store_history=True)
        watcher.join()
    assert sent.is_set()
    # THEN the cell stops as interrupted (Run All stops here) ...
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    # ... the running worker was cancelled, and the finished run is shown and kept
    sweep = shell.magics_manager.registry["BigvizMagics"].sweeps[-1]
    assert [(r.strategy, r.outcome) for r in sweep.results] == [
        ("meta", "ok"), ("naive", "cancelled")]
    assert 'data-strategy="meta" data-outcome="ok"' in html_outputs(cap)
    # AND it ends in one line, no traceback into the magic's code
    shown = cap.stdout + cap.stderr
    assert "KeyboardInterrupt: the sweep was interrupted" in shown
    assert "magics.py" not in shown and "Traceback" not in shown
    # AND the cancelled run's bar says so
    assert magics.bars is not None and "cancelled" in magics.bars.lines()[1]


def test_no_instrument_and_interval_reach_the_recorder(shell: Any, tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    code = (f"import torch\ntorch.save(torch.ones(1000), {str(path)!r})\n"
            f"t = torch.load({str(path)!r})\n")
    run(shell, f"%%bigviz --name plain --no-instrument --interval 5\n{code}")
    run(shell, f"%%bigviz --name auto\n{code}")
    plain, auto = shell.magics_manager.registry["BigvizMagics"].recordings[-2:]
    # without instrumentation the loader calls are not phases; with it they are
    assert not [p for p in plain.phases if p.auto]
    assert any("torch.load" in p.name for p in auto.phases if p.auto)
    assert plain.interval_ms == 5.0 and auto.interval_ms == 1.0


@pytest.mark.slow
def test_sweep_magic_takes_the_cli_defaults_and_passes_dtype(shell: Any, tmp_path: Path) -> None:
    # GIVEN `%bigviz sweep` without --strategies (the CLI's parser leaves it unset) and a dtype
    line = (f"%bigviz sweep --model mlp:2MB --shard-sizes 1MB --dtype bfloat16 "
            f"--work-dir {tmp_path / 'work'}")
    # WHEN it runs
    result, cap = run(shell, line)
    # THEN it runs the CLI's default strategies, on the model in the dtype asked for
    assert result.error_in_exec is None, cap.stdout + cap.stderr
    sweep = shell.magics_manager.registry["BigvizMagics"].sweeps[-1]
    assert [r.strategy for r in sweep.results] == ["naive", "sharded", "meta", "mmap"]
    assert all(r.ok for r in sweep.results), [r.error for r in sweep.results]
    assert sweep.config.get("dtype") == "bfloat16"
    assert all(r.params.get("dtype") == "bfloat16" for r in sweep.results)


def test_sweep_magic_shows_the_key_finding_as_text(
    shell: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a key finding holding markup (labels carry user-typed names: models, device maps)
    import bigviz.report

    monkeypatch.setattr(bigviz.report, "key_finding", lambda _r: "<img src=x> & meta")
    # WHEN a sweep shows it
    result, cap = run(shell, f"%bigviz sweep --model mlp:1MB --strategies meta "
                             f"--shard-sizes 1MB --work-dir {tmp_path / 'work'}")
    # THEN it is shown as text, not as HTML
    assert result.error_in_exec is None, cap.stdout + cap.stderr
    shown = html_outputs(cap)
    assert "<p><b>&lt;img src=x&gt; &amp; meta</b></p>" in shown
    assert "<img src=x>" not in shown



# -- %bigviz list / clear ---------------------------------------------------------------

def test_list_shows_each_cell_and_clear_failed_removes_it_from_compare_and_export(
    shell: Any, tmp_path: Path
) -> None:
    # GIVEN two good cells and one that raised
    run(shell, "%%bigviz --name small\na = bytearray(4 * 2**20)\n")
    run(shell, "%%bigviz --name broken\nb = bytearray(24 * 2**20)\nraise ValueError('boom')\n")
    run(shell, "%%bigviz --name big\nc = bytearray(40 * 2**20)\n")
    # WHEN they are listed THEN one line each: number, label, peak, growth, outcome
    result, cap = run(shell, "%bigviz list")
    assert result.error_in_exec is None
    lines = cap.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["#", "kind", "label"] and len(lines) == 4
    numbers = [int(line.split()[0]) for line in lines[1:]]
    assert [line.split()[2] for line in lines[1:]] == ["small", "broken", "big"]
    assert "error: ValueError('boom')" in lines[2] and lines[3].rstrip().endswith("ok")
    growth = float(re.search(r"\+([\d.]+) MiB", lines[3]).group(1))  # type: ignore[union-attr]
    assert 36 <= growth <= 56, lines[3]  # the 40 MiB bytearray, measured
    # WHEN the failed cell is cleared
    result, cap = run(shell, "%bigviz clear --failed")
    assert result.error_in_exec is None
    assert cap.stdout.strip() == f"cleared 1 failed item: {numbers[1]} broken; 2 left"
    # THEN compare and export leave it out
    _result, cap = run(shell, "%bigviz compare")
    assert re.findall(r'<tr data-strategy="([^"]*)"', html_outputs(cap)) == ["small", "big"]
    run(shell, f"%bigviz export {tmp_path / 'k.json'}")
    from bigviz import report

    runs = report.load(tmp_path / "k.json")
    assert isinstance(runs, list) and [r.strategy for r in runs] == ["small", "big"]
    # AND a cell can be cleared by its number, an unknown number is refused in one line
    result, cap = run(shell, f"%bigviz clear {numbers[0]}")
    assert "cleared 1 item" in cap.stdout
    result, _cap = run(shell, f"%bigviz clear {numbers[0]}")
    assert isinstance(result.error_in_exec, UsageError)
    assert f"no item {numbers[0]}" in str(result.error_in_exec)
    assert f"now: {numbers[2]}" in str(result.error_in_exec)
    # AND clear without arguments forgets everything
    run(shell, "%bigviz clear")
    _result, cap = run(shell, "%bigviz list")
    assert cap.stdout.startswith("nothing yet")
    assert shell.magics_manager.registry["BigvizMagics"].cells == []


# -- errors and interrupts: one line ----------------------------------------------------

def plain(cap: CapturedIO) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", cap.stdout + cap.stderr)


def test_export_to_a_missing_folder_is_one_line_naming_it(shell: Any) -> None:
    run(shell, "%%bigviz\nx = 1\n")
    result, cap = run(shell, "%bigviz export /nonexistent/dir/k.html")
    assert isinstance(result.error_in_exec, UsageError)
    shown = plain(cap)
    assert "'/nonexistent/dir' does not exist; create it first" in shown
    assert "Traceback" not in shown and "ReportError" not in shown
    assert len(shown.strip().splitlines()) == 1, shown
    # an unknown suffix says which there are, in one line too
    result, cap = run(shell, "%bigviz export k.pdf")
    assert isinstance(result.error_in_exec, UsageError)
    assert ".html" in str(result.error_in_exec) and len(plain(cap).strip().splitlines()) == 1


def test_an_interrupt_in_a_magic_is_one_line(
    shell: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bigviz.report

    run(shell, "%%bigviz\nx = 1\n")

    # GIVEN Interrupt kernel arriving while the report is written (a large recording)
    def interrupted(*_a: Any, **_k: Any) -> Path:
        raise KeyboardInterrupt

    monkeypatch.setattr(bigviz.report, "write", interrupted)
    result, cap = run(shell, f"%bigviz export {tmp_path / 'k.html'}")
    # THEN the cell stops as interrupted, in one line, without the magic's traceback
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    shown = plain(cap)
    assert shown.strip() == "KeyboardInterrupt: %bigviz export was interrupted", shown
    # AND a %%bigviz cell interrupted in its own code points at the user's line, as without
    # the magic, never into the magic's code
    result, cap = run(shell, "%%bigviz\nx = 1\nraise KeyboardInterrupt\n")
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    assert "----> 2 raise KeyboardInterrupt" in plain(cap) and "magics.py" not in plain(cap)


def test_a_mistyped_option_suggests_the_real_one(shell: Any) -> None:
    result, _cap = run(shell, "%bigviz sweep --model gpt:20MB --shard-size 10MB")
    assert isinstance(result.error_in_exec, UsageError)
    assert "--shard-size → did you mean --shard-sizes?" in str(result.error_in_exec)
    # abbreviations are not taken silently: nothing ran
    assert shell.magics_manager.registry["BigvizMagics"].sweeps == []
    result, _cap = run(shell, "%bigviz compare --lst 2")
    assert "did you mean --last?" in str(result.error_in_exec)


def test_negative_sizes_in_a_magic_say_must_be_positive(shell: Any) -> None:
    # as the CLI does (issue 14 item 12): a value, refused for its sign, not argparse's
    # "expected one argument"
    for flag, value in (("--shard-sizes", "-5MB"), ("--ram-budget", "-1GB")):
        result, _cap = run(shell, f"%bigviz sweep --model gpt:20MB {flag} {value}")
        assert isinstance(result.error_in_exec, UsageError)
        message = str(result.error_in_exec)
        assert f"{flag} '{value}' must be positive" in message
        assert "expected one argument" not in message
    assert shell.magics_manager.registry["BigvizMagics"].sweeps == []


# -- exports: one base name, links that open in JupyterLab, bundled PNGs ----------------

def test_export_base_name_writes_one_set_with_relative_links_and_bundled_pngs(
    shell: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a notebook whose working folder is tmp_path, and a profiled cell
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports").mkdir()
    run(shell, "%%bigviz --name build\nw = bytearray(16 * 2**20)\n")
    # WHEN the kernel's cells are exported under one base name
    result, cap = run(shell, "%bigviz export reports/k")
    assert result.error_in_exec is None, plain(cap)
    # THEN one set: k.html, k.json, k.md, and the Markdown's PNGs in k_files/
    names = sorted(p.name for p in (tmp_path / "reports").iterdir())
    assert names == ["k.html", "k.json", "k.md", "k_files"]
    md = (tmp_path / "reports" / "k.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert images and all(i.startswith("k_files/") for i in images), images
    for image in images:  # the link delivers what it shows
        assert (tmp_path / "reports" / image).read_bytes()[:4] == b"\x89PNG"
    # AND the links shown are relative to the notebook's folder (JupyterLab opens them),
    # not data: downloads
    shown = html_outputs(cap)
    hrefs = re.findall(r'<a class="bigviz-report-link" href="([^"]*)"', shown)
    assert hrefs == ["reports/k.html", "reports/k.json", "reports/k.md"]
    assert "data:" not in shown and "k_files/" in shown
    # AND a report outside the working folder falls back to a data: link (not for .md)
    elsewhere = tmp_path.parent / f"{tmp_path.name}-out"
    elsewhere.mkdir()
    _result, cap = run(shell, f"%bigviz export {elsewhere / 'k'}")
    shown = html_outputs(cap)
    assert shown.count('href="data:') == 2 and 'download="k.md"' not in shown
    # AND %%bigviz --report x.md bundles its PNGs the same way
    result, _cap = run(shell, "%%bigviz --report reports/cell.md\ny = 2\n")
    assert result.error_in_exec is None
    assert (tmp_path / "reports" / "cell_files" / "timeline.png").is_file()


def test_compare_legend_is_below_the_plot_not_over_the_lines(shell: Any) -> None:
    from bigviz import plots
    from bigviz.magics import _cell_runs, legend_below

    run(shell, "%%bigviz --name first\na = bytearray(8 * 2**20)\n")
    run(shell, "%%bigviz --name second\nb = bytearray(32 * 2**20)\n")
    runs = _cell_runs(shell.magics_manager.registry["BigvizMagics"].cells)
    # WHEN the compare figure is drawn
    fig = legend_below(plots.overlay(runs))
    fig.canvas.draw()
    # THEN its legend holds both runs and lies outside the plotted area
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["first", "second"]
    assert fig.axes[0].get_legend() is None
    box, axes = legend.get_window_extent(), fig.axes[0].get_window_extent()
    assert box.y1 <= axes.y0, (box, axes)  # below the axes: it covers no line
    assert box.y0 >= 0 and box.x0 >= 0 and box.x1 <= fig.bbox.x1  # and inside the figure


# -- %bigviz sweep: a live bar per run --------------------------------------------------

def test_sweep_shows_a_live_progress_bar_per_run(
    shell: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bigviz.widgets._sweep_bars import SweepBars

    # GIVEN a record of every row each progress update leaves on screen
    seen: list[list[str]] = []
    original = SweepBars.__call__

    def recorded(self: Any, kind: str, run_: Any) -> None:
        original(self, kind, run_)
        seen.append(self.lines())

    monkeypatch.setattr(SweepBars, "__call__", recorded)
    # WHEN a two-run sweep runs
    result, cap = run(shell, f"%bigviz sweep --model mlp:2MB --strategies naive,meta "
                             f"--shard-sizes 1MB --work-dir {tmp_path / 'work'}")
    assert result.error_in_exec is None, plain(cap)
    # THEN one widget holds the bars, shown before the results, and no lines are printed
    assert "application/vnd.jupyter.widget-view+json" in cap.outputs[0].data
    assert "[1/2]" not in cap.stdout
    # AND while a run ran, its row said what it did, live (phase, RSS above baseline)
    live = [rows[0] for rows in seen if rows and "above baseline (peak" in rows[0]]
    assert live and live[0].startswith("[1/2] naive"), seen[:5]
    # AND at the end each bar is full and green with the run's outcome and peak
    bars = shell.magics_manager.registry["BigvizMagics"].bars
    final = bars.lines()
    assert final[0].startswith("[1/2] naive") and final[1].startswith("[2/2] meta"), final
    assert all(" | 100% | ok, peak " in line for line in final), final
    assert [bar.bar_style for _l, bar, _n in bars.rows] == ["success", "success"]
