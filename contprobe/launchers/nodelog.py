"""What a launcher's own output says about nodes: which node failed or never started its tasks,
and which tasks ended on which node.

Patterns are the launchers' own wording, from their source:
- srun `Node failure on %s` (src/srun/libsrun/allocate.c, _node_fail_handler),
- srun `Task launch for %ps failed on node %s: %m` (src/api/step_launch.c),
- srun `%s: %s %s: Exited with exit code %d` / `%s: %s %s: %s` (hosts, "task"/"tasks", ranks, what;
  src/srun/libsrun/launch.c, _task_finish),
- OpenSSH `ssh: connect to host %s port %s: %s` and `ssh: Could not resolve hostname %s: %s`,
  what Hydra's ssh bootstrap leaves in the log when a node's proxy cannot start.
Seen verbatim on the namespace cluster (ci/services/cluster/README.md).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional

from contprobe.schedulers.slurm import expand_nodelist

NODE_DOWN = re.compile(r"Node failure on (\S+)")
LAUNCH_FAILED = [
    re.compile(r"Task launch for \S+ failed on node (\S+): ([^\n]*)"),
    re.compile(r"ssh: connect to host (\S+) port \d+: ([^\n]*)"),
    re.compile(r"ssh: Could not resolve hostname (\S+): ([^\n]*)"),
]
TASK_END = re.compile(r"^srun: error: (\S+): tasks? ([\d,\-]+): ([^\n]+)$", re.M)
# A rank's own death notice (CPython's faulthandler, on SIGABRT/SIGSEGV: UCX aborts this way): under
# Hydra's ssh bootstrap the ranks are no descendants of the launch, so nothing else shows they died.
RANK_ABORT = re.compile(r"^Fatal Python error: [^\n]+$", re.M)


@dataclass(frozen=True)
class NodeFault:
    host: str
    gotcha: str       # node-failure | node-launch-failed | image-missing-on-node
    evidence: str     # the launcher's line that names the node


def _ranks(text: str) -> List[int]:
    out: List[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            out += range(int(lo), int(hi or lo) + 1)
    return out


def task_ends(log: str) -> Dict[int, "tuple[str, str]"]:
    """rank -> (host, how it ended) from srun's per-node task lines ("n02: tasks 2-3: Terminated")."""
    out: Dict[int, "tuple[str, str]"] = {}
    for m in TASK_END.finditer(log):
        for r in _ranks(m.group(2)):
            out.setdefault(r, (m.group(1), m.group(3).strip()))
    return out


def node_faults(log: str, image_missing: bool = False) -> List[NodeFault]:
    """The nodes the launcher itself blames, in the order it named them.

    image_missing: the runtime said it could not open the image while the image exists where
    contprobe runs; the nodes whose tasks then exited before starting are missing it.
    """
    found: Dict[str, NodeFault] = {}
    for line in log.splitlines():
        m = NODE_DOWN.search(line)
        if m:
            for h in expand_nodelist(m.group(1)):
                found.setdefault(h, NodeFault(h, "node-failure", line.strip()))
            continue
        for pat in LAUNCH_FAILED:
            m = pat.search(line)
            if m:
                found.setdefault(m.group(1), NodeFault(m.group(1), "node-launch-failed", line.strip()))
                break
    if image_missing:
        for m in TASK_END.finditer(log):
            if "Exited with exit code" in m.group(3):
                found.setdefault(m.group(1), NodeFault(m.group(1), "image-missing-on-node", m.group(0).strip()))
    return list(found.values())


def ended_line(text: str, container_died: Optional["re.Pattern[str]"] = None) -> Optional[str]:
    """The first line in new launch output saying a task or node ended: a rank that never started
    shows nowhere else, and its peers would wait in MPI_Init until --timeout. container_died is the
    runtime's own wording for a container that could not start (see Runtime.died_line)."""
    for pat in (TASK_END, NODE_DOWN, *LAUNCH_FAILED, RANK_ABORT, *([container_died] if container_died else [])):
        m = pat.search(text)
        if m:
            start = text.rfind("\n", 0, m.start()) + 1
            end = text.find("\n", m.end())
            return text[start:end if end >= 0 else len(text)].strip()
    return None
