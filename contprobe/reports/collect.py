"""Collect: find and read rank JUnit files, rank journals and launch records, naming every unusable one.

The first stage of the one results pipeline (collect -> merge -> render) that every command uses.

Everything in a results tree except a launch record is written inside the image under test and is
untrusted: files are read only if regular, never through a link, at most `FILE_CAP` bytes; fields
are checked and bounded; a rank file is attributed to the launch whose record sits above it, and
only when it lies directly in that launch's `ranks/` directory. `contprobe report` may face
100,000 rank files on a 2-core login node, so files are read in worker processes, pytest's own
layout by a strict fast path (fastjunit) and anything else by ElementTree's C parser, and a
passed probe is one shared Case (its duration kept apart) rather than an object per rank.
"""
from __future__ import annotations

import gc
import hashlib
import json
import math
import os
import re
import sys
import xml.etree.ElementTree as ET
from itertools import chain
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

from contprobe import safeio
from contprobe.inimage import catalog
from contprobe.model import OUTCOMES, Case, LaunchRecord, Problem, Rank, RecordError
from contprobe.reports import fastjunit
from contprobe.suite import UsageError

MERGED_NAME = "contprobe-report"      # <testsuites name=...> of our own merged output: never an input
SKIPPED_NAMES = ("merged-junit.xml", "junit.xml")   # outputs of run/report, never rank inputs in a tree
RANK_FILE = re.compile(r"junit-r(\d{1,7})-(.+)\.xml$")
JOURNAL_FILE = re.compile(r"partial-r(\d{1,7})-(.+)\.jsonl$")
LAUNCH_RECORD = "launch.json"
RANKS_DIR = "ranks"
CRASHED = "rank crashed or hung during this probe (no JUnit written)"

FILE_CAP = 16 << 20          # one rank file or journal
RECORD_CAP = 8 << 20         # one launch record
EVIDENCE_MAX = 4000          # characters of a failure's text kept
MESSAGE_MAX = 1000
FIELD_MAX = 300              # probe ids, gotcha ids, context values
CONTEXT_KEYS_MAX = 200
CASES_MAX = 5000             # per rank file


@dataclass
class Inputs:
    ranks: List[Rank] = field(default_factory=list)
    launches: Dict[str, LaunchRecord] = field(default_factory=dict)   # launch dir -> its record
    problems: List[Problem] = field(default_factory=list)
    unreadable: List[Tuple[str, str]] = field(default_factory=list)   # (rank file, launch dir)


def bounded(text: object, limit: int = FIELD_MAX) -> str:
    s = text if isinstance(text, str) else ("" if text is None else str(text))
    return s if len(s) <= limit else s[: limit - 1] + "…"


def known_gotcha(gid: str) -> str:
    """An id the image claims is shown only if the catalog has it: images cannot invent diagnoses."""
    return gid if gid in catalog.load() else (catalog.UNKNOWN if gid else "")


# ---- discovery -------------------------------------------------------------------------------
@dataclass
class Found:
    rank_files: List[Tuple[str, bool, str]] = field(default_factory=list)   # (path, explicit, launch dir)
    journals: List[Tuple[str, str]] = field(default_factory=list)          # (path, launch dir)
    records: List[str] = field(default_factory=list)
    problems: List[Problem] = field(default_factory=list)


def _launch_of(d: str, records: Dict[str, None]) -> Optional[str]:
    """The launch a directory belongs to: itself, or the nearest ancestor with a launch record."""
    cur = d
    while True:
        if cur in records:
            return cur
        parent = os.path.dirname(cur)
        if parent == cur:
            return None
        cur = parent


