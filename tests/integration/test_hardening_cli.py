"""Issue 14 items 8, 12, 14, 16, 17: the per-user work folder and ``bigviz cache``, one-line
errors for bad command lines and failed factories, what a checkpoint's index may not lie
about, ``bigviz profile`` running what the shell would run, and stopping cleanly (Ctrl-C
while a checkpoint is saved, ``SystemExit`` in a callback).

Each case drives the real command (``main()`` or ``python -m bigviz``) on real files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import torch

import bigviz
from bigviz._errors import CheckpointError, ConfigError, RunError
from bigviz.checkpoint import inspect_checkpoint, load_sharded, save_sharded
from bigviz.cli import main
from bigviz.options import RANKS_PER_CORE, check_nproc, cpu_cores, nproc_note
from bigviz.runner.checkpoints import cache_entries, prepare_checkpoint, prepare_folder
from bigviz.runner.validate import work_folder

ROOT = Path(__file__).resolve().parents[2]


def one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one error line, got: {err!r}"
    assert "Traceback" not in err
    return lines[0]


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 32))


# -- item 8: a private work folder --------------------------------------------------------


def test_the_default_work_folder_is_private_and_per_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    folder = work_folder(None)
    assert folder == tmp_path / "xdg" / "bigviz"
    assert (folder.stat().st_mode & 0o777) == 0o700
    assert ((folder / "checkpoints").stat().st_mode & 0o777) == 0o700


def test_a_world_writable_work_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a shared folder anyone may write into (as /tmp/bigviz-work was)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    # WHEN bigviz is asked to use it THEN it refuses, naming the folder and the fix
    assert main(["cache", "list", "--work-dir", str(shared)]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert str(shared) in line and "writable by other users" in line and "chmod go-w" in line
    # AND a run refuses it before any checkpoint is saved or loaded from it
    with pytest.raises(ConfigError, match="writable by other users"):
        bigviz.run("meta", model="gpt:1MB", work_dir=shared)
    assert list(shared.iterdir()) == []


def test_a_work_folder_owned_by_another_user_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown to another uid needs root")
    # GIVEN a folder of uid 12345 holding a "checkpoint" at a cache key
    theirs = tmp_path / "theirs"
    (theirs / "checkpoints").mkdir(parents=True, mode=0o700)
    theirs.chmod(0o700)
    os.chown(theirs, 12345, 12345)
    assert main(["cache", "list", "--work-dir", str(theirs)]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert str(theirs) in line and "another user (uid 12345)" in line and "--work-dir" in line
    # AND a sub-folder planted by someone else inside one's own folder is refused too
    mine = tmp_path / "mine"
    (mine / "checkpoints").mkdir(parents=True)
    os.chown(mine / "checkpoints", 12345, 12345)
    with pytest.raises(ConfigError, match="another user"):
        work_folder(mine)


def test_cache_list_shows_real_checkpoints_and_clear_removes_only_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    # GIVEN a checkpoint bigviz saved, a user's folder prepared as saved (a link to it),
    # and files bigviz did not make
    saved = prepare_checkpoint("gpt:1MB", max_shard_size="500kB", work_dir=work)
    user = tmp_path / "user-ckpt"
    save_sharded(_model(), user, max_shard_size="10kB")
    linked = prepare_folder(user, work_dir=work)
    (work / "notes.txt").write_text("mine")
    (work / "checkpoints" / "my-own-folder").mkdir()
    (work / "runs" / "my-results").mkdir()
    (work / "runs" / "meta-0badf00d").mkdir()  # a killed run's scratch folder
    # WHEN the cache is listed
    assert main(["cache", "list", "--work-dir", str(work), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    by_name = {e["name"]: e for e in listed["entries"]}
    # THEN both prepared entries are there with their real sizes on disk
    assert set(by_name) == {saved.name, linked.name, "meta-0badf00d"}
    assert by_name[saved.name]["kind"] == "checkpoint"
    assert by_name[linked.name]["kind"] == "folder"
    shards = sum(p.stat().st_size for p in (saved / "checkpoint").glob("*.safetensors"))
    assert shards <= by_name[saved.name]["bytes"] < shards + 256 * 1024
    # the link to the user's folder is not counted as the cache's
    user_bytes = sum(p.stat().st_size for p in user.iterdir())
    assert by_name[linked.name]["bytes"] < user_bytes
    assert listed["bytes"] == sum(e["bytes"] for e in listed["entries"])
    assert main(["cache", "list", "--work-dir", str(work)]) == 0
    text = capsys.readouterr().out
    assert saved.name in text and "bigviz cache clear" in text
    # WHEN it is cleared
    assert main(["cache", "clear", "--work-dir", str(work)]) == 0
    assert "removed 3 entries" in capsys.readouterr().out
    # THEN the prepared entries are gone; the user's folder and other files are intact
    assert not saved.exists() and not linked.exists()
    assert cache_entries(work) == []
    assert (work / "notes.txt").read_text() == "mine"
    assert (work / "checkpoints" / "my-own-folder").is_dir()
    assert (work / "runs" / "my-results").is_dir()
    assert inspect_checkpoint(user).n_tensors == 4


def test_a_sweep_says_how_much_its_work_folder_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    assert main(["sweep", "--model", "gpt:1MB", "--strategies", "meta", "--shard-sizes",
                 "1MB", "--work-dir", str(work), "--out", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    total = sum(e.bytes for e in cache_entries(work))
    assert total > 1_000_000
    from bigviz.units import format_size

    assert f"cache: {work} holds {format_size(total)} in 1 entry" in out
    assert "bigviz cache clear" in out


# -- item 12: one-line errors for bad command lines ----------------------------------------


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["sweep", "--shard-sizes", "-5MB"], ["--shard-sizes '-5MB' must be positive"]),
        (["sweep", "--ram-budget", "-1GB"], ["--ram-budget '-1GB' must be positive"]),
        (["sweep", "--shard-sizes", "0"], ["--shard-sizes '0' must be positive"]),
        (["sweep", "--shard-sizes", "100MB,-2GB"], ["'-2GB' must be positive"]),
        (["diff", "a.json", "b.json", "--threshold", "-5%"],
         ["--threshold '-5%' must be positive"]),
        (["reshard", "in", "out", "--max-shard-size", "-5MB"], ["must be positive"]),
        (["sweep", "--strategies", ""], ["--strategies", "is empty"]),
        (["sweep", "--strategies", " , "], ["--strategies", "is empty"]),
        (["sweep", "--nproc", "1000"], ["--nproc 1000 is far above", "CPU core"]),
    ],
)
def test_bad_values_are_one_line_errors_that_say_why(
    argv: list[str], needles: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "expected one argument" not in line
    for n in needles:
        assert n in line, line


def test_more_ranks_than_cores_are_noted_and_far_more_refused_by_the_library() -> None:
    cores = cpu_cores()
    assert nproc_note(cores) is None
    note = nproc_note(cores + 1)
    assert note is not None and f"{cores} CPU core" in note and "take turns" in note
    assert check_nproc(RANKS_PER_CORE * cores) == RANKS_PER_CORE * cores
    with pytest.raises(ConfigError, match="far above"):
        bigviz.sweep("gpt:1MB", strategies=["every-rank-loads"], nproc=1000)
    with pytest.raises(ConfigError, match="shard size 0 must be positive"):
        bigviz.sweep("gpt:1MB", strategies=["meta"], shard_sizes=[0])


@pytest.fixture
def bad_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    mod = tmp_path / "fac" / "badfactory_mod.py"
    mod.parent.mkdir()
    mod.write_text(textwrap.dedent("""
        def build():
            weights = {"w": 1}
            return weights["missing layer: encoder.7"]
    """))
    monkeypatch.syspath_prepend(str(mod.parent))
    return "badfactory_mod:build"


def test_a_failing_factory_shows_its_last_line_and_the_traceback_with_verbose(
    bad_factory: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["sweep", "--model", bad_factory, "--strategies", "meta", "--shard-sizes", "1MB",
            "--work-dir", str(tmp_path / "w"), "--out", str(tmp_path / "r.json")]
    # WHEN the factory raises in the worker that saves its checkpoint
    assert main(args) == 1
    err = capsys.readouterr().err
    # THEN the error is one line: the step and the factory's own last line
    line = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(line) == 1 and "Traceback" not in err
    assert "while building the model" in line[0]
    assert "KeyError" in line[0] and "missing layer: encoder.7" in line[0]
    assert "--verbose" in line[0]
    # AND --verbose prints the worker's traceback, down to the factory's line
    assert main([*args, "--verbose"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and 'return weights["missing layer: encoder.7"]' in err
    assert err.strip().splitlines()[-1].startswith("bigviz sweep: error:")


def test_a_worker_killed_while_preparing_names_the_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a factory that takes its time (a big model being built)
    mod = tmp_path / "fac" / "slowfactory_mod.py"
    mod.parent.mkdir()
    mod.write_text("import time\n\ndef build():\n    time.sleep(60)\n")
    monkeypatch.syspath_prepend(str(mod.parent))
    from bigviz.runner import forkserver

    forkserver.get_server().ensure()
    server = psutil.Process(forkserver.live_server_pids()[0])
    killed: list[int] = []

    def kill_the_worker() -> None:
        for _ in range(400):
            kids = server.children()
            if kids:
                time.sleep(0.5)  # inside the build
                kids[0].kill()  # as the OOM killer would
                killed.append(kids[0].pid)
                return
            time.sleep(0.05)

    import threading

    t = threading.Thread(target=kill_the_worker, name="test-killer")
    t.start()
    # WHEN its worker is killed while the checkpoint is prepared
    with pytest.raises(RunError) as exc:
        prepare_checkpoint("slowfactory_mod:build", max_shard_size="1MB",
                           work_dir=tmp_path / "w")
    t.join()
    # THEN the error names the preparation step, not "phase None"
    msg = str(exc.value)
    assert killed and "while building the model (slowfactory_mod:build" in msg, msg
    assert "SIGKILL" in msg and "None" not in msg and "\n" not in msg
    assert [p.name for p in (tmp_path / "w" / "checkpoints").iterdir()] == []


# -- item 14: what an index may not lie about ----------------------------------------------


def _two_shards(folder: Path) -> dict[str, object]:
    save_sharded(_model(), folder, max_shard_size="10kB")
    return dict(json.loads((folder / "model.safetensors.index.json").read_text()))


@pytest.mark.parametrize("lie", [10**18, -5])
def test_a_lying_total_size_is_ignored_with_a_warning(
    tmp_path: Path, lie: int, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "ck"
    index = _two_shards(folder)
    real = inspect_checkpoint(folder).total_size
    index["metadata"] = {"total_size": lie}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    info = inspect_checkpoint(folder)
    assert info.total_size == real
    assert any(n.startswith("warning:") and f"{lie:,}" in n for n in info.notes)
    assert main(["inspect", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "cannot be true" in out and "PiB" not in out and "EiB" not in out
    assert main(["inspect", str(folder), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["predictions"]["naive"]["ram_peak"] == 2 * real


def test_a_shard_the_index_leaves_out_is_noted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "ck"
    _two_shards(folder)
    first = sorted(folder.glob("model-*.safetensors"))[0]
    shutil.copy(first, folder / "model-00009-of-00009.safetensors")
    info = inspect_checkpoint(folder)
    assert any("model-00009-of-00009.safetensors" in n and "not loaded" in n
               for n in info.notes)
    assert main(["inspect", str(folder)]) == 0
    assert "note: 1 .safetensors file(s) in the folder are not in" in capsys.readouterr().out


def test_a_tensor_missing_from_the_index_is_not_loaded_silently(tmp_path: Path) -> None:
    folder = tmp_path / "ck"
    index = _two_shards(folder)
    weight_map = dict(index["weight_map"])  # type: ignore[call-overload]
    shard = weight_map.pop("1.bias")
    index["weight_map"] = weight_map
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    info = inspect_checkpoint(folder)
    assert "1.bias" not in info.tensors and info.unindexed == {"1.bias": shard}
    assert info.total_size == sum(t.nbytes for t in info.tensors.values())
    # strict: an error that names the tensor and the shard
    with pytest.raises(CheckpointError, match=r"not listed in the index: '1.bias'"):
        load_sharded(_model(1), folder)
    # not strict: it is left as it was, and the report says so
    target = _model(1)
    before = target.state_dict()["1.bias"].clone()
    report = load_sharded(target, folder, strict=False)
    assert "1.bias" in report.missing_keys and "1.bias" in report.notes[0]
    assert torch.equal(target.state_dict()["1.bias"], before)
    assert torch.equal(target.state_dict()["0.weight"], _model().state_dict()["0.weight"])


# -- item 16: profile runs what the shell would run ----------------------------------------


def _profile(cwd: Path, *cmd: str, env: dict[str, str] | None = None,
             no_instrument: bool = False) -> subprocess.CompletedProcess[str]:
    flags = ["--no-instrument"] if no_instrument else []
    return subprocess.run(
        [sys.executable, "-m", "bigviz", "profile", *flags, "--", *cmd],
        cwd=cwd, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def _script(path: Path, shebang: str, body: str) -> Path:
    path.write_text(f"#!{shebang}\n{body}")
    path.chmod(0o755)
    return path


def test_profile_runs_a_script_with_its_own_shebang_and_looks_names_up_on_path(
    tmp_path: Path,
) -> None:
    # GIVEN tool.py that is a shell script (its #! says so), here and on PATH
    _script(tmp_path / "tool.py", "/bin/sh", 'echo "here, by sh" > ran.txt\n')
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _script(bin_dir / "tool.py", "/bin/sh", 'echo "from PATH, by sh" > ran.txt\n')
    # WHEN `bigviz profile -- ./tool.py` THEN the shell's way runs it: by sh, exit 0
    proc = _profile(tmp_path, "./tool.py")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "ran.txt").read_text() == "here, by sh\n"
    # WHEN `tool.py` without a slash THEN it is looked up on PATH, not in the folder
    path = f"{bin_dir}:{os.environ.get('PATH', '')}"
    proc = _profile(tmp_path, "tool.py", env={"PATH": path})
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "ran.txt").read_text() == "from PATH, by sh\n"
    # AND with no tool.py on PATH, the error says how to run the one here
    proc = _profile(tmp_path, "tool.py")
    assert proc.returncode == 2
    line = one_line_error(proc.stderr)
    assert "looked up on PATH" in line and "./tool.py" in line and "python tool.py" in line


OWN_RECORDER = """\
import bigviz
with bigviz.record() as rec:
    x = bytearray(5_000_000)
