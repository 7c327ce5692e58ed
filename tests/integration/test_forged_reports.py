"""Forged and corrupt report files are one-line errors, never a crash or a runaway
allocation (issue 14, items 9 and 10), through `bigviz report` and `report.load`."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bigviz import ReportError, report
from bigviz.data.recording import Phase, Recording, Series

# the CLI, as a user runs it, under a 2 GB address-space cap: a runaway allocation fails
# fast instead of taking the machine down
_LIMITED = (
    "import resource, sys; "
    "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); "
    "from bigviz.cli import main; sys.exit(main(sys.argv[1:]))"
)


def _good() -> dict[str, Any]:
    rec = Recording(name="ok", duration=1.0,
                    series={"ram.rss": Series("ram.rss", [0.0, 0.5], [1, 2])},
                    phases=[Phase("load", 0.1, 0.4, ram_peak=2)])
    return json.loads(report.dumps(rec))


def _forge(**changes: Any) -> dict[str, Any]:
    data = _good()
    for path, value in changes.items():
        node: Any = data
        *parts, last = path.split("__")
        for part in parts:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value
    return data


CASES = {
    "depth of 10^9": (_forge(phases__0__depth=10**9), "depth 1000000000 is out of range"),
    "ram_peak of 10^400": (_forge(phases__0__ram_peak=10**400), "out of range"),
    "start nan": (_forge(phases__0__start="nan"), "start is nan"),
    "t/v lengths differ": (_forge(**{"series__ram.rss__v": [1]}), "2 times but 1 values"),
    "parent out of range": (_forge(phases__0__parent=7), "parent 7 is not a phase"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_forged_report_is_a_one_line_error_naming_the_file(case: str, tmp_path: Path) -> None:
    # GIVEN a report file with one forged field
    data, message = CASES[case]
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(data))
    # WHEN it is loaded, or rendered by `bigviz report` (memory-capped)
    with pytest.raises(ReportError, match=message) as exc:
        report.load(path)
    proc = subprocess.run([sys.executable, "-c", _LIMITED, "report", str(path), "--out",
                           str(tmp_path / "out.html")], capture_output=True, text=True,
                          timeout=120)
    # THEN both say what is wrong, name the file, in one line; the CLI exits 1 (a bad
    # input file, not a usage error) and writes nothing
    assert "\n" not in str(exc.value) and "forged.json" in str(exc.value)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "forged.json" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "out.html").exists()


def test_deeply_nested_json_is_an_error_not_a_recursion_crash(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ReportError, match="nested too deeply"):
        report.load(path)
    with pytest.raises(ReportError, match="nested too deeply"):
        Recording.from_json("[" * 100_000 + "]" * 100_000)


def test_a_symlink_loop_in_a_checkpoint_folder_is_a_checkpoint_error(tmp_path: Path) -> None:
    from bigviz import CheckpointError, inspect_checkpoint

    folder = tmp_path / "ck"
    folder.mkdir()
    (folder / "model.safetensors").symlink_to(folder / "model.safetensors")
    with pytest.raises(CheckpointError) as exc:
        inspect_checkpoint(folder)
    assert "\n" not in str(exc.value)


def test_the_cap_used_above_is_real() -> None:
    # the memory cap of the CLI runs above does stop a large allocation
    code = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); "
            "b = bytearray(3 << 30)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode != 0
    assert resource.RLIM_INFINITY is not None
