"""The results model: a case, a rank, a launch record, a merged report. Bottom of the import graph.

Every command that shows results (doctor, run, validate, build-check, report, nightly) reads a
results directory into these types through one path: `reports.collect` -> `reports.merge` ->
`reports.render`. Nothing here imports the rest of contprobe except the in-image catalog reader.

Cases and rank references are NamedTuples: named fields for the reader, tuple speed and pickling for the
100,000-rank report.
"""
from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field, fields
from functools import cached_property
from itertools import compress, repeat
from operator import attrgetter, ne
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

OUTCOMES = ("passed", "failed", "error", "skipped", "lost", "warning")
FAILING = ("failed", "error", "lost")
# The outcome that names a probe over many ranks: any failure wins, then lost, then passed.
SEVERITY = {"failed": 0, "error": 1, "lost": 2, "warning": 3, "passed": 4, "skipped": 5}


class Case(NamedTuple):
    """One probe's result on one rank (or one host-side check)."""
    probe: str
    outcome: str
    duration_s: float = 0.0
    message: str = ""
    gotcha: str = ""
    fix: str = ""
    metrics: Optional[Dict[str, float]] = None
    evidence: str = ""

    def as_dict(self) -> dict:
        d = {"probe": self.probe, "outcome": self.outcome, "duration_s": round(self.duration_s, 3),
             "message": self.message, "gotcha": self.gotcha, "fix": self.fix}
        if self.metrics:
            d["metrics"] = dict(self.metrics)
        if self.evidence:
            d["evidence"] = self.evidence
        return d


class RankRef(NamedTuple):
    """Who reported a case: rank -1 is the host side of a launch."""
    rank: int
    host: str
    launch: str


@dataclass
class Rank:
    """What one rank left: its JUnit file, or the journal of a rank that died before writing it.

    A JUnit file's cases come with their durations apart (`durations`, in the same order) and
    duration 0 in the case itself: a passed probe is then the same Case object on every rank a
    reader process saw, which is what keeps 3,000,000 results of a 100,000-rank report small.
    """
    path: str
    context: Dict[str, str]
    base: List[Case]
    digest: str
    launch: str = ""        # the launch directory (where launch.json is)
    journal: bool = False   # read from the journal of a rank that died before writing its JUnit
    durations: Optional[List[float]] = None

    @property
    def cases(self) -> List[Case]:
        """The cases with their own durations."""
        if self.durations is None:
            return self.base
        return [c._replace(duration_s=d) for c, d in zip(self.base, self.durations)]

    @property
    def rank(self) -> Optional[int]:
        try:
            return int(self.context["rank"])
        except (KeyError, ValueError):
            return None

    @property
    def host(self) -> str:
        return self.context.get("hostname") or "?"


@dataclass
class Problem:
    """An input that could not be used; the report is then incomplete (exit 3)."""
    path: str
    message: str


@dataclass
class LostRank:
    rank: int
    host: str
    reason: str
    gotcha: str = "rank-lost"


@dataclass
class Rerun:
    """A one-change re-run: what changed, which probes, what it found, and its exact command."""
    probes: List[str]
    change: str
    finding: str
    outcome: str = ""
    command: str = ""
    exit_code: int = 0

    def as_dict(self) -> dict:
        return dict(vars(self))


class RecordError(ValueError):
    pass


def _str(v: Any) -> str:
    return v if isinstance(v, str) else ""


def _list(v: Any) -> list:
    return v if isinstance(v, list) else []


def _strs(v: Any) -> List[str]:
    return [s for s in _list(v) if isinstance(s, str)]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _num(v: Any) -> float:
    return float(v) if _finite(v) else 0.0


