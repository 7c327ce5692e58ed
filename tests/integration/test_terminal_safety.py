"""Nothing bigviz prints to a terminal carries control characters (issue 14, item 13):
tensor names, phase names and report strings from files are shown escaped, so an ESC/OSC
sequence in a checkpoint or a report cannot retitle the window, clear the screen or forge
output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from _fixtures import run_result
from safetensors.torch import save_file

from bigviz import report
from bigviz.data.result import Sweep

HOSTILE = "\x1b]0;pwned\x07\x1b[2J"
SHOWN = "\\x1b]0;pwned\\x07\\x1b[2J"
BIGVIZ = [sys.executable, "-m", "bigviz"]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BIGVIZ, *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


def _clean(proc: subprocess.CompletedProcess[str]) -> None:
    for stream in (proc.stdout, proc.stderr):
        assert "\x1b" not in stream and "\x07" not in stream


def test_inspect_shows_hostile_tensor_names_escaped(tmp_path: Path) -> None:
    # GIVEN a safetensors file whose tensor names carry terminal escape sequences
    folder = tmp_path / "ck"
    folder.mkdir()
    save_file({f"w{HOSTILE}.weight": torch.ones(4), "b": torch.ones(2)},
              str(folder / "model.safetensors"))
    # WHEN `bigviz inspect` lists it
    proc = _run("inspect", str(folder), cwd=tmp_path)
    # THEN the names are printed escaped and no control character reaches the terminal
    assert proc.returncode == 0, proc.stderr
    _clean(proc)
    assert f"w{SHOWN}" in proc.stdout


def test_diff_and_profile_escape_names_from_reports_and_programs(tmp_path: Path) -> None:
    # GIVEN two reports whose run carries a hostile strategy name and error
    base = run_result(strategy=f"meta{HOSTILE}")
    new = run_result(strategy=f"meta{HOSTILE}")
    new.ram_peak = int((base.ram_peak or 0) * 2)
    report.write(Sweep(results=[base]), tmp_path / "a.json")
    report.write(Sweep(results=[new]), tmp_path / "b.json")
    # WHEN `bigviz diff` compares them
    diff = _run("diff", str(tmp_path / "a.json"), str(tmp_path / "b.json"), cwd=tmp_path)
    # AND `bigviz profile` runs a program that names a phase with the same sequence
    script = tmp_path / "prog.py"
    # (markers go to the descriptor bigviz profile passes in BIGVIZ_PHASE_FD)
    script.write_text("import os, time\n"
                      "fd = int(os.environ['BIGVIZ_PHASE_FD'])\n"
                      "os.write(fd, b'BIGVIZ_PHASE start load\\x1b]0;pwned\\x07\\n')\n"
                      "time.sleep(0.2)\n"
                      "os.write(fd, b'BIGVIZ_PHASE end\\n')\n")
    prof = _run("profile", "--", sys.executable, str(script), cwd=tmp_path)
    # THEN both print the names escaped, and nothing raw
    assert diff.returncode == 1, diff.stderr  # a regression: exit 1
    _clean(diff)
    assert SHOWN in diff.stdout + diff.stderr
    assert prof.returncode == 0, prof.stderr
    assert "\x1b" not in prof.stderr and "\x07" not in prof.stderr
    assert "load\\x1b]0;pwned\\x07" in prof.stderr
