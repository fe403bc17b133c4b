"""Site profiles: a machine's facts as a checked schema (contprobe/sites/*.toml).

Sections: [detect] [scheduler] [launcher] [runtime] [gpus] [paths] [proxy] [notes] [perf]. Every key
is read by some code; a key nothing reads is a load error naming the file and the key, so a typo
cannot silently fall back to a default. A centre adds its machine with one TOML file, in a
directory named by CONTPROBE_SITES, without touching the package.
"""
from __future__ import annotations

import math
import os
import re
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from contprobe.inimage.catalog import _toml

SITES_DIR = Path(__file__).with_name("sites")
SITES_PATH_ENV = "CONTPROBE_SITES"


class SiteError(ValueError):
    pass


# section -> key -> (type, Site field). `list` means a list of strings; defaults are the Site's.
SCHEMA: Dict[str, Dict[str, Tuple[type, str]]] = {
    "": {"name": (str, "name"), "description": (str, "description")},
    "detect": {"hostnames": (list, "detect_hostnames"), "env": (list, "detect_env")},
    "scheduler": {"kind": (str, "scheduler"), "submit_args": (list, "submit_args")},
    "launcher": {"kind": (str, "launcher"), "depth": (int, "launcher_depth"), "cpu_bind": (str, "launcher_cpu_bind"),
                 "args": (list, "launcher_args"), "grace_s": (float, "grace_s")},
    "runtime": {"kind": (str, "runtime"), "module": (str, "runtime_module")},
    "gpus": {"per_node": (int, "gpus_per_node"), "order": (str, "gpu_order"), "mig": (str, "gpu_mig")},
    "paths": {"binds": (list, "default_binds"), "scratch": (str, "scratch"), "image_dir": (str, "image_dir")},
    "proxy": {"url": (str, "proxy")},
}
FREE_TABLES = ("notes", "perf")   # keyed by gotcha id / probe id, checked below


@dataclass(frozen=True)
class Site:
    name: str
    description: str = ""
    detect_hostnames: Tuple[str, ...] = ()
    detect_env: Tuple[str, ...] = ()
    scheduler: str = "none"
    submit_args: Tuple[str, ...] = ()
    launcher: str = "auto"
    launcher_depth: int = 0
    launcher_cpu_bind: str = ""
    launcher_args: Tuple[str, ...] = ()
    grace_s: float = 30.0
    runtime: str = "auto"
    runtime_module: str = ""
    gpus_per_node: int = 0
    gpu_order: str = "natural"            # "natural" | "reversed" (Polaris): applied in the image, bootstrap.gpu_for
    gpu_mig: str = ""                     # "" (not checked) | "enabled" | "disabled"
    default_binds: Tuple[str, ...] = ()
    scratch: str = "/tmp"
    image_dir: str = ""
    proxy: str = ""
    fix_notes: Dict[str, str] = field(default_factory=dict)
    perf: Dict[str, Dict[str, Tuple[float, float]]] = field(default_factory=dict)
    path: str = ""

    def fix_note(self, gotcha_id: str) -> str:
        return self.fix_notes.get(gotcha_id, "")

    def resolved(self) -> Dict[str, Any]:
        """The profile as `contprobe sites NAME` shows it: every setting, defaults filled in."""
        def shown(name: str) -> Any:
            value = getattr(self, name)
            return list(value) if isinstance(value, tuple) else value
        sections = {sec: {key: shown(f) for key, (_, f) in keys.items()} for sec, keys in SCHEMA.items() if sec}
        return {"name": self.name, "file": self.path, "description": self.description, **sections,
                "notes": dict(self.fix_notes),
                "perf": {p: {m: list(v) for m, v in ms.items()} for p, ms in self.perf.items()}}


def _dirs() -> List[Path]:
    return [Path(d) for d in os.environ.get(SITES_PATH_ENV, "").split(os.pathsep) if d] + [SITES_DIR]


def available() -> List[str]:
    return sorted({p.stem for d in _dirs() if d.is_dir() for p in d.glob("*.toml")})


def _path(name: str) -> Optional[Path]:
    for d in _dirs():
        if (d / f"{name}.toml").is_file():
            return d / f"{name}.toml"
    return None