@dataclass
class LaunchRecord:
    """launch.json: what the host did and saw. Written only by host code, so it is trusted for
    attribution (image, night, command); a record an image planted is refused by `collect`."""
    mode: str = "run"
    image: str = "host"
    image_kind: str = ""
    image_digest: str = ""
    site: str = ""
    runtime: str = ""
    launcher: str = "none"
    command: str = ""
    argv: List[str] = field(default_factory=list)
    expected_ranks: int = 1
    hosts: List[str] = field(default_factory=list)
    host_cases: List[Case] = field(default_factory=list)
    lost: List[LostRank] = field(default_factory=list)
    reruns: List[Rerun] = field(default_factory=list)
    exit_code: int = 0
    timed_out: bool = False
    started_utc: str = ""
    duration_s: float = 0.0
    night: str = ""
    owner: int = -1          # uid that wrote the record (checked against the file's owner)

    def to_json(self) -> dict:
        # Every field in its order, but the owner (it is the file's); the lists of records as dicts.
        doc = {"format": "contprobe-launch/1", **vars(self)}
        del doc["owner"]
        doc.update(host_cases=[c.as_dict() for c in self.host_cases], lost=[vars(x) for x in self.lost],
                   reruns=[r.as_dict() for r in self.reruns], duration_s=round(self.duration_s, 3))
        return doc

    @classmethod
    def from_json(cls, doc: Any, max_ranks: int = 1_000_000) -> "LaunchRecord":
        """Schema-checked: wrong types are dropped or refused, never trusted into a crash."""
        if not isinstance(doc, dict):
            raise RecordError("not a launch record (a JSON object)")
        expected = doc.get("expected_ranks", 1)
        if not _is_int(expected) or not 0 <= expected <= max_ranks:
            raise RecordError(f"expected_ranks must be a whole number in 0..{max_ranks}")
        # The text fields (those with a text default): a string, else that default ("run", "host", "none" or "").
        texts = {f.name: _str(doc.get(f.name)) or f.default for f in fields(cls) if isinstance(f.default, str)}
        lost = [LostRank(x["rank"], _str(x.get("host")) or "?", _str(x.get("reason")) or "reported lost by the launch",
                         _str(x.get("gotcha")) or "rank-lost")
                for x in _list(doc.get("lost")) if isinstance(x, dict) and _is_int(x.get("rank"))]
        reruns = [Rerun(_strs(x["probes"]), _str(x.get("change")), _str(x.get("finding")), _str(x.get("outcome")),
                        _str(x.get("command")), int(_num(x.get("exit_code"))))
                  for x in _list(doc.get("reruns")) if isinstance(x, dict) and isinstance(x.get("probes"), list)]
        return cls(**texts, argv=_strs(doc.get("argv")), expected_ranks=expected, hosts=_strs(doc.get("hosts")),
                   host_cases=[c for c in map(case_from_dict, _list(doc.get("host_cases"))) if c is not None],
                   lost=lost, reruns=reruns, exit_code=int(_num(doc.get("exit_code"))),
                   timed_out=doc.get("timed_out") is True, duration_s=_num(doc.get("duration_s")))


def case_from_dict(item: Any) -> Optional[Case]:
    if not isinstance(item, dict) or not isinstance(item.get("probe"), str):
        return None
    outcome = item.get("outcome")
    if outcome not in OUTCOMES:
        return None
    metrics = item.get("metrics")
    metrics = {k: float(v) for k, v in metrics.items() if isinstance(k, str) and _finite(v)} \
        if isinstance(metrics, dict) else None
    return Case(item["probe"], outcome, _num(item.get("duration_s")), _str(item.get("message")),
                _str(item.get("gotcha")), _str(item.get("fix")), metrics or None, _str(item.get("evidence")))


# ---- the merged view -----------------------------------------------------------------------------
@dataclass
class PerfCheck:
    metric: str
    reference: float
    tolerance: float
    worst: float                # lowest value over ranks (higher is better for every reference)
    median: float
    ranks: int                  # ranks that reported the metric
    below: List[Tuple[int, str, float]] = field(default_factory=list)   # (rank, host, value)

    @property
    def ratio(self) -> float:
        return self.worst / self.reference if self.reference else 0.0

    @property
    def ok(self) -> bool:
        return not self.below

    def as_dict(self) -> dict:
        return {"metric": self.metric, "value": self.worst, "median": self.median,
                "reference": self.reference, "tolerance": self.tolerance, "ratio": round(self.ratio, 3),
                "ok": self.ok, "ranks": self.ranks,
                "below": [{"rank": r, "host": h, "value": v} for r, h, v in self.below]}


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
        return dict(vars(self))


@dataclass
class Launch:
    dir: str
    image: str
    image_path: str
    night: str
    record: LaunchRecord
    expected: int
    found: List[int]
    hosts: List[str]
    context: Dict[str, str] = field(default_factory=dict)   # rank 0's (or the first rank's) context
    placement: List[Dict[str, str]] = field(default_factory=list)

    @property
    def command(self) -> str:
        return self.record.command


