"""The node: its PSS sampled by the launcher, and a job of several nodes.

:class:`NodeSampler` reads every rank's ``smaps_rollup`` back to back, as one node-wide
sample (``node.pss``). A job of ``nnodes`` nodes runs one launcher per node, like
``torchrun --nnodes`` (:class:`Cluster`, ``--nnodes`` / ``--node-rank``): global rank 0
writes the job's RunResult into a folder every node's launcher can read and write
(``--node-dir``), each launcher writes its node's sampled PSS there (``node<K>.json``),
and node 0's launcher adds the other nodes' to the result (:func:`gather_nodes`). A node
that never joins stops the job after ``rendezvous_timeout``
(:func:`rendezvous_overdue`, :func:`rendezvous_failure`).

Example:
    >>> Cluster(2, 1, master_port=29500, node_dir=Path("/tmp/job")).world(4)
    8
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bigviz._errors import ConfigError
from bigviz.data.recording import Series
from bigviz.data.result import PredictionCheck, RunResult
from bigviz.runner.memory import snapshot
from bigviz.runner.rank import SMAPS_MS
from bigviz.runner.results import above, add_barrier_points, max_after, measured_from
from bigviz.runner.supervisor import Supervision, Watched

__all__ = ["GATHER_S", "Cluster", "NodeSampler", "gather_nodes", "job_result_path",
           "rendezvous_failure", "rendezvous_overdue"]

#: how long node 0's launcher waits, after its ranks are done, for the other nodes'
#: sampled totals to appear in the shared folder
GATHER_S = 30.0


@dataclass(frozen=True)
class Cluster:
    """Where this launcher's ranks sit in a job of ``nnodes`` nodes (one launcher per
    node, like ``torchrun --nnodes``).

    Rank ``r`` of node ``node_rank`` is global rank ``node_rank * nproc + r``; every
    node's ranks meet at ``master_addr:master_port`` (node 0 hosts the rendezvous).
    ``node_dir`` is a folder every node's launcher can read and write (on one machine:
    any folder; on a cluster: a shared file system): global rank 0 writes the job's
    RunResult there, and each launcher writes its node's sampled PSS (``node<K>.json``),
    which node 0's launcher adds to the result. ``rendezvous_timeout``: seconds the
    ranks may wait for the other nodes before the job is stopped.

    Example:
        >>> Cluster(2, 1, master_port=29500, node_dir=Path("/tmp/job")).world(4)
        8
    """

    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int | None = None
    node_dir: Path | None = None
    rendezvous_timeout: float = 300.0

    @property
    def multi(self) -> bool:
        """Whether the job spans more than one node."""
        return self.nnodes > 1

    def world(self, nproc: int) -> int:
        """The job's world size with ``nproc`` ranks on every node."""
        return self.nnodes * nproc

    def check(self) -> Cluster:
        """These settings, checked.

        Raises:
            ConfigError: naming the value and the fix.
        """
        if self.nnodes < 1:
            raise ConfigError(f"nnodes {self.nnodes} must be >= 1 (--nnodes 2)")
        if not 0 <= self.node_rank < self.nnodes:
            raise ConfigError(f"node_rank {self.node_rank} must be in 0..{self.nnodes - 1} "
                              f"for nnodes {self.nnodes} (--node-rank)")
        if self.master_port is not None and not 0 < self.master_port < 65536:
            raise ConfigError(f"master_port {self.master_port} is not a TCP port; use "
                              "e.g. --master-port 29500")
        if not self.rendezvous_timeout > 0:
            raise ConfigError(f"rendezvous_timeout {self.rendezvous_timeout} must be a "
                              "positive number of seconds")
        if self.multi and (self.master_port is None or self.node_dir is None):
            raise ConfigError(
                f"nnodes {self.nnodes} needs the same master_port and node_dir on every "
                "node, e.g. --master-port 29500 --node-dir /shared/bigviz-job")
        if not self.multi and self.node_rank:
            raise ConfigError(f"node_rank {self.node_rank} needs nnodes > 1 (--nnodes)")
        return self


def job_result_path(cluster: Cluster, scratch: Path) -> Path:
    """Where global rank 0 writes the job's RunResult: ``scratch/result.json``, or for a
    multi-node job ``result.json`` in the shared ``cluster.node_dir`` (created; node 0
    first removes the files an earlier job left there).

    Example:
        >>> job_result_path(Cluster(), Path("/tmp/scratch"))
        PosixPath('/tmp/scratch/result.json')
    """
    out = scratch / "result.json"
    if cluster.multi:
        assert cluster.node_dir is not None  # Cluster.check
        cluster.node_dir.mkdir(parents=True, exist_ok=True)
        out = cluster.node_dir / "result.json"
        if cluster.node_rank == 0:  # files of an earlier job in the same folder
            for old in (out, *cluster.node_dir.glob("node*.json")):
                old.unlink(missing_ok=True)
    return out


