"""Host-side checks: what must hold on the machine before any container starts.

Each check is a plain function returning a Check; `run_all` turns them into results that sit
beside the probes' in every report (probe ids `host.*`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, List, Mapping, Optional

from contprobe.inimage import catalog
from contprobe.model import Case


@dataclass(frozen=True)
class Check:
    outcome: str            # passed | warning | failed | skipped
    message: str = ""
    gotcha: str = ""


def passed(message: str = "") -> Check:
    return Check("passed", message)


def failed(gotcha: str, message: str) -> Check:
    return Check("failed", message, gotcha)


def warning(gotcha: str, message: str) -> Check:
    """Advice: the setup is risky but has not failed (the verdict fails on it only under --strict)."""
    return Check("warning", message, gotcha)


def skipped(message: str, gotcha: str = "") -> Check:
    return Check("skipped", message, gotcha)


@dataclass(frozen=True)
class HostOptions:
    runtime: str = "auto"           # auto | a runtime backend's name
    need_runtime: bool = False       # a missing runtime fails (run) or only skips (doctor)
    pulls: bool = False              # a registry image will be pulled / a build bootstraps
    build: bool = False              # a --fakeroot build follows
    module_hint: str = ""
    site_proxy: str = ""             # the site's proxy: pulls and builds need it set
    env: Optional[Mapping[str, str]] = None  # the environment the runtime will see (default: ours)


def run_all(opts: HostOptions) -> List[Case]:
    from contprobe import runtimes
    from contprobe.checks import network, runtime, storage, userns
    checks: List[tuple] = [
        ("host.runtime", lambda: runtime.check(opts)),
        ("host.user_namespaces", userns.check_userns),
        ("host.subuid", userns.check_subids),
        ("host.cache_dirs", lambda: storage.check_cache_dirs(opts, opts.env)),
        ("host.cwd_symlink", storage.check_cwd),
        ("host.proxy", lambda: network.check_proxy(opts, opts.env)),
    ]
    try:  # the runtime's own checks (podman: rootless setup; charliecloud: $USER and its storage)
        checks += runtimes.detect(opts.runtime).host_checks()
    except runtimes.RuntimeNotFound:
        pass
    return [_result(pid, fn) for pid, fn in checks]


def _result(probe: str, fn: Callable[[], Check]) -> Case:
    t0 = time.monotonic()
    try:
        c = fn()
    except Exception as exc:  # a check must never take the run down: report it as unknown
        c = Check("error", f"{type(exc).__name__}: {exc}", catalog.UNKNOWN)
    fix = catalog.get(c.gotcha).fix_line if c.gotcha and c.outcome != "passed" else ""
    return Case(probe=probe, outcome=c.outcome, duration_s=time.monotonic() - t0,
                message=c.message, gotcha=c.gotcha if c.outcome != "passed" else "", fix=fix)