@dataclass
class Row:
    """One probe of one image on one night, over all its ranks.

    Stored as columns: who (`refs`), what (`cases`, one shared Case per identical result) and how
    long (`durations`), so that 100,000 ranks cost three list slots each, not an object each.
    """
    image: str
    probe: str
    night: str
    refs: List[RankRef] = field(default_factory=list)
    cases: List[Case] = field(default_factory=list)
    durations: List[float] = field(default_factory=list)
    perf: List[PerfCheck] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)         # re-run findings
    # filled by baseline: [(night, outcome)] oldest first, excluding this night
    history: List[Tuple[str, str]] = field(default_factory=list)
    change: str = ""       # new | fixed | still-failing | flaky | ""
    since: str = ""

    def add(self, ref: RankRef, case: Case) -> None:
        self.refs.append(ref)
        self.cases.append(case)
        self.durations.append(case.duration_s)

    @property
    def key(self) -> Tuple[str, str]:
        return self.image, self.probe

    @property
    def size(self) -> int:
        return len(self.cases)

    # Cached: a row is complete once merge() returns, and renderers ask many times over 100,000 ranks.
    @cached_property
    def host_side(self) -> bool:
        return bool(self.refs) and not any(r.rank >= 0 for r in self.refs)

    @cached_property
    def counts(self) -> Dict[str, int]:
        return dict(Counter(map(attrgetter("outcome"), self.cases)))

    @cached_property
    def unusual(self) -> List[Tuple[RankRef, Case]]:
        """(who, what) for every entry that did not pass: what where(), the node view and the gotchas read."""
        passed = map(attrgetter("outcome"), self.cases)
        return list(compress(zip(self.refs, self.cases), map(ne, passed, repeat("passed"))))   # all in C

    @cached_property
    def outcome(self) -> str:
        if not self.cases:
            return "lost"
        return min(self.counts, key=lambda o: SEVERITY.get(o, 0))

    @cached_property
    def dominant(self) -> Optional[Case]:
        """The case that speaks for the row: the most common failure (or skip) text."""
        bad = [c for _, c in self.unusual if c.outcome in FAILING] or \
              [c for _, c in self.unusual if c.outcome in ("warning", "skipped")]
        if not bad:
            return self.cases[0] if self.cases else None
        top = Counter((c.gotcha, c.message) for c in bad).most_common(1)[0][0]
        return next(c for c in bad if (c.gotcha, c.message) == top)

    @property
    def gotcha(self) -> str:
        d = self.dominant
        return d.gotcha if d and d.outcome != "passed" else ""

    @property
    def text(self) -> str:
        """The speaking case's own message, with re-run findings: what a table cell shows."""
        d = self.dominant
        text = d.message if d else ""
        return " ".join([text, *self.notes]) if self.notes else text

    @property
    def message(self) -> str:
        """The text, prefixed with how many ranks agree when there are several (the JSON's message)."""
        text, n = self.text, len(self.cases)
        if n <= 1 or self.host_side:
            return text
        agree = f"{n}/{n} ranks {self.outcome}" if len(self.counts) == 1 else \
            f"{self.outcome} on {self.counts[self.outcome]}/{n} ranks"
        return agree + (f": {text}" if text else "")

    @property
    def fix(self) -> str:
        d = self.dominant
        return d.fix if d and d.outcome in FAILING + ("warning",) else ""

    @property
    def evidence(self) -> str:
        d = self.dominant
        return d.evidence if d and d.outcome != "passed" else ""

    @cached_property
    def duration_s(self) -> float:
        return max(self.durations, default=0.0)

    def as_dict(self, ranks: bool = True) -> dict:
        d = {"probe": self.probe, "outcome": self.outcome, "duration_s": round(self.duration_s, 3),
             "message": self.message, "gotcha": self.gotcha, "fix": self.fix,
             "image": self.image, "night": self.night, "counts": self.counts}
        metrics = next((c.metrics for c in self.cases if c.metrics), None)
        if metrics:
            d["metrics"] = metrics
        if self.perf:
            d["perf"] = [p.as_dict() for p in self.perf]
        if self.change:
            d["change"] = self.change
        if self.since:
            d["since"] = self.since
        if ranks:
            d["ranks"] = [rank_dict(r, c) for r, c in zip(self.refs, self.cases)]
        return d


def rank_dict(ref: RankRef, c: Case) -> dict:
    """One rank's line under a result in the JSON report."""
    d: dict = {"rank": ref.rank, "host": ref.host, "outcome": c.outcome}
    if c.outcome != "passed":
        d["message"] = c.message
        d["gotcha"] = c.gotcha
    if c.metrics:
        d["metrics"] = c.metrics
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

    @cached_property
    def hosts(self) -> set:
        """Every host that reported a result of the current rows (a '?' when one is unknown)."""
        return set().union(*(map(attrgetter("host"), r.refs) for r in self.rows))

    @property
    def current_launches(self) -> List[Launch]:
        cur = {(r.image, r.night) for r in self.rows}
        return [ln for ln in self.launches if (ln.image, ln.night) in cur]

    @property
    def rank_count(self) -> int:
        return sum(max(ln.expected, len(ln.found)) for ln in self.current_launches)

    @property
    def verdict(self) -> str:
        return "failed" if any(r.outcome in FAILING for r in self.rows) else "passed"

    def exit_code(self, strict: bool = False) -> int:
        """0 passed, 1 failed (or a warning under --strict), 3 incomplete."""
        if self.incomplete:
            return 3
        if self.verdict == "failed" or (strict and any(r.outcome == "warning" for r in self.rows)):
            return 1
        return 0


def image_name(path: str) -> str:
    return os.path.basename(path.rstrip("/")) or path