def discover(paths: Iterable[str]) -> Found:
    """Every rank file, journal and launch record under paths.

    A path that does not exist is bad usage; a directory without any result is a problem (a launch
    that wrote nothing must not look like a clean night). Paths named on the command line are the
    operator's and may be links; nothing found inside them is followed.
    """
    out = Found()
    records: Dict[str, None] = {}
    candidates: List[Tuple[str, str, bool]] = []   # (dir, name, explicit)
    for p in paths:
        if not os.path.lexists(p):
            raise UsageError(f"{p}: no such file or directory")
        real = os.path.realpath(p)
        if not os.path.isdir(real):
            d, n = os.path.split(real)
            if n == LAUNCH_RECORD:
                records[d] = None
            else:
                candidates.append((d, n, True))
                for anc in (d, os.path.dirname(d)):
                    if os.path.isfile(os.path.join(anc, LAUNCH_RECORD)):
                        records[anc] = None
            continue
        if os.path.basename(real) == RANKS_DIR and os.path.isfile(os.path.join(os.path.dirname(real), LAUNCH_RECORD)):
            records[os.path.dirname(real)] = None   # `report OUT/ranks`: the launch is the parent
        found = 0
        others: List[Tuple[str, str]] = []
        for d, names in safeio.walk(real, others=others):
            for n in names:
                if n == LAUNCH_RECORD:
                    inside = _launch_of(os.path.dirname(d), records) if d != real else None
                    if inside is not None:
                        # Below another launch: written by that launch's image, not by the host.
                        out.problems.append(Problem(os.path.join(d, n), "a launch record inside another launch's "
                                                    "results (written by the image?): ignored"))
                    else:
                        records[d] = None
                        found += 1   # a launch record is a result: its host rows, its lost ranks
                elif n not in SKIPPED_NAMES and (n.endswith(".xml") or JOURNAL_FILE.match(n)):
                    candidates.append((d, n, False))
                    found += 1
        # A link or FIFO named like an input is never read (it could block, or point at host files),
        # but it is named: a rank whose result is a FIFO must not look like a clean rank.
        for path, what in others:
            n = os.path.basename(path)
            if n == LAUNCH_RECORD or RANK_FILE.match(n) or JOURNAL_FILE.match(n):
                out.problems.append(Problem(path, f"{what}: ignored"))
                found += 1
        if not found:
            out.problems.append(Problem(p, "no JUnit (*.xml) files or rank journals in this directory"))
    out.records = sorted(records)
    for d, n, explicit in sorted(candidates):
        path = os.path.join(d, n)
        launch = _launch_of(d, records)
        if launch is not None and not explicit and d != os.path.join(launch, RANKS_DIR) and d != launch:
            out.problems.append(Problem(path, f"a rank file outside {os.path.join(launch, RANKS_DIR)}: ignored "
                                              "(results are attributed only by the launch that wrote them)"))
            continue
        launch = launch or d
        if JOURNAL_FILE.match(n):
            out.journals.append((path, launch))
        else:
            out.rank_files.append((path, explicit, launch))
    return out


# ---- one rank file ---------------------------------------------------------------------------
_intern = sys.intern
_RESULT_TAGS = {"failure": "failed", "error": "error", "skipped": "skipped"}


def _metric(k: str, v: str, metrics: Optional[Dict[str, float]]) -> Optional[Dict[str, float]]:
    try:
        value = float(v)
    except ValueError:
        return metrics
    if math.isfinite(value):
        metrics = metrics if metrics is not None else {}
        metrics[_intern(bounded(k[7:], 64))] = value
    return metrics


def _make_case(classname: str, name: str, props: Dict[str, str], tag: Optional[str], res_message: str,
               res_text: str) -> Case:
    """One testcase (without its duration) from what either reader found in it: its properties (first
    of each name) and its first result element (tag, message attribute, text)."""
    probe = bounded(props.get("probe") or f"{classname}.{name}".strip("."))
    metrics: Optional[Dict[str, float]] = None
    if len(props) > 1:
        for k, v in props.items():
            if k and k.startswith("metric."):
                metrics = _metric(k, v, metrics)
    if tag is None:
        return Case(_intern(probe), "passed", 0.0, "", "", "", metrics, "")
    outcome = _RESULT_TAGS[tag]
    evidence = res_text[:EVIDENCE_MAX].strip()
    gotcha = known_gotcha(bounded(props.get("gotcha", "")))
    if outcome in ("failed", "error") and not gotcha:
        # A failure outside the probes (a crashed fixture, a collection error) still gets a verdict.
        gotcha = catalog.match(f"{res_message[:EVIDENCE_MAX]}\n{evidence}")
    # The fix always comes from our catalog: an image cannot put its own advice in the report.
    fix = catalog.get(gotcha).fix_line if gotcha else ""
    message = bounded(props.get("message") or (res_message.strip().splitlines() or [""])[0], MESSAGE_MAX)
    # Interned so that pickling a worker's results back stores each repeated text once.
    return Case(_intern(probe), outcome, 0.0, _intern(message), _intern(gotcha), _intern(fix), metrics,
                evidence)


