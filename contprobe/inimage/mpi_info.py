"""Which MPI a process really uses: flavour, ABI soname, where the library came from.

Imported inside images: Python 3.8, standard library only.
"""
from __future__ import annotations

import os
import re
from typing import List, Optional, Tuple

# (flavour, pattern in MPI_Get_library_version, ABI soname)
FLAVOURS = (
    ("cray-mpich", re.compile(r"CRAY MPICH", re.I), "libmpi.so.12"),
    ("intel-mpi", re.compile(r"Intel\(R\) MPI", re.I), "libmpi.so.12"),
    ("mvapich", re.compile(r"MVAPICH", re.I), "libmpi.so.12"),
    ("mpich", re.compile(r"MPICH", re.I), "libmpi.so.12"),
    ("openmpi", re.compile(r"Open MPI", re.I), "libmpi.so.40"),
)
# What each launcher's PMI expects on the other side.
LAUNCHER_ABI = {"hydra": "mpich", "pals": "mpich", "slurm": "any", "openmpi": "openmpi", "none": "any"}
LIB_RE = re.compile(r"(/\S*/lib(?:mpi|mpich|mpi_cray|mpi_intel)[A-Za-z_]*\.so[.0-9]*)$")


def flavour(library_version: str) -> Tuple[str, str]:
    """(flavour, ABI soname) from MPI.Get_library_version()'s text."""
    for name, pattern, soname in FLAVOURS:
        if pattern.search(library_version):
            return name, soname
    return "unknown", ""


def abi_family(flavour_name: str) -> str:
    return "openmpi" if flavour_name == "openmpi" else ("mpich" if flavour_name != "unknown" else "unknown")


def loaded_mpi_libraries(maps_path: str = "/proc/self/maps") -> List[str]:
    """Paths of MPI libraries mapped into this process."""
    found: List[str] = []
    try:
        with open(maps_path) as fh:
            for line in fh:
                m = LIB_RE.search(line.strip())
                if m and m.group(1) not in found:
                    found.append(m.group(1))
    except OSError:
        pass
    return found


def mount_of(path: str, mountinfo: str = "/proc/self/mountinfo") -> Optional[str]:
    """Mount point holding path (longest prefix), from /proc/self/mountinfo."""
    best = None
    try:
        with open(mountinfo) as fh:
            for line in fh:
                parts = line.split()
                if len(parts) > 4:
                    mp = parts[4].replace("\\040", " ")
                    if (path == mp or path.startswith(mp.rstrip("/") + "/")) and (best is None or len(mp) > len(best)):
                        best = mp
    except OSError:
        return None
    return best


def library_origin(path: str, in_container: bool) -> str:
    """'host', 'image', or 'host (bound at /opt)' for a library path."""
    if not in_container:
        return "host"
    real = os.path.realpath(path)
    mp = mount_of(real)
    return "image" if mp in (None, "/") else f"host (bound at {mp})"