def rendezvous_overdue(cluster: Cluster, ws: Sequence[Watched], elapsed: float) -> bool:
    """Whether a multi-node job's ranks are still waiting for the other nodes
    ``elapsed`` seconds after the start, past ``cluster.rendezvous_timeout`` (a rank that
    joined the world says ``hello``).

    Example:
        >>> rendezvous_overdue(Cluster(), [], 1e9)
        False
    """
    return (cluster.multi and elapsed > cluster.rendezvous_timeout
            and not all("hello" in w.kept for w in ws))


def rendezvous_failure(failed: RunResult, seen: Supervision, cluster: Cluster, *,
                       nproc: int, master_port: str, waited: Sequence[float],
                       cancel: threading.Event | None) -> None:
    """A multi-node job that failed: note the node in ``failed.params`` and, when the
    other nodes never joined (``waited``: the launcher gave up on the rendezvous after
    that many seconds; or ranks that never said ``hello`` when the job was stopped for an
    error, not by ``cancel``), say so in ``failed.error`` with the fix.

    Example:
        >>> # rendezvous_failure(failed, seen, cluster, nproc=2, master_port="29500",
        >>> #                    waited=[300.0], cancel=None)
    """
    failed.params.update(nnodes=cluster.nnodes, node_rank=cluster.node_rank)
    missing = [w.rank for w in seen.watched if "hello" not in w.kept]
    if waited or (missing and seen.stop is not None and seen.stop.outcome == "error"
                  and (cancel is None or not cancel.is_set())):
        failed.outcome = "error"
        failed.error = (
            f"rendezvous at {cluster.master_addr}:{master_port} incomplete "
            f"after {(waited or [seen.seconds])[0]:.0f} s: node {cluster.node_rank}'s "
            f"{nproc} rank(s) waited for a world of {cluster.world(nproc)} on "
            f"{cluster.nnodes} nodes, and the other node(s) never joined; start every "
            "node with the same --nnodes, --master-addr, --master-port and its own "
            "--node-rank (all ranks here were stopped)")

def gather_nodes(res: RunResult, sampler: NodeSampler, watched: Sequence[Watched],
                  cluster: Cluster) -> None:
    """Multi-node: publish this node's sampled PSS in ``cluster.node_dir`` and put it in
    ``res``; node 0 also waits (up to :data:`GATHER_S`) for the other nodes' files.

    Example:
        >>> # gather_nodes(res, sampler, seen.watched, cluster)
    """
    assert cluster.node_dir is not None
    syncs = [w.kept.get("hello", {}).get("t_sync") for w in watched]
    t_sync = next((float(t) for t in syncs if isinstance(t, (int, float))), None)
    mine = {"node": cluster.node_rank, "host": socket.gethostname(),
            "ranks": [int(w.rank) + cluster.node_rank * len(watched) for w in watched],
            "spread_ms": round(sampler.spread * 1000, 3),
            # seconds after this node's ranks left the alignment barrier (every node's
            # ranks leave it together), so any host's clock works
            "t": [] if t_sync is None else [t - t_sync for t in sampler.t],
            "v": [] if t_sync is None else list(sampler.v)}
    path = cluster.node_dir / f"node{cluster.node_rank}.json"
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(mine), encoding="utf-8")
    tmp.replace(path)
    _apply_node(res, mine)
    res.params.update(nnodes=cluster.nnodes, node_rank=cluster.node_rank)
    if cluster.node_rank != 0:
        res.recording.meta["node_totals"] = (
            f"node {cluster.node_rank}'s launcher: only this node's PSS is sampled here; "
            "node 0's result has every node's")
        return
    others = [k for k in range(cluster.nnodes) if k != 0]
    deadline = time.monotonic() + GATHER_S
    while others and time.monotonic() < deadline:
        for k in list(others):
            f = cluster.node_dir / f"node{k}.json"
            with contextlib.suppress(OSError, ValueError):
                _apply_node(res, json.loads(f.read_text(encoding="utf-8")))
                others.remove(k)
        if others:
            time.sleep(0.1)
    res.recording.meta["node_totals"] = (
        "each node's launcher sampled its own ranks' PSS back to back; node 0 read them "
        f"from {cluster.node_dir}"
        + (f"; node(s) {others} did not report within {GATHER_S:g} s: their totals are "
           "the barrier snapshots" if others else ""))