def _case(tc: ET.Element) -> Case:
    props: Dict[str, str] = {}
    res = None
    for ch in tc:
        tag = ch.tag
        if tag == "properties":
            for p in ch:
                name = p.get("name")
                if name not in props:
                    props[name] = p.get("value", "")
        elif res is None and tag in _RESULT_TAGS:
            res = ch
    result = (None, "", "") if res is None else (res.tag, res.get("message") or "", res.text or "")
    return _make_case(tc.get("classname", ""), tc.get("name", ""), props, *result)


def read_rank_file(path: str, explicit: bool = True) -> Tuple[str, str, object]:
    """(path, kind, payload): kind 'ok' -> Rank, 'merged' -> None, 'error' -> message. Never raises."""
    try:
        data = safeio.read_capped(path, FILE_CAP, follow=explicit)
    except OSError as exc:
        return path, "error", f"cannot be read ({exc.strerror or exc})"
    if not data.strip():
        return path, "error", "empty file; was the rank killed before writing?"
    if b"<!DOCTYPE" in data:
        # pytest never writes one; entity expansion ("billion laughs") costs expat ~0.3 s a file
        # before it refuses, which 10,000 planted files would turn into an hour.
        return path, "error", "not a JUnit file (it declares a DTD; entities are refused)"
    try:
        fast = fastjunit.parse(data, _make_case)
        return _rank_of(path, data, *fast) if fast is not None else _parse_rank(path, data, explicit)
    except ET.ParseError as exc:
        return path, "error", f"not well-formed XML ({exc}); was the rank killed while writing?"
    except (RecursionError, MemoryError, ValueError, TypeError) as exc:
        return path, "error", f"not a usable JUnit file ({type(exc).__name__})"


def _parse_rank(path: str, data: bytes, explicit: bool) -> Tuple[str, str, object]:
    """The general reader: ElementTree over any JUnit layout (the fast path's fallback)."""
    root = ET.fromstring(data)
    if root.tag == "testsuites":
        if root.get("name") == MERGED_NAME:
            return (path, "merged", None) if not explicit else \
                (path, "error", "a merged report written by `contprobe report`, not a rank file")
        suites = [s for s in root if s.tag == "testsuite"]
    elif root.tag == "testsuite":
        suites = [root]
    else:
        return path, "error", f"not a JUnit file (root element <{bounded(root.tag, 40)}>)"
    if not suites:
        return path, "error", "not a JUnit file (no <testsuite>)"
    props: List[Tuple[str, str]] = []
    cases: List[Case] = []
    durations: List[float] = []
    for suite in suites:
        for ch in suite:
            if ch.tag == "properties":
                props += [(p.get("name"), p.get("value", "")) for p in ch if p.tag == "property"]
            elif ch.tag == "testcase":
                if len(cases) >= CASES_MAX:
                    return path, "error", f"more than {CASES_MAX} test cases"
                cases.append(_case(ch))
                durations.append(fastjunit.duration(ch.get("time")))
    return _rank_of(path, data, props, suites[0].get("hostname"), cases, durations)


def _rank_of(path: str, data: bytes, props: List[Tuple[str, str]], suite_host: Optional[str], cases: List[Case],
             durations: List[float]) -> Tuple[str, str, object]:
    """The Rank both readers build from a file's suite properties, suite hostname and cases."""
    if len(cases) > CASES_MAX:
        return path, "error", f"more than {CASES_MAX} test cases"
    ctx: Dict[str, str] = {}
    for k, v in props:
        if k and k not in ctx and len(ctx) < CONTEXT_KEYS_MAX:
            # bounded() inline: 20 properties x 100,000 ranks.
            ctx[_intern(k if len(k) <= 64 else bounded(k, 64))] = _intern(v if len(v) <= FIELD_MAX else bounded(v))
    if "hostname" not in ctx:
        ctx["hostname"] = bounded(suite_host or rank_file_host(path))
    m = RANK_FILE.search(os.path.basename(path))
    if "rank" not in ctx and m:
        ctx["rank"] = str(int(m.group(1)))
    return path, "ok", Rank(path, ctx, cases, hashlib.blake2b(data, digest_size=16).hexdigest(),
                            durations=durations)


