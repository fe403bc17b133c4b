"""The gotcha catalog: known failures with their cause, fix and source, kept as data."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

try:  # Python >= 3.11
    import tomllib as _toml  # novermin (guarded: 3.8 - 3.10 fall back below)
except ImportError:  # images with Python 3.8 - 3.10
    try:
        import tomli as _toml  # type: ignore[no-redef]
    except ImportError:
        from contprobe._vendor import tomli as _toml  # type: ignore[no-redef]

CATALOG_PATH = Path(__file__).with_name("data") / "gotchas.toml"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Gotcha:
    id: str
    title: str
    cause: str
    fix: str
    source: str
    symptoms: Tuple[str, ...] = ()
    refs: Tuple[str, ...] = ()
    _patterns: Tuple["re.Pattern[str]", ...] = field(default=(), repr=False, compare=False)

    @property
    def fix_line(self) -> str:
        """First line of the fix: what fits in a table cell."""
        return self.fix.strip().splitlines()[0] if self.fix.strip() else ""

    def matches(self, text: str) -> bool:
        return any(p.search(text) for p in self._patterns)

    def as_dict(self) -> Dict[str, str]:
        return {"id": self.id, "title": self.title, "cause": self.cause,
                "fix": self.fix.strip(), "source": self.source}


class CatalogError(ValueError):
    pass


def _parse(data: dict) -> Dict[str, Gotcha]:
    out: Dict[str, Gotcha] = {}
    for i, raw in enumerate(data.get("gotcha", [])):
        try:
            gid = raw["id"]
            symptoms = tuple(raw.get("symptoms", ()))
            g = Gotcha(id=gid, title=raw["title"], cause=raw["cause"], fix=raw["fix"],
                       source=raw["source"], symptoms=symptoms, refs=tuple(raw.get("refs", ())),
                       _patterns=tuple(re.compile(s, re.IGNORECASE) for s in symptoms))
        except KeyError as exc:
            raise CatalogError(f"gotcha #{i + 1} lacks field {exc}") from None
        except re.error as exc:
            raise CatalogError(f"gotcha {raw.get('id')!r}: bad symptom pattern: {exc}") from None
        if gid in out:
            raise CatalogError(f"gotcha id {gid!r} appears twice")
        out[gid] = g
    if UNKNOWN not in out:
        raise CatalogError("the catalog must define the 'unknown' entry")
    return out


_CACHE: Dict[str, Dict[str, Gotcha]] = {}


def load(path: Optional[Path] = None) -> Dict[str, Gotcha]:
    """Load (once) and return the catalog keyed by id, in file order."""
    key = str(path or CATALOG_PATH)
    if key not in _CACHE:
        with open(key, "rb") as fh:
            _CACHE[key] = _parse(_toml.load(fh))
    return _CACHE[key]


def get(gotcha_id: str) -> Gotcha:
    """The entry for an id; an id not in the catalog falls back to 'unknown'."""
    cat = load()
    return cat.get(gotcha_id, cat[UNKNOWN])


def match(text: str, candidates: Optional[Iterable[str]] = None) -> str:
    """Id of the first catalog entry whose symptoms match text, else 'unknown'."""
    cat = load()
    for gid in (candidates if candidates is not None else cat):
        g = cat.get(gid)
        if g is not None and g.matches(text):
            return gid
    return UNKNOWN


def ids() -> List[str]:
    return list(load())
