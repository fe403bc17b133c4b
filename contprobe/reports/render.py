"""One run's results as the JSON contract, a terminal table and Markdown."""
from __future__ import annotations

import json
from typing import Dict, Iterable, List, Optional

from tabulate import tabulate

from contprobe import catalog
from contprobe.redact import redact_obj
from contprobe.reports.junit import CaseResult

FAILING = ("failed", "error", "lost")


def verdict(results: Iterable[CaseResult]) -> str:
    return "failed" if any(r.outcome in FAILING for r in results) else "passed"


def gotchas_hit(results: Iterable[CaseResult], include_skips: bool = False) -> List[catalog.Gotcha]:
    wanted = FAILING + (("skipped",) if include_skips else ())
    seen: Dict[str, catalog.Gotcha] = {}
    for r in results:
        if r.gotcha and r.outcome in wanted and r.gotcha not in seen:
            seen[r.gotcha] = catalog.get(r.gotcha)
    return list(seen.values())


def contract(results: List[CaseResult], context: Dict[str, str], extra: Optional[dict] = None) -> dict:
    """The stable JSON contract shared by doctor, run and report."""
    doc = {
        "verdict": verdict(results),
        "context": dict(context),
        "results": [r.as_dict() for r in results],
        "gotchas": [g.as_dict() for g in gotchas_hit(results)],
    }
    if extra:
        doc.update(extra)
    return redact_obj(doc)


def to_json(doc: dict) -> str:
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"


def _fix_cell(r: CaseResult) -> str:
    return r.fix if r.outcome in FAILING else ""


def table(results: List[CaseResult], tablefmt: str = "simple") -> str:
    rows = [[r.probe, r.outcome.upper() if r.outcome in FAILING else r.outcome, f"{r.duration_s:.2f}",
             r.gotcha or "", _shorten(r.message, 70), _shorten(_fix_cell(r), 70)]
            for r in results]
    return tabulate(rows, headers=["probe", "outcome", "s", "gotcha", "message", "fix"], tablefmt=tablefmt)


def _shorten(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def counts(results: Iterable[CaseResult]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for r in results:
        out[r.outcome] = out.get(r.outcome, 0) + 1
    return out


def summary_line(results: List[CaseResult]) -> str:
    c = counts(results)
    parts = ", ".join(f"{c[k]} {k}" for k in ("passed", "failed", "error", "lost", "skipped") if c.get(k))
    return f"verdict: {verdict(results).upper()} ({parts or 'no probes ran'})"


def site_note(gotcha_id: str, site_name: str) -> str:
    """What the site profile adds to a gotcha's fix on this machine ('' for none or an unknown site)."""
    if not site_name:
        return ""
    from contprobe import site as sites
    try:
        return sites.load(site_name).fix_note(gotcha_id)
    except sites.SiteError:
        return ""


def gotcha_section(results: List[CaseResult], site_name: str = "") -> str:
    lines = []
    for g in gotchas_hit(results):
        note = site_note(g.id, site_name)
        lines.append(f"[{g.id}] {g.title}\n  cause: {g.cause}\n  fix:   " + g.fix.strip().replace("\n", "\n         ")
                     + (f"\n  site:  {note}" if note else "") + f"\n  see:   {g.source}")
    return "\n\n".join(lines)


def terminal(results: List[CaseResult], context: Dict[str, str]) -> str:
    head = ", ".join(f"{k}={context[k]}" for k in ("hostname", "image", "runtime", "python") if context.get(k))
    out = [head, "", table(results), "", summary_line(results)]
    section = gotcha_section(results, context.get("site", ""))
    if section:
        out += ["", "Gotchas hit:", section]
    return redact_obj("\n".join(out)) + "\n"


def markdown(results: List[CaseResult], context: Dict[str, str], title: str = "contprobe") -> str:
    lines = [f"# {title}: {verdict(results)}", ""]
    lines += ["| " + " | ".join(f"{k}: `{v}`" for k, v in context.items() if k in
                                ("hostname", "image", "runtime", "python", "driver", "cuda", "mpi_library") and v) + " |",
              "", table(results, tablefmt="github"), "", summary_line(results), ""]
    for g in gotchas_hit(results):
        note = site_note(g.id, context.get("site", ""))
        lines += [f"## `{g.id}`: {g.title}", "", f"**Cause.** {g.cause}", "", "**Fix.**", "", g.fix.strip(), ""]
        lines += [f"**On {context['site']}.** {note}", ""] if note else []
        lines += [f"Source: {g.source}", ""]
    return redact_obj("\n".join(lines))