def rank_file_host(path: str) -> str:
    m = RANK_FILE.search(os.path.basename(path))
    return m.group(2) if m else ""


def _read_chunk(items: List[Tuple[str, bool]]) -> list:
    # Many small trees make the cyclic GC rescan everything; nothing here forms cycles.
    gc.disable()
    try:
        return [read_rank_file(p, e) for p, e in items]
    finally:
        gc.enable()


def read_many(items: List[Tuple[str, bool]], workers: Optional[int] = None) -> list:
    """read_rank_file over items, in worker processes when there are enough files to pay for them."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if workers is None:
        # Idle CPUs only: on a busy login node extra processes just queue behind the others. This process
        # waits while its workers read, so its own CPU counts as idle too.
        idle = cpus - int(os.getloadavg()[0]) + 1 if hasattr(os, "getloadavg") else cpus
        workers = max(1, min(cpus, idle, len(items) // 400))
    workers = min(workers, cpus, max(1, len(items) // 50))
    if workers <= 1:
        return _read_chunk(items)
    import multiprocessing as mp
    chunk = max(50, len(items) // (workers * 8))
    parts = [items[i:i + chunk] for i in range(0, len(items), chunk)]
    try:
        ctx = mp.get_context("fork")
    except ValueError:  # pragma: no cover - platforms without fork
        return _read_chunk(items)
    gc.disable()  # unpickling 3,000,000 small tuples would trigger full collections over and over
    try:
        with ctx.Pool(workers) as pool:
            return list(chain.from_iterable(pool.imap(_read_chunk, parts)))
    finally:
        gc.enable()


# ---- journals: what a rank finished before it died ------------------------------------------
def probe_of(nodeid: str) -> str:
    """test_allreduce.py::test_mpi4py[8] -> allreduce.mpi4py[8] (the plugin's probe ids)."""
    module, _, name = nodeid.rpartition("::")
    module = module.rsplit("/", 1)[-1].rsplit(".py", 1)[0]
    module = module[5:] if module.startswith("test_") else module
    return bounded(f"{module}.{name[5:] if name.startswith('test_') else name}")


def read_journal(path: str, launch: str) -> Tuple[Optional[Rank], str]:
    """(Rank marked journal=True, '') or (None, why it cannot be used). Never raises."""
    try:
        data = safeio.read_capped(path, FILE_CAP)
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc})"
    ctx: Dict[str, str] = {"partial": "yes"}
    m = JOURNAL_FILE.search(os.path.basename(path))
    if m:
        ctx["rank"], ctx["hostname"] = str(int(m.group(1))), bounded(m.group(2))
    cases: List[Case] = []
    running: Dict[str, str] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):
            continue  # the line being written when the rank died, or not ours
        if not isinstance(entry, dict):
            continue
        event = entry.get("event")
        nodeid = entry.get("nodeid")
        if event == "session":
            for k in ("size", "launcher", "image"):
                if isinstance(entry.get(k), (str, int)) and not isinstance(entry.get(k), bool):
                    ctx[k] = bounded(entry[k])
        elif event == "start" and isinstance(nodeid, str) and len(running) < CASES_MAX:
            running[nodeid] = probe_of(nodeid)
        elif event == "done" and isinstance(nodeid, str) and len(cases) < CASES_MAX:
            running.pop(nodeid, None)
            outcome = entry.get("outcome")
            if outcome not in OUTCOMES or outcome == "lost":
                continue
            metrics = None
            for k, v in entry.items():
                if isinstance(k, str) and k.startswith("metric.") and isinstance(v, (str, int, float)) \
                        and not isinstance(v, bool):
                    metrics = _metric(k, str(v), metrics)
            gotcha = known_gotcha(bounded(entry.get("gotcha")))
            duration = entry.get("duration_s")
            duration = float(duration) if isinstance(duration, (int, float)) and not isinstance(duration, bool) \
                and 0 <= duration < 1e9 else 0.0
            cases.append(Case(bounded(entry.get("probe")) or probe_of(nodeid), outcome, duration,
                              bounded(entry.get("message"), MESSAGE_MAX), gotcha,
                              catalog.get(gotcha).fix_line if gotcha else "", metrics, ""))
    for probe in running.values():
        cases.append(Case(probe, "error", 0.0, CRASHED, "rank-lost", catalog.get("rank-lost").fix_line))
    return Rank(path, ctx, cases, hashlib.blake2b(data, digest_size=16).hexdigest(), launch, journal=True), ""


