"""The ``bigviz`` command line: help, usage errors, exit codes, and ``bigviz profile``.

End-to-end cases run the real command (``python -m bigviz ...``) in a subprocess; the
rest call :func:`bigviz.cli.main` in-process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bigviz.cli import main
from bigviz.data.recording import Recording

MiB = 2**20
VERBS = ["sweep", "profile", "inspect", "reshard", "advise", "report", "diff", "cache"]


def bigviz_cmd(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bigviz", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(err: str, *needles: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one error line, got: {err!r}"
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"


# -- help and version -------------------------------------------------------------------


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    import bigviz

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"bigviz {bigviz.__version__}"


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help_with_examples(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    # WHEN a user asks a verb for help THEN it exits 0 and shows runnable examples
    assert main([verb, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: bigviz {verb}")
    assert "examples:" in out
    assert f"bigviz {verb}" in out.split("examples:")[1]


def test_no_verb_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "VERB" in capsys.readouterr().err


# -- usage errors: one line, exit 2 -------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["sweep", "--bogus"], ["bigviz sweep", "--bogus", "--help"]),
        (["frobnicate"], ["frobnicate"]),
        (["profile"], ["no command", "bigviz profile -- CMD"]),
        (["profile", "--interval", "0", "--", "true"], ["interval 0.0", "--interval"]),
        (["profile", "--interval", "nan", "--", "true"], ["interval nan"]),
        (["profile", "--out", "x.txt", "--", "true"], ["x.txt", ".json"]),
        (["profile", "--out", "/no/such/dir/x.json", "--", "true"], ["/no/such/dir"]),
        (["profile", "--", "/no/such/program"], ["/no/such/program"]),
        (["report", "/no/such.json", "--out", "x.html"], ["/no/such.json"]),
        (["report", "IN.json"], ["--out"]),
        (["diff", "a.json", "b.json", "--threshold", "lots"], ["lots", "5%"]),
        (["diff", "a.json", "b.json", "--threshold=-3%"], ["-3%"]),
    ],
)
def test_usage_errors_exit_2_with_one_line_naming_the_value(
    argv: list[str], needles: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert_one_line_error(captured.err, *needles)


def test_real_command_usage_error_is_one_line_and_exit_2() -> None:
    # GIVEN the installed command WHEN given a bad option THEN one line, no traceback, exit 2
    proc = bigviz_cmd("sweep", "--shard-size", "1GB")
    assert proc.returncode == 2
    assert_one_line_error(proc.stderr, "--shard-size", "bigviz sweep --help")



# -- bigviz profile ---------------------------------------------------------------------------

ALLOC_SCRIPT = """
import os, sys, time
fd = int(os.environ["BIGVIZ_PHASE_FD"])
def say(line):
    os.write(fd, (line + "\\n").encode())
