"""The merged report as text: terminal table, Markdown and the JSON contract (with per-rank detail)."""
from __future__ import annotations

import math
import secrets
from itertools import compress, groupby, islice
from json.encoder import encode_basestring_ascii
from collections import Counter
from operator import attrgetter, ne
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from tabulate import tabulate

from contprobe.inimage import catalog
from contprobe import textsafe
from contprobe.inimage.redact import redact_obj, redact_text
from contprobe.model import FAILING, SEVERITY, Case, RankRef, Report, Row, rank_dict
from contprobe.site import Site

HOSTS_SHOWN = 6
PRETTY_JSON_MAX_ENTRIES = 20000   # beyond this many rank entries the JSON is written compactly
PLACEMENT_SHOWN = 256            # ranks in the terminal's placement table; the JSON has every one
RANK_PIECE = 20000                # rank entries per piece of a big JSON report


# ---- small pieces shared with html -----------------------------------------------------------
def rank_ranges(ranks: Sequence[int]) -> str:
    """[0, 1, 2, 3, 7] -> 'r0-3,7'."""
    # Consecutive numbers keep the same difference to their position in the sorted list.
    runs = [[r for _, r in run] for _, run in groupby(enumerate(sorted(set(ranks))), key=lambda ir: ir[1] - ir[0])]
    return "r" + ",".join(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs)


def ordered_counts(row: Row) -> List[Tuple[str, int]]:
    """Outcomes with their counts, most common first (ties: the more severe first)."""
    return sorted(row.counts.items(), key=lambda kv: (-kv[1], SEVERITY[kv[0]]))


def result_cell(row: Row) -> str:
    """'2240/2240 passed' when all ranks agree, '2236/2240 passed, 4 failed' when not."""
    total = sum(row.counts.values())
    oc = ordered_counts(row)
    if not oc:
        return "no ranks"
    if row.host_side or total == 1:  # a host check, or one rank: there is nothing to count
        return ", ".join(o for o, _ in oc)
    head = f"{oc[0][1]}/{total} {oc[0][0]}"
    return ", ".join([head] + [f"{n} {o}" for o, n in oc[1:]])


def where(row: Row) -> List[str]:
    """Which ranks on which hosts, for every outcome but the most common one (if ranks disagree)."""
    oc = ordered_counts(row)
    if row.host_side or row.size == 1 or not oc:
        return []
    (top, n), others = oc[0], [o for o, _ in oc[1:]]
    if not others:
        return [f"{top} on all {n} ranks: " + _hosts_text(row, top)] if top in FAILING else []
    # Every outcome but the most common one; a failing majority is named too (that is what broke).
    shown = sorted(others + [top] if top in FAILING else others, key=SEVERITY.__getitem__)
    return [f"{outcome} on " + _hosts_text(row, outcome) for outcome in shown]


def _hosts_text(row: Row, outcome: str) -> str:
    by_host: Dict[str, List[int]] = {}
    for ref, c in (row.unusual if outcome != "passed" else zip(row.refs, row.cases)):
        if c.outcome == outcome:
            by_host.setdefault(ref.host, []).append(ref.rank)
    shown = sorted(by_host.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:HOSTS_SHOWN]
    more = len(by_host) - len(shown)
    return "; ".join(f"{h} {rank_ranges(r)}" for h, r in shown) + (f" (+{more} more hosts)" if more > 0 else "")


def fix_text(gotcha_id: str, site: Optional[Site]) -> str:
    g = catalog.get(gotcha_id)
    note = site.fix_note(gotcha_id) if site else ""
    return g.fix.strip() + (f"\n{note}" if note else "")


def gotchas_hit(rows: List[Row]) -> List[catalog.Gotcha]:
    return [catalog.get(gid) for gid in dict.fromkeys(c.gotcha for r in rows for _, c in r.unusual
                                                      if c.outcome in FAILING and c.gotcha)]


def outlier_hosts(report: Report, limit: int = 10) -> List[Tuple[str, int, List[str]]]:
    """Hosts with failing probes when most hosts are fine: (host, failing ranks, probes)."""
    bad: Dict[str, Counter] = {}
    for row in report.rows:
        for ref, c in row.unusual:
            if c.outcome in FAILING:
                bad.setdefault(ref.host, Counter())[row.probe] += 1
    if len(report.hosts) < 2 or len(bad) == len(report.hosts):
        return []  # one host, or everything broken: no node stands out
    ranked = sorted(bad.items(), key=lambda kv: (-len(kv[1]), -sum(kv[1].values()), kv[0]))[:limit]
    return [(h, sum(c.values()), list(c)) for h, c in ranked]


