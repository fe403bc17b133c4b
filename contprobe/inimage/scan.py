"""The diagnosis engine: a line scanner that names every known failure in a text, or says it does not know.

One engine for every caller: a probe's exception text (in the image), a rank's failure text, the launch,
build and pull logs (`catalog.match`), and `contprobe explain` on a 1 GB job log (`scan_stream`).
Runs inside images too: Python 3.8, standard library only.

How a gotcha is decided (each rule is there because a guess is worse than "unknown"):
* Lines, not text: every pattern is tried against one line, so the answer does not depend on how much
  text came before, and the evidence is a line number.
* Info lines never decide (INFO_LINE): NCCL's `[dev] NCCL INFO` debug lines, Apptainer/Singularity's
  `INFO:`/`VERBOSE:`/`DEBUG` log lines, UCX's INFO/DIAG/DEBUG log lines, glog/c10 `I`-lines and Python
  logging `INFO:` records describe what the program did, not a failure. They never name a gotcha (no
  symptom, no broad match) and are never shown as unrecognised errors; they may still describe the
  situation: pin a broad failure as its context (Apptainer's "INFO: fakeroot command not found" before a
  FATAL "operation not permitted") or veto a near-miss ("INFO: Setting --writable-tmpfs").
* A `symptoms` pattern (specific wording of one failure) names its gotcha alone.
* A `broad` pattern ("Permission denied", "No space left on device") names its gotcha only when one of its
  `context` patterns also matches a line of the same text (the path, a second line that pins it).
* An `unless` pattern anywhere in the text vetoes the gotcha: it is the near-miss with another cause.
* Specific beats broad: a gotcha found only through broad evidence is dropped when one of its evidence
  lines is a specific symptom line of another gotcha.
* Root cause first: specific findings before broad ones, then by first evidence line (a log prints the
  cause before its consequences), then the longer match on a shared line (the more specific wording), then
  catalog order; and a gotcha listed in another found gotcha's `explains` comes right after it (and names
  it as `explained_by`): a driver that is not loaded explains the missing nvidia_uvm module, whichever
  line the log printed first.

Speed: every pattern needs at least one literal (NEEDED_LITERAL_MIN characters, case-folded) that any match
contains. Only lines holding one of those literals (or an error-looking word) are looked at, and on such a
line only the patterns whose literal it holds are tried. Memory is bounded: evidence is capped per gotcha
and the unrecognised error lines are capped.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

try:  # Python >= 3.11 (sre_parse is deprecated there)
    from re import _parser as _sre_parse  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - Python 3.8 - 3.10
    import sre_parse as _sre_parse  # type: ignore[no-redef]

NEEDED_LITERAL_MIN = 3
EVIDENCE_PER_GOTCHA = 4      # symptom/broad lines kept per gotcha (plus one context line)
UNRECOGNISED_MAX = 5         # first error-looking lines shown when nothing explains them
LINE_MAX = 500               # characters of one evidence line kept
BLOCK = 1 << 20              # bytes read at a time by the stream scanner

# Lines that report, not fail. Written from the upstream formats:
#  NCCL src/debug.cc: "%s:%d:%d [%d] NCCL INFO " (host:pid:tid [dev]) - any prefix a launcher adds;
#  Apptainer/Singularity pkg/sylog: "%-8s%s" with the level and a colon ("INFO:    ", "VERBOSE: ", "DEBUG   [U=");
#  UCX ucs/debug/log.c: "[time] [host:pid:tid] file.c:line UCX  INFO ..." (also DIAG, DEBUG, TRACE*);
#  glog / c10 logging (PyTorch): "I1129 08:20:30.123 1234 file.cpp:12] ...";
#  Python logging's default format: "INFO:name:message".
INFO_LINE = re.compile(
    r"\[\d+\] NCCL INFO\b"
    r"|^\s*(?:INFO|VERBOSE|DEBUG)\s*(?::|\[U=)"
    r"|\bUCX\s+(?:INFO|DIAG|DEBUG|TRACE\w*|REQ|DATA|ASYNC|FUNC|POLL)\b"
    r"|^\s*\[?I\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ \S+:\d+\]")
# What a failing line usually looks like: shown when no gotcha explains it.
ERROR_WORDS = ("error", "fail", "fatal", "denied", "not found", "cannot", "can't", "unable", "abort",
               "killed", "traceback", "exception", "segmentation fault", "no such file", "not permitted",
               "core dumped", "timed out", "timeout")
ERROR_LOOKING = re.compile("|".join(re.escape(w) for w in ERROR_WORDS), re.IGNORECASE)

KINDS = ("symptom", "broad", "context", "unless")
SITUATION = ("context", "unless")   # what an info line may still do: describe the situation, never name a failure


@dataclass(frozen=True)
class Evidence:
    line: int          # 1-based line number in the scanned text
    text: str
    kind: str = ""     # symptom | broad | context ("" for an unrecognised line)

    def as_dict(self) -> dict:
        d = {"line": self.line, "text": self.text}
        if self.kind:
            d["kind"] = self.kind
        return d


@dataclass
class Finding:
    gotcha: str
    evidence: List[Evidence]
    explained_by: str = ""
    broad: bool = False       # found through a broad symptom and its context, not a specific one
    span: int = 0             # length of the longest specific match on the first line (ties)

    @property
    def first_line(self) -> int:
        return min(e.line for e in self.evidence)


@dataclass
class Diagnosis:
    findings: List[Finding]                 # root cause first
    unrecognised: List[Evidence]            # first error-looking lines no finding accounts for
    lines: int = 0

    @property
    def top(self) -> str:
        return self.findings[0].gotcha if self.findings else "unknown"

    @property
    def ids(self) -> List[str]:
        return [f.gotcha for f in self.findings]


# ---- literals every match must contain -----------------------------------------------------------------
def _needed(seq: list) -> Optional[Set[str]]:
    """A set of literals one of which every match of the parsed sequence contains (the best found), or None."""
    best: Optional[Set[str]] = None

    def consider(cand: Optional[Set[str]]) -> None:
        nonlocal best
        if cand and all(len(s) >= NEEDED_LITERAL_MIN for s in cand):
            if best is None or min(map(len, cand)) > min(map(len, best)) or \
                    (min(map(len, cand)) == min(map(len, best)) and len(cand) < len(best)):
                best = cand

    run: List[str] = []
    for op, av in list(seq) + [(None, None)]:
        name = str(op)
        if name == "LITERAL" and av < 128:
            run.append(chr(av).lower())
            continue
        if run:
            consider({"".join(run)})
            run = []
        if name == "SUBPATTERN":
            consider(_needed(av[-1]))
        elif name == "BRANCH":
            sets = [_needed(b) for b in av[1]]
            if all(sets):
                consider(set().union(*sets))  # type: ignore[arg-type]
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT") and av[0] >= 1:
            consider(_needed(av[2]))
        elif name == "ATOMIC_GROUP":
            consider(_needed(av))
    return best


def needed_literals(pattern: str) -> Optional[Set[str]]:
    """Case-folded literals of which any case-insensitive match of pattern contains one; None if none is long enough."""
    return _needed(list(_sre_parse.parse(pattern, re.IGNORECASE)))


# ---- the compiled rule set ---------------------------------------------------------------------------------
@dataclass
class _Rule:
    gotcha: str
    kind: str
    regex: "re.Pattern[str]"


@dataclass
class RuleSet:
    """Every pattern of the gotchas a scan considers, indexed by the literal it needs."""
    by_literal: Dict[str, List[_Rule]]
    order: Dict[str, int]                      # gotcha id -> catalog position (ties)
    explains: Dict[str, Tuple[str, ...]]

    @property
    def literals(self) -> List[str]:
        return list(self.by_literal)

    @property
    def patterns(self) -> List[str]:
        """Every pattern once (symptoms, broad, context and unless alike)."""
        return sorted({r.regex.pattern for rules in self.by_literal.values() for r in rules})


def build_rules(gotchas: Iterable) -> RuleSet:
    """Index the patterns of these catalog entries. A pattern without a needed literal is an error
    (it would have to be tried on every line of a 1 GB log); the catalog test checks every entry."""
    by_literal: Dict[str, List[_Rule]] = {}
    order: Dict[str, int] = {}
    explains: Dict[str, Tuple[str, ...]] = {}
    for pos, g in enumerate(gotchas):
        order[g.id] = pos
        explains[g.id] = tuple(getattr(g, "explains", ()))
        for kind, patterns in (("symptom", g.symptoms), ("broad", getattr(g, "broad", ())),
                               ("context", getattr(g, "context", ())), ("unless", getattr(g, "unless", ()))):
            for p in patterns:
                lits = needed_literals(p)
                if not lits:
                    raise ValueError(f"gotcha {g.id!r}: pattern {p!r} has no literal of {NEEDED_LITERAL_MIN}+ "
                                     f"characters that every match contains")
                rule = _Rule(g.id, kind, re.compile(p, re.IGNORECASE))
                for lit in sorted(lits):
                    by_literal.setdefault(lit, []).append(rule)
    return RuleSet(by_literal, order, explains)


# ---- the scanner -------------------------------------------------------------------------------------------
class Scanner:
    """Feed it lines (or candidate lines with their numbers); `result()` gives the Diagnosis."""

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        self._lits = rules.literals
        self.hits: Dict[str, Dict[str, List[Evidence]]] = {}
        self.specific_lines: Set[int] = set()
        self.spans: Dict[str, int] = {}          # gotcha -> longest specific match on its first line
        self.vetoed: Set[str] = set()
        self.errors: List[Evidence] = []
        self.lines = 0

    def feed(self, lineno: int, line: str) -> None:
        """Look at one line (1-based number). Lines may be skipped (a prefilter) but come in order."""
        self.lines = max(self.lines, lineno)
        info = INFO_LINE.search(line) is not None
        low = line.lower()
        matched = False
        seen: Set[int] = set()
        for lit in self._lits:
            if lit not in low:
                continue
            for rule in self.rules.by_literal[lit]:
                if id(rule) in seen or (info and rule.kind not in SITUATION):
                    continue
                seen.add(id(rule))
                m = rule.regex.search(line)
                if m:
                    matched = True
                    self._hit(rule, lineno, line, m.end() - m.start())
        if not (matched or info) and len(self.errors) < UNRECOGNISED_MAX * 4 and ERROR_LOOKING.search(line):
            self.errors.append(Evidence(lineno, line.strip()[:LINE_MAX]))

    def _hit(self, rule: _Rule, lineno: int, line: str, span: int) -> None:
        if rule.kind == "unless":
            self.vetoed.add(rule.gotcha)
            return
        kinds = self.hits.setdefault(rule.gotcha, {})
        ev = kinds.setdefault(rule.kind, [])
        if rule.kind == "symptom":
            self.specific_lines.add(lineno)
            if not ev or ev[0].line == lineno:
                self.spans[rule.gotcha] = max(self.spans.get(rule.gotcha, 0), span)
        cap = 1 if rule.kind == "context" else EVIDENCE_PER_GOTCHA
        if len(ev) < cap and not any(e.line == lineno for e in ev):
            ev.append(Evidence(lineno, line.strip()[:LINE_MAX], rule.kind))

    def result(self) -> Diagnosis:
        found: Dict[str, Finding] = {}
        broad_only: Set[str] = set()
        for gid, kinds in self.hits.items():
            if gid in self.vetoed:
                continue
            if kinds.get("symptom"):
                found[gid] = Finding(gid, list(kinds["symptom"]), span=self.spans.get(gid, 0))
            elif kinds.get("broad") and kinds.get("context"):
                found[gid] = Finding(gid, kinds["broad"] + kinds["context"], broad=True)
                broad_only.add(gid)
        # Specific beats broad: a broad finding resting on another gotcha's specific line is that gotcha's.
        for gid in broad_only:
            others = set()
            for oid, f in found.items():
                if oid != gid and oid not in broad_only:
                    others |= {e.line for e in f.evidence}
            if any(e.line in others for e in found[gid].evidence):
                del found[gid]
        ordered = _root_cause_first(found, self.rules)
        used = {e.line for f in ordered for e in f.evidence}
        unrecognised = [e for e in self.errors if e.line not in used][:UNRECOGNISED_MAX]
        return Diagnosis(ordered, unrecognised, self.lines)


def _root_cause_first(found: Dict[str, Finding], rules: RuleSet) -> List[Finding]:
    """Specific findings before broad ones (stronger evidence), then by first evidence line, then the longer
    match on that line (the more specific wording), then catalog order; an explainer before what it explains."""
    def key(g: str) -> Tuple[bool, int, int, int]:
        f = found[g]
        return f.broad, f.first_line, -f.span, rules.order.get(g, 0)

    explainer: Dict[str, str] = {}
    for gid in sorted(found, key=key):
        for consequence in rules.explains.get(gid, ()):
            if consequence in found and consequence not in explainer and consequence != gid:
                explainer[consequence] = gid
    out: List[Finding] = []
    placed: Set[str] = set()

    def place(gid: str, path: Tuple[str, ...] = ()) -> None:
        if gid in placed or gid in path:
            return
        cause = explainer.get(gid)
        if cause:
            place(cause, path + (gid,))
            found[gid].explained_by = cause
        placed.add(gid)
        out.append(found[gid])

    for gid in sorted(found, key=key):
        place(gid)
    return out


# ---- inputs ------------------------------------------------------------------------------------------------
def scan_text(text: str, rules: RuleSet) -> Diagnosis:
    return scan_stream(iter([text.encode("utf-8", "surrogateescape")]), rules)


_ERE_SPECIAL = set(".[]()*+?{}|^$\\")
_ERE_CLASS = {"d": "[0-9]", "D": "[^0-9]", "s": "\\s", "S": "\\S", "w": "\\w", "W": "\\W", "b": "\\b", "B": "\\B"}


def ere(pattern: str) -> Optional[str]:
    """The pattern as a GNU grep -E expression matching at least what Python's re matches, or None when a
    construct has no safe translation (then its literals stand in for it): (?: becomes (, lazy quantifiers
    become greedy ones (a superset), \\d becomes [0-9]; lookarounds, inline flags, escapes inside bracket
    expressions and non-ASCII text are not translated."""
    if not pattern.isascii() or "(?" in pattern.replace("(?:", ""):
        return None
    out, i, in_bracket, first = [], 0, False, 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            if i + 1 >= len(pattern) or in_bracket:
                return None
            n = pattern[i + 1]
            if n in _ERE_CLASS:
                out.append(_ERE_CLASS[n])
            elif n in _ERE_SPECIAL:
                out.append("\\" + n)
            elif n.isalnum():
                return None                      # \\n, \\t, \\A, \\1 ...
            else:
                out.append(n)                    # \\- \\' \\: are the character itself
            i += 2
            continue
        if in_bracket:
            in_bracket = c != "]" or i == first         # a ] first in the set is a member
        elif c == "[":
            in_bracket, first = True, i + (2 if pattern.startswith("^", i + 1) else 1)
        elif pattern.startswith("(?:", i):
            out.append("(")
            i += 3
            continue
        out.append(c)
        i += 1
    return None if in_bracket else "".join(out)


def grep_expressions(rules: RuleSet) -> List[str]:
    """grep -E -i expressions that select every line the scanner must look at (a superset, like
    prefilter_words, as fast as grepping the catalog's own patterns)."""
    exprs: Set[str] = {_ere_literal(w) for w in ERROR_WORDS}
    for p in rules.patterns:
        e = ere(p)
        exprs |= {e} if e is not None else {_ere_literal(lit) for lit in needed_literals(p) or ()}
    return sorted(exprs)


def _ere_literal(text: str) -> str:
    return "".join("\\" + c if c in _ERE_SPECIAL else c for c in text)


def prefilter_words(rules: RuleSet) -> List[bytes]:
    """Every line a scan must look at holds one of these (lower-case ASCII)."""
    return sorted({lit.encode() for lit in rules.literals} | {w.encode() for w in ERROR_WORDS})


class LineCounter:
    """Candidate lines of a byte stream, and how many lines it had."""

    def __init__(self) -> None:
        self.lines = 0

    def candidates(self, chunks: Iterable[bytes], words: Sequence[bytes]) -> Iterator[Tuple[int, str]]:
        """(line number, line) of every line holding one of the words, in order.

        Reads blocks cut at line ends; bytes.lower() keeps offsets (ASCII only), so each word is searched
        in C over the whole block and only the lines it lands on are decoded."""
        pending = b""
        for chunk in _blocks(chunks):
            block = pending + chunk
            cut = block.rfind(b"\n") + 1
            if cut == 0:
                pending = block
                if len(pending) > 64 * BLOCK:      # a 64 MiB line: look at it, count it, move on
                    yield from self._block(pending + b"\n", words)
                    pending = b""
                continue
            block, pending = block[:cut], block[cut:]
            yield from self._block(block, words)
        if pending:
            yield from self._block(pending + b"\n", words)

    def _block(self, block: bytes, words: Sequence[bytes]) -> Iterator[Tuple[int, str]]:
        base = self.lines + 1
        self.lines += block.count(b"\n")
        low = block.lower()
        starts: Set[int] = set()
        for w in words:
            i = low.find(w)
            while i >= 0:
                starts.add(low.rfind(b"\n", 0, i) + 1)
                e = low.find(b"\n", i)
                i = low.find(w, e) if e >= 0 else -1
        counted, lineno = 0, base
        for s in sorted(starts):
            lineno += block.count(b"\n", counted, s)
            counted = s
            line = block[s:block.find(b"\n", s)]
            yield lineno, line.rstrip(b"\r").decode("utf-8", "replace")


def _blocks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    for c in chunks:
        for i in range(0, len(c), BLOCK):
            yield c[i:i + BLOCK]


def scan_stream(chunks: Iterable[bytes], rules: RuleSet) -> Diagnosis:
    """Scan a byte stream (a file read in chunks, stdin, a text) with bounded memory."""
    sc = Scanner(rules)
    counter = LineCounter()
    for n, line in counter.candidates(chunks, prefilter_words(rules)):
        sc.feed(n, line)
    sc.lines = counter.lines
    return sc.result()


def scan_candidates(numbered: Iterable[Tuple[int, str]], total_lines: int, rules: RuleSet) -> Diagnosis:
    """Scan lines another prefilter chose (grep -F with prefilter_words), numbered as in the file."""
    sc = Scanner(rules)
    for n, line in numbered:
        sc.feed(n, line)
    sc.lines = max(sc.lines, total_lines)
    return sc.result()
