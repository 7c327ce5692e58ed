"""The pieces ``bigviz profile`` shares with the recorder: the phase stack and its fold of
exact peaks, the marker protocol, the process-tree sampler's phases, and the merge of an
instrumented process's recording onto the tree's clock."""

from __future__ import annotations

import os
import time
from pathlib import Path

from bigviz.data.recording import Mark, Phase, Recording, Series, SourceInfo
from bigviz.recorder.markers import MarkerReader, parse_marker
from bigviz.recorder.merge import merge_process
from bigviz.recorder.phases import PhaseStack
from bigviz.recorder.tree import TreeSampler


def test_a_spike_inside_a_nested_phase_is_in_both_peaks_but_not_in_the_next() -> None:
    # GIVEN outer > inner, and a 900 spike folded while both are open
    phases: list[Phase] = []
    stack: PhaseStack[str] = PhaseStack()
    outer = stack.open(phases, "outer", start=0.0, peaks={"ram": 100})
    inner = stack.open(phases, "inner", start=1.0, peaks={"ram": 100})
    stack.fold({"ram": 900})
    # WHEN inner closes and a sibling opens after the reset
    assert stack.close(inner)
    sibling = stack.open(phases, "sibling", start=2.0, peaks={"ram": 120})
    stack.fold({"ram": 150})
    # THEN the spike is in outer and inner, not in the sibling; the root has it too
    assert outer.peaks == {"ram": 900} and inner.peaks == {"ram": 900}
    assert sibling.peaks == {"ram": 150}
    assert stack.root == {"ram": 900}
    assert [(p.name, p.parent, p.depth) for p in phases] == [
        ("outer", None, 0), ("inner", 0, 1), ("sibling", 0, 1)]  # fmt: skip


def test_phases_closed_out_of_order_or_twice_leave_the_others_open() -> None:
    phases: list[Phase] = []
    stack: PhaseStack[int] = PhaseStack()
    parent = stack.open(phases, "parent", start=0.0)
    child = stack.open(phases, "child", start=0.1)
    # a thread may close the parent before the child's thread closes the child
    assert stack.close(parent) and not stack.close(parent)
    assert stack.innermost is child and len(stack) == 1


def test_end_by_name_closes_the_phases_inside_it_and_an_unknown_name_none() -> None:
    phases: list[Phase] = []
    stack: PhaseStack[int] = PhaseStack()
    for name in ("a", "b", "c"):
        stack.open(phases, name, start=0.0)
    assert stack.close_through("nope") == [] and stack.names() == ["a", "b", "c"]
    assert [op.phase.name for op in stack.close_through("b")] == ["c", "b"]
    assert [op.phase.name for op in stack.close_through()] == ["a"]
    assert not stack


def test_marker_lines_parse_to_events() -> None:
    assert parse_marker("BIGVIZ_PHASE start load shard 1") is not None
    cases = {
        "BIGVIZ_PHASE start load 1": ("start", "load 1"),
        "BIGVIZ_PHASE end": ("end", ""),
        "BIGVIZ_PHASE end load": ("end", "load"),
        "BIGVIZ_MARK freed 2": ("mark", "freed 2"),
        "BIGVIZ_PHASE start": ("bad", ""),
        "BIGVIZ_PHASE begin x": ("bad", ""),
        "hello": ("bad", ""),
    }
    for line, (kind, name) in cases.items():
        m = parse_marker(line)
        assert m is not None and (m.kind, m.name) == (kind, name), line
    assert parse_marker("   ") is None


def test_a_marker_line_split_across_writes_is_read_once_whole() -> None:
    r, w = os.pipe()
    os.set_blocking(r, False)
    try:
        reader = MarkerReader(r)
        os.write(w, "BIGVIZ_PHASE start lö".encode())
        assert reader.lines() == []
        os.write(w, b"ad\nBIGVIZ_MARK m\n")
        assert reader.lines() == ["BIGVIZ_PHASE start löad", "BIGVIZ_MARK m"]
    finally:
        os.close(r)
        os.close(w)