def summary_line(report: Report) -> str:
    c = Counter(r.outcome for r in report.rows)
    parts = ", ".join(f"{c[k]} {k}" for k in ("passed", "failed", "error", "lost", "skipped") if c.get(k))
    extra = f"; {len(report.lost)} rank(s) lost" if report.lost else ""
    inc = f"; INCOMPLETE: {len(report.problems)} input(s) unusable" if report.problems else ""
    return f"verdict: {report.verdict.upper()} ({parts or 'no probes'} over {len(report.images)} image(s)){extra}{inc}"


def header(report: Report) -> str:
    nights = report.nights
    night = max((r.night for r in report.rows), default="")
    hosts = report.hosts - {"?"}
    one = single_launch(report)
    head = (f"contprobe {one.record.mode if one is not None else 'report'}: {report.verdict.upper()}: "
            f"{len(report.images)} image(s), {report.rank_count} rank(s) on {len(hosts)} host(s), night {night or '?'}"
            + (f" ({len(nights)} nights read)" if len(nights) > 1 else "") + f", site {report.site}")
    if one is not None:
        ctx = launch_context(one)
        head += "\n" + ", ".join(f"{k}={textsafe.one_line(str(ctx[k]))}"
                                 for k in ("hostname", "image", "runtime", "python") if ctx.get(k))
    return head


def single_launch(report: Report):
    cur = report.current_launches
    return cur[0] if len(cur) == 1 else None


def launch_context(ln) -> Dict[str, object]:
    """What doctor and run always showed for their one launch: rank 0's context and the record."""
    rec = ln.record
    ctx: Dict[str, object] = dict(ln.context)
    ctx.update({"mode": rec.mode, "image": rec.image if rec.image != "host" else ctx.get("image", "host"),
                "image_kind": rec.image_kind, "image_digest": rec.image_digest, "launcher": rec.launcher,
                "command": rec.command, "ranks_reported": str(len(ln.found)), "results_dir": ln.dir,
                "duration_s": f"{rec.duration_s:.2f}"})
    words = rec.runtime.split()    # "apptainer 1.4.5"; a record from elsewhere may hold anything
    if words:
        ctx["runtime"] = words[0]
        ctx["runtime_version"] = words[1] if len(words) > 1 else ""
    if rec.site:
        ctx["site"] = rec.site
    return ctx


def placement_table(rows: List[Dict[str, str]]) -> str:
    from contprobe.reports.merge import PLACEMENT_KEYS
    return "placement:\n" + tabulate([[textsafe.one_line(str(row[k])) for k in PLACEMENT_KEYS] for row in rows],
                                      headers=["rank", "host", "local", "CUDA_VISIBLE_DEVICES", "GPU UUIDs", "CPUs"])


