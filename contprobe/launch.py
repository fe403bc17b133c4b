"""One launch of the probe suite: the plan that decides it, its argument list, and its execution.

Faults end fast and clean. The launch runs in a session of its own; it ends at its timeout, or a
grace period after a rank died or after the first rank finished while others did not, or when
contprobe itself gets SIGTERM/SIGINT/SIGHUP. Then everything left of it is killed: its descendants
and every session they started (each rank's container and its squashfuse_ll helper), so no process
of the launch outlives it.
"""
from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Set, Tuple

from contprobe import harness, image as images, launchers, pycache, runtimes, textsafe
from contprobe.inimage.redact import output_redactor
from contprobe.launchers import nodelog
from contprobe.suite import Expectations

POLL_S = 0.25
RANK_CMD = b"/inimage/bootstrap.py"     # what a rank's process runs, as /proc/PID/cmdline shows it


@dataclass
class Plan:
    """Everything that decides a launch; turned into an argument list by `argv`."""
    rt: runtimes.Runtime
    image: images.Image
    python: str
    binds: List[str]
    env: Dict[str, str]                 # the operator's --env values (to the runtime's environment)
    nv: bool
    cleanenv: bool
    exp: Expectations
    harness_dir: str
    results_dir: str
    ranks: int = 1
    launcher: Optional[launchers.Launcher] = None
    launch_req: Optional[launchers.LaunchRequest] = None
    gpus_per_node: int = 0
    gpu_order: str = "natural"
    grace_s: float = 30.0
    pycache_dir: str = ""               # the image's persistent bytecode cache (contprobe.pycache), if any

    @property
    def launcher_name(self) -> str:
        return self.launcher.name if self.launcher else "none"

    def argv(self, results_dir: Optional[str] = None, targets: Tuple[str, ...] = (),
             nv: Optional[bool] = None, binds: Tuple[str, ...] = (), env: Optional[Dict[str, str]] = None,
             single: bool = False) -> Tuple[List[str], Dict[str, str]]:
        """(argv, variables for the launch's environment): values never travel on the command line."""
        rdir = results_dir or self.results_dir
        # re-runs name exact probes; the operator's -k/-m could only deselect them
        exp = dataclasses.replace(self.exp, keyword=None, markexpr=None) if targets else self.exp
        # --capture=sys: what C libraries (UCX, NCCL, the MPI) write to fd 2 reaches the launch log,
        # which is the only evidence left when they abort a rank.
        use_nv = self.nv if nv is None else nv
        pytest_args = ["-q", "-rN", "--color=no", "--capture=sys", "-p", "no:cacheprovider",
                       "--results-dir", harness.RESULTS_MOUNT, "--container-nv", "yes" if use_nv else "no",
                       *exp.pytest_args()]
        spec = runtimes.ExecSpec(
            image=self.image.path,
            command=harness.bootstrap_command(self.python, pytest_args, list(targets),
                                              0 if single else self.gpus_per_node, self.gpu_order),
            gpus=use_nv,
            binds=[*self.binds, *binds, f"{self.harness_dir}:{harness.MOUNT}:ro", f"{rdir}:{harness.RESULTS_MOUNT}",
                   *([f"{self.pycache_dir}:{pycache.MOUNT}"] if self.pycache_dir else [])],
            env={**self.env, **exp.env_values(), **(env or {}),
                 **(pycache.ENV if self.pycache_dir else {})},
            cleanenv=self.cleanenv, launched=not single and self.launcher is not None)
        inner, inner_env = self.rt.exec_argv(spec)
        if single or self.launcher is None:
            return inner, inner_env
        req = dataclasses.replace(self.launch_req, env=inner_env) if self.launch_req else None
        return self.launcher.argv(req) + inner, inner_env


@dataclass
class LaunchResult:
    returncode: int
    log: str
    duration_s: float
    timed_out: bool = False
    ended_early: str = ""          # why the launch was ended before it exited by itself
    interrupted: int = 0           # the signal that stopped contprobe, if any
    killed: List[str] = field(default_factory=list)   # leftover processes killed at the end
    ranks_left: int = 0            # rank processes (seen on this host) still alive when contprobe ended it


class Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _proc_table() -> List[Tuple[int, int, int]]:
    """(pid, ppid, session) of every process, from /proc."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
            # pid (comm) state ppid pgrp session ...: comm may hold spaces and parentheses.
            fields = stat[stat.rindex(b")") + 2:].split()
            if fields[0] == b"Z":
                continue   # dead, only not reaped yet (the launcher until we wait for it): nothing to kill
            out.append((int(name), int(fields[1]), int(fields[3])))
        except (OSError, ValueError, IndexError):
            continue
    return out


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def is_rank(cmd: bytes) -> bool:
    """A rank's own Python process: `PYTHON .../inimage/bootstrap.py ...`. The launcher and the
    runtime name the same script further along their own argv (mpiexec counted as a rank once)."""
    argv = cmd.split(b"\0")
    return len(argv) > 1 and os.path.basename(argv[0]).startswith(b"python") and argv[1].endswith(RANK_CMD)


def launch_processes(root: int, sessions: Set[int]) -> List[Tuple[int, bytes]]:
    """(pid, cmdline) of every process of a launch: its descendants, and everything in a session one
    of them started. Runtimes and launchers start sessions of their own (each rank's container, its
    squashfuse_ll), which are re-parented to init once their parent dies; `sessions` remembers them
    across calls so they are still found then."""
    table = _proc_table()
    children: Dict[int, List[int]] = {}
    for pid, ppid, _ in table:
        children.setdefault(ppid, []).append(pid)
    mine, stack = set(), [root]
    while stack:
        pid = stack.pop()
        if pid not in mine:
            mine.add(pid)
            stack.extend(children.get(pid, ()))
    # A session whose members are all gone is forgotten: Linux reuses its number only then, and a
    # later session with that number (another job's daemon after a pid wrap-around) is not ours.
    sessions.intersection_update({sid for _, _, sid in table})
    sessions.update(sid for pid, _, sid in table if pid in mine)
    me = os.getpid()
    return [(pid, _cmdline(pid)) for pid, _, sid in table
            if (pid in mine or sid in sessions) and pid != me and sid != os.getsid(0)]


def kill_launch(root: int, sessions: Set[int], wait_s: float = 5.0) -> List[str]:
    """SIGTERM, then SIGKILL, everything left of a launch; names what had to be killed."""
    killed: List[str] = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        procs = launch_processes(root, sessions)
        if not procs:
            break
        for pid, cmd in procs:
            try:
                os.kill(pid, sig)
                # a name an image chose (exec -a): it reaches the terminal and the report escaped
                name = os.path.basename(cmd.split(b"\0")[0].decode(errors="replace"))
                killed.append(textsafe.one_line(name)[:64] or str(pid))
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and launch_processes(root, sessions):
            time.sleep(0.05)
    return sorted(set(killed))


def _count_files(d: str, pattern: "re.Pattern[str]") -> int:
    try:
        return sum(1 for n in os.listdir(d) if pattern.match(n))
    except OSError:
        return 0


_JUNIT = re.compile(r"junit-r\d+-.+\.xml$")
ENV_TAIL = "CONTPROBE_ENV_END"
ALL_WROTE = "every rank wrote its results but the launch did not exit"


def execute(argv: List[str], log_path: str, timeout: float, env: Optional[Mapping[str, str]] = None,
            results_dir: Optional[str] = None, expected: int = 1, grace_s: float = 30.0,
            cwd: Optional[str] = None, container_died: Optional["re.Pattern[str]"] = None) -> LaunchResult:
    """Run one launch in its own session; end it at timeout, or grace_s after a rank died or after
    one finished while others did not (a hung collective waits forever otherwise). container_died: the
    runtime's own line for a container that could not start or died (its peers would wait)."""
    t0 = time.monotonic()
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    full_env = {**os.environ, **(env or {})}
    # Hydra 4.0.2's remote proxies (ssh bootstrap) drop the environment's LAST variable when they
    # filter it by -genvlist: with the APPTAINERENV_* values last, a node's ranks silently lost
    # UCX_TLS=^cma (4-node cluster). A trailing variable nobody asks for absorbs that.
    full_env.pop(ENV_TAIL, None)
    full_env[ENV_TAIL] = "1"
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o644)
    with os.fdopen(fd, "w") as log:
        try:
            p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True, env=full_env, cwd=cwd)
        except OSError as exc:
            log.write(f"{argv[0]}: {exc}\n")
            return LaunchResult(127, f"{argv[0]}: {exc}", time.monotonic() - t0)
        got: List[int] = []

        def on_signal(signum, _frame):
            got.append(signum)
            raise Interrupted(signum)
        old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        timed_out, early, rc, ranks_left = False, "", None, 0
        sessions: Set[int] = {p.pid}
        grace_from: Optional[float] = None
        by_grace = False               # contprobe ended it; a launch that exits inside the grace did not
        peak = 0
        seen = _LogWatch(log_path)
        try:
            while rc is None:
                try:
                    rc = p.wait(timeout=POLL_S)
                    break
                except subprocess.TimeoutExpired:
                    pass
                now = time.monotonic()
                if now - t0 >= timeout:
                    timed_out = True
                    break
                procs = launch_processes(p.pid, sessions)   # also learns the sessions ranks start
                if results_dir and grace_from is None:
                    alive = sum(1 for _, c in procs if is_rank(c))
                    peak = max(peak, alive)
                    finished = _count_files(results_dir, _JUNIT)
                    if peak - alive > finished:
                        grace_from, early = now, "a rank died"
                    elif 0 < finished < expected:
                        grace_from, early = now, "a rank finished while others did not"
                    elif finished >= expected:
                        # Every result is on disk, yet the launch goes on: a hang in MPI_Finalize or
                        # the launcher's teardown (seen over TCP across nodes) must not cost --timeout.
                        grace_from, early = now, ALL_WROTE
                if grace_from is None:
                    # A rank whose node failed, or that never started (no image there, no slurmd or
                    # sshd), shows only in the launcher's output; its peers would wait in MPI_Init.
                    line = nodelog.ended_line(seen.new_lines(), container_died)
                    if line:
                        grace_from, early = now, f"the launcher reported: {line[:300]}"
                if grace_from is not None and now - grace_from >= grace_s:
                    by_grace = True
                    break
            if rc is None:
                if timed_out:
                    early = ""
                    log.write(f"\n[contprobe] launch killed after {timeout:g} s (--timeout)\n")
                else:
                    log.write(f"\n[contprobe] launch ended {grace_s:g} s after {early} (grace period)\n")
        except Interrupted as exc:
            log.write(f"\n[contprobe] launch ended: contprobe received {exc}\n")
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            log.flush()
            if rc is None:
                ranks_left = sum(1 for _, c in launch_processes(p.pid, sessions) if is_rank(c))
            killed = kill_launch(p.pid, sessions)
            try:
                rc = p.wait(timeout=10) if rc is None else rc
            except subprocess.TimeoutExpired:
                rc = -9
            if rc is not None and rc < 0:
                rc = 128 - rc
            if timed_out:
                rc = 124
    redact_log(log_path)
    text = _tail(log_path)
    return LaunchResult(rc if rc is not None else 137, text, time.monotonic() - t0, timed_out,
                        early if (by_grace and not got) else "", got[0] if got else 0, killed, ranks_left)


