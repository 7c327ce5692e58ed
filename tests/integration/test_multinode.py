"""Multi-node runs on one machine: two launches of ``python -m bigviz.runner.distributed``
with ``--nnodes 2 --node-rank 0/1`` and a 127.0.0.1 rendezvous form one job; each node's
launcher samples its own ranks, node 0's result holds every node's totals and the
cluster's. A node that never starts is a clear error within the rendezvous timeout.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bigviz._errors import ConfigError
from bigviz.data.result import RunResult
from bigviz.runner.launcher import Cluster, run_distributed

MODEL = "gpt:1MB"


def _port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _node(k: int, *, port: int, tmp: Path, nproc: int = 1,
          extra: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    """One node's launcher, as a user would start it on that node."""
    return subprocess.Popen(
        [sys.executable, "-m", "bigviz.runner.distributed", "shared-mmap",
         "--nproc", str(nproc), "--model", MODEL, "--max-shard-size", "500KB",
         "--work-dir", str(tmp / "work"), "--nnodes", "2", "--node-rank", str(k),
         "--master-addr", "127.0.0.1", "--master-port", str(port),
         "--node-dir", str(tmp / "job"), "--timeout", "180", "--out", str(tmp / f"n{k}.json"),
         *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_two_nodes_on_one_machine_give_node_totals_and_the_cluster_total(
    tmp_path: Path,
) -> None:
    # GIVEN two "nodes" of one rank each, launched separately like torchrun's nodes
    port = _port()
    procs = [_node(k, port=port, tmp=tmp_path) for k in (0, 1)]
    logs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    r0 = RunResult.from_json((tmp_path / "n0.json").read_text(encoding="utf-8"))
    r1 = RunResult.from_json((tmp_path / "n1.json").read_text(encoding="utf-8"))
    # THEN they formed one job of 2 ranks on 2 nodes, every rank's weights right
    assert r0.ok, r0.error
    assert r0.params["nnodes"] == 2 and r0.params["nproc"] == 2
    assert [(f.rank, f.node, f.verify) for f in r0.checks.ranks] == [(0, 0, "ok"), (1, 1, "ok")]
    # AND node 0's result has each node's totals, each sampled by that node's launcher
    nodes = r0.checks.nodes
    assert [(n.node, n.ranks) for n in nodes] == [(0, [0]), (1, [1])]
    for n in nodes:
        assert n.sampled is not None and n.sampled.startswith(f"node {n.node}'s launcher")
        assert n.pss_loaded is not None and n.pss_loaded > 0
        assert n.ram_peak is not None and n.ram_peak >= n.pss_loaded
        s = r0.recording.series[f"node{n.node}.pss"]
        # on rank 0's clock, from when every rank left the alignment barrier on
        t_sync = r0.recording.meta["t_sync"]
        assert s.v and s.t == sorted(s.t) and s.t[0] >= t_sync
    # AND the cluster total is the sum over the nodes (same barrier, all ranks at once)
    cluster = r0.checks.node
    assert cluster is not None and cluster.pss_loaded == sum(n.pss_loaded or 0 for n in nodes)
    # AND the lanes are grouped (labelled) by node
    assert [lane.meta.get("node") for lane in r0.recording.ranks] == [0, 1]
    assert "node 0 (" in logs[0] and "node 1 (" in logs[0] and "cluster (2 nodes)" in logs[0]
    # AND node 1's launcher returns the job's result with its own node's samples only
    assert r1.ok and "node1.pss" in r1.recording.series
    assert "node0.pss" not in r1.recording.series
    assert "only this node's PSS" in str(r1.recording.meta.get("node_totals"))


@pytest.mark.slow
def test_a_node_that_never_starts_stops_the_job_with_a_clear_error(tmp_path: Path) -> None:
    # GIVEN node 0 of a 2-node job, and no node 1
    port = _port()
    t0 = time.monotonic()
    proc = _node(0, port=port, tmp=tmp_path, nproc=2, extra=("--rendezvous-timeout", "5"))
    log = proc.communicate(timeout=120)[0]
    elapsed = time.monotonic() - t0
    # THEN it fails within the rendezvous timeout (plus start-up), saying what is missing
    assert proc.returncode == 1, log
    assert elapsed < 60
    r = RunResult.from_json((tmp_path / "n0.json").read_text(encoding="utf-8"))
    assert r.outcome == "error" and r.error is not None and "\n" not in r.error
    assert f"rendezvous at 127.0.0.1:{port} incomplete" in r.error
    assert "world of 4 on 2 nodes" in r.error and "--node-rank" in r.error
    # AND every rank was stopped, and the partial report was written
    assert r.checks.exit_codes == {"0": -9, "1": -9}
    assert r.recording.meta.get("partial") is True
    pids = [lane.pid for lane in r.recording.ranks]
    assert len(pids) == 2
    for pid in pids:
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_bad_cluster_settings_fail_before_any_process(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="same master_port and node_dir"):
        run_distributed("shared-mmap", model=MODEL, work_dir=tmp_path, cluster=Cluster(2, 0))
    with pytest.raises(ConfigError, match=r"node_rank 2 must be in 0\.\.1"):
        run_distributed("shared-mmap", model=MODEL, work_dir=tmp_path,
                        cluster=Cluster(2, 2, master_port=29500, node_dir=tmp_path))
    with pytest.raises(ConfigError, match="master_port 70000"):
        run_distributed("shared-mmap", model=MODEL, work_dir=tmp_path,
                        cluster=Cluster(2, 0, master_port=70000, node_dir=tmp_path))
    assert not any(tmp_path.iterdir())
