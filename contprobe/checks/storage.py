"""host.cache_dirs, host.cwd_symlink: where builds cache and unpack, and whether that hurts."""
from __future__ import annotations

import os
import shutil
from typing import List, Mapping, Optional, Tuple

from contprobe import runtimes
from contprobe.checks import Check, HostOptions, failed, passed, skipped, warning

NETWORK_FS = {"nfs", "nfs4", "lustre", "gpfs", "cifs", "smb3", "beegfs", "fuse.sshfs", "ceph", "dvs", "wekafs"}
MIN_FREE_GB = 10.0


def fs_type(path: str, mounts: str = "/proc/self/mounts") -> str:
    """File system type of the mount holding path (longest mount-point prefix)."""
    real = os.path.realpath(path)
    best, kind = "", ""
    try:
        with open(mounts) as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 3:
                    mp = parts[1].replace("\\040", " ")
                    if (real == mp or real.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
                        best, kind = mp, parts[2]
    except OSError:
        pass
    return kind


def cache_locations(flavour_prefix: str, env: Mapping[str, str]) -> List[Tuple[str, str]]:
    """(variable, directory) pairs the runtime will use for its cache and temp space."""
    home = os.path.expanduser("~")
    cache_default = os.path.join(home, ".apptainer" if flavour_prefix == "APPTAINER" else ".singularity", "cache")
    return [(f"{flavour_prefix}_CACHEDIR", env.get(f"{flavour_prefix}_CACHEDIR") or cache_default),
            (f"{flavour_prefix}_TMPDIR", env.get(f"{flavour_prefix}_TMPDIR") or env.get("TMPDIR") or "/tmp")]


def _existing_parent(path: str) -> str:
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    return path or "/"


def check_cache_dirs(opts: HostOptions, env=None) -> Check:
    env = os.environ if env is None else env
    try:
        rt = runtimes.detect(opts.runtime)
    except runtimes.RuntimeNotFound:
        rt = None
    if rt is not None and not rt.var_prefix:   # podman, charliecloud: their own host check covers storage
        return skipped(f"{rt.name} keeps images in its own storage: see host.{rt.name}")
    prefix = rt.var_prefix if rt is not None else "APPTAINER"
    home = os.path.realpath(os.path.expanduser("~"))
    notes, risks, short = [], [], []
    for var, path in cache_locations(prefix, env):
        where = _existing_parent(path)
        free_gb = shutil.disk_usage(where).free / 1e9
        kind = fs_type(where)
        notes.append(f"{var}={path} ({kind or '?'}, {free_gb:.1f} GB free)")
        if not (opts.build or opts.pulls):
            continue
        real = os.path.realpath(where)
        under_home = real == home or real.startswith(home + "/")
        # Only a lack of space bites now; a cache in $HOME or on a network file system is advice:
        # it works until the quota fills, so it is a warning unless the space is already short.
        if free_gb < MIN_FREE_GB:
            short.append(f"{var}={path}: only {free_gb:.1f} GB free")
        elif var not in env and (under_home or kind in NETWORK_FS):
            risks.append(f"{var} unset: {path} is on {'$HOME' if under_home else kind} ({free_gb:.1f} GB free)")
        elif kind in NETWORK_FS:
            risks.append(f"{var}={path} is on a network file system ({kind})")
    if short:
        return failed("cache-in-home", "; ".join(short + risks))
    if risks:
        return warning("cache-in-home", "; ".join(risks))
    return passed("; ".join(notes))


def check_cwd(cwd: Optional[str] = None) -> Check:
    logical = cwd or os.environ.get("PWD") or os.getcwd()
    physical = os.path.realpath(logical)
    if os.path.abspath(logical) != physical:
        return failed("build-permission-denied",
                      f"working directory {logical} is reached through a symbolic link ({physical})")
    return passed(physical)