# ---- launch records --------------------------------------------------------------------------
def read_json(path: str) -> Tuple[Optional[object], Optional[str]]:
    """(parsed strict JSON, None) or (None, why it cannot be used). Never raises."""
    try:
        data = safeio.read_capped(path, RECORD_CAP)
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc})"

    def no_constants(name: str) -> None:
        raise ValueError(f"{name} is not JSON")
    try:
        return json.loads(data.decode("utf-8"), parse_constant=no_constants), None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return None, f"not valid JSON ({bounded(exc, 120)})"


def read_record(path: str) -> Tuple[Optional[LaunchRecord], Optional[str]]:
    doc, why = read_json(path)
    if why:
        return None, why
    try:
        return LaunchRecord.from_json(doc), None
    except RecordError as exc:
        return None, f"not a launch record ({exc})"


# ---- everything ------------------------------------------------------------------------------
def collect(paths: Iterable[str], workers: Optional[int] = None) -> Inputs:
    """Read every rank file, journal and launch record under paths. Duplicates and unusable files
    become problems; what is readable is kept. Deterministic: the result depends only on the files."""
    found = discover(paths)
    inputs = Inputs(problems=list(found.problems))
    for d in found.records:
        rec, err = read_record(os.path.join(d, LAUNCH_RECORD))
        if err:
            inputs.problems.append(Problem(os.path.join(d, LAUNCH_RECORD), err))
        else:
            inputs.launches[d] = rec
    # Of two copies the one named like a rank file is kept, the other reported as the duplicate.
    files = sorted(found.rank_files, key=lambda it: (RANK_FILE.search(os.path.basename(it[0])) is None, it[0]))
    launch_of = {p: launch for p, _, launch in files}
    by_digest: Dict[str, str] = {}
    by_rank: Dict[Tuple[str, int], str] = {}
    for path, kind, payload in read_many([(p, e) for p, e, _ in files], workers):
        if kind == "merged":
            continue
        launch = launch_of[path]
        if kind == "error":
            inputs.problems.append(Problem(path, str(payload)))
            m = RANK_FILE.search(os.path.basename(path))
            rec = inputs.launches.get(launch)
            # An unreadable file counts as a lost rank only inside the launch's ranks: a planted
            # junit-r09999-x.xml must not invent rank 9999 (it stays a named problem).
            if rec is None or (m is not None and int(m.group(1)) < max(rec.expected_ranks, 1)):
                inputs.unreadable.append((path, launch))
            continue
        rf: Rank = payload
        rf.launch = launch
        rec = inputs.launches.get(launch)
        if rec is not None and (rf.rank is None or not 0 <= rf.rank < max(rec.expected_ranks, 1)):
            inputs.problems.append(Problem(path, f"rank {rf.context.get('rank', '?')} is outside this launch's "
                                                 f"{rec.expected_ranks} rank(s): ignored"))
            continue
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
    for path, launch in found.journals:
        key = (launch, int(JOURNAL_FILE.match(os.path.basename(path)).group(1)))   # discover() matched the name
        if key in by_rank:
            continue  # the rank wrote its JUnit: the journal adds nothing
        rec = inputs.launches.get(launch)
        if rec is not None and not key[1] < max(rec.expected_ranks, 1):
            inputs.problems.append(Problem(path, "a journal of a rank outside this launch: ignored"))
            continue
        rank, why = read_journal(path, launch)
        if rank is None:
            inputs.problems.append(Problem(path, why))
            continue
        by_rank[key] = path
        inputs.ranks.append(rank)
    return inputs