print("recorded", rec.recording.duration > 0)
"""


def test_only_this_interpreter_gets_the_bootstrap_and_own_recorders_are_told_the_way_out(
    tmp_path: Path,
) -> None:
    (tmp_path / "own.py").write_text(OWN_RECORDER)
    # WHEN explicitly `python own.py` with bigviz's interpreter: instrumented, so the
    # program's own bigviz.record() is told about --no-instrument
    proc = _profile(tmp_path, sys.executable, "own.py")
    assert proc.returncode == 1
    assert "bigviz profile --no-instrument" in proc.stderr
    # AND with --no-instrument it records itself
    proc = _profile(tmp_path, sys.executable, "own.py", no_instrument=True)
    assert proc.returncode == 0, proc.stderr
    assert "recorded True" in proc.stdout
    # WHEN a script's #! names this interpreter THEN it is instrumented as well
    _script(tmp_path / "mine.py", sys.executable, OWN_RECORDER)
    proc = _profile(tmp_path, "./mine.py")
    assert proc.returncode == 1 and "--no-instrument" in proc.stderr


# -- item 17: stopping cleanly -------------------------------------------------------------


@pytest.mark.slow
def test_ctrl_c_while_a_checkpoint_is_saved_stops_it_promptly_and_keeps_nothing(
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bigviz", "sweep", "--model", "gpt:1GB", "--strategies", "meta",
         "--work-dir", str(work), "--out", str(tmp_path / "r.json")],
        cwd=tmp_path, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "saving" in line, line
        # wait until the worker holds half of the 1 GB model: the save is under way
        me = psutil.Process(proc.pid)
        deadline = time.monotonic() + 90
        building = False
        while time.monotonic() < deadline and not building:
            for p in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    building = building or p.memory_info().rss > 500_000_000
            time.sleep(0.05)
        assert building, "the worker never started building the model"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        stopped = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert stopped < 10, f"took {stopped:.1f} s to stop"
    assert "interrupted" in err
    assert list((work / "checkpoints").iterdir()) == []


def test_systemexit_in_a_callback_stops_the_work_and_says_so(tmp_path: Path) -> None:
    seen: list[str] = []

    def progress(ev: dict[str, object]) -> None:
        seen.append(str(ev["stage"]))
        if ev["stage"] == "run":
            sys.exit(3)

    # WHEN a progress callback calls sys.exit() THEN the sweep stops (no second run
    # starts) and the caller gets a RunError naming it, not a bare SystemExit
    with pytest.raises(RunError, match=r"on_progress callback raised SystemExit\(3\)"):
        bigviz.sweep("gpt:1MB", strategies=["meta", "naive"], shard_sizes=["1MB"],
                     work_dir=tmp_path / "w", on_progress=progress)
    assert seen.count("run") == 1

    def event(ev: dict[str, object]) -> None:
        raise SystemExit("stop")

    with pytest.raises(RunError, match=r"on_event callback raised SystemExit\('stop'\)"):
        bigviz.run("meta", model="gpt:1MB", max_shard_size="1MB", work_dir=tmp_path / "w",
                   on_event=event)

    from bigviz.progress import BackgroundSweep, SweepProgress

    def on_result(sweep: object) -> None:
        sys.exit(4)

    job = BackgroundSweep({"model": "gpt:1MB", "strategies": ["meta"], "shard_sizes": ["1MB"],
                           "work_dir": tmp_path / "w"}, progress=SweepProgress(),
                          on_result=on_result)
    job.start()
    with pytest.raises(RunError, match=r"SystemExit\(4\)"):
        job.wait(timeout=120)


def _memory_cgroup_v1(name: str) -> Path | str:
    v1 = Path("/sys/fs/cgroup/memory")
    if not (v1 / "memory.limit_in_bytes").exists():
        return "no cgroup v1 memory controller here"
    try:
        (v1 / name).mkdir()
    except OSError as exc:
        return f"cannot make a memory cgroup under {v1}: {exc}"
    return v1 / name


@pytest.mark.slow
def test_running_out_of_memory_while_preparing_names_the_step(tmp_path: Path) -> None:
    made = _memory_cgroup_v1(f"bigviz-oom-{os.getpid()}")
    if isinstance(made, str):
        pytest.skip(made)
    group = made
    try:
        # GIVEN a sweep whose processes may use 1.2 GB in all, of a 2 GB model
        (group / "memory.limit_in_bytes").write_text(str(1_200_000_000))
        script = (f'echo $$ > {group}/cgroup.procs && exec "$0" -m bigviz sweep '
                  f"--model gpt:2GB --strategies meta --work-dir {tmp_path / 'w'} "
                  f"--out {tmp_path / 'r.json'}")
        proc = subprocess.run(["sh", "-c", script, sys.executable], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        for _ in range(100):  # removable once its processes are gone (the fork server)
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)
    # WHEN the kernel's OOM killer ends the worker that builds it THEN the error says so,
    # naming the preparation step (not "in phase None")
    lines = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert "ran out of memory while building the model (gpt:2GB" in lines[0], lines[0]
    assert "None" not in lines[0]
    assert list((tmp_path / "w" / "checkpoints").iterdir()) == []
