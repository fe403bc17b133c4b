"""Merge rank files into one view: per image and probe, over ranks, hosts, launches and nights.

A pure function of the files read by `collect`: lost ranks come from --expect-ranks, launch.json
or the world size the ranks report; the night from a dated directory name or the start time.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from typing import Dict, List, NamedTuple, Optional, Tuple

from contprobe import catalog
from contprobe.reports import perf as perfmod
from contprobe.reports.collect import Case, Inputs, Problem, RankFile, rank_file_host

FAILING = ("failed", "error", "lost")
# The outcome that names a probe over many ranks: any failure wins, then lost, then passed.
SEVERITY = {"failed": 0, "error": 1, "lost": 2, "passed": 3, "skipped": 4}
NIGHT_DIR = re.compile(r"^(\d{4}-?\d{2}-?\d{2})(?:[T_.-]\w*)?$")


class RankOutcome(NamedTuple):
    rank: int
    host: str
    outcome: str
    message: str = ""
    gotcha: str = ""
    fix: str = ""
    duration_s: float = 0.0
    metrics: Optional[Dict[str, float]] = None
    evidence: str = ""
    launch: str = ""

    def as_dict(self) -> dict:
        d: dict = {"rank": self.rank, "host": self.host, "outcome": self.outcome}
        if self.outcome != "passed":
            d.update(message=self.message, gotcha=self.gotcha)
        if self.metrics:
            d["metrics"] = self.metrics
        return d


@dataclass
class Lost:
    rank: int
    host: str
    reason: str
    image: str
    night: str
    launch: str
    gotcha: str = "rank-lost"   # or what the launch's own output named (launch.json)

    def as_dict(self) -> dict:
        return {"rank": self.rank, "host": self.host, "reason": self.reason, "image": self.image,
                "night": self.night, "launch": self.launch, "gotcha": self.gotcha}


@dataclass
class Launch:
    dir: str
    image: str
    image_path: str
    night: str
    meta: dict
    expected: int
    found: List[int]
    hosts: List[str]

    @property
    def command(self) -> str:
        return str(self.meta.get("command", ""))


RankRef = Tuple[int, str, str]          # (rank, host, launch dir), shared by a rank's cases
Entry = Tuple[RankRef, Case]             # one rank's result for one probe; plain tuples for speed


def outcome_of(e: Entry) -> RankOutcome:
    (rank, host, launch), c = e
    return RankOutcome(rank, host, c[1], c[3], c[4], c[5], c[2], c[6], c[7], launch)


@dataclass
class Row:
    """One probe of one image on one night, over all its ranks."""
    image: str
    probe: str
    night: str
    entries: List[Entry] = field(default_factory=list)
    perf: List[perfmod.PerfCheck] = field(default_factory=list)
    # filled by baseline: [(night, outcome)] oldest first, excluding this night
    history: List[Tuple[str, str]] = field(default_factory=list)
    change: str = ""       # new | fixed | still-failing | flaky | ""
    since: str = ""

    @property
    def key(self) -> Tuple[str, str]:
        return self.image, self.probe

    @property
    def ranks(self) -> List[RankOutcome]:
        return [outcome_of(e) for e in self.entries]

    def not_passed(self) -> List[RankOutcome]:
        return [outcome_of(e) for e in self.entries if e[1][1] != "passed"]

    # Cached: a row is complete once merge() returns, and renderers ask many times over 10,000 ranks.
    @cached_property
    def counts(self) -> Dict[str, int]:
        return dict(Counter(c[1] for _, c in self.entries))

    @cached_property
    def outcome(self) -> str:
        if not self.entries:
            return "lost"
        return min(self.counts, key=SEVERITY.__getitem__)

    @cached_property
    def _dominant_rank(self) -> Optional[RankOutcome]:
        bad = [e for e in self.entries if e[1][1] in FAILING] or [e for e in self.entries if e[1][1] == "skipped"]
        if not bad:
            return None
        top = Counter((c[4], c[3]) for _, c in bad).most_common(1)[0][0]
        return outcome_of(next(e for e in bad if (e[1][4], e[1][3]) == top))

    @property
    def gotcha(self) -> str:
        d = self._dominant_rank
        return d.gotcha if d else ""

    @property
    def message(self) -> str:
        d = self._dominant_rank
        return d.message if d else ""

    @property
    def fix(self) -> str:
        d = self._dominant_rank
        if not d or d.outcome not in FAILING:
            return ""
        return d.fix or (catalog.get(d.gotcha).fix_line if d.gotcha else "")

    @property
    def evidence(self) -> str:
        d = self._dominant_rank
        return d.evidence if d else ""

    @cached_property
    def duration_s(self) -> float:
        return max((c[2] for _, c in self.entries), default=0.0)

    def as_dict(self) -> dict:
        d = {"probe": self.probe, "outcome": self.outcome, "duration_s": round(self.duration_s, 3),
             "message": self.message, "gotcha": self.gotcha, "fix": self.fix,
             "image": self.image, "night": self.night, "counts": self.counts}
        if self.perf:
            d["perf"] = [p.as_dict() for p in self.perf]
        if self.change:
            d["change"] = self.change
        if self.since:
            d["since"] = self.since
        d["ranks"] = [_rank_dict(e) for e in self.entries]
        return d


def _rank_dict(e: Entry) -> dict:
    (rank, host, _launch), c = e
    d: dict = {"rank": rank, "host": host, "outcome": c[1]}
    if c[1] != "passed":
        d["message"] = c[3]
        d["gotcha"] = c[4]
    if c[6]:
        d["metrics"] = c[6]
    return d


@dataclass
class Report:
    rows: List[Row]                     # the latest night of each image
    older: List[Row]                    # earlier nights found among the inputs
    launches: List[Launch]
    lost: List[Lost]
    problems: List[Problem]
    site: str = "generic"
    baseline: Optional[dict] = None     # filled by baseline.compare

    @property
    def incomplete(self) -> bool:
        return bool(self.problems)

    @property
    def nights(self) -> List[str]:
        return sorted({r.night for r in self.rows + self.older if r.night})

    @property
    def images(self) -> List[str]:
        return list(dict.fromkeys(r.image for r in self.rows))

    @property
    def hosts(self) -> List[str]:
        return sorted({h for ln in self.launches if ln.night in self._current_nights() for h in ln.hosts})

    def _current_nights(self) -> set:
        return {r.night for r in self.rows}

    @property
    def rank_count(self) -> int:
        cur = {(r.image, r.night) for r in self.rows}
        return sum(max(ln.expected, len(ln.found)) for ln in self.launches if (ln.image, ln.night) in cur)

    @property
    def verdict(self) -> str:
        return "failed" if any(r.outcome in FAILING for r in self.rows) else "passed"


# ---- grouping --------------------------------------------------------------------------------
def image_name(path: str) -> str:
    return os.path.basename(path.rstrip("/")) or path


def night_of(launch_dir: str, meta: dict, ranks: List[RankFile]) -> str:
    """A dated directory above the launch (the nightly's OUT/2025-01-02/...), else the start day."""
    d = launch_dir
    while True:
        m = NIGHT_DIR.match(os.path.basename(d))
        if m:
            return os.path.basename(d)
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    started = str(meta.get("started_utc") or "") or min(
        (r.context.get("started_utc", "") for r in ranks), default="")
    return started[:10]


def _lost_host(rank: int, meta: dict, expected: int) -> Tuple[str, str]:
    hosts = [str(h) for h in meta.get("hosts") or []]
    if hosts and expected and expected % len(hosts) == 0:
        # PALS and Hydra place ranks in blocks of ranks-per-node by default.
        return hosts[rank // (expected // len(hosts))], "; host assumed from block placement"
    return "?", ""


def merge(inputs: Inputs, expect_ranks: Optional[int] = None,
          refs: Optional[Dict[str, Dict[str, Tuple[float, float]]]] = None, site: str = "generic") -> Report:
    """The whole-machine view of what collect() read."""
    refs = refs or {}
    by_dir: Dict[str, List[RankFile]] = {}
    for rf in inputs.ranks:
        by_dir.setdefault(rf.launch or os.path.dirname(rf.path), []).append(rf)
    unreadable: Dict[str, List[str]] = {}
    for p, launch_dir in inputs.unreadable:
        unreadable.setdefault(launch_dir, []).append(p)
    dirs = sorted(set(by_dir) | set(inputs.launches) | set(unreadable))

    launches: List[Launch] = []
    lost: List[Lost] = []
    rows: Dict[Tuple[str, str, str], Row] = {}
    for d in dirs:
        ranks = sorted(by_dir.get(d, []), key=lambda r: (r.rank if r.rank is not None else -1, r.path))
        meta = inputs.launches.get(d, {})
        img_path = str(meta.get("image") or Counter(r.context.get("image", "host") for r in ranks).most_common(1)[0][0]
                       if (meta.get("image") or ranks) else "?")
        image = image_name(img_path)
        night = night_of(d, meta, ranks)
        # A rank known only from its journal died: it is lost, and what it finished is still shown.
        found = [r.rank for r in ranks if r.rank is not None and not r.journal]
        sizes = [int(r.context["size"]) for r in ranks if r.context.get("size", "").isdigit()]
        expected = expect_ranks or int(meta.get("expected_ranks") or 0) or max(sizes + [len(found)])
        hosts = list(dict.fromkeys([r.host for r in ranks] + [str(h) for h in meta.get("hosts") or []]))
        launches.append(Launch(d, image, img_path, night, meta, expected, found, hosts))

        # Lost ranks: named by launch.json, left unreadable, or simply missing.
        missing: Dict[int, Tuple[str, str]] = {}
        named: Dict[int, str] = {}
        for item in meta.get("lost") or []:
            try:
                r = int(item.get("rank"))
            except (TypeError, ValueError, AttributeError):
                continue
            missing[r] = (str(item.get("host") or "?"), str(item.get("reason") or "reported lost by the launch"))
            if item.get("gotcha") in catalog.load():
                named[r] = item["gotcha"]
        for p in unreadable.get(d, []):
            m = re.search(r"junit-r(\d+)-", os.path.basename(p))
            if m and int(m.group(1)) not in found:
                missing.setdefault(int(m.group(1)), (rank_file_host(p) or "?", f"result file unreadable: {p}"))
        for r in range(expected):
            if r not in found and r not in missing:
                host, note = _lost_host(r, meta, expected)
                missing[r] = (host, "no result file" + note)
        for r in sorted(missing):
            if r in found:
                continue  # a launch may call a rank lost that still wrote its file: the file wins
            lost.append(Lost(r, missing[r][0], missing[r][1], image, night, d, named.get(r, "rank-lost")))

        for rf in ranks:
            ref: RankRef = (rf.rank if rf.rank is not None else -1, rf.host, d)
            for c in rf.cases:
                key = (night, image, c[0])
                row = rows.get(key)
                if row is None:
                    row = rows[key] = Row(image, c[0], night)
                if c[6] and c[0] in refs:
                    c = perfmod.apply(c, refs[c[0]])
                row.entries.append((ref, c))
        # A lost rank is lost for every probe of its launch.
        launch_probes = list(dict.fromkeys(c[0] for rf in ranks for c in rf.cases))
        launch_lost = [x for x in lost if x.launch == d]
        if not launch_probes and launch_lost:
            launch_probes = ["launch.ranks"]  # no rank of this launch left a readable result
            rows.setdefault((night, image, "launch.ranks"), Row(image, "launch.ranks", night))
        kept = {(rf.rank, c[0]) for rf in ranks if rf.journal for c in rf.cases}
        for lr in launch_lost:
            ref = (lr.rank, lr.host, d)
            for probe in launch_probes:
                if (lr.rank, probe) in kept:
                    continue
                rows[(night, image, probe)].entries.append(
                    (ref, (probe, "lost", 0.0, f"rank {lr.rank} lost: {lr.reason}", lr.gotcha,
                           catalog.get(lr.gotcha).fix_line, None, "")))

    for row in rows.values():
        if row.probe in refs:
            row.perf = perfmod.summarize(row.entries, refs[row.probe])
    latest: Dict[str, str] = {}
    for (night, image, _probe) in rows:
        latest[image] = max(latest.get(image, ""), night)
    current = [r for r in rows.values() if r.night == latest[r.image]]
    older = [r for r in rows.values() if r.night != latest[r.image]]
    current.sort(key=lambda r: r.image)  # stable: probes keep their suite order within an image
    return Report(current, older, launches, lost, list(inputs.problems), site=site)
