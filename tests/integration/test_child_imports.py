"""bigviz's child interpreters never import code from the working directory first
(issue 14, item 1): a ``json.py`` or ``safetensors.py`` where ``bigviz sweep`` runs is
not executed, while a factory module placed there on purpose still resolves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# the installed console script: its own folder, not the working directory, leads sys.path
BIGVIZ = [str(Path(sys.executable).with_name("bigviz"))]

SHADOWS = {
    # imported by the fork server and the ranks (json, safetensors) before any user code
    "json.py": "open({marker!r}, 'a').write('json.py ran\\n')\nraise ImportError('shadow')\n",
    "safetensors.py": "open({marker!r}, 'a').write('safetensors.py ran\\n')\n"
                      "raise ImportError('shadow')\n",
}
FACTORY = """
import torch


def build():
    return torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.Linear(256, 64))
"""


@pytest.fixture
def hostile_cwd(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "project"
    folder.mkdir()
    marker = tmp_path / "executed.txt"
    for name, code in SHADOWS.items():
        (folder / name).write_text(code.format(marker=str(marker)))
    (folder / "mymodels.py").write_text(FACTORY)
    return folder, marker


def _sweep(cwd: Path, work: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run(
        [*BIGVIZ, "sweep", "--model", "mymodels:build", "--shard-sizes", "100kB",
         "--work-dir", str(work), "--json", str(out), "--out", str(out.with_suffix(".html")),
         *extra],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_a_shadowing_file_in_the_working_directory_is_never_executed(
    hostile_cwd: tuple[Path, Path], tmp_path: Path
) -> None:
    # GIVEN a working directory holding json.py and safetensors.py that would record
    # their execution, and mymodels.py with a factory the user names on purpose
    cwd, marker = hostile_cwd
    out = tmp_path / "single.json"
    # WHEN `bigviz sweep --model mymodels:build` runs there (fork server + workers)
    proc = _sweep(cwd, tmp_path / "work", out, "--strategies", "naive,meta")
    # THEN the sweep ran on the factory's model, and no shadowing file ran anywhere
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not marker.exists(), marker.read_text()
    runs = json.loads(out.read_text())["results"]
    assert [r["outcome"] for r in runs] == ["ok", "ok"]
    assert runs[0]["model"] == "mymodels:build"


@pytest.mark.slow
def test_ranks_do_not_import_from_the_working_directory_either(
    hostile_cwd: tuple[Path, Path], tmp_path: Path
) -> None:
    # GIVEN the same working directory WHEN two torch.distributed ranks run there
    cwd, marker = hostile_cwd
    out = tmp_path / "ranks.json"
    proc = _sweep(cwd, tmp_path / "work", out, "--strategies", "every-rank-loads",
                  "--nproc", "2", "--timeout", "240")
    # THEN both ranks loaded the factory's model and no shadowing file ran in any rank
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not marker.exists(), marker.read_text()
    (run,) = json.loads(out.read_text())["results"]
    assert run["outcome"] == "ok", run.get("error")
    assert [f["verify"] for f in run["checks"]["ranks"]] == ["ok", "ok"]
