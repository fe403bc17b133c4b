"""Find and read per-rank JUnit files and launch.json files, fast, naming every unreadable one.

`contprobe report` may face 10,000 rank files on a 2-core login node. junitparser's object model
costs ~2 ms a file, so the bulk reader walks the same pytest JUnit with ElementTree's C parser
(what junitparser itself parses with) and reads files in worker processes; it yields the same
records as `contprobe.reports.junit.read` (tests hold the two to each other on real files).
"""
from __future__ import annotations

import gc
import hashlib
import json
import os
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

from contprobe import catalog
from contprobe.suite import UsageError

MERGED_NAME = "contprobe-report"      # <testsuites name=...> of our own merged output: never an input
# `contprobe run` also writes all ranks' suites into one file next to ranks/: reading it too would
# count every rank twice. Named explicitly it is still read.
SKIPPED_NAMES = ("merged-junit.xml",)
RANK_FILE = re.compile(r"junit-r(\d+)-(.+)\.xml$")
# A rank's journal (contprobe.plugin): read only for a rank whose JUnit never appeared.
JOURNAL_FILE = re.compile(r"partial-r(\d+)-(.+)\.jsonl$")
EVIDENCE_MAX = 4000                   # characters of a failure's text kept for the report

# One testcase as read from a file:
# (probe, outcome, duration_s, message, gotcha, fix, metrics or None, evidence)
Case = Tuple[str, str, float, str, str, str, Optional[Dict[str, float]], str]


@dataclass
class RankFile:
    path: str
    context: Dict[str, str]
    cases: List[Case]
    digest: str
    launch: str = ""      # the launch directory: where launch.json is (`contprobe run` puts ranks in ranks/)
    journal: bool = False  # read from the journal of a rank that died before writing its JUnit

    @property
    def rank(self) -> Optional[int]:
        try:
            return int(self.context["rank"])
        except (KeyError, ValueError):
            m = RANK_FILE.search(os.path.basename(self.path))
            return int(m.group(1)) if m else None

    @property
    def host(self) -> str:
        return self.context.get("hostname") or rank_file_host(self.path) or "?"


@dataclass
class Problem:
    """An input that could not be used; the report is then incomplete (exit 3)."""
    path: str
    message: str


@dataclass
class Inputs:
    ranks: List[RankFile] = field(default_factory=list)
    launches: Dict[str, dict] = field(default_factory=dict)   # launch dir -> launch.json content
    journals: List[str] = field(default_factory=list)          # partial-r*.jsonl files found
    problems: List[Problem] = field(default_factory=list)
    unreadable: List[Tuple[str, str]] = field(default_factory=list)   # (rank file, launch dir) not readable

    def launch_dir(self, rank_dir: str) -> str:
        """`contprobe run` writes OUT/launch.json and OUT/ranks/junit-r*.xml; plain pytest runs DIR/*.xml."""
        if rank_dir in self.launches:
            return rank_dir
        parent = os.path.dirname(rank_dir)
        return parent if parent in self.launches else rank_dir


def rank_file_host(path: str) -> str:
    m = RANK_FILE.search(os.path.basename(path))
    return m.group(2) if m else ""


# ---- discovery -------------------------------------------------------------------------------
def discover(paths: Iterable[str]) -> Tuple[List[Tuple[str, bool]], List[str], List[Problem], List[str]]:
    """(xml files with 'named explicitly', launch.json files, problems, rank journals) under paths, sorted.

    A path that does not exist is bad usage; a directory without any JUnit file is a problem
    (a launch that wrote nothing must not look like a clean night).
    """
    files: Dict[str, bool] = {}
    launches: Dict[str, None] = {}
    journals: Dict[str, None] = {}
    problems: List[Problem] = []
    for p in paths:
        if not os.path.exists(p):
            raise UsageError(f"{p}: no such file or directory")
        if os.path.isfile(p):
            real = os.path.realpath(p)
            if os.path.basename(p) == "launch.json":
                launches[real] = None
            else:
                files[real] = True
                for d in (os.path.dirname(real), os.path.dirname(os.path.dirname(real))):
                    if os.path.isfile(os.path.join(d, "launch.json")):
                        launches[os.path.join(d, "launch.json")] = None
            continue
        found = 0
        for root, dirs, names in os.walk(p, followlinks=True):
            # Hidden directories hold staging (`contprobe run`'s .harness), never results.
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for n in sorted(names):
                full = os.path.realpath(os.path.join(root, n))
                if n in SKIPPED_NAMES:
                    continue
                if n.endswith(".xml"):
                    files.setdefault(full, False)
                    found += 1
                elif n == "launch.json":
                    launches[full] = None
                elif JOURNAL_FILE.match(n):
                    journals[full] = None
                    found += 1  # ranks that died are lost ranks, not an empty directory
        if not found:
            problems.append(Problem(p, "no JUnit (*.xml) files in this directory"))
    return sorted(files.items()), sorted(launches), problems, sorted(journals)


