#!/usr/bin/env python3
"""Lines of code on each side of the image boundary, at git revisions: the figure issue 8 asks for.

    python3 ci/bench/loc.py [REV ...] [--files] [--by-branch]      (default: a7a7e73 HEAD)

Counts non-blank lines that are not comments in contprobe/**/*.py, vendored code excluded. "in-image"
is contprobe/inimage/ (what is staged into containers); before that subpackage existed (a7a7e73) it
is the modules that moved there: the probes, bootstrap, catalog, context, diagnose, expect (now
options), mpi_info, plugin and redact. Everything else is host code.

--by-branch splits the last revision's host lines by the commit that last wrote them (git blame):
the base (a7a7e73 and before), a branch merged for issues 9-12 (the merge commit names it), or
main itself (the redesign of issue 8 and the lead's fixes). A line that a later commit on main
rewrote counts for main, so the issue-8 share is an upper bound.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from typing import Dict, List, Tuple

MOVED_TO_INIMAGE = {"bootstrap.py", "catalog.py", "context.py", "diagnose.py", "expect.py", "mpi_info.py",
                    "plugin.py", "redact.py"}


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", ROOT, *args], check=True, capture_output=True, text=True).stdout


def side(path: str) -> str:
    parts = path.split("/")
    if "inimage" in parts or "probes" in parts or (len(parts) == 2 and parts[1] in MOVED_TO_INIMAGE):
        return "in-image"
    return "host"


BASE = "a7a7e73"
# The branches merged into main after the redesign, by the issue they were written for.
BRANCH_ISSUE = {"hostile": "issue 9", "diagnose": "issue 10", "gpu": "issue 10", "cluster": "issue 11",
                "scale": "issue 11", "registry": "issue 12", "runtimes": "issue 12"}


def commit_origins(rev: str) -> Dict[str, str]:
    """Commit -> 'issue N' for every commit that reached main through a named branch merge."""
    origin: Dict[str, str] = {}
    for line in git("log", "--merges", "--format=%H %P|%s", f"{BASE}..{rev}").splitlines():
        shas, subject = line.split("|", 1)
        merge, first, second = shas.split()[:3]
        m = re.match(r"Merge (\w+):", subject)
        if m and m.group(1) in BRANCH_ISSUE:
            for sha in git("rev-list", second, f"^{first}").split():
                origin[sha] = BRANCH_ISSUE[m.group(1)]
    return origin


def by_branch(rev: str) -> Counter:
    base = set(git("rev-list", BASE).split())
    origin = commit_origins(rev)
    out: Counter = Counter()
    for path in git("ls-tree", "-r", "--name-only", rev, "contprobe").split():
        if not path.endswith(".py") or "_vendor" in path.split("/") or side(path) != "host":
            continue
        sha = ""
        for line in git("blame", "--line-porcelain", rev, "--", path).splitlines():
            if re.match(r"[0-9a-f]{40} ", line):
                sha = line.split()[0]
            elif line.startswith("\t"):
                code = line[1:].strip()
                if code and not code.startswith("#"):
                    out["base" if sha in base else origin.get(sha, "issue 8 / main")] += 1
    return out


def count(rev: str) -> Tuple[Counter, List[Tuple[int, str]]]:
    totals: Counter = Counter()
    files = []
    for path in git("ls-tree", "-r", "--name-only", rev, "contprobe").split():
        if not path.endswith(".py") or "_vendor" in path.split("/"):
            continue
        text = git("show", f"{rev}:{path}")
        n = sum(1 for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
        totals[side(path)] += n
        if side(path) == "host":
            files.append((n, path))
    return totals, sorted(files, reverse=True)


def main(argv: List[str]) -> int:
    revs = [a for a in argv if not a.startswith("--")] or ["a7a7e73", "HEAD"]
    rows: Dict[str, Counter] = {}
    for rev in revs:
        rows[rev], files = count(rev)
        if "--files" in argv:
            print(f"# host files at {rev}")
            for n, path in files:
                print(f"{n:6d}  {path}")
    print(f"{'revision':<12} {'host':>6} {'in-image':>9}")
    for rev, c in rows.items():
        print(f"{rev:<12} {c['host']:>6} {c['in-image']:>9}")
    if "--by-branch" in argv:
        print(f"\nhost lines at {revs[-1]} by the commit that last wrote them")
        for origin, n in sorted(by_branch(revs[-1]).items()):
            print(f"{origin:<16} {n:>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
