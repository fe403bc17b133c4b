"""`contprobe sites [NAME]`: the site profiles, or one of them resolved (every setting, defaults filled);
`--shell` prints the job environment the profile asks for, for batch scripts to `eval`."""
from __future__ import annotations

import argparse
import getpass
import json
import os
import shlex
from typing import List

from contprobe import runtimes, site as sites
from contprobe.suite import UsageError

NAME, HELP = "sites", "list the site profiles, or show one resolved"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?")
    p.add_argument("--shell", action="store_true",
                   help="print the site's job set-up as shell lines (runtime module, proxy, runtime cache "
                        "and tmp on scratch); a variable already set is kept")


def shell_lines(s: sites.Site) -> List[str]:
    """The job environment of a site, as POSIX shell: the one place batch scripts take it from, so
    that they cannot disagree with the profile (nightly.pbs once loaded another module version)."""
    out = []
    if s.runtime_module:   # the profile is the operator's, trusted: its module line is shell
        out.append(f"if command -v module >/dev/null 2>&1; then {s.runtime_module}; fi")
    for var in PROXY_VARS if s.proxy else ():
        out.append(f'[ -n "${{{var}:-}}" ] || export {var}={shlex.quote(s.proxy)}')
    rt_class = runtimes.REGISTRY.get(s.runtime)
    # Apptainer's family only: its <PREFIX>_CACHEDIR/_TMPDIR are directories (podman's cache variable
    # names a storage.conf file). Build and cache on the node's scratch, not in the home quota.
    if rt_class is not None and rt_class.var_prefix and s.scratch:
        rt, mine = rt_class("", ""), os.path.join(s.scratch, getpass.getuser())
        for var, leaf in ((rt.tmpdir_var, "tmp"), (rt.cachedir_var, "cache")):
            path = shlex.quote(os.path.join(mine, f"{s.runtime}-{leaf}"))
            out.append(f'[ -n "${{{var}:-}}" ] || export {var}={path}')
            out.append(f'mkdir -p "${var}" 2>/dev/null || true')
    return out


def main(ns: argparse.Namespace) -> int:
    from tabulate import tabulate
    try:
        if ns.name:
            s = sites.load(ns.name)
            print("\n".join(shell_lines(s)) if ns.shell else json.dumps(s.resolved(), indent=2))
            return 0
        if ns.shell:
            raise UsageError("--shell needs a site NAME")
        profiles = [sites.load(name) for name in sites.available()]
    except sites.SiteError as exc:
        raise UsageError(str(exc)) from None
    rows = [[s.name, s.scheduler, s.launcher, s.runtime, s.gpus_per_node, s.description] for s in profiles]
    print(tabulate(rows, headers=["site", "scheduler", "launcher", "runtime", "GPUs/node", "description"]))
    return 0
