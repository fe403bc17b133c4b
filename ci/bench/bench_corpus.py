#!/usr/bin/env python3
"""Recall, precision and the unknown rate of the diagnosis engine on the corpus of real error output
(tests/corpus/), in total and per family. Scoring: tests/corpus/evaluate.py.

    PYTHONPATH=$PWD /opt/contprobe/venv/bin/python ci/bench/bench_corpus.py [--misses]
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from corpus.evaluate import evaluate  # noqa: E402


def pct(a: int, b: int) -> str:
    return f"{100.0 * a / b:5.1f}% ({a}/{b})" if b else "    - (0/0)"


def main() -> int:
    r = evaluate()
    rows = [("family", "entries", "recall (covered)", "precision", "unknown", "unknown on uncovered")]
    for name, s in sorted(r.by_family.items()) + [("TOTAL", r.total)]:
        rows.append((name, str(s.entries), pct(s.recalled, s.covered), pct(s.correct, s.answered),
                     pct(s.unknown, s.entries), pct(s.unknown_on_uncovered, s.uncovered)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    if "--misses" in sys.argv[1:]:
        for label, items in (("missed (covered, not named)", r.misses), ("wrong (named, not a label)", r.wrong),
                             ("guessed (uncovered, not unknown)", r.guessed)):
            print(f"\n{label}: {len(items)}")
            for e, got in items:
                print(f"  {e.path}: labels {', '.join(e.labels) or 'none'} -> {got}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
