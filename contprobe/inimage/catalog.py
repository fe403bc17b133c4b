"""The gotcha catalog: known failures with their cause, fix and source, kept as data."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple, Union

try:  # Python >= 3.11
    import tomllib as _toml  # novermin (guarded: 3.8 - 3.10 fall back below)
except ImportError:  # images with Python 3.8 - 3.10
    try:
        import tomli as _toml  # type: ignore[no-redef]
    except ImportError:
        from contprobe.inimage._vendor import tomli as _toml  # type: ignore[no-redef]

from contprobe.inimage import scan

# One TOML file per family of failures, read in name order (the order decides nothing but listing).
CATALOG_PATH = Path(__file__).with_name("data") / "gotchas"
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
    seen_in: Tuple[str, ...] = ()      # stages whose output can show it: pull, build, launch, rank
    rerun: str = ""                    # the one-change re-run that confirms it (RERUNS)
    broad: Tuple[str, ...] = ()        # wording other causes share: names it only with a context line
    context: Tuple[str, ...] = ()      # one of these must also appear for a broad symptom to count
    unless: Tuple[str, ...] = ()       # the near-miss: any of these in the text vetoes the gotcha
    explains: Tuple[str, ...] = ()     # gotchas this one causes: listed after it (root cause first)

    @property
    def fix_line(self) -> str:
        """First line of the fix: what fits in a table cell."""
        return self.fix.strip().splitlines()[0] if self.fix.strip() else ""

    def as_dict(self) -> Dict[str, str]:
        return {"id": self.id, "title": self.title, "cause": self.cause,
                "fix": self.fix.strip(), "source": self.source}


class CatalogError(ValueError):
    pass


STAGES = ("pull", "build", "launch", "rank")
RERUNS = ("gpus", "bind", "env", "nousersite")
FIELDS = {"id", "title", "cause", "fix", "source", "symptoms", "refs", "seen_in", "rerun",
          "broad", "context", "unless", "explains"}
PATTERN_FIELDS = ("symptoms", "broad", "context", "unless")


def _parse(data: dict) -> Dict[str, Gotcha]:
    out: Dict[str, Gotcha] = {}
    for i, raw in enumerate(data.get("gotcha", [])):
        extra = sorted(set(raw) - FIELDS)
        if extra:
            raise CatalogError(f"gotcha #{i + 1} ({raw.get('id')!r}): unknown field {extra[0]!r}")
        try:
            gid = raw["id"]
            pats = {k: tuple(raw.get(k, ())) for k in PATTERN_FIELDS}
            seen_in = tuple(raw.get("seen_in", ()))
            bad = [x for x in seen_in if x not in STAGES]
            if bad or ((pats["symptoms"] or pats["broad"]) and not seen_in) \
                    or raw.get("rerun", "") not in ("",) + RERUNS:
                raise CatalogError(f"gotcha {gid!r}: seen_in must name stages of {STAGES} when it has symptoms, "
                                   f"rerun one of {RERUNS}")
            if bool(pats["broad"]) != bool(pats["context"]):
                raise CatalogError(f"gotcha {gid!r}: broad symptoms need context patterns (and context needs broad)")
            for k, ps in pats.items():
                for s in ps:
                    re.compile(s, re.IGNORECASE)
                    if not scan.needed_literals(s):
                        raise CatalogError(f"gotcha {gid!r}: {k} pattern {s!r} has no literal of "
                                           f"{scan.NEEDED_LITERAL_MIN}+ characters every match contains")
            g = Gotcha(id=gid, title=raw["title"], cause=raw["cause"], fix=raw["fix"],
                       source=raw["source"], symptoms=pats["symptoms"], refs=tuple(raw.get("refs", ())),
                       seen_in=seen_in, rerun=raw.get("rerun", ""), broad=pats["broad"],
                       context=pats["context"], unless=pats["unless"], explains=tuple(raw.get("explains", ())))
        except KeyError as exc:
            raise CatalogError(f"gotcha #{i + 1} lacks field {exc}") from None
        except re.error as exc:
            raise CatalogError(f"gotcha {raw.get('id')!r}: bad symptom pattern: {exc}") from None
        if gid in out:
            raise CatalogError(f"gotcha id {gid!r} appears twice")
        out[gid] = g
    if UNKNOWN not in out:
        raise CatalogError("the catalog must define the 'unknown' entry")
    for g in out.values():
        missing = [x for x in g.explains if x not in out or x == g.id]
        if missing:
            raise CatalogError(f"gotcha {g.id!r}: explains {missing[0]!r}, which is not another catalog entry")
    return out


_CACHE: Dict[str, Dict[str, Gotcha]] = {}


def load(path: Optional[Path] = None) -> Dict[str, Gotcha]:
    """Load (once) and return the catalog keyed by id, in file order.

    path is the catalog folder (every *.toml in it, by name) or one TOML file.
    """
    key = str(path or CATALOG_PATH)
    if key not in _CACHE:
        p = Path(key)
        files = sorted(p.glob("*.toml")) if p.is_dir() else [p]
        entries: list = []
        for f in files:
            with open(f, "rb") as fh:
                try:
                    entries.extend(_toml.load(fh).get("gotcha", []))
                except _toml.TOMLDecodeError as exc:
                    raise CatalogError(f"{f.name}: {exc}") from None
        _CACHE[key] = _parse({"gotcha": entries})
    return _CACHE[key]


def get(gotcha_id: str) -> Gotcha:
    """The entry for an id; an id not in the catalog falls back to 'unknown'."""
    cat = load()
    return cat.get(gotcha_id, cat[UNKNOWN])


MATCH_WINDOW = 64 * 1024     # characters of a long text shown as an excerpt (head and tail)


def excerpt(text: str, window: int = MATCH_WINDOW) -> str:
    """A bounded view of a text for display: its head and its tail, where errors are."""
    if len(text) <= window:
        return text
    half = window // 2
    return text[:half] + "\n" + text[-half:]


Stage = Union[None, str, Tuple[str, ...]]
_RULES: Dict[Tuple[Stage, Optional[Tuple[str, ...]]], "scan.RuleSet"] = {}


def rules(stage: Stage = None, among: Optional[Iterable[str]] = None) -> "scan.RuleSet":
    """The engine's rule set for a stage or stages (None: every stage, what `explain` reads),
    optionally narrowed to some ids."""
    key = (stage, tuple(among) if among is not None else None)
    if key not in _RULES:
        stages = set(STAGES if stage is None else (stage,) if isinstance(stage, str) else stage)
        cat = load()
        chosen = [cat[i] for i in among if i in cat] if among is not None else list(cat.values())
        _RULES[key] = scan.build_rules(g for g in chosen if stages & set(g.seen_in))
    return _RULES[key]


def diagnose(text: str, stage: Stage = "rank", among: Optional[Iterable[str]] = None) -> "scan.Diagnosis":
    """Every known failure in text, root cause first, with its evidence lines (the whole text is read)."""
    return scan.scan_text(text, rules(stage, among))


def match(text: str, stage: Stage = "rank", among: Optional[Iterable[str]] = None) -> str:
    """Id of the root-cause gotcha seen in this stage whose symptoms the text shows, else 'unknown'.

    The same engine as `contprobe explain` (contprobe/inimage/scan.py). `among` narrows it further for
    a probe that knows what it tests (nvidia-smi's own failures)."""
    return diagnose(text, stage, among).top


def with_rerun(kind: str) -> List[str]:
    """Ids whose failure the given one-change re-run confirms."""
    return [g.id for g in load().values() if g.rerun == kind]


def ids() -> List[str]:
    return list(load())
