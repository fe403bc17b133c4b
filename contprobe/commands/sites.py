"""`contprobe sites [NAME]`: the site profiles, or one of them resolved (every setting, defaults filled)."""
from __future__ import annotations

import argparse
import json

from contprobe import site as sites
from contprobe.suite import UsageError

NAME, HELP = "sites", "list the site profiles, or show one resolved"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?")


def main(ns: argparse.Namespace) -> int:
    from tabulate import tabulate
    try:
        if ns.name:
            print(json.dumps(sites.load(ns.name).resolved(), indent=2))
            return 0
        profiles = [sites.load(name) for name in sites.available()]
    except sites.SiteError as exc:
        raise UsageError(str(exc)) from None
    rows = [[s.name, s.scheduler, s.launcher, s.runtime, s.gpus_per_node, s.description] for s in profiles]
    print(tabulate(rows, headers=["site", "scheduler", "launcher", "runtime", "GPUs/node", "description"]))
    return 0
