"""``bigviz inspect``, ``sweep``, ``report`` and ``diff`` on real checkpoints and real runs."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

import bigviz
from bigviz.cli import main
from bigviz.commands._output import Progress
from bigviz.data.result import RunResult, Sweep
from bigviz.units import parse_max_memory

MiB = 2**20


def bigviz_cmd(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bigviz", *args], capture_output=True, text=True, timeout=timeout
    )


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bigviz.models import build_model

    folder = tmp_path_factory.mktemp("ckpt") / "gpt8"
    bigviz.save_sharded(build_model("gpt:8MB"), folder, max_shard_size="2MB")
    return folder


# -- inspect ----------------------------------------------------------------------------------


def test_inspect_prints_shards_dtypes_modules_and_predictions(checkpoint: Path) -> None:
    # GIVEN a real 4-shard checkpoint WHEN inspected by the real command
    proc = bigviz_cmd("inspect", str(checkpoint))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    info = bigviz.inspect_checkpoint(checkpoint)
    # THEN every shard file, the dtype, the top-level modules and every strategy appear
    for f in info.files:
        assert f.name in out
    assert "float32" in out and "lm_head" in out and "transformer" in out
    assert f"largest shard {bigviz.format_size(info.largest_shard)}" in out
    for name in ("naive", "sharded", "meta", "mmap"):
        assert any(line.startswith(name) for line in out.splitlines()), name
    assert "2 × M" in out and "M + S" in out


def test_inspect_json_predicts_each_strategy_from_the_checkpoint(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", str(checkpoint), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    info = bigviz.inspect_checkpoint(checkpoint)
    m, s = info.total_size, info.largest_shard
    preds = data["predictions"]
    assert preds["naive"]["ram_peak"] == 2 * m
    assert preds["sharded"]["ram_peak"] == m + s
    assert preds["meta"]["ram_peak"] == m
    assert preds["mmap"]["ram_file"] == m
    assert data["checkpoint"]["total_size"] == m
    assert len(data["checkpoint"]["files"]) == info.n_shards


def test_inspect_predicts_for_a_gpu_even_without_one(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a CPU-only strategy says so; dispatch predicts RAM ≈ one shard and VRAM ≈ the model
    assert main(["inspect", str(checkpoint), "--json", "--device-map", "cuda:0"]) == 0
    preds = json.loads(capsys.readouterr().out)["predictions"]
    info = bigviz.inspect_checkpoint(checkpoint)
    assert "CPU RAM only" in preds["naive"]["unavailable"]
    assert preds["dispatch"]["ram_peak"] == info.largest_shard
    assert preds["dispatch"]["vram"]["cuda:0"] == info.total_size


def test_inspect_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a folder that does not exist is a usage error; one without a checkpoint a failure
    assert main(["inspect", str(tmp_path / "nope")]) == 2
    assert "does not exist" in one_line(capsys.readouterr().err)
    (tmp_path / "notes.txt").write_text("hi")
    assert main(["inspect", str(tmp_path)]) == 1
    assert "notes.txt" in one_line(capsys.readouterr().err)
    assert main(["inspect", str(tmp_path), "--device-map", "gpu"]) == 2
    assert "'gpu'" in one_line(capsys.readouterr().err)


# -- sweep --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_sweep(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One real sweep, run once: HTML and Markdown files, JSON on stdout (``--json -``),
    saved to s.json by the fixture for the tests that read a report."""
    out = tmp_path_factory.mktemp("sweep")
    proc = bigviz_cmd(
        "sweep", "--model", "gpt:8MB", "--strategies", "naive,meta", "--shard-sizes", "2MB",
        "--out", str(out / "s.html"), "--md", str(out / "s.md"), "--json", "-",
        "--work-dir", str(out / "work"),
    )  # fmt: skip
    if proc.returncode == 0:
        (out / "s.json").write_text(proc.stdout, encoding="utf-8")
    return out, proc


