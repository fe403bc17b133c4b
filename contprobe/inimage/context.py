"""Where the probes run: host or container, rank and size under which launcher, versions.

Imported inside images: Python 3.8, standard library only.
"""
from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from contprobe.inimage import rankvars

@dataclass(frozen=True)
class LaunchInfo:
    launcher: str          # "none" when no launcher started this process
    rank: int
    size: int
    local_rank: int

    @property
    def launched(self) -> bool:
        return self.launcher != "none"


def launch_info(env: Optional[Mapping[str, str]] = None) -> LaunchInfo:
    """What the launcher told this process, from its environment alone (no MPI init)."""
    return LaunchInfo(*rankvars.identify(os.environ if env is None else env))


# How each runtime says "you are inside": (runtime backend name, variable, file). The host's runtime
# backends (contprobe/runtimes/) name the same rows; a new runtime adds one here.
INSIDE_MARKERS: Tuple[Tuple[str, str, str], ...] = (
    ("apptainer", "APPTAINER_CONTAINER", ""),
    ("singularity", "SINGULARITY_CONTAINER", ""),
    ("charliecloud", "CH_RUNNING", ""),
    ("podman", "", "/run/.containerenv"),
)


def container_info(env: Optional[Mapping[str, str]] = None) -> Tuple[str, str]:
    """(image, runtime) when inside a container, else ("host", "none")."""
    env = os.environ if env is None else env
    for runtime, var, path in INSIDE_MARKERS:
        if var and env.get(var):
            return (env[var] if runtime != "charliecloud" else env.get("CONTPROBE_IMAGE", "unknown-image")), runtime
        if path and os.path.exists(path):
            return env.get("CONTPROBE_IMAGE", "unknown-image"), runtime
    if os.path.exists("/.singularity.d"):
        return env.get("SINGULARITY_NAME", "unknown-image"), "singularity"
    return "host", "none"


def run_cmd(argv: Sequence[str], timeout: float = 60.0,
            env: Optional[Mapping[str, str]] = None) -> Tuple[int, str, str]:
    """Run argv; (returncode, stdout, stderr). A missing program is rc 127, a timeout rc 124."""
    exe = shutil.which(argv[0]) if os.sep not in argv[0] else argv[0]
    if exe is None:
        return 127, "", f"{argv[0]}: command not found"
    try:
        p = subprocess.run([exe, *argv[1:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout, env=None if env is None else dict(env),
                           universal_newlines=True)
    except subprocess.TimeoutExpired:
        return 124, "", f"{argv[0]}: timed out after {timeout:g} s"
    except OSError as exc:
        return 126, "", f"{argv[0]}: {exc}"
    return p.returncode, p.stdout, p.stderr


# index,name,uuid: a column set for which real recordings exist (tests/fixtures/nvidia-smi replays
# them). The driver and its CUDA version come from nvidia-smi's banner, which prints both.
NVSMI_QUERY = "index,name,uuid"


@dataclass(frozen=True)
class GpuRow:
    index: int
    name: str
    uuid: str


def parse_query_gpu(csv_text: str) -> List[GpuRow]:
    """Rows of `nvidia-smi --query-gpu=index,name,uuid --format=csv[,noheader]` (a header is skipped)."""
    rows = []
    for line in csv_text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        # A name never contains a comma in practice; be safe and take the uuid from the end.
        rows.append(GpuRow(int(parts[0]), ", ".join(parts[1:-1]), parts[-1]))
    return rows


def driver_cuda_version(nvsmi_text: str) -> str:
    """CUDA driver API version from nvidia-smi's banner ("CUDA Version: 12.2")."""
    import re
    m = re.search(r"CUDA Version\s*:\s*([0-9.]+)", nvsmi_text)
    return m.group(1) if m else ""


def driver_version(nvsmi_text: str) -> str:
    """NVIDIA driver version from nvidia-smi's banner ("Driver Version: 535.129.03")."""
    import re
    m = re.search(r"Driver Version\s*:\s*([0-9][0-9.]*)", nvsmi_text)
    return m.group(1) if m else ""


def gather(extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """Context recorded with every run. Cheap: no MPI init, one nvidia-smi call at most."""
    info = launch_info()
    image, runtime = container_info()
    ctx: Dict[str, str] = {
        "hostname": socket.gethostname(),
        "image": image,
        "runtime": runtime,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "launcher": info.launcher,
        "rank": str(info.rank),
        "size": str(info.size),
        "local_rank": str(info.local_rank),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"),
        "driver": "",
        "cuda": "",
        "mpi_library": "",
    }
    rc, banner, _ = run_cmd(["nvidia-smi"], 20)
    if rc == 0:
        ctx["driver"] = driver_version(banner)
        ctx["cuda"] = driver_cuda_version(banner)
    if extra:
        ctx.update(extra)
    return ctx
