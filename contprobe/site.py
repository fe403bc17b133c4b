"""Site profiles: a machine's facts (GPU order, binds, launcher, modules, references) as data."""
from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

from contprobe.catalog import _toml

SITES_DIR = Path(__file__).with_name("sites")
# Extra profile directories (colon-separated), searched before the built-in ones: a centre adds its
# machine with one TOML file, without touching the package.
SITES_PATH_ENV = "CONTPROBE_SITES"


class SiteError(ValueError):
    pass


@dataclass(frozen=True)
class Site:
    name: str
    description: str = ""
    detect_hostnames: Tuple[str, ...] = ()
    detect_env: Tuple[str, ...] = ()
    gpus_per_node: int = 0
    gpu_order: str = "natural"            # "natural" | "reversed"
    scheduler: str = "none"
    launcher: str = "auto"
    launcher_args: Tuple[str, ...] = ()
    runtime_module: str = ""
    default_binds: Tuple[str, ...] = ()
    image_dir: str = ""
    scratch: str = "/tmp"
    proxy: str = ""
    fakeroot_request: str = ""
    pbs_select: str = "select={nodes}"
    pbs_filesystems: str = ""
    fix_notes: Dict[str, str] = field(default_factory=dict)
    perf: Dict[str, Dict[str, Tuple[float, float]]] = field(default_factory=dict)

    def gpu_for_local_rank(self, local_rank: int, gpus: int) -> int:
        """GPU index a local rank should use (Polaris numbers GPUs against CPU affinity)."""
        gpus = gpus or self.gpus_per_node or 1
        r = local_rank % gpus
        return gpus - 1 - r if self.gpu_order == "reversed" else r

    def fix_note(self, gotcha_id: str) -> str:
        return self.fix_notes.get(gotcha_id, "")


def _dirs() -> List[Path]:
    extra = [Path(d) for d in os.environ.get(SITES_PATH_ENV, "").split(os.pathsep) if d]
    return extra + [SITES_DIR]


def available() -> List[str]:
    return sorted({p.stem for d in _dirs() if d.is_dir() for p in d.glob("*.toml")})


def _path(name: str) -> Optional[Path]:
    for d in _dirs():
        if (d / f"{name}.toml").is_file():
            return d / f"{name}.toml"
    return None


def _perf(raw: object, path: Path) -> Dict[str, Dict[str, Tuple[float, float]]]:
    """[perf."probe id"] metric = [reference, tolerance]: checked here so a typo fails loudly."""
    out: Dict[str, Dict[str, Tuple[float, float]]] = {}
    if not isinstance(raw, dict):
        raise SiteError(f"site profile {path}: [perf] must be a table of probe ids")
    for probe, metrics in raw.items():
        if not isinstance(metrics, dict):
            raise SiteError(f"site profile {path}: perf.{probe!r} must be a table of metric = [reference, tolerance]")
        for metric, v in metrics.items():
            try:
                ref, tol = float(v[0]), float(v[1])
                if len(v) != 2:
                    raise ValueError
            except (TypeError, ValueError, IndexError, KeyError):
                raise SiteError(f"site profile {path}: perf.{probe!r}.{metric} must be [reference, tolerance], "
                                f"not {v!r}") from None
            if ref <= 0 or not 0 <= tol < 1:
                raise SiteError(f"site profile {path}: perf.{probe!r}.{metric}: reference must be > 0 and "
                                f"tolerance a fraction in [0, 1), not {v!r}")
            out.setdefault(probe, {})[metric] = (ref, tol)
    return out


def load(name: str) -> Site:
    path = _path(name) if re.fullmatch(r"[A-Za-z0-9_-]+", name) else None
    if path is None:
        raise SiteError(f"unknown site {name!r} (known: {', '.join(available())})")
    try:
        with open(path, "rb") as fh:
            raw = _toml.load(fh)
    except _toml.TOMLDecodeError as exc:
        raise SiteError(f"site profile {path}: {exc}") from None
    perf = _perf(raw.pop("perf", {}), path)
    tuples = {k: tuple(v) for k, v in raw.items() if isinstance(v, list)}
    try:
        return Site(**{**raw, **tuples, "perf": perf})
    except TypeError as exc:
        raise SiteError(f"site profile {path}: {exc}") from None


def detect(env: Optional[Mapping[str, str]] = None, hostname: Optional[str] = None) -> Site:
    """The first profile whose hostname pattern or variable matches; else 'generic'."""
    env = os.environ if env is None else env
    hostname = hostname or socket.getfqdn()
    for name in available():
        if name == "generic":
            continue
        s = load(name)
        if any(re.search(p, hostname) for p in s.detect_hostnames):
            return s
        for item in s.detect_env:
            var, _, value = item.partition("=")
            if var in env and (not value or value in env[var]):
                return s
    return load("generic")