# ---- one file --------------------------------------------------------------------------------
def _props(elem: Optional[ET.Element]) -> Dict[str, str]:
    out: Dict[str, str] = {}
    if elem is not None:
        for p in elem:
            if p.tag == "property":
                out.setdefault(p.get("name", ""), p.get("value", ""))
    return out


_intern = sys.intern
_RESULT_TAGS = {"failure": "failed", "error": "error", "skipped": "skipped"}


def _case(tc: ET.Element) -> Case:
    # The hot loop of a 10,000-file report: most cases are a passed probe with one property.
    props: Dict[str, str] = {}
    outcome, res = "passed", None
    for ch in tc:
        tag = ch.tag
        if tag == "properties":
            for p in ch:
                name = p.get("name")
                if name not in props:
                    props[name] = p.get("value", "")
        elif res is None and tag in _RESULT_TAGS:
            outcome, res = _RESULT_TAGS[tag], ch
    try:
        duration = float(tc.get("time") or 0.0)
    except ValueError:
        duration = 0.0
    probe = props.get("probe") or f"{tc.get('classname', '')}.{tc.get('name', '')}".strip(".")
    metrics: Optional[Dict[str, float]] = None
    if len(props) > 1:
        for k, v in props.items():
            if k.startswith("metric."):
                try:
                    value = float(v)
                except ValueError:
                    continue
                if metrics is None:
                    metrics = {}
                metrics[_intern(k[7:])] = value
    if res is None:
        return (_intern(probe), "passed", duration, "", "", "", metrics, "")
    res_message = res.get("message") or ""
    evidence = (res.text or "").strip()
    gotcha = props.get("gotcha", "")
    if outcome in ("failed", "error") and not gotcha:
        # A failure outside the probes (a crashed fixture, a collection error) still gets a verdict.
        gotcha = catalog.match(f"{res_message}\n{evidence}")
    fix = props.get("fix") or (catalog.get(gotcha).fix_line if gotcha else "")
    message = props.get("message") or (res_message.strip().splitlines() or [""])[0]
    # Interned so that pickling a worker's results back stores each repeated text once.
    return (_intern(probe), outcome, duration, _intern(message), _intern(gotcha), _intern(fix), metrics,
            evidence[:EVIDENCE_MAX])


def read_rank_file(path: str, explicit: bool = True) -> Tuple[str, str, object]:
    """(path, kind, payload): kind 'ok' -> RankFile, 'merged' -> None, 'error' -> message."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return path, "error", f"cannot be read ({exc.strerror or exc})"
    if not data.strip():
        return path, "error", "empty file; was the rank killed before writing?"
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        return path, "error", f"not well-formed XML ({exc}); was the rank killed while writing?"
    if root.tag == "testsuites":
        if root.get("name") == MERGED_NAME:
            return (path, "merged", None) if not explicit else \
                (path, "error", "a merged report written by `contprobe report`, not a rank file")
        suites = [s for s in root if s.tag == "testsuite"]
    elif root.tag == "testsuite":
        suites = [root]
    else:
        return path, "error", f"not a JUnit file (root element <{root.tag}>, expected <testsuites> or <testsuite>)"
    if not suites:
        return path, "error", "not a JUnit file (no <testsuite>)"
    ctx: Dict[str, str] = {}
    cases: List[Case] = []
    for suite in suites:
        for ch in suite:
            if ch.tag == "properties":
                ctx.update({_intern(k): _intern(v) for k, v in _props(ch).items()})
            elif ch.tag == "testcase":
                cases.append(_case(ch))
    if "hostname" not in ctx and suites[0].get("hostname"):
        ctx["hostname"] = suites[0].get("hostname", "")
    return path, "ok", RankFile(path, ctx, cases, hashlib.blake2b(data, digest_size=16).hexdigest())


def _read_chunk(items: List[Tuple[str, bool]]) -> list:
    # Many small trees make the cyclic GC rescan everything; nothing here forms cycles.
    gc.disable()
    try:
        return [read_rank_file(p, e) for p, e in items]
    finally:
        gc.enable()


def read_many(items: List[Tuple[str, bool]], workers: Optional[int] = None) -> list:
    """read_rank_file over items, in worker processes when there are enough files to pay for them."""
    if workers is None:
        # Idle CPUs only: on a busy login node extra processes just queue behind the others.
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        idle = cpus - int(os.getloadavg()[0]) if hasattr(os, "getloadavg") else cpus
        workers = max(1, min(cpus, idle, len(items) // 400))
    if workers <= 1:
        return _read_chunk(items)
    import multiprocessing as mp
    chunk = max(50, len(items) // (workers * 8))
    parts = [items[i:i + chunk] for i in range(0, len(items), chunk)]
    try:
        ctx = mp.get_context("fork")
    except ValueError:  # pragma: no cover - platforms without fork
        return _read_chunk(items)
    gc.disable()  # unpickling 300k small tuples would trigger full collections over and over
    with ctx.Pool(workers) as pool:
        out: list = []
        try:
            for res in pool.imap(_read_chunk, parts):
                out.extend(res)
        finally:
            gc.enable()
    return out


def read_json(path: str) -> Tuple[Optional[object], Optional[str]]:
    """(parsed JSON, None) or (None, why it cannot be used)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh), None
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"cannot be read ({exc})"
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc})"