def _shorten(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _change_cell(row: Row) -> str:
    return row.change + (f" since {row.since}" if row.since and row.change in ("still-failing", "flaky") else "")


# ---- terminal and Markdown -------------------------------------------------------------------
def _section(title: str, lines: List[str], md: bool = False) -> List[str]:
    """A titled block and a blank line after it (in Markdown after the title too); nothing without lines."""
    if not lines:
        return []
    return [title, ""] + lines + [""] if md else [title] + lines + [""]


def _table_rows(report: Report, md: bool) -> Tuple[List[list], List[str]]:
    many = len(report.images) > 1
    with_change = report.baseline is not None
    sep, cell = ("<br>", textsafe.md_cell) if md else ("\n", textsafe.one_line)
    rows = []
    for r in report.rows:
        detail = where(r)
        if r.outcome in FAILING and r.gotcha != "rank-lost":  # lost ranks have their own section
            if r.text:
                detail.append(_shorten(r.text, 90))
            if r.fix:
                detail.append("fix: " + _shorten(r.fix, 90))
        elif r.outcome == "skipped" and r.text:
            detail.append(_shorten(r.text, 70))
        detail += [f"{p.metric} {p.worst:.3g} (median {p.median:.3g}) vs reference {p.reference:.3g}: "
                   f"ratio {p.ratio:.2f}" for p in r.perf]
        result = result_cell(r)
        if r.outcome in FAILING and not md and len(r.counts) == 1:
            result = result.upper()
        cells = [cell(x) for x in ([r.image] if many else []) + [r.probe, result, r.gotcha or ""]]
        rows.append(cells + ([_change_cell(r)] if with_change else []) + [sep.join(map(cell, detail))])
    headers = (["image"] if many else []) + ["probe", "ranks", "gotcha"] + (["change"] if with_change else []) \
        + ["where / why / fix"]
    return rows, headers


def _perf_rows(report: Report) -> List[list]:
    return [[r.image, r.probe, p.metric, f"{p.worst:.4g}", f"{p.median:.4g}", f"{p.reference:.4g}",
             f"{p.tolerance:.0%}", f"{p.ratio:.2f}", "ok" if p.ok else f"{len(p.below)}/{p.ranks} ranks below"]
            for r in report.rows for p in r.perf]


PERF_HEADERS = ["image", "probe", "metric", "worst", "median", "reference", "tolerance", "ratio", "verdict"]


def terminal(report: Report, site: Optional[Site] = None) -> str:
    rows, headers = _table_rows(report, md=False)
    out = [header(report), ""]
    one = single_launch(report)
    if one is not None and 1 < len(one.placement) <= PLACEMENT_SHOWN:
        out += [placement_table(one.placement), ""]
    elif one is not None and len(one.placement) > PLACEMENT_SHOWN:
        out += [f"placement: {len(one.placement)} ranks on {len(one.hosts)} host(s); per rank in the JSON report", ""]
    out += [tabulate(rows, headers=headers) if rows else "(no results)", ""]
    lost = [textsafe.one_line(f"  rank {lr.rank} on {lr.host} ({lr.image}, {lr.night}): {lr.reason}")
            for lr in report.lost[:20]]
    if len(report.lost) > 20:
        lost.append(f"  ... and {len(report.lost) - 20} more (see the JSON or HTML report)")
    out += _section(f"Lost ranks ({len(report.lost)}):", lost)
    perf = _perf_rows(report)
    if perf:
        out += ["Performance against the site's references:", tabulate(perf, headers=PERF_HEADERS), ""]
    if report.baseline is not None:
        out += _baseline_lines(report) + [""]
    hosts = [textsafe.one_line(f"  {h}: {n} failing rank result(s) in {', '.join(ps[:5])}"
                               f"{' ...' if len(ps) > 5 else ''}") for h, n, ps in outlier_hosts(report)]
    gotchas = [f"[{g.id}] {g.title}\n  cause: {g.cause}\n  fix:   " + fix_text(g.id, site).replace("\n", "\n         ")
               + f"\n  see:   {g.source}" for g in gotchas_hit(report.rows)]
    repro = [textsafe.one_line(f"  {img}: {cmd}") for img, cmd in _reproducers(report)]
    problems = [textsafe.one_line(f"  {p.path}: {p.message}") for p in report.problems]
    out += _section("Hosts that stand out:", hosts) + _section("Gotchas hit:", gotchas)
    out += _section("Reproduce a failing launch:", repro)
    out += _section(f"INCOMPLETE: {len(report.problems)} input(s) could not be used:", problems)
    out.append(summary_line(report))
    return "\n".join(out) + "\n"


def _baseline_lines(report: Report) -> List[str]:
    b = report.baseline or {}
    prev = ", ".join(b.get("previous") or []) or "history"
    lines = [f"Compared with {prev} ({len(b.get('nights', []))} night(s) known):"]
    for key, label in (("new", "new failures"), ("still_failing", "still failing"), ("flaky", "flaky"),
                       ("fixed", "fixed")):
        items = b.get(key) or []
        text = ", ".join(f"{i['image']}:{i['probe']}" + (f" (since {i['since']})" if i.get("since") else "")
                         for i in items[:12]) + (f" ... +{len(items) - 12}" if len(items) > 12 else "")
        lines.append(textsafe.one_line(f"  {label}: {len(items)}" + (f": {text}" if items else "")))
    return lines


def _reproducers(report: Report) -> List[Tuple[str, str]]:
    failing = {(r.image, r.night) for r in report.rows if r.outcome in FAILING}
    return list(dict.fromkeys((ln.image, ln.command) for ln in report.launches
                              if (ln.image, ln.night) in failing and ln.command))


def markdown(report: Report, site: Optional[Site] = None, title: str = "contprobe report") -> str:
    rows, headers = _table_rows(report, md=True)
    lines = [f"# {textsafe.md_cell(title)}: {report.verdict}", "", textsafe.md_text(header(report)), "",
             tabulate(rows, headers=headers, tablefmt="github") if rows else "(no results)", "",
             summary_line(report), ""]
    if report.lost:
        lost = [textsafe.md_cell(f"- rank {lr.rank} on {lr.host} ({lr.image}, {lr.night}): {lr.reason}")
                for lr in report.lost[:50]]
        lost.append(f"- ... and {len(report.lost) - 50} more" if len(report.lost) > 50 else "")
        lines += _section(f"## Lost ranks ({len(report.lost)})", lost, md=True)
    perf = _perf_rows(report)
    if perf:
        lines += ["## Performance", "", tabulate(perf, headers=PERF_HEADERS, tablefmt="github"), ""]
    if report.baseline is not None:
        lines += _section("## Compared with earlier nights", [f"- {x.strip()}" for x in _baseline_lines(report)[1:]],
                          md=True)
    for g in gotchas_hit(report.rows):
        lines += [f"## `{g.id}`: {g.title}", "", f"**Cause.** {g.cause}", "", "**Fix.**", "",
                  fix_text(g.id, site), "", f"Source: {g.source}", ""]
    repro = [f"- {textsafe.md_cell(img)}: {textsafe.md_cell(cmd)}" for img, cmd in _reproducers(report)]
    problems = [f"- {textsafe.md_cell(p.path)}: {textsafe.md_cell(p.message)}" for p in report.problems]
    lines += _section("## Reproducers", repro, md=True)
    lines += _section(f"## Incomplete: {len(report.problems)} input(s) could not be used", problems, md=True)
    return "\n".join(lines)


# ---- JSON ------------------------------------------------------------------------------------
def contract(report: Report, site: Optional[Site] = None, ranks: bool = True) -> dict:
    """The doctor/run JSON contract, plus per-rank detail (unless not ranks), lost ranks, launches and
    problems."""
    one = single_launch(report)
    ctx: Dict[str, object] = launch_context(one) if one is not None else {"mode": "report"}
    ctx.update({"site": report.site, "night": max((r.night for r in report.rows), default=""), "nights": report.nights,
                "images": report.images, "ranks": report.rank_count,
                "hosts": len(report.hosts - {"?"}),
                "launches": len(report.launches), "incomplete": report.incomplete})
    head = {
        "verdict": report.verdict,
        "context": ctx,
        "results": [],
        "gotchas": [dict(g.as_dict(), fix=fix_text(g.id, site)) for g in gotchas_hit(report.rows)],
        "lost": [lr.as_dict() for lr in report.lost],
        "incomplete": [{"path": p.path, "message": p.message} for p in report.problems],
        "reruns": [rr.as_dict() for ln in report.current_launches for rr in ln.record.reruns],
        "placement": one.placement if one is not None else [],
        "launches": [{"dir": ln.dir, "image": ln.image_path, "night": ln.night, "expected_ranks": ln.expected,
                      "found_ranks": len(ln.found), "hosts": ln.hosts, "command": ln.command,
                      "reruns": [rr.as_dict() for rr in ln.record.reruns], "image_digest": ln.record.image_digest,
                      "runtime": ln.record.runtime, "started_utc": ln.record.started_utc,
                      "duration_s": ln.record.duration_s, "exit_code": ln.record.exit_code}
                     for ln in report.launches],
    }
    if report.baseline is not None:
        head["baseline"] = report.baseline
    doc = redact_obj(head)
    for r in report.rows:
        d = redact_obj(r.as_dict(ranks=False))
        if ranks:
            d["ranks"] = [_redacted_rank(ref, c) for ref, c in zip(r.refs, r.cases)]
        doc["results"].append(d)
    return doc


def _redacted_rank(ref: RankRef, c: Case) -> dict:
    d = rank_dict(ref, c)
    if "message" in d:
        d["message"] = redact_text(d["message"])
    return d


def to_json(doc: dict) -> str:
    entries = sum(len(r.get("ranks", ())) for r in doc.get("results", ()))
    return textsafe.json_dumps(doc, indent=None if entries > PRETTY_JSON_MAX_ENTRIES else 2) + "\n"


def json_parts(report: Report, site: Optional[Site] = None) -> Iterator[str]:
    """The JSON report as consecutive pieces of text, each short enough to redact on its own.

    Up to PRETTY_JSON_MAX_ENTRIES rank entries it is one indented piece. Beyond, it is compact, and
    the per-rank lists (3,000,000 entries for 100,000 ranks) are written from text made once per
    rank and outcome instead of one dict per entry; a piece ends between two entries, so every
    untrusted string is redacted whole. The same document as to_json(contract(...)).
    """
    if sum(r.size for r in report.rows) <= PRETTY_JSON_MAX_ENTRIES:
        yield to_json(contract(report, site))
        return
    doc = contract(report, site, ranks=False)
    mark = secrets.token_hex(16)         # where each result's rank list goes; no input can guess it
    for d in doc["results"]:
        d["ranks"] = mark
    pieces = (textsafe.json_dumps(doc) + "\n").split(f'"{mark}"')
    if len(pieces) != len(report.rows) + 1:
        raise RuntimeError("JSON placeholder not unique")   # cannot happen: 128 random bits
    yield pieces[0]
    heads: Dict[int, str] = {}
    tails: Dict[int, str] = {}
    for row, after in zip(report.rows, pieces[1:]):
        yield "["
        for lo in range(0, row.size, RANK_PIECE):
            yield _rank_entries(row, lo, lo + RANK_PIECE, heads, tails)
        yield "]" + after


def _rank_entries(row: Row, lo: int, hi: int, heads: Dict[int, str], tails: Dict[int, str]) -> str:
    """Entries lo..hi of the row's per-rank list as JSON text: a rank's head ('{"rank": 3, "host": "x", ')
    and a case's tail ('"outcome": ...}'), each made once. The refs and cases are shared objects that
    outlive the document, so id() names them, and joining 100,000 of them happens in C."""
    refs, cases = row.refs[lo:hi], row.cases[lo:hi]
    ref_ids, case_ids = list(map(id, refs)), list(map(id, cases))
    new_refs = set(ref_ids).difference(heads)
    if new_refs:
        objs = dict(zip(ref_ids, refs))
        for i in new_refs:
            heads[i] = textsafe.json_dumps({"rank": objs[i].rank, "host": objs[i].host})[:-1] + ", "
    sep = "" if lo == 0 else ", "
    if not any(map(attrgetter("metrics"), cases)):
        new_cases = set(case_ids).difference(tails)
        if new_cases:
            objs = dict(zip(case_ids, zip(refs, cases)))
            for i in new_cases:
                tails[i] = _tail(*objs[i])
        # Runs of ranks with the same case (all of them, mostly): head1 + tail + ", " + head2 + tail ...
        # is one join of the heads.
        starts = [0, *compress(range(1, len(case_ids)), map(ne, case_ids, islice(case_ids, 1, None))), len(case_ids)]
        head_texts = list(map(heads.__getitem__, ref_ids))
        parts = []
        for a, b in zip(starts, starts[1:]):
            tail = tails[case_ids[a]]
            parts.append((tail + ", ").join(head_texts[a:b]) + tail)
        return sep + ", ".join(parts)
    # Figures differ on every rank: no tail is shared.
    return sep + ", ".join([heads[id(ref)] + _tail(ref, c) for ref, c in zip(refs, cases)])


def _tail(ref: RankRef, c: Case) -> str:
    m = c.metrics
    if c.outcome == "passed" and m and all(type(v) is float and math.isfinite(v) for v in m.values()) \
            and all(type(k) is str for k in m):
        # json.dumps's own text for {"outcome": "passed", "metrics": {...}}, without its machinery.
        return '"outcome": "passed", "metrics": {' + ", ".join(
            f"{encode_basestring_ascii(k)}: {float.__repr__(v)}" for k, v in m.items()) + "}}"
    d = _redacted_rank(ref, c)
    del d["rank"], d["host"]
    return textsafe.json_dumps(d)[1:]
