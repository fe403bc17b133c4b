"""Results over ranks: read each rank's file (or journal), name lost ranks, one row per probe."""
from __future__ import annotations

import os
from typing import Dict, List, Tuple

from contprobe import catalog
from contprobe.reports import junit, partial
from contprobe.reports.junit import CaseResult

# What a launch's own output can tell about ranks that never reported.
LAUNCH_GOTCHAS = ["ucx-shm-proc-link", "ucx-cma-eperm", "mpi-abi-openmpi", "mpi4py-wheel-libmpi", "pals-openmpi-flags",
                  "gtl-not-linked", "image-unreadable", "ld-preload-leak", "nv-flag-missing",
                  "user-namespaces-disabled", "ld-library-path-replaced"]


def collect(results_dir: str, expected: int) -> Tuple[List[junit.RankResult], List[dict], List[str]]:
    """Rank files in a results dir: (read ranks, lost ranks, unreadable-file messages)."""
    ranks: List[junit.RankResult] = []
    problems: List[str] = []
    for name in sorted(os.listdir(results_dir)) if os.path.isdir(results_dir) else []:
        if name.startswith("junit-r") and name.endswith(".xml"):
            try:
                ranks.append(junit.read(os.path.join(results_dir, name)))
            except junit.JUnitError as exc:
                problems.append(str(exc))
    seen = {r.rank for r in ranks}
    lost: List[dict] = []
    journals = {}
    for name in sorted(os.listdir(results_dir)) if os.path.isdir(results_dir) else []:
        if name.startswith("partial-r") and name.endswith(".jsonl"):
            pr = partial.read(os.path.join(results_dir, name))
            journals.setdefault(pr.rank, pr)
    for r in range(expected):
        if r in seen:
            continue
        pr = journals.get(r)
        if pr is not None:  # it crashed or hung: keep what it finished, name it lost
            ranks.append(pr)
            crashed = [c.probe for c in pr.cases if c.message == partial.CRASHED]
            lost.append({"rank": r, "host": pr.host, "reason": f"died during {crashed[0]}" if crashed
                         else "ended before writing its JUnit", "kept_results": len(pr.cases)})
        else:
            lost.append({"rank": r, "host": "?", "reason": "no result file (never started?)"})
    return ranks, lost, problems


def aggregate(ranks: List[junit.RankResult], lost: List[dict], reason: str,
              launch_log: str = "") -> List[CaseResult]:
    """One row per probe over all ranks: agreement collapses, disagreement names the ranks."""
    by_probe: Dict[str, List[Tuple[int, str, CaseResult]]] = {}
    for rr in ranks:
        for c in rr.cases:
            by_probe.setdefault(c.probe, []).append((rr.rank, rr.host, c))
    out: List[CaseResult] = []
    n = len(ranks)
    for probe, rows in by_probe.items():
        worst = min(rows, key=lambda t: ("error", "failed", "passed", "skipped").index(t[2].outcome)
                    if t[2].outcome in ("error", "failed", "passed", "skipped") else 0)
        c = worst[2]
        outcomes = {t[2].outcome for t in rows}
        message = c.message
        if n > 1:
            if len(outcomes) == 1:
                message = f"{len(rows)}/{n} ranks {c.outcome}" + (f": {c.message}" if c.message else "")
            else:
                bad = [f"{t[0]}@{t[1]}" for t in rows if t[2].outcome == c.outcome]
                message = f"{c.outcome} on ranks {', '.join(bad)} ({len(bad)}/{n})" + (f": {c.message}" if c.message else "")
        out.append(CaseResult(probe=probe, outcome=c.outcome, duration_s=max(t[2].duration_s for t in rows),
                              message=message, gotcha=c.gotcha, fix=c.fix, metrics=c.metrics, evidence=c.evidence))
    # A lost rank is rank-lost unless the launch's output names a more precise cause.
    gotcha = catalog.match(launch_log, LAUNCH_GOTCHAS) if launch_log else catalog.UNKNOWN
    gotcha = "rank-lost" if gotcha == catalog.UNKNOWN else gotcha
    fix = catalog.get(gotcha).fix_line
    for c in out:
        if c.message.endswith(partial.CRASHED) or partial.CRASHED in c.message:
            c.gotcha, c.fix = gotcha, fix
    for item in lost:
        out.append(CaseResult(probe=f"launch.rank[{item['rank']}]", outcome="lost", duration_s=0.0,
                              message=f"rank {item['rank']} lost: {item['reason']}; {reason}",
                              gotcha=gotcha, fix=fix))
    return out


PLACEMENT_KEYS = ("rank", "hostname", "local_rank", "cuda_visible_devices", "gpu_uuids", "cpu_affinity")


def placement_map(ranks: List[junit.RankResult]) -> List[dict]:
    """rank -> host -> local rank -> CUDA_VISIBLE_DEVICES -> GPU UUIDs -> CPU affinity, from each rank's context."""
    rows = [{k: r.context.get(k, "") for k in PLACEMENT_KEYS} for r in ranks]
    return sorted(rows, key=lambda row: int(row["rank"]) if str(row["rank"]).isdigit() else 0)


def placement_table(rows: List[dict]) -> str:
    from tabulate import tabulate
    return "placement:\n" + tabulate([[row[k] for k in PLACEMENT_KEYS] for row in rows],
                                      headers=["rank", "host", "local", "CUDA_VISIBLE_DEVICES", "GPU UUIDs", "CPUs"])


def tail(text: str, n: int = 3) -> str:
    lines = [l for l in text.strip().splitlines() if l.strip()]
    return " | ".join(lines[-n:]) if lines else "(no output)"


def merged_junit(ranks: List[junit.RankResult], out: str) -> str:
    """All ranks' suites in one JUnit file (what GitLab and Jenkins read)."""
    import junitparser
    xml = junitparser.JUnitXml("contprobe")
    for r in ranks:
        for suite in junitparser.JUnitXml.fromfile(r.path):
            suite.name = f"{suite.name}.r{r.rank}@{r.host}"
            xml.add_testsuite(suite)
    path = os.path.join(out, "merged-junit.xml")
    xml.write(path)
    return path
