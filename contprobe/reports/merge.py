"""Merge: what collect() read, as one view per image and probe over ranks, hosts, launches and nights.

A pure function of the files. Attribution (image, night, expected ranks, the host-side cases, lost
ranks and their causes, re-run findings) comes from the host-written launch record; without one
(plain pytest output) it falls back to what the ranks say, bounded by what the evidence supports.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from operator import attrgetter
from itertools import groupby
from typing import Dict, List, Optional, Tuple

from contprobe.inimage import catalog
from contprobe.model import (Case, Launch, LaunchRecord, Lost, Rank, RankRef, Report, Row, image_name)
from contprobe.reports import perf as perfmod
from contprobe.reports.collect import CRASHED, Inputs, Problem, rank_file_host

NIGHT_DIR = re.compile(r"^(\d{4}-?\d{2}-?\d{2})(?:[T_.-]\w*)?$")
PLACEMENT_KEYS = ("rank", "hostname", "local_rank", "cuda_visible_devices", "gpu_uuids", "cpu_affinity")
# Without a launch record, a claimed world size counts only up to this multiple of the ranks seen:
# one hostile rank saying size=99999999999 must not make the report list a billion lost ranks.
CLAIM_FACTOR, CLAIM_FLOOR = 16, 64
_PROBE = attrgetter("probe")
# Context keys that describe one rank, not the launch.
RANK_KEYS = ("local_rank", "command", "cuda_visible_devices", "gpu_uuids", "cpu_affinity", "partial")


def dated_dir(d: str) -> str:
    """The name of d or of its nearest ancestor named like a night (the nightly's OUT/2025-01-02/...), or ''."""
    while not NIGHT_DIR.match(os.path.basename(d)):
        if os.path.dirname(d) == d:
            return ""
        d = os.path.dirname(d)
    return os.path.basename(d)


def night_of(launch_dir: str, rec: Optional[LaunchRecord], ranks: List[Rank]) -> str:
    """The record's night, a dated directory above the launch, else the start day."""
    if rec is not None:
        return rec.night or dated_dir(launch_dir) or rec.started_utc[:10]
    return dated_dir(launch_dir) or min((r.context.get("started_utc", "") for r in ranks), default="")[:10]


def _lost_host(rank: int, hosts: List[str], expected: int) -> Tuple[str, str]:
    if hosts and expected and expected % len(hosts) == 0:
        # PALS, Hydra and srun place ranks in blocks of ranks-per-node by default.
        return hosts[rank // (expected // len(hosts))], "; host assumed from block placement"
    return "?", ""


def _expected(rec: Optional[LaunchRecord], expect_ranks: Optional[int], ranks: List[Rank], found: List[int],
              problems: List[Problem], d: str) -> int:
    if expect_ranks:
        return expect_ranks
    if rec is not None:
        return rec.expected_ranks
    evidence = max([len(found)] + [r + 1 for r in found])
    sizes = [int(r.context["size"]) for r in ranks if r.context.get("size", "").isdigit()]
    claim = max(sizes, default=0)
    cap = max(CLAIM_FLOOR, CLAIM_FACTOR * evidence)
    if claim > cap:
        problems.append(Problem(d, f"ranks claim a world size of {claim} but only {len(found)} reported: "
                                   f"counting {cap} at most"))
        claim = cap
    return max(evidence, claim)


def placement_of(ranks: List[Rank]) -> List[Dict[str, str]]:
    """rank -> host -> local rank -> CUDA_VISIBLE_DEVICES -> GPU UUIDs -> CPU affinity, from each rank's context."""
    rows = [{k: r.context.get(k, "") for k in PLACEMENT_KEYS} for r in ranks if not r.journal]
    return sorted(rows, key=lambda row: int(row["rank"]) if str(row["rank"]).isdigit() else 0)


def _probes_of(rank: Rank) -> Tuple[str, ...]:
    return tuple(map(_PROBE, rank.base))


def _add_run(run: List[Rank], probes: Tuple[str, ...], d: str, rows: List[Row], cause: Dict[int, str],
             refs: Dict[str, Dict[str, Tuple[float, float]]]) -> None:
    """Every rank of a run into the rows of its probes, column by column (zip(*) transposes in C)."""
    who = [RankRef(rf.rank if rf.rank is not None else -1, rf.host, d) for rf in run]
    columns = zip(*[rf.base for rf in run])
    times = zip(*[rf.durations if rf.durations is not None else [c.duration_s for c in rf.base] for rf in run])
    starts = []
    for row, probe, cases, durations in zip(rows, probes, columns, times):
        if probe in refs:
            cases = [perfmod.apply(c, refs[probe]) if c.metrics else c for c in cases]
        starts.append(len(row.cases))
        row.refs += who
        row.cases += cases
        row.durations += durations
    for i, rf in enumerate(run):
        if rf.rank in cause:
            # The launch log named why this rank died: that beats the generic rank-lost.
            for row, start in zip(rows, starts):
                c = row.cases[start + i]
                if c.message == CRASHED:
                    row.cases[start + i] = c._replace(gotcha=cause[rf.rank], fix=catalog.get(cause[rf.rank]).fix_line)


def merge(inputs: Inputs, expect_ranks: Optional[int] = None,
          refs: Optional[Dict[str, Dict[str, Tuple[float, float]]]] = None, site: str = "generic") -> Report:
    """The whole-machine view of what collect() read."""
    refs = refs or {}
    problems = list(inputs.problems)
    by_dir: Dict[str, List[Rank]] = {}
    for rf in inputs.ranks:
        by_dir.setdefault(rf.launch or os.path.dirname(rf.path), []).append(rf)
    unreadable: Dict[str, List[str]] = {}
    for p, launch_dir in inputs.unreadable:
        unreadable.setdefault(launch_dir, []).append(p)
    dirs = sorted(set(by_dir) | set(inputs.launches) | set(unreadable))

    launches: List[Launch] = []
    lost: List[Lost] = []
    rows: Dict[Tuple[str, str, str], Row] = {}

    def row_for(night: str, image: str, probe: str) -> Row:
        key = (night, image, probe)
        if key not in rows:
            rows[key] = Row(image, probe, night)
        return rows[key]

    for d in dirs:
        ranks = sorted(by_dir.get(d, []), key=lambda r: (r.rank if r.rank is not None else -1, r.path))
        rec = inputs.launches.get(d)
        if rec is not None:
            img_path = rec.image
        else:
            img_path = Counter(r.context.get("image", "host") for r in ranks).most_common(1)[0][0] if ranks else "?"
        image = image_name(img_path)
        night = night_of(d, rec, ranks)
        # A rank known only from its journal died: it is lost, and what it finished is still shown.
        found = [r.rank for r in ranks if r.rank is not None and not r.journal]
        found_set = set(found)
        journals = {x.rank: x for x in reversed(ranks) if x.journal}
        expected = _expected(rec, expect_ranks, ranks, found, problems, d)
        hosts = list(dict.fromkeys([r.host for r in ranks if not r.journal] + (rec.hosts if rec else [])))
        first = next((r for r in ranks if not r.journal), ranks[0] if ranks else None)
        context = {k: v for k, v in (first.context if first else {}).items() if k not in RANK_KEYS}
        launches.append(Launch(d, image, img_path, night, rec or LaunchRecord(image=img_path), expected, found,
                               hosts, context, placement_of(ranks)))

        # Lost ranks: named by the launch record, left unreadable, or simply missing.
        missing: Dict[int, Tuple[str, str]] = {}
        named: Dict[int, str] = {}
        for item in rec.lost if rec else []:
            missing[item.rank] = (item.host, item.reason)
            named[item.rank] = item.gotcha if item.gotcha in catalog.load() else "rank-lost"
        for p in unreadable.get(d, []):
            m = re.search(r"junit-r(\d+)-", os.path.basename(p))
            if m and int(m.group(1)) not in found_set:
                missing.setdefault(int(m.group(1)), (rank_file_host(p) or "?", f"result file unreadable: {p}"))
        for r in range(expected):
            if r not in found_set and r not in missing:
                journal = journals.get(r)
                host, note = (journal.host, "") if journal else _lost_host(r, hosts, expected)
                missing[r] = (host, ("ended before writing its JUnit" if journal else "no result file") + note)
        launch_lost = [Lost(r, missing[r][0], missing[r][1], image, night, d, named.get(r, "rank-lost"))
                       for r in sorted(missing) if r not in found_set]
        lost += launch_lost
        cause = {x.rank: x.gotcha for x in launch_lost}

        host_name = (rec.hosts[0] if rec and rec.hosts else "") or (hosts[0] if hosts else "?")
        for c in rec.host_cases if rec else []:
            row_for(night, image, c.probe).add(RankRef(-1, host_name, d), c)
        launch_probes: Dict[str, None] = {}
        # Runs of consecutive ranks with the same probes in the same order (almost always all of a launch's).
        for probes, run in groupby(ranks, key=_probes_of):
            launch_probes.update(dict.fromkeys(probes))
            _add_run(list(run), probes, d, [row_for(night, image, p) for p in probes], cause, refs)
        # A lost rank is lost for every probe of its launch.
        if not launch_probes and launch_lost:
            launch_probes = {"launch.ranks": None}  # no rank of this launch left a readable result
            row_for(night, image, "launch.ranks")
        kept = {(rf.rank, c.probe) for rf in ranks if rf.journal for c in rf.cases}
        for lr in launch_lost:
            ref = RankRef(lr.rank, lr.host, d)
            fix = catalog.get(lr.gotcha).fix_line
            for probe in launch_probes:
                if (lr.rank, probe) not in kept:
                    rows[(night, image, probe)].add(
                        ref, Case(probe, "lost", 0.0, f"rank {lr.rank} lost: {lr.reason}", lr.gotcha, fix))
        for rr in rec.reruns if rec else []:
            for probe in rr.probes:
                row = rows.get((night, image, probe))
                if row is not None and row.outcome in ("failed", "error"):
                    row.notes.append(f"[re-run with {rr.change}: {rr.finding}]")

    for row in rows.values():
        if row.probe in refs:
            row.perf = perfmod.summarize(row, refs[row.probe])
    latest: Dict[str, str] = {}
    for (night, image, _probe) in rows:
        latest[image] = max(latest.get(image, ""), night)
    current = [r for r in rows.values() if r.night == latest[r.image]]
    older = [r for r in rows.values() if r.night != latest[r.image]]
    current.sort(key=lambda r: r.image)  # stable: probes keep their suite order within an image
    return Report(current, older, launches, lost, problems, site=site)
