"""A fast reader for the one JUnit layout pytest writes, with ElementTree for everything else.

A 100,000-rank report reads 3,000,000 test cases; building an ElementTree per file and walking it
costs ~150 us a file. pytest writes its JUnit in one fixed shape (no whitespace between elements,
double-quoted attributes in a fixed order, only the five predefined entities and character
references), so a few regular expressions read it at a fraction of that, and a testcase seen on
another rank (same probe, same result) is the same Case object.

The fast path accepts a strict subset of well-formed XML and must read it exactly as ElementTree
does: anything outside that subset (another layout, a comment, a CDATA section, a doctype, a
namespace, CR, a control character, a character reference XML forbids, a duplicate attribute,
a truncated file) returns None and the caller parses the file with ElementTree, which gives the
same result or names the error. tests/test_report.py checks both readers agree on real files and
on every truncation and many corruptions of them.
"""
from __future__ import annotations

import re
from typing import Callable, Dict, List, Optional, Tuple

from contprobe.model import Case

# An attribute value: no literal tab, newline or CR (XML would normalize them to spaces), no '<'.
_ENT = r"&(?:lt|gt|amp|quot|apos|#[0-9]{1,7}|#x[0-9a-fA-F]{1,6});"
_V = r'[^"<&\x00-\x1f]*(?:' + _ENT + r'[^"<&\x00-\x1f]*)*'
_T = r"[^<&]*(?:" + _ENT + r"[^<&]*)*"             # element text (control characters: checked below)
_PROP = r'<property name="' + _V + r'" value="' + _V + r'" ?/>'
_RES = (r'<(?P<t>skipped|failure|error)(?: (?:type|message)="' + _V + r'"){0,2}(?: ?/>|>' + _T + r"</(?P=t)>)"
        r"|<(?P<s>system-out|system-err)>" + _T + r"</(?P=s)>")

HEAD = re.compile(r"""<\?xml version=(["'])1\.0\1 encoding=(["'])(?i:utf-8)\2\?>"""
                  r'<testsuites(?: name="(?P<root>' + _V + r')")?>'
                  r'<testsuite(?P<attrs>(?: [A-Za-z_][A-Za-z0-9_.-]*="' + _V + r'")*)>'
                  r"(?:<properties>(?P<props>(?:" + _PROP + r")*)</properties>)?")
# One testcase, time last among pytest's attributes: groups (before time, time, after it, ...).
# The parts around time are the cache key: the same probe with the same result on another rank.
CASE = re.compile(r'(<testcase classname="' + _V + r'" name="' + _V + r'"(?: file="' + _V + r'")?'
                  r'(?: line="[0-9]{1,9}")?) time="(' + _V + r')"((?: ?/>|>'
                  r"(?:<properties>(?:" + _PROP + r")*</properties>)?"
                  r"(?:" + _RES + r")*</testcase>))")
TIME_ATTR = len(' time=""')
CASE_PARTS = re.compile(r'<testcase classname="(' + _V + r')" name="(' + _V + r')"')
CASE_BODY = re.compile(r"(?: ?/>|>(?:<properties>((?:" + _PROP + r")*)</properties>)?(.*)</testcase>)\Z", re.S)
TAIL = re.compile(r"</testsuite></testsuites>[ \t\n]*\Z")
ATTR = re.compile(r' ([A-Za-z_][A-Za-z0-9_.-]*)="(' + _V + r')"')
PROP = re.compile(r'<property name="(' + _V + r')" value="(' + _V + r')" ?/>')
RESULT = re.compile(r"<(skipped|failure|error|system-out|system-err)((?: [a-z]+=\"" + _V + r'")*)(?: ?/>|>(' + _T
                    + r")</\1>)")
ENTITY = re.compile(_ENT)
# Characters XML 1.0 forbids, and CR (which XML turns into LF): such a file goes to ElementTree.
CONTROL = bytes(list(range(0x09)) + [0x0b, 0x0c, 0x0d] + list(range(0x0e, 0x20)))
NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}
CACHE_MAX = 20000

CaseOf = Callable[[str, str, Dict[str, str], Optional[str], str, str], Case]
_cache: Dict[Tuple[str, str, Optional[str], str], Case] = {}


