"""Watch the processes of one `contprobe run` from outside, independently of contprobe's own tracking.

A process belongs to the run when it descends from the command the test started, carries the test's
tag in its environment, or sits in a session one of those started (each rank's container and its
squashfuse_ll start sessions of their own and are re-parented to init when their parent dies; the
tag finds them even then). Reads /proc as root, so it sees the unprivileged user's processes.
Used to check that no process of a launch survives it, when a rank died, and what was on argv.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set, Tuple

Key = Tuple[int, int]     # (pid, start time in clock ticks): a pid reused later is another process


def _stat(pid: int) -> Optional[Tuple[str, int, int, int]]:
    """(state, ppid, session, start time) of a process, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    f = raw[raw.rindex(b")") + 2:].split()
    return f[0].decode(), int(f[1]), int(f[3]), int(f[19])


def _read(pid: int, what: str) -> bytes:
    try:
        with open(f"/proc/{pid}/{what}", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def alive(key: Key) -> bool:
    st = _stat(key[0])
    return st is not None and st[3] == key[1] and st[0] != "Z"


@dataclass
class LaunchWatch:
    root: int                       # pid of the command the test started
    tag: bytes                      # NAME=VALUE put in that command's environment
    interval: float = 0.05
    seen: Dict[Key, bytes] = field(default_factory=dict)          # every process of the run -> last cmdline
    ranks: List[Tuple[float, int]] = field(default_factory=list)  # (time, rank processes alive)
    argvs: Set[bytes] = field(default_factory=set)                # every command line seen
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: Optional[threading.Thread] = None

    def start(self) -> "LaunchWatch":
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def _loop(self) -> None:
        mine_sid = os.getsid(0)
        sessions: Set[int] = set()
        checked: Dict[Key, bool] = {}
        while not self._stop.is_set():
            table = {}
            for name in os.listdir("/proc"):
                if name.isdigit():
                    st = _stat(int(name))
                    if st is not None and st[0] != "Z":
                        table[int(name)] = st
            children: Dict[int, List[int]] = {}
            for pid, (_, ppid, _, _) in table.items():
                children.setdefault(ppid, []).append(pid)
            ours, stack = set(), [self.root]
            while stack:
                pid = stack.pop()
                if pid not in ours:
                    ours.add(pid)
                    stack.extend(children.get(pid, ()))
            for pid, st in table.items():
                key = (pid, st[3])
                if pid in ours or key in self.seen:
                    continue
                if key not in checked:   # an environment is read once per process
                    checked[key] = self.tag in _read(pid, "environ")
                if checked[key]:
                    ours.add(pid)
            sessions.update(table[p][2] for p in ours if p in table and table[p][2] != mine_sid)
            ours.update(p for p, st in table.items() if st[2] in sessions)
            n_ranks = 0
            for pid in ours:
                if pid not in table:
                    continue
                key = (pid, table[pid][3])
                # Read every time: a process execs (the runtime's parent becomes the rank's python).
                cmd = _read(pid, "cmdline") or self.seen.get(key, b"")
                self.seen[key] = cmd
                self.argvs.add(cmd)
                argv0 = cmd.split(b"\0")[0]
                if b"/inimage/bootstrap.py" in cmd and b"python" in argv0:
                    n_ranks += 1
            self.ranks.append((time.monotonic(), n_ranks))
            time.sleep(self.interval)

    def leftovers(self) -> List[str]:
        """Processes of the run still alive, as 'pid cmdline'."""
        return [str(pid) + " " + cmd.replace(b"\0", b" ").decode(errors="replace")[:200]
                for (pid, t), cmd in self.seen.items() if pid != self.root and alive((pid, t))]

    def names(self) -> Set[str]:
        return {os.path.basename(cmd.split(b"\0")[0].decode(errors="replace")) for cmd in self.argvs}

    def first_rank_death(self) -> Optional[float]:
        """When the number of rank processes first fell below its peak so far (a rank died or ended)."""
        peak = 0
        for t, n in self.ranks:
            if n < peak:
                return t
            peak = max(peak, n)
        return None


def wait_until_gone(watch: LaunchWatch, timeout: float = 3.0) -> List[str]:
    """Leftovers after a short settling time: a SIGKILLed process can take a moment to leave /proc."""
    deadline = time.monotonic() + timeout
    left = watch.leftovers()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = watch.leftovers()
    return left
