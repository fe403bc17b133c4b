"""The 4-node Slurm cluster of namespace nodes (ci/services/cluster/cluster.sh) as a pytest fixture.

`slurm_cluster` (session scope) brings the cluster up once, hands the tests a `Cluster`, and tears it
down at the end of the session, then checks that none of its processes is left. It skips only when
this host cannot have the cluster at all (not root, no network/UTS/mount namespaces); a cluster that
fails to come up is an error, never a skip. Jobs run as the unprivileged user, as on a real machine.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from tests.conftest import ROOT, clean_env
from tests.containers import as_user, home, user_dir, user_python

SCRIPT = ROOT / "ci" / "services" / "cluster" / "cluster.sh"
SITES = ROOT / "tests" / "sites"           # the nscluster site profile
NODES = ("n01", "n02", "n03", "n04")
DAEMONS = ("slurmctld", "slurmd", "slurmstepd", "munged")


def why_not() -> Optional[str]:
    """Why this host cannot run the namespace cluster at all, or None."""
    if os.geteuid() != 0:
        return "the namespace cluster needs root (network namespaces, slurmd, a bridge)"
    for tool in ("ip", "unshare", "nsenter", "runuser"):
        if not shutil.which(tool):
            return f"{tool} not found: the namespace cluster cannot be built here"
    probe = subprocess.run(["unshare", "--net", "--uts", "--mount", "true"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=30)
    if probe.returncode != 0:
        return f"this host cannot create network/UTS/mount namespaces: {probe.stdout.strip()[:200]}"
    return None


def ctl(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """cluster.sh with these arguments; its log goes to the test's output on failure."""
    return subprocess.run(["bash", str(SCRIPT), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout)


def leftovers(state_dir: str) -> List[str]:
    """Processes of the cluster still alive: its daemons, and anything whose environment names its
    SLURM_CONF (srun, salloc and what they started). Zombies are dead already (PID 1 reaps slowly)."""
    conf = f"SLURM_CONF={state_dir}/etc/slurm.conf".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                stat = fh.read()
            if stat[stat.rindex(b")") + 2:].split()[0] == b"Z":
                continue
            with open(f"/proc/{pid}/comm") as fh:
                comm = fh.read().strip()
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read()
            env = b""
            try:
                with open(f"/proc/{pid}/environ", "rb") as fh:
                    env = fh.read()
            except OSError:
                pass
        except (OSError, ValueError, IndexError):
            continue
        if comm in DAEMONS or conf in env.split(b"\0") or state_dir.encode() + b"/ssh/sshd_config" in cmd:
            found.append(f"{pid} {comm}")
    return found


@dataclass
class Cluster:
    dir: str
    env_vars: Dict[str, str]
    up_s: float
    down_s: List[float] = field(default_factory=list)

    def env(self, **extra: str) -> Dict[str, str]:
        """A clean environment for jobs: this cluster's SLURM_CONF, its ssh first on PATH."""
        env = clean_env(**self.env_vars)
        env["PATH"] = f"{self.env_vars['CONTPROBE_CLUSTER_BIN']}:{env.get('PATH', '/usr/bin:/bin')}"
        env["PYTHONPATH"] = str(ROOT)
        env["CONTPROBE_SITES"] = str(SITES)
        env.pop("HOME", None)
        env.update(extra)
        return env

    def contprobe_argv(self, *args: str) -> List[str]:
        return ["env", f"HOME={home()}", user_python(), "-m", "contprobe", *args]

    def as_user(self, argv: List[str], env: Optional[Dict[str, str]] = None, timeout: float = 900,
                cwd: Optional[str] = None) -> subprocess.CompletedProcess:
        return subprocess.run(as_user(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env or self.env(), cwd=cwd or user_dir("contprobe-cluster-cwd-"),
                              timeout=timeout)

    def salloc_argv(self, *cmd: str, nodes: int = 4, per_node: int = 2) -> List[str]:
        """`salloc` for an allocation of `nodes` x `per_node` tasks, running cmd on this host."""
        return ["salloc", f"--nodes={nodes}", f"--ntasks-per-node={per_node}", "--time=15", *cmd]

    def state(self, node: str) -> str:
        out = subprocess.run(["sinfo", "-h", "-n", node, "-o", "%t"], stdout=subprocess.PIPE, text=True,
                             env=self.env(), timeout=30).stdout.strip()
        return out

    def heal(self, node: str) -> None:
        """Bring a node back after a fault test (a 'reboot'), and wait until Slurm has it idle."""
        res = ctl("revive-node", node)
        assert res.returncode == 0, res.stdout
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.state(node) != "idle":
            time.sleep(1)
        assert self.state(node) == "idle", f"{node} did not come back: {self.state(node)}"


@pytest.fixture(scope="session")
def slurm_cluster():
    reason = why_not()
    if reason:
        pytest.skip(reason)
    t0 = time.monotonic()
    res = ctl("up")
    assert res.returncode == 0, f"cluster.sh up failed:\n{res.stdout[-4000:]}"
    d = os.environ.get("CONTPROBE_CLUSTER_DIR", "/var/tmp/contprobe-cluster")
    env_vars = dict(line.split("=", 1) for line in Path(d, "env").read_text().splitlines() if "=" in line)
    cluster = Cluster(d, env_vars, time.monotonic() - t0)
    yield cluster
    t0 = time.monotonic()
    res = ctl("down")
    cluster.down_s.append(time.monotonic() - t0)
    print(f"\n[cluster] up {cluster.up_s:.1f} s, down {cluster.down_s[-1]:.1f} s")
    assert res.returncode == 0, f"cluster.sh down failed:\n{res.stdout[-4000:]}"
    left = leftovers(d)
    for _ in range(50):            # PID 1 reaps killed processes slowly: give it a moment
        if not left:
            break
        time.sleep(0.2)
        left = leftovers(d)
    assert not left, f"processes left after cluster.sh down: {left}"
    assert not any(Path("/run/netns", n).exists() for n in NODES), "a node's network namespace is left"
