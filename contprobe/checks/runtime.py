"""host.runtime: a container runtime is installed; its flavour and version."""
from __future__ import annotations

from contprobe import runtimes
from contprobe.checks import Check, HostOptions, failed, passed, skipped


def check(opts: HostOptions) -> Check:
    try:
        found = runtimes.detect(opts.runtime)
    except runtimes.RuntimeNotFound as exc:
        hint = f"; {opts.module_hint}" if opts.module_hint else ""
        return failed("runtime-not-found", f"{exc}{hint}") if opts.need_runtime \
            else skipped(f"{exc}{hint}", "runtime-not-found")
    return passed(f"{found.describe()}; {found.variables_note()}")