def _apply_node(res: RunResult, data: dict[str, Any]) -> None:
    """Put one node's sampled PSS (a ``node<K>.json``) into ``res``: the series
    ``node<K>.pss`` and that node's peak in ``checks.nodes``."""
    k = int(data["node"])
    fig = next((f for f in res.checks.nodes if f.node == k), None)
    t_sync = res.recording.meta.get("t_sync")
    t, v = list(data.get("t") or []), [int(x) for x in data.get("v") or []]
    if fig is None or not isinstance(t_sync, (int, float)) or not t:
        return
    res.recording.series[f"node{k}.pss"] = Series(
        f"node{k}.pss", t=[float(t_sync) + x for x in t], v=v,
        source=f"node {k}'s launcher: its ranks' smaps_rollup in one go")
    base = int(fig.baseline.get("pss", 0))
    sampled = above(max((b for a, b in zip(t, v, strict=True) if a >= 0), default=None), base)
    cands = [x for x in (sampled, fig.pss_loaded) if x is not None]
    fig.pss_peak = max(cands) if cands else None
    fig.ram_peak = fig.pss_peak
    fig.sampled = (f"node {k}'s launcher, its ranks within {data.get('spread_ms')} ms, "
                   "plus the barrier snapshot")


class NodeSampler:
    """The launcher's own node PSS: every rank's ``smaps_rollup`` read back to back.

    Summing the ranks' own PSS series mixes readings taken up to 50 ms apart; while
    ranks map shared pages that double-counts what moved in between (measured here:
    1.4 × M instead of 1 × M for a 1 GB ``shared-mmap`` pass). Reading all ranks within
    a few milliseconds, as one node-wide sample, does not. The period backs off to 20 ×
    the cost of a round, since each read walks the rank's page tables.
    """

    def __init__(self, period: float = SMAPS_MS / 1000.0) -> None:
        self.period = period
        self.next = 0.0
        self.t: list[float] = []
        self.v: list[int] = []
        self.spread: float = 0.0

    def maybe_sample(self, ranks: Sequence[Watched], now: float) -> None:
        """Take a node-wide sample if one is due and every rank is up (the supervisor's
        ``on_tick``)."""
        if now < self.next or any(w.exit_code is not None or "hello" not in w.kept
                                  for w in ranks):
            return
        c0 = time.monotonic()
        total = 0
        for w in ranks:
            pss = snapshot(w.child.pid)["pss"]
            if not pss:
                return  # the rank is gone (or not Linux): no node-wide sample
            total += pss
        c1 = time.monotonic()
        self.t.append((c0 + c1) / 2)
        self.v.append(total)
        self.spread = max(self.spread, c1 - c0)
        self.next = c1 + max(self.period, 20 * (c1 - c0))

    def apply(self, res: RunResult) -> None:
        """Replace ``node.pss`` by these samples and update the node peak from them."""
        rec = res.recording
        lanes = rec.ranks
        if not self.t or not lanes:
            return
        t0 = rec.meta.get("t0_monotonic")
        if not isinstance(t0, (int, float)):
            return
        rec.series["node.pss"] = Series("node.pss", t=[t - t0 for t in self.t], v=self.v,
                                        source="launcher: all ranks' smaps_rollup in one go")
        node = res.checks.node
        if node is not None:
            base = int(node.baseline.get("pss", 0))
            loaded = node.pss_loaded
            add_barrier_points(rec, {"baseline": base,
                                      "loaded": base + int(loaded) if loaded else 0})
        rec.meta["node_pss"] = (f"sampled by the launcher, all ranks within "
                                f"{self.spread * 1000:.1f} ms, plus the barrier snapshots")
        if node is None:
            return
        t_all = measured_from(lanes)
        base = int(node.baseline.get("pss", 0))
        sampled = above(max_after(rec.series["node.pss"], t_all), base)
        cands = [v for v in (sampled, node.pss_loaded) if v is not None]
        node.pss_peak = max(cands) if cands else None
        peaks = [v for v in (node.pss_peak, node.anon_peak) if v is not None]
        node.ram_peak = max(peaks) if peaks else None
        res.ram_peak = node.ram_peak
        pred = res.checks.prediction
        if pred is not None and res.ram_peak is not None:
            res.checks.prediction = PredictionCheck.judge(
                res.ram_peak, res.predicted or pred.predicted,
                nproc=int(res.params.get("nproc") or 1))