class Unusual(ValueError):
    """Something the fast path does not read; ElementTree decides."""


def _char(m: "re.Match[str]") -> str:
    ref = m.group(0)[1:-1]
    if ref[0] != "#":
        return NAMED[ref]
    n = int(ref[2:], 16) if ref[1] == "x" else int(ref[1:])
    if n in (0x9, 0xA, 0xD) or 0x20 <= n <= 0xD7FF or 0xE000 <= n <= 0xFFFD or 0x10000 <= n <= 0x10FFFF:
        return chr(n)
    raise Unusual("a character XML forbids")


def unescape(v: str) -> str:
    return ENTITY.sub(_char, v) if "&" in v else v


def _props(text: Optional[str]) -> List[Tuple[str, str]]:
    return [(unescape(k), unescape(v)) for k, v in PROP.findall(text)] if text else []


def _attrs(text: str) -> Dict[str, str]:
    pairs = ATTR.findall(text)
    out = {k: unescape(v) for k, v in pairs}
    if len(out) != len(pairs) or any(k.startswith("xmlns") for k in out):
        raise Unusual("a duplicate attribute or a namespace")     # ElementTree refuses or renames
    return out


def parse(data: bytes, case_of: CaseOf) -> Optional[Tuple[List[Tuple[str, str]], Optional[str], List[Case],
                                                          List[float]]]:
    """(suite properties, suite hostname, cases, durations) of a file in pytest's layout, else None."""
    if len(data.translate(None, CONTROL)) != len(data) or b"\xef\xbf\xbe" in data or b"\xef\xbf\xbf" in data \
            or b"]]>" in data:
        return None       # characters XML forbids, CR, or a CDATA end: ElementTree decides
    try:
        text = data.decode("utf-8")
        head = HEAD.match(text)
        if head is None or (head.group("root") and unescape(head.group("root")) == "contprobe-report"):
            return None
        tail = text.rfind("</testsuite></testsuites>")
        if tail < head.end() or TAIL.match(text, tail) is None:
            return None
        found = CASE.findall(text, head.end(), tail)
        pres, times, rests = list(zip(*found))[:3] if found else ((), (), ())
        # findall's matches do not overlap and come in order: they cover the body exactly when
        # their lengths add up to it, i.e. nothing between the testcases went unread.
        if sum(map(len, pres)) + sum(map(len, times)) + sum(map(len, rests)) + TIME_ATTR * len(found) \
                != tail - head.end():
            return None
        suite = _attrs(head.group("attrs"))
        props = _props(head.group("props"))
        cases: List[Case] = []
        get = _cache.get
        for pre, rest in zip(pres, rests):
            case = get((pre, rest))
            if case is None:
                case = _case(pre, rest, case_of)
                if len(_cache) >= CACHE_MAX:
                    _cache.clear()
                _cache[(pre, rest)] = case
            cases.append(case)
        try:
            durations = [d if 0.0 <= d < 1e9 else 0.0 for d in map(float, times)]
        except ValueError:
            durations = [duration(unescape(t)) for t in times]
        return props, suite.get("hostname"), cases, durations
    except (Unusual, UnicodeDecodeError, ValueError, OverflowError):
        return None


def _case(pre: str, rest: str, case_of: CaseOf) -> Case:
    head, body = CASE_PARTS.match(pre), CASE_BODY.match(rest)
    if head is None or body is None:
        raise Unusual("not a testcase")
    unescape(pre), unescape(rest)     # every character reference in it, read or not, must be one XML allows
    props: Dict[str, str] = {}
    for k, v in _props(body.group(1)):
        props.setdefault(k, v)
    tag, message, text = None, "", ""
    for m in RESULT.finditer(body.group(2) or ""):
        attrs = _attrs(m.group(2))
        if tag is None and m.group(1) in ("skipped", "failure", "error"):
            tag, message, text = m.group(1), attrs.get("message") or "", unescape(m.group(3) or "")
    return case_of(unescape(head.group(1)), unescape(head.group(2)), props, tag, message, text)


def duration(text: Optional[str]) -> float:
    """A testcase's time attribute in seconds; 0 when it is not a sane number."""
    try:
        duration = float(text or 0.0)
    except ValueError:
        return 0.0
    return duration if 0.0 <= duration < 1e9 else 0.0