def read_launch(path: str) -> Tuple[Optional[dict], Optional[str]]:
    doc, why = read_json(path)
    if why:
        return None, why
    if not isinstance(doc, dict):
        return None, "not a launch.json object"
    return doc, None


# ---- everything ------------------------------------------------------------------------------
def collect(paths: Iterable[str], workers: Optional[int] = None) -> Inputs:
    """Read every rank file and launch.json under paths. Duplicates and unreadable files become
    problems; what is readable is kept. Deterministic: the result depends only on the files."""
    files, launch_files, problems, journals = discover(paths)
    # Of two copies the one named like a rank file is kept, the other reported as the duplicate.
    files.sort(key=lambda it: (RANK_FILE.search(os.path.basename(it[0])) is None, it[0]))
    inputs = Inputs(problems=problems)
    for lf in launch_files:
        doc, err = read_launch(lf)
        if err:
            inputs.problems.append(Problem(lf, err))
        else:
            inputs.launches[os.path.dirname(lf)] = doc
    by_digest: Dict[str, str] = {}
    by_rank: Dict[Tuple[str, int], str] = {}
    for path, kind, payload in read_many(files, workers):
        if kind == "merged":
            continue
        launch = inputs.launch_dir(os.path.dirname(path))
        if kind == "error":
            inputs.problems.append(Problem(path, str(payload)))
            inputs.unreadable.append((path, launch))
            continue
        rf = payload
        assert isinstance(rf, RankFile)
        rf.launch = launch
        first = by_digest.get(rf.digest)
        if first:
            inputs.problems.append(Problem(path, f"duplicate of {first} (same content); counted once"))
            continue
        by_digest[rf.digest] = path
        key = (launch, rf.rank if rf.rank is not None else -1)
        first = by_rank.get(key)
        if first and key[1] >= 0:
            inputs.problems.append(Problem(
                path, f"rank {key[1]} already reported by {first}; counted once "
                      "(if every rank says rank 0, see `contprobe gotchas mpi-singleton`)"))
            continue
        by_rank[key] = path
        inputs.ranks.append(rf)
    for path in journals:
        m = JOURNAL_FILE.search(os.path.basename(path))
        launch = inputs.launch_dir(os.path.dirname(path))
        if not m or (launch, int(m.group(1))) in by_rank:
            continue  # the rank wrote its JUnit: the journal adds nothing
        inputs.journals.append(path)
        inputs.ranks.append(read_journal(path, launch))
    return inputs


def read_journal(path: str, launch: str) -> RankFile:
    """What a lost rank finished before it died, as a RankFile marked journal=True."""
    from contprobe.reports import partial
    pr = partial.read(path)
    with open(path, "rb") as fh:
        digest = hashlib.blake2b(fh.read(), digest_size=16).hexdigest()
    cases: List[Case] = [(c.probe, c.outcome, c.duration_s, c.message, c.gotcha, c.fix, c.metrics or None, "")
                         for c in pr.cases]
    return RankFile(path, dict(pr.context), cases, digest, launch, journal=True)
