"""A rank's journal (partial-r<rank>-<host>.jsonl): what it finished before it crashed or hung.

The plugin writes one line per probe as it starts and ends; JUnit only appears when a rank exits
cleanly, so for a lost rank the journal keeps every result that was obtained.
"""
from __future__ import annotations

import json
from typing import Dict, List

from contprobe import catalog
from contprobe.reports.junit import CaseResult, RankResult

CRASHED = "rank crashed or hung during this probe (no JUnit written)"


def probe_of(nodeid: str) -> str:
    """test_allreduce.py::test_mpi4py[8] -> allreduce.mpi4py[8] (the plugin's probe ids)."""
    module, _, name = nodeid.rpartition("::")
    module = module.rsplit("/", 1)[-1].rsplit(".py", 1)[0]
    module = module[5:] if module.startswith("test_") else module
    return f"{module}.{name[5:] if name.startswith('test_') else name}"


def read(path: str) -> RankResult:
    ctx: Dict[str, str] = {"partial": "yes"}
    cases: List[CaseResult] = []
    running: Dict[str, str] = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # the line being written when the rank died
            event = entry.get("event")
            if event == "session":
                ctx.update({k: str(v) for k, v in entry.items() if k != "event"})
            elif event == "start":
                running[entry["nodeid"]] = probe_of(entry["nodeid"])
            elif event == "done":
                running.pop(entry.get("nodeid", ""), None)
                metrics = {k[7:]: float(v) for k, v in entry.items() if k.startswith("metric.")}
                cases.append(CaseResult(probe=entry.get("probe", ""), outcome=entry.get("outcome", "error"),
                                        duration_s=float(entry.get("duration_s", 0.0)),
                                        message=entry.get("message", ""), gotcha=entry.get("gotcha", ""),
                                        fix=entry.get("fix", ""), metrics=metrics))
    for probe in running.values():
        cases.append(CaseResult(probe=probe, outcome="error", duration_s=0.0, message=CRASHED,
                                gotcha="rank-lost", fix=catalog.get("rank-lost").fix_line))
    return RankResult(path=path, context=ctx, cases=cases)