def test_tree_sampler_nests_marker_phases_and_reports_bad_lines() -> None:
    # GIVEN marker lines already written when this process's tree is sampled
    r, w = os.pipe()
    os.set_blocking(r, False)
    lines = [
        "BIGVIZ_PHASE end",  # nothing open yet
        "BIGVIZ_PHASE start outer",
        "BIGVIZ_PHASE start inner",
        "BIGVIZ_MARK half way",
        "BIGVIZ_PHASE end nope",  # not open
        "BIGVIZ_PHASE end outer",  # closes inner too
        "BIGVIZ_PHASE start left open",
        "",
    ]
    os.write(w, "\n".join(lines).encode())
    # (no_reset: this test process's own VmHWM is not the sampler's to reset)
    s = TreeSampler(
        os.getpid(), interval_s=0.005, t0=time.monotonic(), marker_fd=r, no_reset={os.getpid()}
    )
    try:
        s.start()
        time.sleep(0.05)
        s.stop()
    finally:
        os.close(r)
        os.close(w)
    s.fill_phases()
    # THEN the phases nest, the one left open is closed at the end, bad lines are errors
    assert [(p.name, p.parent, p.depth) for p in s.phases] == [
        ("outer", None, 0), ("inner", 0, 1), ("left open", None, 0)]  # fmt: skip
    assert all(p.end is not None and p.ram_peak for p in s.phases)
    assert "not ended" in (s.phases[2].error or "")
    assert s.phases[0].error is None and s.phases[1].error is None
    assert [m.name for m in s.marks] == ["half way"]
    assert any("none is open" in e for e in s.errors)
    assert any("'nope', which is not open" in e for e in s.errors)
    # the totals are this process's samples
    assert s.t and len(s.t) == len(s.rss) and max(s.rss) > 0


def test_instrumented_process_phases_land_on_the_tree_clock_tagged_with_its_pid() -> None:
    # GIVEN the tree's recording (one marker phase) and the recording made inside pid 42,
    # which started 2.5 s after the tree's clock
    tree = Recording(
        phases=[Phase("marker", start=0.0, end=9.0)],
        series={"ram.rss": Series("ram.rss", [0.0], [1])},
    )
    inner = Recording(
        phases=[Phase("outer", 0.5, 2.0), Phase("torch.load", 1.0, 1.5, parent=0, depth=1)],
        marks=[Mark("m", 1.25, {"k": 1})],
        series={
            "ram.rss": Series("ram.rss", [0.0, 1.0], [5, 6]),
            "cuda:0.allocated": Series("cuda:0.allocated", [1.0], [7]),
        },
        sources=[SourceInfo("ram", True, exact=True)],
        errors=["oops"],
        meta={"t0_monotonic": 12.5},
    )
    # WHEN merged
    merge_process(tree, inner, dt=2.5, pid=42)
    # THEN times are shifted, parents re-indexed, everything says which process
    load = tree.phases[2]
    assert (load.name, load.start, load.end, load.parent) == ("torch.load", 3.5, 4.0, 1)
    assert load.detail == {"pid": 42, "scope": "process 42"}
    assert [(m.name, m.t, m.detail) for m in tree.marks] == [("m", 3.75, {"k": 1, "pid": 42})]
    # the tree samples RAM itself: only what the process alone sees is kept, as a lane
    assert sorted(tree.series) == ["proc:42.cuda:0.allocated", "ram.rss"]
    assert tree.series["proc:42.cuda:0.allocated"].t == [3.5]
    assert [s.name for s in tree.sources] == ["proc:42.ram"]
    assert tree.errors == ["process 42: oops"]
    assert tree.meta["instrumented"] == {"pid": 42, "meta": {"t0_monotonic": 12.5}}


def test_instrumentation_does_not_import_the_recorder() -> None:
    # GIVEN every import the instrumentation module makes (type-checking ones included)
    import ast

    import bigviz.recorder._instrument as instrument

    imported: set[str | None] = set()
    for path in Path(instrument.__file__).parent.glob("*.py"):  # a package: every module
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    # THEN none is the recorder (no cycle): phases go to any PhaseSink, the Recorder is one
    assert not any(m and m.startswith(("bigviz.recorder._recorder",)) for m in imported)
    assert "bigviz.recorder" not in imported
    assert "bigviz.recorder.phases" in imported
