"""`contprobe gotchas [ID]`: the catalog, or one entry in full."""
from __future__ import annotations

import argparse

from contprobe import textsafe
from contprobe.inimage import catalog
from contprobe.suite import UsageError

NAME, HELP = "gotchas", "list the gotcha catalog, or show one entry"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", nargs="?")


def main(ns: argparse.Namespace) -> int:
    from tabulate import tabulate
    cat = catalog.load()
    if ns.id:
        if ns.id not in cat:
            raise UsageError(f"no gotcha {textsafe.one_line(ns.id)!r} (see `contprobe gotchas` for the list)")
        g = cat[ns.id]
        # What makes the engine name it: alone, only with context, never with a veto (DESIGN.md).
        rules = [(label, "; ".join(getattr(g, field, ()))) for label, field in
                 (("broad (only with context)", "broad"), ("context", "context"), ("unless", "unless"),
                  ("explains", "explains"))]
        print(f"{g.id}: {g.title}\n\nsymptoms: " + ("; ".join(g.symptoms) or "(detected by probes)")
              + "".join(f"\n{label}: {text}" for label, text in rules if text)
              + f"\nseen in: {', '.join(g.seen_in) or '(probes)'}" + (f"\nconfirmed by re-run: {g.rerun}" if g.rerun else "")
              + f"\n\ncause: {g.cause}\n\nfix:\n  " + g.fix.strip().replace("\n", "\n  ")
              + f"\n\nsource: {g.source}" + (f"\nrefs: {', '.join(g.refs)}" if g.refs else ""))
        return 0
    print(tabulate([[g.id, g.title, g.fix_line[:80]] for g in cat.values()], headers=["id", "title", "fix"]))
    return 0
