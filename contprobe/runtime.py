"""Container runtimes: which one is installed, and the argument list of one launch.

One small description per flavour; no string is ever pasted into a shell.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

FLAVOURS = ("apptainer", "singularity-ce", "singularity")


class RuntimeNotFound(RuntimeError):
    pass


@dataclass(frozen=True)
class Runtime:
    flavour: str        # apptainer | singularity-ce (Sylabs) | singularity (pre-split 3.x)
    executable: str
    version: str

    @property
    def prefix(self) -> str:
        """Variable prefix this flavour reads: APPTAINER or SINGULARITY."""
        return "APPTAINER" if self.flavour == "apptainer" else "SINGULARITY"

    @property
    def env_prefix(self) -> str:
        return f"{self.prefix}ENV_"

    @property
    def cachedir_var(self) -> str:
        return f"{self.prefix}_CACHEDIR"

    @property
    def tmpdir_var(self) -> str:
        return f"{self.prefix}_TMPDIR"

    def describe(self) -> str:
        return f"{self.flavour} {self.version} ({self.executable})"


def parse_version(text: str) -> Optional[tuple]:
    """(flavour, version) from `apptainer --version` / `singularity --version` output."""
    text = text.strip()
    m = re.search(r"apptainer version\s+(\S+)", text, re.I)
    if m:
        return "apptainer", m.group(1)
    m = re.search(r"singularity-ce version\s+(\S+)", text, re.I)
    if m:
        return "singularity-ce", m.group(1)
    m = re.search(r"singularity version\s+(\S+)", text, re.I)
    if m:
        return "singularity", m.group(1)
    return None


@functools.lru_cache(maxsize=None)
def probe(executable: str) -> Optional[Runtime]:
    """The runtime behind a name on PATH (asked once per process: host checks and the plan share it)."""
    path = shutil.which(executable)
    if not path:
        return None
    try:
        out = subprocess.run([path, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    parsed = parse_version(out)
    return Runtime(parsed[0], path, parsed[1]) if parsed else None


def detect(preferred: str = "auto") -> Runtime:
    """The runtime to use: apptainer first (it also installs a `singularity` name), then singularity."""
    names = {"auto": ["apptainer", "singularity"], "apptainer": ["apptainer"],
             "singularity": ["singularity"]}.get(preferred)
    if names is None:
        raise ValueError(f"--runtime must be auto, apptainer or singularity, not {preferred!r}")
    for name in names:
        rt = probe(name)
        if rt:
            return rt
    raise RuntimeNotFound(f"no container runtime found ({' or '.join(names)} not on PATH)")


@dataclass
class ExecSpec:
    """One `exec` of an image: what the user asked for plus what the harness adds."""
    image: str
    command: List[str]
    nv: bool = False
    binds: List[str] = field(default_factory=list)
    env: Dict[str, str] = field(default_factory=dict)
    cleanenv: bool = False
    extra_flags: List[str] = field(default_factory=list)


def exec_argv(rt: Runtime, spec: ExecSpec) -> List[str]:
    argv = [rt.executable, "exec"]
    if spec.nv:
        argv.append("--nv")
    if spec.cleanenv:
        argv.append("--cleanenv")
    for b in spec.binds:
        argv += ["-B", b]
    for k, v in spec.env.items():
        argv += ["--env", f"{k}={v}"]
    argv += list(spec.extra_flags)
    argv.append(spec.image)
    return argv + list(spec.command)


def build_argv(rt: Runtime, target: str, source: str, fakeroot: bool = False,
               extra: Sequence[str] = ()) -> List[str]:
    argv = [rt.executable, "build"]
    if fakeroot:
        argv.append("--fakeroot")
    return argv + list(extra) + [target, source]


def build_env(rt: Runtime, cachedir: Optional[str] = None, tmpdir: Optional[str] = None) -> Dict[str, str]:
    """The environment of a build, with cache and temp on the given (node-local) paths."""
    env = dict(os.environ)
    if cachedir:
        env[rt.cachedir_var] = cachedir
    if tmpdir:
        env[rt.tmpdir_var] = tmpdir
    return env
