"""Container runtimes, registered by name: one small module each (apptainer.py, singularity.py).

A runtime owns everything that differs between runtimes: how it is found and what version it is,
the argument list of one exec, how GPUs, binds and variables are passed, its cache and temp
variables, which image references it can run, and the marker that says "inside" (a row of
contprobe.inimage.context.INSIDE_MARKERS). Adding one is a module here, `register()` at its end,
and its tests; see DESIGN.md.
"""
from __future__ import annotations

import functools
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Tuple, Type


class RuntimeNotFound(RuntimeError):
    pass


@dataclass
class ExecSpec:
    """One exec of an image: what the operator asked for plus what the harness adds."""
    image: str
    command: List[str]
    gpus: bool = False
    binds: List[str] = field(default_factory=list)        # SRC[:DST[:ro|rw]]
    env: Dict[str, str] = field(default_factory=dict)     # passed through the environment, never argv
    cleanenv: bool = False
    launched: bool = False     # one rank of a launcher: the launcher's rank variables must reach it


@dataclass(frozen=True)
class Runtime:
    """A found runtime. Subclasses set the class attributes and may override the methods."""
    executable: str
    version: str
    # Class attributes (not dataclass fields): what a backend module sets.
    name = ""                    # registry key and --runtime choice
    executables = ()             # names on PATH, first found wins
    version_re = re.compile(r"$^")
    gpu_flag = "--nv"            # what exec_argv adds for GPUs (podman: split into its arguments)
    var_prefix = ""              # APPTAINER / SINGULARITY: <prefix>ENV_NAME, <prefix>_CACHEDIR ...
    # cachedir_var, tmpdir_var: properties below, from var_prefix; a runtime without one sets plain strings
    remote_schemes = ()          # registry references it converts itself (docker://, oras://)
    builds_recipes = True        # builds Apptainer definition files (build-check); podman, ch-run do not
    # The runtime's own line for a container that could not start or died: it starts the launch's
    # grace period (its peers would wait in MPI until --timeout). None: the runtime has no such line.
    died_line: "Optional[re.Pattern[str]]" = None

    @property
    def env_prefix(self) -> str:
        return f"{self.var_prefix}ENV_"

    @property
    def cachedir_var(self) -> str:
        return f"{self.var_prefix}_CACHEDIR"

    @property
    def tmpdir_var(self) -> str:
        return f"{self.var_prefix}_TMPDIR"

    def describe(self) -> str:
        return f"{self.name} {self.version} ({self.executable})"

    def variables_note(self) -> str:
        """What host.runtime says about the variables this runtime reads."""
        return f"variables: {self.env_prefix}NAME, {self.cachedir_var}, {self.tmpdir_var}"

    def env_hint(self, name: str) -> str:
        """How an operator passes one variable into this runtime's containers."""
        return f"{self.env_prefix}{name}"

    @classmethod
    def version_env(cls) -> Optional[Dict[str, str]]:
        """The environment `EXE --version` needs (None: this process's)."""
        return None

    @classmethod
    def version_text(cls, path: str) -> str:
        """What `EXE --version` says (asked once per backend by `probe`)."""
        return subprocess.run([path, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=30, env=cls.version_env()).stdout

    def host_checks(self) -> List[Tuple[str, Callable[[], object]]]:
        """This runtime's own host checks: (probe id, function returning a checks.Check)."""
        return []

    def exec_argv(self, spec: ExecSpec) -> Tuple[List[str], Dict[str, str]]:
        """(argv, variables to add to the runtime's own environment)."""
        argv = [self.executable, "exec"]
        if spec.gpus:
            argv.append(self.gpu_flag)
        if spec.cleanenv:
            argv.append("--cleanenv")
        for b in spec.binds:
            argv += ["-B", b]
        argv.append(spec.image)
        # Values go through the runtime's environment (<PREFIX>ENV_NAME), where `ps` cannot see them.
        return argv + list(spec.command), {f"{self.env_prefix}{k}": v for k, v in spec.env.items()}

    def build_argv(self, target: str, source: str, fakeroot: bool = False, extra: Tuple[str, ...] = ()) -> List[str]:
        if not self.builds_recipes:
            from contprobe.suite import UsageError
            raise UsageError(f"{self.name} does not build Apptainer definition files: "
                             "give --runtime apptainer or --runtime singularity")
        return [self.executable, "build", *(["--fakeroot"] if fakeroot else []), *extra, target, source]

    def build_env(self, env: Mapping[str, str], cachedir: Optional[str] = None,
                  tmpdir: Optional[str] = None) -> Dict[str, str]:
        out = dict(env)
        if cachedir:
            out[self.cachedir_var] = cachedir
        if tmpdir:
            out[self.tmpdir_var] = tmpdir
        return out

    def is_remote(self, ref: str) -> bool:
        return any(ref.startswith(f"{s}://") for s in self.remote_schemes)

    def resolve(self, ref: str, cache_dir: str, timeout: float):
        """The image as something this runtime can exec (a registry reference converted once)."""
        from contprobe import image
        return image.resolve(ref, self, cache_dir, timeout)


REGISTRY: Dict[str, Type[Runtime]] = {}


def register(cls: Type[Runtime]) -> Type[Runtime]:
    REGISTRY[cls.name] = cls
    return cls


def names() -> List[str]:
    return sorted(REGISTRY)


@functools.lru_cache(maxsize=None)
def probe(name: str) -> Optional[Runtime]:
    """The runtime backend `name` if one of its executables is on PATH and says what it is (asked once)."""
    cls = REGISTRY[name]
    for exe in cls.executables:
        path = shutil.which(exe)
        if not path:
            continue
        try:
            out = cls.version_text(path)
        except (OSError, subprocess.TimeoutExpired):
            continue
        m = cls.version_re.search(out.strip())
        if m:
            return cls(path, m.group(1))
    return None


def detect(preferred: str = "auto") -> Runtime:
    """The runtime to use: the one asked for, or the first one found in AUTO_ORDER."""
    if preferred != "auto" and preferred not in REGISTRY:
        raise ValueError(f"--runtime must be auto or one of {', '.join(names())}, not {preferred!r}")
    order = [preferred] if preferred != "auto" else [n for n in AUTO_ORDER if n in REGISTRY]
    for name in order:
        rt = probe(name)
        if rt:
            return rt
    raise RuntimeNotFound(f"no container runtime found ({' or '.join(order)} not on PATH)")


# Apptainer first (it also installs a `singularity` name); podman-hpc before the podman it wraps.
AUTO_ORDER = ("apptainer", "singularity", "podman-hpc", "podman", "charliecloud")

# The backends: importing registers them.
from contprobe.runtimes import apptainer, charliecloud, podman, singularity  # noqa: E402,F401
