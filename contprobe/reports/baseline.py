"""Compare tonight with earlier nights: new failures, fixed, still failing, flaky, and since when.

Earlier nights come from a previous report's JSON (--baseline), a directory of report JSONs
(--history, e.g. the nightly's OUT_ROOT) and earlier nights among the rank files themselves.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

from contprobe.reports.collect import read_json
from contprobe.model import FAILING, Report, image_name
from contprobe.reports.merge import dated_dir

FLAKY_WINDOW = 7          # nights looked at for alternation
FLAKY_FLIPS = 2           # pass->fail->pass (or the reverse) at least this often is flaky

Key = Tuple[str, str]     # (image, probe)


def _cls(outcome: str) -> Optional[str]:
    """'F' failing, 'P' passed, None for skipped (says nothing about health)."""
    if outcome in FAILING:
        return "F"
    if outcome == "passed":
        return "P"
    return None


def load_doc(path: str) -> Tuple[Optional[dict], str]:
    """A report or doctor JSON, or (None, why not)."""
    doc, why = read_json(path)
    if why:
        return None, f"{path}: {why}"
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list) or "verdict" not in doc:
        return None, f"{path}: not a contprobe report JSON (no verdict/results)"
    if not isinstance(doc.get("context") or {}, dict):
        return None, f"{path}: not a contprobe report JSON (its context is not an object)"
    return doc, ""


def doc_night(doc: dict, path: str) -> str:
    ctx = doc.get("context") or {}
    if ctx.get("night"):
        return str(ctx["night"])
    nights = [str(r.get("night")) for r in doc["results"] if isinstance(r, dict) and r.get("night")]
    return dated_dir(os.path.dirname(os.path.abspath(path))) \
        or max(nights, default=str(ctx.get("started_utc", ""))[:10])


def doc_outcomes(doc: dict) -> Dict[Key, str]:
    ctx = doc.get("context") or {}
    default_image = image_name(str(ctx.get("image") or "host"))
    out: Dict[Key, str] = {}
    for r in doc["results"]:
        if isinstance(r, dict) and r.get("probe"):
            out[(str(r.get("image") or default_image), str(r["probe"]))] = str(r.get("outcome", ""))
    return out


def load_history(directory: str) -> Tuple[List[Tuple[str, Dict[Key, str]]], List[str]]:
    """[(night, outcomes)] from every report JSON under directory, oldest first; plus warnings."""
    found: Dict[str, Dict[Key, str]] = {}
    warnings: List[str] = []
    for root, dirs, names in os.walk(directory):
        dirs.sort()
        for n in sorted(names):
            if not n.endswith(".json") or n == "launch.json":
                continue
            path = os.path.join(root, n)
            doc, why = load_doc(path)
            if doc is None:
                warnings.append(why)
                continue
            night = doc_night(doc, path)
            found.setdefault(night, {}).update(doc_outcomes(doc))
    return sorted(found.items()), warnings


def compare(report: Report, previous: Optional[Tuple[str, dict]] = None,
            history: Optional[List[Tuple[str, Dict[Key, str]]]] = None) -> dict:
    """Mark each current row with its change and since; returns the summary kept in the report.

    previous: (path, doc) of --baseline. history: load_history() output.
    """
    timeline: Dict[Key, Dict[str, str]] = {}
    for night, outcomes in history or []:
        for key, outcome in outcomes.items():
            timeline.setdefault(key, {})[night] = outcome
    for row in report.older:
        timeline.setdefault(row.key, {})[row.night] = row.outcome
    prev_outcomes: Optional[Dict[Key, str]] = None
    prev_night = ""
    if previous is not None:
        path, doc = previous
        prev_outcomes = doc_outcomes(doc)
        prev_night = doc_night(doc, path)

    summary: Dict[str, list] = {"new": [], "fixed": [], "still_failing": [], "flaky": []}
    for row in report.rows:
        past = sorted((n, o) for n, o in timeline.get(row.key, {}).items() if n < row.night)
        if prev_outcomes is not None and row.key in prev_outcomes:
            # The baseline is the last point before tonight, even when it is from tonight (a rerun).
            past = [(n, o) for n, o in past if n != prev_night]
            past.append((prev_night, prev_outcomes[row.key]))
            past.sort(key=lambda x: (x[0] >= row.night, x[0]))
        row.history = past
        seq = [(n, c) for n, c in ((n, _cls(o)) for n, o in past) if c]
        cur = _cls(row.outcome)
        if cur is None:
            continue
        window = [c for _, c in seq][-(FLAKY_WINDOW - 1):] + [cur]
        last = seq[-1][1] if seq else None
        if sum(a != b for a, b in zip(window, window[1:])) >= FLAKY_FLIPS:
            row.change = "flaky"
        elif cur == "F" and last == "F":
            row.change = "still-failing"
        elif cur == "F" and (last == "P" or (prev_outcomes is not None or history) and last is None):
            row.change = "new"
        elif cur == "P" and last == "F":
            row.change = "fixed"
        if cur == "F":
            since = row.night
            for n, c in reversed(seq):
                if c != "F":
                    break
                since = n
            row.since = since
        if row.change:
            summary[row.change.replace("-", "_")].append({"image": row.image, "probe": row.probe,
                                                          "outcome": row.outcome, "since": row.since})
    summary["previous"] = [prev_night] if previous is not None else []
    summary["nights"] = sorted({n for t in timeline.values() for n in t} | set(report.nights))
    report.baseline = summary
    return summary