say("BIGVIZ_PHASE start quiet before")
time.sleep(0.15)
say("BIGVIZ_PHASE end quiet before")
say("BIGVIZ_PHASE start allocate")
block = b"\\x01" * (200 * 2**20)  # 200 MiB, every page touched
time.sleep(0.15)
say("BIGVIZ_PHASE end allocate")
del block
say("BIGVIZ_MARK freed")
say("BIGVIZ_PHASE start quiet after")
time.sleep(0.15)
say("BIGVIZ_PHASE end")
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
"""


def test_profile_marker_phase_holds_the_200_mib_peak(tmp_path: Path) -> None:
    # GIVEN a program that allocates 200 MiB inside a marked phase, between two quiet ones
    script = tmp_path / "alloc.py"
    script.write_text(ALLOC_SCRIPT)
    out = tmp_path / "rec.json"
    # WHEN bigviz profiles it (plain markers, no instrumentation)
    proc = bigviz_cmd(
        "profile",
        "--interval",
        "2",
        "--out",
        str(out),
        "--no-instrument",
        "--",
        sys.executable,
        str(script),
    )
    assert proc.returncode == 0, proc.stderr
    rec = Recording.from_json(out.read_text())
    # THEN the allocate phase's peak is >= 200 MiB above the quiet phases, and they stay quiet
    alloc, before, after = (rec.phase(n) for n in ("allocate", "quiet before", "quiet after"))
    assert alloc.ram_peak is not None and before.ram_peak is not None
    assert after.ram_peak is not None
    assert before.ram_start is not None
    assert alloc.ram_peak - before.ram_start >= 195 * MiB
    # markers are read as they arrive while the program runs on: the first pages of the
    # allocation may land just before the boundary, never most of it
    assert before.ram_peak - before.ram_start < 100 * MiB
    assert alloc.ram_peak - after.ram_peak >= 150 * MiB
    assert alloc.ram_anon_peak is not None and alloc.ram_anon_peak >= 200 * MiB
    assert before.end is not None and before.end <= alloc.start
    assert [m.name for m in rec.marks] == ["freed"]
    # per-process series for the program, and the summary on stderr
    assert f"proc:{rec.pid}.ram.rss" in rec.series
    assert "allocate" in proc.stderr and "recording written to" in proc.stderr


def test_profile_passes_the_command_exit_code_through(tmp_path: Path) -> None:
    script = tmp_path / "alloc.py"
    script.write_text(ALLOC_SCRIPT)
    proc = bigviz_cmd("profile", "--no-instrument", "--", sys.executable, str(script), "3")
    assert proc.returncode == 3


def test_profile_sums_the_children_of_the_command(tmp_path: Path) -> None:
    # GIVEN a shell that starts two Python children, each holding 100 MiB at the same time
    child = f"{sys.executable} -c 'import time; b = b\"x\" * (100 * 2**20); time.sleep(0.6)'"
    out = tmp_path / "rec.json"
    proc = bigviz_cmd("profile", "--out", str(out), "--", "sh", "-c", f"{child} & {child} & wait")
    assert proc.returncode == 0, proc.stderr
    rec = Recording.from_json(out.read_text())
    procs = rec.meta["processes"]
    big = [p for p in procs.values() if p["ram_peak"] >= 100 * MiB]
    # THEN each child is listed with its own peak, and the summed peak holds both at once
    assert len(big) == 2, procs
    assert all(p["ram_peak"] < 150 * MiB for p in big)
    total = rec.peak("ram.rss")
    assert total is not None and total >= 200 * MiB


def test_profile_unknown_marker_lines_are_reported_not_fatal(tmp_path: Path) -> None:
    out = tmp_path / "rec.json"
    proc = bigviz_cmd(
        "profile",
        "--out",
        str(out),
        "--",
        "sh",
        "-c",
        'echo "BIGVIZ_PHASE begin x" >&$BIGVIZ_PHASE_FD; '
        'echo "BIGVIZ_PHASE start open" >> "$BIGVIZ_PHASE_FILE"',
    )
    assert proc.returncode == 0, proc.stderr
    rec = Recording.from_json(out.read_text())
    assert any("begin x" in e for e in rec.errors)
    # a phase still open when the command exits is closed and says so
    ph = rec.phase("open")
    assert ph.end is not None and ph.error is not None and "not ended" in ph.error
    assert json.loads(out.read_text())["meta"]["exit_code"] == 0


TORCH_SCRIPT = """
import sys
import torch