@pytest.mark.slow
def test_sweep_runs_reports_and_prints_the_summary(
    tiny_sweep: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, proc = tiny_sweep
    assert proc.returncode == 0, proc.stderr
    # progress on stderr, one line per finished run
    assert "[1/2] naive" in proc.stderr and "[2/2] meta" in proc.stderr
    # with `--json -`, stdout is the JSON report alone; the table and finding go to stderr
    lines = proc.stderr.splitlines()
    assert any(ln.startswith("naive · 2MB") and " ok " in ln for ln in lines)
    assert any(ln.startswith("meta · 2MB") and " ok " in ln for ln in lines)
    # naive's extra copy of an 8 MB model is under the 16 MiB noise floor: the finding
    # says so instead of claiming a cut (issue 13, item 9)
    assert "No strategy differs beyond noise" in proc.stderr
    for name in ("s.html", "s.md"):
        assert (out / name).stat().st_size > 0
        assert f"report written to {out / name}" in proc.stderr
    sweep = bigviz.report.load(out / "s.json")
    assert isinstance(sweep, Sweep)
    assert [(r.strategy, r.outcome) for r in sweep.results] == [("naive", "ok"), ("meta", "ok")]
    assert sweep.command.startswith("bigviz sweep --model gpt:8MB")
    # the measured ordering that the finding states
    naive, meta = sweep.results
    assert naive.ram_anon_peak is not None and meta.ram_anon_peak is not None
    assert naive.ram_anon_peak > meta.ram_anon_peak


@pytest.mark.slow
def test_report_rewrites_a_sweep_json_as_csv_and_markdown(
    tiny_sweep: tuple[Path, subprocess.CompletedProcess[str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out, proc = tiny_sweep
    assert proc.returncode == 0, proc.stderr
    assert main(["report", str(out / "s.json"), "--out", str(tmp_path / "r.csv")]) == 0
    csv_text = (tmp_path / "r.csv").read_text()
    assert "naive" in csv_text and "meta" in csv_text
    assert main(["report", str(out / "s.json"), "--out", str(tmp_path / "r.md")]) == 0
    assert "No strategy differs beyond noise" in (tmp_path / "r.md").read_text()
    assert f"report written to {tmp_path / 'r.md'}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--shard-sizes", "10XB"], "10XB"),
        (["--strategies", "teleport"], "teleport"),
        (["--max-memory", "cpu2GB"], "cpu2GB"),
        (["--out", "report.pdf"], "report.pdf"),
        (["--format", "onnx"], "onnx"),
        (["--dtype", "float8"], "float8"),
        (["--ram-budget", "lots"], "lots"),
    ],
)
def test_sweep_usage_errors_exit_2_before_running(
    argv: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["sweep", "--model", "gpt:8MB", "--work-dir", str(tmp_path), *argv]
    if "--out" not in argv:
        args += ["--out", str(tmp_path / "r.html")]
    assert main(args) == 2
    assert needle in one_line(capsys.readouterr().err)
    assert not (tmp_path / "r.html").exists()


def test_parse_max_memory() -> None:
    assert parse_max_memory("cpu=2GB, 0=10GiB") == {"cpu": "2GB", 0: "10GiB"}
    assert parse_max_memory(None) is None


def test_progress_redraws_one_line_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    p = Progress(2, stream=tty)
    p.start(1, "naive")
    p.finish(1, "naive", "ok")
    p.start(2, "meta")
    p.finish(2, "meta", "ok")
    text = tty.getvalue()
    assert text.count("\n") == 2  # one final line per run, the rest redrawn with \r
    assert "\r[" in text and "100%" in text
    plain = io.StringIO()
    q = Progress(1, stream=plain)
    q.start(1, "meta")
    q.update("load shard 1/4")  # live detail is for terminals only
    q.finish(1, "meta", "ok")
    assert plain.getvalue() == "[1/1] meta ...\n[1/1] meta: ok\n"


# -- diff ---------------------------------------------------------------------------------------


def _sweep(naive_peak: int) -> Sweep:
    runs = [
        RunResult(
            "naive",
            "ok",
            model="gpt:1GB",
            model_bytes=100 * MiB,
            shard_size=50_000_000,
            format="safetensors",
            device_map="cpu",
            ram_peak=naive_peak,
            ram_anon_peak=naive_peak,
        ),
        RunResult(
            "meta",
            "ok",
            model="gpt:1GB",
            model_bytes=100 * MiB,
            shard_size=50_000_000,
            format="safetensors",
            device_map="cpu",
            ram_peak=100 * MiB,
            ram_anon_peak=100 * MiB,
        ),
    ]
    return Sweep(results=runs, config={"model": "gpt:1GB"})


@pytest.fixture
def diff_files(tmp_path: Path) -> tuple[Path, Path]:
    base, new = tmp_path / "base.json", tmp_path / "new.json"
    bigviz.report.write(_sweep(200 * MiB), base)
    bigviz.report.write(_sweep(220 * MiB), new)  # naive regressed by 10%
    return base, new


def test_diff_exit_codes_gate_a_regression(diff_files: tuple[Path, Path]) -> None:
    base, new = diff_files
    # GIVEN a planted 10% regression WHEN diffed by the real command
    caught = bigviz_cmd("diff", str(base), str(new), "--threshold", "5%")
    assert caught.returncode == 1, caught.stderr
    assert "naive" in caught.stdout
    assert bigviz_cmd("diff", str(base), str(new), "--threshold", "20%").returncode == 0
    assert bigviz_cmd("diff", str(base), str(base)).returncode == 0


def test_diff_json_is_machine_readable(
    diff_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    base, new = diff_files
    assert main(["diff", str(base), str(new), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["exit_code"] == 1


def test_diff_refuses_a_corrupt_file(
    diff_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, _ = diff_files
    bad = tmp_path / "bad.json"
    bad.write_text(base.read_text()[:50])  # truncated
    assert main(["diff", str(base), str(bad)]) == 1
    assert "bad.json" in one_line(capsys.readouterr().err)


@pytest.mark.slow
def test_ctrl_c_stops_the_sweep_keeps_finished_runs_and_writes_the_report(
    tmp_path: Path,
) -> None:
    import signal
    import time

    # GIVEN a two-run sweep whose second run (naive, 400 MB) takes a while
    out = tmp_path / "r.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bigviz", "sweep", "--model", "gpt:400MB",
         "--strategies", "meta,naive", "--shard-sizes", "200MB", "--work-dir",
         str(tmp_path / "work"), "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    # WHEN Ctrl-C arrives while the second run is loading (its progress line is shown)
    assert proc.stderr is not None
    seen = ""
    deadline = time.monotonic() + 120
    while "[2/2] naive" not in seen and time.monotonic() < deadline:
        seen += proc.stderr.read(1)
    time.sleep(0.5)  # naive on 400 MB takes seconds: it is loading now
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    # THEN it exits 130 with the finished run reported and the running one cancelled
    assert proc.returncode == 130, seen + stderr
    assert "interrupted: stopping the running worker" in stderr
    sweep = Sweep.from_json(out.read_text())
    assert [(r.strategy, r.outcome) for r in sweep.results] == [
        ("meta", "ok"), ("naive", "cancelled")]
    assert "meta" in stdout


def test_timeout_reaches_the_runs_and_is_validated(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    argv = ["sweep", "--model", "mlp:4MB", "--strategies", "meta", "--shard-sizes", "2MB",
            "--work-dir", str(tmp_path / "work"), "--out", str(out)]
    # a run cannot finish in a millisecond: it is stopped and reported, exit 1
    assert main([*argv, "--timeout", "0.001"]) == 1
    (run,) = Sweep.from_json(out.read_text()).results
    assert run.outcome == "error" and "timed out after 0.001 s" in (run.error or "")
    # a timeout that is not positive is a usage error naming the value
    assert main([*argv, "--timeout", "0"]) == 2