class _LogWatch:
    """The complete lines a launch log gained since the last call (read while the launch runs)."""

    def __init__(self, path: str) -> None:
        self.path, self.offset, self.partial = path, 0, b""

    def new_lines(self) -> str:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read(LOG_TAIL)
        except OSError:
            return ""
        self.offset += len(chunk)
        data = self.partial + chunk
        cut = data.rfind(b"\n") + 1
        self.partial = data[cut:][-4096:]
        return data[:cut].decode("utf-8", "replace")


LOG_TAIL = 1 << 20     # what of a launch's output is kept for diagnosis: its last MiB
REDACT_CHUNK = 1 << 20


def redact_log(path: str) -> None:
    """Rewrite a finished launch's log through the output redaction: what the image printed (it can
    print the host's secrets passed into it) stays on disk only masked. Chunks end at a newline, so
    only a secret split over two lines could pass; the rewrite never follows a link."""
    redact = output_redactor()
    tmp = f"{path}.redacting"
    try:
        src = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return
    with os.fdopen(src, "rb") as fin:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        with os.fdopen(fd, "wb") as fout:
            rest = b""
            while True:
                chunk = fin.read(REDACT_CHUNK)
                data = rest + chunk
                cut = len(data) if not chunk else data.rfind(b"\n") + 1
                if not chunk or cut:
                    text = data[:cut].decode("utf-8", "surrogateescape")
                    fout.write(redact(text).encode("utf-8", "surrogateescape"))
                rest = data[cut:]
                if not chunk:
                    break
    os.replace(tmp, path)


def _tail(path: str) -> str:
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - LOG_TAIL))
        return fh.read().decode("utf-8", "replace")