weights = torch.ones(16 * 2**20)  # 64 MiB
torch.save({"w": weights}, sys.argv[1])
del weights
state = torch.load(sys.argv[1], weights_only=True)
assert state["w"].numel() == 16 * 2**20
"""


@pytest.mark.slow
def test_profile_auto_instruments_a_python_program(tmp_path: Path) -> None:
    # GIVEN a plain Python script that saves and loads a 64 MiB tensor (no bigviz in it)
    script = tmp_path / "load.py"
    script.write_text(TORCH_SCRIPT)
    ckpt = tmp_path / "w.pt"
    out = tmp_path / "rec.json"
    # WHEN bigviz profiles `python load.py ARG`
    proc = bigviz_cmd("profile", "--out", str(out), "--", sys.executable, str(script), str(ckpt))
    assert proc.returncode == 0, proc.stderr
    rec = Recording.from_json(out.read_text())
    # THEN torch.save and torch.load appear as phases of that process, on the CLI's clock,
    # with exact per-process peaks, and the load's growth is the tensor's 64 MiB
    load = next(p for p in rec.phases if p.name.startswith("torch.load") and "w.pt" in p.name)
    save = next(p for p in rec.phases if p.name.startswith("torch.save"))
    assert load.ram_peak_exact and load.detail["pid"] == rec.pid
    assert load.ram_growth is not None and load.ram_growth >= 60 * MiB
    assert save.start < load.start < rec.duration
    # the tree's sampled timeline saw the loaded tensor while the load phase ran
    rss = rec.series["ram.rss"]
    assert rss.max_between(load.start, None) is not None
    assert (rss.max_between(load.start, None) or 0) >= (load.ram_peak or 0) * 0.9
    # bigviz's own sampler process is not counted as part of the command
    assert all("recorder/sidecar.py" not in p["cmdline"] for p in rec.meta["processes"].values())


def test_profile_writes_an_html_report_of_an_instrumented_python_c(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN `python -c CODE` (auto-instrumented) WHEN profiled in-process with --out .html
    out = tmp_path / "p.html"
    code = "import sys, time; time.sleep(0.05); sys.exit(4)"
    assert main(["profile", "--out", str(out), "--", sys.executable, "-c", code]) == 4
    # THEN the report is a self-contained page and the summary says where it went
    page = out.read_text(encoding="utf-8")
    assert page.lstrip().lower().startswith("<!doctype html")
    err = capsys.readouterr().err
    assert f"recording written to {out}" in err and "exited 4" in err


SPIKE_SCRIPT = """
import os, time
fd = int(os.environ["BIGVIZ_PHASE_FD"])
def say(line):
    os.write(fd, (line + "\\n").encode())
time.sleep(0.05)
say("BIGVIZ_PHASE start spike")
time.sleep(0.05)
block = b"\\x01" * (150 * 2**20)  # 150 MiB, touched ...
del block                         # ... and freed long before the next sample
time.sleep(0.05)
say("BIGVIZ_PHASE end spike")
say("BIGVIZ_PHASE start after")
time.sleep(0.05)
say("BIGVIZ_PHASE end after")
# markers are read asynchronously: a program that exits at once after its last marker gets
# a sampled (not exact) peak for that phase, since its VmHWM is gone with it
time.sleep(0.3)
"""


def test_profile_marker_phase_peak_is_exact_between_samples(tmp_path: Path) -> None:
    # GIVEN a 150 MiB spike inside a phase, and one sample a second (the spike falls
    # between samples)
    script = tmp_path / "spike.py"
    script.write_text(SPIKE_SCRIPT)
    out = tmp_path / "rec.json"
    proc = bigviz_cmd(
        "profile", "--interval", "1000", "--no-instrument", "--out", str(out), "--",
        sys.executable, str(script),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rec = Recording.from_json(out.read_text())
    spike, after = rec.phase("spike"), rec.phase("after")
    # THEN the kernel's high-water mark, reset at each marker, still holds it in that phase
    # (exact), and the next phase, reset after the free, does not
    assert spike.ram_peak_exact and after.ram_peak_exact
    assert spike.ram_growth is not None and spike.ram_growth >= 145 * MiB
    assert after.ram_peak is not None and spike.ram_peak is not None
    assert spike.ram_peak - after.ram_peak >= 140 * MiB
    # the samples alone never saw it
    sampled = rec.series["ram.rss"].max_between(spike.start, spike.end)
    assert sampled is not None and spike.ram_peak - sampled >= 140 * MiB
    assert spike.detail["exact_peaks"] == {str(rec.pid): spike.ram_peak}