def _typed(path: Path, where: str, value: Any, kind: type) -> Any:
    if kind is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SiteError(f"site profile {path}: {where} must be a list of strings")
        return tuple(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):   # bool is an int subclass; no setting is a bool
        raise SiteError(f"site profile {path}: {where} must be a {kind.__name__}, not {value!r}")
    if kind is float and (not math.isfinite(value) or value <= 0):
        raise SiteError(f"site profile {path}: {where} must be a finite number > 0")
    return value


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
                if len(v) != 2:
                    raise ValueError
                ref, tol = float(v[0]), float(v[1])
            except (TypeError, ValueError, IndexError, KeyError):
                raise SiteError(f"site profile {path}: perf.{probe!r}.{metric} must be [reference, tolerance], "
                                f"not {v!r}") from None
            if not (ref > 0 and math.isfinite(ref)) or not 0 <= tol < 1:
                raise SiteError(f"site profile {path}: perf.{probe!r}.{metric}: reference must be > 0 and "
                                f"tolerance a fraction in [0, 1), not {v!r}")
            out.setdefault(probe, {})[metric] = (ref, tol)
    return out


def parse(raw: Dict[str, Any], path: Path) -> Site:
    """The schema check: unknown sections and keys, wrong types and unknown backends are errors."""
    from contprobe import launchers, runtimes, schedulers
    from contprobe.inimage import catalog
    fields: Dict[str, Any] = {}
    for key, value in raw.items():
        if key in FREE_TABLES:
            continue
        if isinstance(value, dict):
            if key not in SCHEMA or key == "":
                raise SiteError(f"site profile {path}: unknown section [{key}] "
                                f"(known: {', '.join(s for s in SCHEMA if s)}, {', '.join(FREE_TABLES)})")
            for k, v in value.items():
                if k not in SCHEMA[key]:
                    raise SiteError(f"site profile {path}: unknown key {key}.{k} "
                                    f"(known in [{key}]: {', '.join(SCHEMA[key])})")
                kind, name = SCHEMA[key][k]
                fields[name] = _typed(path, f"{key}.{k}", v, kind)
        elif key in SCHEMA[""]:
            kind, name = SCHEMA[""][key]
            fields[name] = _typed(path, key, value, kind)
        else:
            raise SiteError(f"site profile {path}: unknown key {key!r}")
    notes = raw.get("notes", {})
    if not isinstance(notes, dict) or not all(isinstance(v, str) for v in notes.values()):
        raise SiteError(f"site profile {path}: [notes] must map gotcha ids to text")
    unknown = [k for k in notes if k not in catalog.load()]
    if unknown:
        raise SiteError(f"site profile {path}: notes.{unknown[0]}: no such gotcha in the catalog")
    fields["name"] = fields.get("name") or path.stem
    profile = Site(**fields, fix_notes=dict(notes), path=str(path))
    for sec, kind, choices in (("scheduler", profile.scheduler, schedulers.names()),
                               ("launcher", profile.launcher, ["auto", *launchers.names()]),
                               ("runtime", profile.runtime, ["auto", *runtimes.names()])):
        if kind not in choices:
            raise SiteError(f"site profile {path}: {sec}.kind {kind!r} is not one of {', '.join(choices)}")
    if profile.gpu_order not in ("natural", "reversed"):
        raise SiteError(f"site profile {path}: gpus.order must be natural or reversed")
    if profile.gpu_mig not in ("", "enabled", "disabled"):
        raise SiteError(f"site profile {path}: gpus.mig must be enabled or disabled")
    # [perf] is checked last, as it always was: a profile with several faults names the same one first
    return replace(profile, perf=_perf(raw.get("perf", {}), path))


def load(name: str) -> Site:
    path = _path(name) if re.fullmatch(r"[A-Za-z0-9_-]+", name) else None
    if path is None:
        raise SiteError(f"unknown site {name!r} (known: {', '.join(available())})")
    try:
        with open(path, "rb") as fh:
            raw = _toml.load(fh)
    except _toml.TOMLDecodeError as exc:
        raise SiteError(f"site profile {path}: {exc}") from None
    return parse(raw, path)


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


def load_or_detect(name: Optional[str]) -> Site:
    """--site NAME, or the detected profile; a bad profile is bad input (exit 2)."""
    from contprobe.suite import UsageError
    try:
        return load(name) if name else detect()
    except SiteError as exc:
        raise UsageError(str(exc)) from None
