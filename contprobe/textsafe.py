"""Untrusted text made safe for each output: the terminal, Markdown, XML and JSON.

Images under test choose their probe ids, messages and evidence. On the operator's terminal an
escape sequence could set the title, clear the screen, write the clipboard or paint a fake green
verdict; in Markdown a cell could carry HTML, a `javascript:` link or a `|` that shifts columns;
in XML a control character makes the whole file unreadable; in JSON a NaN is not JSON at all.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any

# C0 controls except tab and newline, DEL, C1 controls, and the bidirectional overrides/isolates
# that can reorder what the eye reads (CVE-2021-42574, "Trojan Source").
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_XML_BAD = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#!])")


def _visible(m: "re.Match[str]") -> str:
    c = ord(m.group(0))
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def terminal(text: str) -> str:
    """Control characters become visible escapes (\\x1b); newlines and tabs stay."""
    return _UNSAFE.sub(_visible, text)


def one_line(text: str) -> str:
    """A field that must stay on its line (a probe id, a message): newlines become visible too."""
    return terminal(text.replace("\r", "\\r").replace("\n", "\\n"))


def md_cell(text: str) -> str:
    """Markdown-inert text: no HTML, no links, no column breaks, no line breaks."""
    return _MD_SPECIAL.sub(r"\\\1", one_line(text)).replace("&", "&amp;")


def md_text(text: str) -> str:
    """A Markdown paragraph of untrusted text: inert, but keeping its line breaks."""
    return "\n".join(md_cell(line) for line in text.split("\n"))


def xml(text: str) -> str:
    """Characters XML 1.0 cannot carry are dropped (the parser would refuse the whole file)."""
    return _XML_BAD.sub("", text)


def finite(obj: Any) -> Any:
    """NaN and infinities become null, so the document is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def json_dumps(obj: Any, indent: Any = None) -> str:
    try:   # almost always: nothing to replace, and no copy of a 100,000-rank document to make
        return json.dumps(obj, indent=indent, allow_nan=False)
    except ValueError:
        return json.dumps(finite(obj), indent=indent, allow_nan=False)
