"""A real OCI registry for the tests: `ci/services/registry/registry.sh up` once per session (TLS with
a private CA, base:1 and base-sif:1 pushed, a squid that refuses CONNECT, two servers that never
answer), `down` at the end, and a check that none of its daemons is left.

Own state directory and ports (env: CONTPROBE_TEST_REGISTRY_DIR, CONTPROBE_TEST_REGISTRY_PORT), so a
registry someone started by hand on the defaults is neither reused nor stopped. Blobs and the CA stay
in the state directory between sessions: the next `up` pushes nothing (about 0.2 s).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from typing import Dict, Iterator, List

import pytest

from tests.conftest import ROOT
from tests.containers import IMAGES

SCRIPT = ROOT / "ci" / "services" / "registry" / "registry.sh"
STATE = os.environ.get("CONTPROBE_TEST_REGISTRY_DIR", "/var/tmp/contprobe-registry-tests")
PORT = int(os.environ.get("CONTPROBE_TEST_REGISTRY_PORT", "5453"))
# registry.sh's ports around PORT: down registry = PORT+2 (nothing listens), stalls PORT+1, PORT+3
PORTS = {"CONTPROBE_REGISTRY_PORT": PORT, "CONTPROBE_STALL_PORT": PORT + 1,
         "CONTPROBE_STALL_TLS_PORT": PORT + 3, "CONTPROBE_PROXY_PORT": PORT + 37}
DAEMONS = ("registry", "squid", "stall", "stall-tls")
PACKAGES = {"docker-registry": "docker-registry", "skopeo": "skopeo", "squid": "squid"}


@dataclass(frozen=True)
class Registry:
    env: Dict[str, str]          # what `registry.sh env` prints

    def __getitem__(self, key: str) -> str:
        return self.env[key]

    @property
    def host(self) -> str:
        """The registry as `localhost:PORT` (the certificate names it; Go skips proxies for it)."""
        return f"localhost:{PORT}"

    @property
    def alias(self) -> str:
        """The same registry by the machine's name: the only way a proxy is asked (Go bypasses loopback)."""
        return self.env["CONTPROBE_REGISTRY_ALIAS"]

    def skopeo_raw(self, ref: str) -> bytes:
        """The manifest exactly as the registry serves it (its sha256 is the registry's digest)."""
        repo = ref.split("://", 1)[1].replace(self.host, self.env["REGISTRY"], 1)
        argv = ["skopeo", "inspect", "--raw", "--cert-dir", self.env["CONTPROBE_REGISTRY_CERT_DIR"], f"docker://{repo}"]
        return subprocess.run(argv, check=True, stdout=subprocess.PIPE, timeout=60).stdout


def script_env() -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTPROBE_REGISTRY")}
    env.update({k: str(v) for k, v in PORTS.items()}, CONTPROBE_REGISTRY_DIR=STATE,
               CONTPROBE_IMAGES=str(IMAGES))
    return env


def script(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], env=script_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout)


def daemon_pids() -> List[int]:
    """Pids the script recorded (it removes the files when it stops them)."""
    pids = []
    for name in DAEMONS:
        try:
            with open(os.path.join(STATE, f"{name}.pid")) as fh:
                pids.append(int(fh.read().strip()))
        except (OSError, ValueError):
            continue
    return pids


def running(pid: int) -> bool:
    """The process exists and has not exited (a zombie waiting for init to reap it has)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def skip_reason() -> str:
    if os.geteuid() != 0:
        return "the registry fixture runs registry.sh as root"
    missing = [pkg for exe, pkg in PACKAGES.items() if not shutil.which(exe)]
    if missing:
        return f"{' '.join(missing)} not installed (bash ci/provision/registry-packages.sh)"
    if not shutil.which("apptainer"):
        return "apptainer not installed (bash ci/provision/apptainer.sh)"
    if not (IMAGES / "rootfs").is_dir() or not (IMAGES / "base.sif").is_file():
        return f"{IMAGES}/rootfs and base.sif not built (bash ci/provision/test-images.sh)"
    return ""


@pytest.fixture(scope="session")
def registry() -> Iterator[Registry]:
    why = skip_reason()
    if why:
        pytest.skip(why)
    up = script("up")
    if up.returncode != 0 and "exited during start" in up.stderr:
        # Seen only inside the whole suite (never alone): a daemon ended right after it started. One
        # clean restart; a second failure fails the fixture with both outputs.
        first = up.stderr
        script("down")
        up = script("up")
        up.stderr = first + "\n--- after one restart ---\n" + up.stderr
    retried = [line for line in up.stderr.splitlines() if "ended right after it started" in line]
    if retried:   # the unexplained early end (registry.sh serve): visible in the summary, not hidden
        warnings.warn("registry.sh restarted a daemon: " + "; ".join(retried))
    started = daemon_pids()
    try:
        assert up.returncode == 0, f"registry.sh up failed:\n{up.stderr[-3000:]}"
        assert len(started) == len(DAEMONS) and all(map(running, started)), started
        env = script("env")
        assert env.returncode == 0, env.stderr
        values = dict(line.split("=", 1) for line in env.stdout.splitlines() if "=" in line)
        assert values["CONTPROBE_REGISTRY_BASE_DIGEST"].startswith("sha256:"), values
        yield Registry(values)
    finally:
        down = script("down")
        left = [pid for pid in started if running(pid)]
        assert down.returncode == 0 and not left, f"registry.sh down left {left}:\n{down.stderr[-2000:]}"
