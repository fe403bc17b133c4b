"""Read the corpus of real error output and score the diagnosis engine on it (test_corpus.py, bench_corpus.py).

Scoring (one answer per entry: the engine's root cause, what `run` and a report show):
* covered entry: one of its labels is a catalog gotcha the engine can see at the entry's stage.
  Recall = covered entries whose answer is one of their labels / covered entries.
* precision = answers that are one of the entry's labels / answers that are not 'unknown' (all entries).
* uncovered entry (labels: none, a near-miss, or a cause the catalog has no text symptoms for):
  its answer must be 'unknown'.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from contprobe.inimage import catalog

CORPUS = Path(__file__).resolve().parent
# "exec" is the output of a program started in a container: contprobe reads it in the launch log and in
# a rank's failure text. "unknown": the poster did not say; the engine reads it at every stage.
STAGES: Dict[str, Optional[Tuple[str, ...]]] = {
    "pull": ("pull",), "build": ("build",), "launch": ("launch",), "rank": ("rank",),
    "exec": ("launch", "rank"), "unknown": None}


class CorpusError(ValueError):
    pass


@dataclass(frozen=True)
class Entry:
    path: str            # family/NNN-slug.txt
    source: str
    cause: str
    labels: Tuple[str, ...]
    stage: str
    text: str

    @property
    def family(self) -> str:
        return self.path.split("/")[0]


def parse(path: Path) -> Entry:
    raw = path.read_text(encoding="utf-8")
    head, sep, text = raw.partition("\n---\n")
    if not sep:
        raise CorpusError(f"{path}: no '---' line between header and text")
    fields: Dict[str, str] = {}
    for line in head.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    for key in ("source", "cause", "labels", "stage"):
        if not fields.get(key):
            raise CorpusError(f"{path}: header lacks {key!r}")
    if fields["stage"] not in STAGES:
        raise CorpusError(f"{path}: stage {fields['stage']!r} is not one of {sorted(STAGES)}")
    labels = tuple(x.strip() for x in fields["labels"].split(",") if x.strip() and x.strip() != "none")
    return Entry(str(path.relative_to(CORPUS)), fields["source"], fields["cause"], labels, fields["stage"], text)


def entries() -> List[Entry]:
    return [parse(p) for p in sorted(CORPUS.glob("*/*.txt"))]


def visible(gotcha_id: str, stage: str) -> bool:
    """Can the engine name this gotcha from text at this stage (it has text symptoms seen there)?"""
    g = catalog.load().get(gotcha_id)
    if g is None or not (g.symptoms or g.broad):
        return False
    stages = STAGES[stage]
    return stages is None or bool(set(stages) & set(g.seen_in))


def answer(e: Entry) -> str:
    return catalog.match(e.text, STAGES[e.stage])


@dataclass
class Score:
    covered: int = 0
    recalled: int = 0
    answered: int = 0
    correct: int = 0
    uncovered: int = 0
    unknown_on_uncovered: int = 0
    unknown: int = 0
    entries: int = 0

    @property
    def recall(self) -> float:
        return self.recalled / self.covered if self.covered else 1.0

    @property
    def precision(self) -> float:
        return self.correct / self.answered if self.answered else 1.0


@dataclass
class Result:
    total: Score
    by_family: Dict[str, Score]
    misses: List[Tuple[Entry, str]]          # covered, answered wrong or unknown
    wrong: List[Tuple[Entry, str]]           # answered, not a label (a wrong diagnosis)
    guessed: List[Tuple[Entry, str]]         # uncovered or near-miss, but not 'unknown'


def evaluate(items: Optional[List[Entry]] = None) -> Result:
    total, fams = Score(), {}
    misses, wrong, guessed = [], [], []
    for e in items if items is not None else entries():
        got = answer(e)
        covered = any(visible(label, e.stage) for label in e.labels)
        for s in (total, fams.setdefault(e.family, Score())):
            s.entries += 1
            s.unknown += got == catalog.UNKNOWN
            if covered:
                s.covered += 1
                s.recalled += got in e.labels
            else:
                s.uncovered += 1
                s.unknown_on_uncovered += got == catalog.UNKNOWN
            if got != catalog.UNKNOWN:
                s.answered += 1
                s.correct += got in e.labels
        if covered and got not in e.labels:
            misses.append((e, got))
        if got != catalog.UNKNOWN and got not in e.labels:
            wrong.append((e, got))
        if not covered and got != catalog.UNKNOWN:
            guessed.append((e, got))
    return Result(total, fams, misses, wrong, guessed)
