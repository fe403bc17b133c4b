"""A self-contained HTML page for the merged report: no scripts, fonts or images fetched from anywhere.

What broke (with where, since when and the fix) comes first; then images x probes, nodes x probes
(outlier nodes on top), performance, changes since earlier nights, the gotchas, each launch's
reproducer, lost ranks and unusable inputs.
"""
from __future__ import annotations

import re
from collections import Counter
from operator import attrgetter
from html import escape
from typing import Dict, List, Optional

from contprobe.inimage import catalog
from contprobe.inimage.redact import redact_text
from contprobe.model import FAILING, SEVERITY, Report, Row
from contprobe.reports.summary import (fix_text, gotchas_hit, header, rank_ranges, result_cell, summary_line,
                                       where)
from contprobe.site import Site

ALL_HOSTS_MAX = 64        # show every node up to this many; beyond, only nodes that stand out
NODES_SHOWN_MAX = 500     # failing nodes with a row of their own
LOST_SHOWN = 200          # hosts with lost ranks listed
PROBLEMS_SHOWN = 500      # unusable inputs listed
PROBLEMS_OPEN = 10        # beyond this many, the list starts folded
CARD_ROWS_SHOWN = 8       # probes a "what broke" card shows before folding the rest
MARK = {"passed": "✓", "failed": "✗", "error": "!", "lost": "∅", "skipped": "–", "warning": "⚠", "": ""}

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em;color:#1d1d1f;max-width:110em}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
.verdict-failed{color:#b00020} .verdict-passed{color:#1b7d2c}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ccc;padding:.25em .5em;vertical-align:top}
th{background:#f3f3f3;text-align:left} code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em}
pre{background:#f6f6f6;padding:.5em;white-space:pre-wrap;word-break:break-all;max-height:25em;overflow:auto}
.o-passed{background:#d9f2dd} .o-failed,.o-error{background:#f8c9cc} .o-lost{background:#e6ccf2}
.o-skipped{background:#eeeeee;color:#666} .o-{background:#fff}
.matrix td{text-align:center;min-width:1.6em;padding:.15em .3em} .matrix th.p{writing-mode:vertical-rl;
transform:rotate(180deg);white-space:nowrap;font-weight:normal;font-size:.85em;text-align:left}
.card{border:1px solid #e0b4b4;border-left:6px solid #b00020;padding:.6em 1em;margin:.8em 0;background:#fffafa}
.card h3{margin:.1em 0 .4em 0;font-size:1.05em} .fix{background:#eef6ee;border-left:4px solid #1b7d2c;
padding:.4em .8em;white-space:pre-wrap} .small{color:#555;font-size:.9em} .outlier th{background:#fbe3e4}
"""


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _broke(report: Report, site: Optional[Site]) -> List[str]:
    """One card per gotcha: which probes on which images, where, since when, then the fix once."""
    out = ["<h2 id='broke'>What broke</h2>"]
    failing = [r for r in report.rows if r.outcome in FAILING]
    if not failing:
        return out + ["<p>Nothing failed.</p>"]
    groups: Dict[str, List[Row]] = {}
    for r in failing:
        groups.setdefault(r.gotcha or "unknown", []).append(r)
    for gid, rows in groups.items():
        g = catalog.get(gid)
        out.append(f"<div class='card' id='broke-{_e(gid)}'><h3>{_e(g.title)} <code>{_e(gid)}</code> — "
                   f"{len(rows)} probe(s)</h3><table><tr><th>image</th><th>probe</th><th>ranks</th>"
                   "<th>where</th><th>message</th><th>since</th></tr>")
        for i, r in enumerate(rows):
            if i == CARD_ROWS_SHOWN:
                # A dead node fails every probe of its launch: the card stays short, the rest unfolds.
                out.append(f"</table><details><summary>{len(rows) - i} more probe(s)</summary><table>")
            since = _e(r.since) + (f" ({_e(r.change)})" if r.change else "") if r.since or r.change else _e(r.night)
            out.append(f"<tr><td>{_e(r.image)}</td><td><code class='probe'>{_e(r.probe)}</code></td>"
                       f"<td>{_e(result_cell(r))}</td><td>{'<br>'.join(_e(x) for x in where(r))}</td>"
                       f"<td>{_e(r.text)}</td><td>{since}</td></tr>")
        out.append("</table></details>" if len(rows) > CARD_ROWS_SHOWN else "</table>")
        out.append(f"<p><b>Fix</b></p><div class='fix'>{_e(fix_text(gid, site))}</div>")
        ev = next((r.evidence for r in rows if r.evidence), "")
        if ev:
            out.append(f"<details><summary>evidence (first failing rank)</summary><pre>{_e(ev)}</pre></details>")
        out.append("</div>")
    return out


def _probes(rows: List[Row]) -> List[str]:
    return list(dict.fromkeys(r.probe for r in rows))


def _images_matrix(report: Report) -> List[str]:
    probes = _probes(report.rows)
    cells: Dict[tuple, Row] = {(r.image, r.probe): r for r in report.rows}
    out = ["<h2 id='images'>Images × probes</h2>", "<table class='matrix'><tr><th>image</th>"]
    out += [f"<th class='p' title='{_e(p)}'>{_e(p)}</th>" for p in probes]
    out.append("</tr>")
    for img in report.images:
        out.append(f"<tr><th>{_e(img)}</th>")
        for p in probes:
            r = cells.get((img, p))
            if r is None:
                out.append("<td class='o-'></td>")
                continue
            bad = sum(n for o, n in r.counts.items() if o in FAILING)
            label = MARK[r.outcome] + (f"{bad}" if bad and len(r.counts) > 1 else "")
            out.append(f"<td class='o-{r.outcome}' title='{_e(p)}: {_e(result_cell(r))}'>{_e(label)}</td>")
        out.append("</tr>")
    out.append("</table><p class='small'>✓ passed · ✗ failed (number: failing ranks) · ! error · ∅ lost · "
               "– skipped; hover a cell for its counts.</p>")
    return out


def _nodes_matrix(report: Report) -> List[str]:
    """Every node up to ALL_HOSTS_MAX; beyond, the failing nodes only (most failures first, at most
    NODES_SHOWN_MAX rows) and one line for the nodes that passed: a page for 12,500 nodes stays small."""
    probes = _probes(report.rows)
    hosts = report.hosts
    worst: Dict[str, Dict[str, str]] = {}       # only nodes with a result other than passed
    for r in report.rows:
        for ref, c in r.unusual:
            cur = worst.setdefault(ref.host, {}).get(r.probe)
            if cur is None or SEVERITY[c.outcome] < SEVERITY[cur]:
                worst[ref.host][r.probe] = c.outcome
    nfail = {h: sum(1 for o in ps.values() if o in FAILING) for h, ps in worst.items()}
    bad_hosts = sorted((h for h in worst if nfail[h]), key=lambda h: (-nfail[h], h))
    every = len(hosts) <= ALL_HOSTS_MAX
    shown = sorted(hosts, key=lambda h: (-nfail.get(h, 0), h)) if every else bad_hosts[:NODES_SHOWN_MAX]
    passing = len(hosts) - len(bad_hosts)
    out = ["<h2 id='nodes'>Nodes × probes</h2>",
           f"<p>{len(hosts):,} node(s); <b>{len(bad_hosts):,} with a failing probe</b>"
           + ("" if every else f", shown below{' (the first ' + format(len(shown), ',') + ')' if len(shown) < len(bad_hosts) else ''}; "
              f"<span id='nodes-passed'>{passing:,} node(s) passed every probe they ran</span>") + ".</p>"]
    if not shown:
        return out
    present = {r.probe: set(map(attrgetter("host"), r.refs)) for r in report.rows}   # who ran each probe
    out.append("<table class='matrix' id='nodes-table'><tr><th>node</th><th>failing</th>")
    out += [f"<th class='p' title='{_e(p)}'>{_e(p)}</th>" for p in probes]
    out.append("</tr>")
    for h in shown:
        cls = " class='outlier'" if nfail.get(h) and len(bad_hosts) < len(hosts) else ""
        cells = [f"<tr{cls}><th>{_e(h)}</th><td>{nfail.get(h) or ''}</td>"]
        for p in probes:
            o = worst.get(h, {}).get(p) or ("passed" if h in present.get(p, ()) else "")
            # Only cells that say something carry a tooltip: 500 nodes x 30 probes stay a few hundred kB.
            tip = f" title='{_e(h)} {_e(p)}: {_e(o or 'not run')}'" if o != "passed" else ""
            cells.append(f"<td class='o-{o}'{tip}>{MARK[o]}</td>")
        out.append("".join(cells) + "</tr>")
    out.append("</table>")
    hidden = bad_hosts[len(shown):] if not every else []
    if hidden:
        by_probe = Counter(p for h in hidden for p, o in worst[h].items() if o in FAILING)
        out.append(f"<p class='small' id='nodes-hidden'>{len(hidden):,} more failing node(s), not shown (the JSON "
                   "report has every rank): " + "; ".join(f"{_e(p)} on {n:,}" for p, n in by_probe.most_common(20))
                   + ".</p>")
    return out


def _perf(report: Report) -> List[str]:
    rows = [(r, p) for r in report.rows for p in r.perf]
    if not rows:
        return []
    out = ["<h2 id='perf'>Performance against the site's references</h2><table><tr><th>image</th><th>probe</th>"
           "<th>metric</th><th>worst</th><th>median</th><th>reference</th><th>tolerance</th><th>ratio</th>"
           "<th>ranks below</th></tr>"]
    for r, p in rows:
        below = ", ".join(f"{h} r{rk}: {v:.4g}" for rk, h, v in p.below[:10]) + (" …" if len(p.below) > 10 else "")
        out.append(f"<tr class='o-{'passed' if p.ok else 'failed'}'><td>{_e(r.image)}</td><td><code>{_e(r.probe)}"
                   f"</code></td><td>{_e(p.metric)}</td><td>{p.worst:.4g}</td><td>{p.median:.4g}</td>"
                   f"<td>{p.reference:.4g}</td><td>{p.tolerance:.0%}</td><td>{p.ratio:.2f}</td>"
                   f"<td>{len(p.below)}/{p.ranks} {_e(below)}</td></tr>")
    return out + ["</table>"]


def _baseline(report: Report) -> List[str]:
    b = report.baseline
    if b is None:
        return []
    out = ["<h2 id='changes'>Compared with earlier nights</h2>",
           f"<p class='small'>previous: {_e(', '.join(b.get('previous') or []) or 'history')}; "
           f"{len(b.get('nights', []))} night(s) known</p><table><tr><th>change</th><th>image</th><th>probe</th>"
           "<th>outcome</th><th>since</th></tr>"]
    for key, label in (("new", "new failure"), ("still_failing", "still failing"), ("flaky", "flaky"),
                       ("fixed", "fixed")):
        for i in b.get(key) or []:
            cls = "passed" if key == "fixed" else "failed"
            out.append(f"<tr class='o-{cls}'><td>{label}</td><td>{_e(i['image'])}</td><td><code>{_e(i['probe'])}"
                       f"</code></td><td>{_e(i['outcome'])}</td><td>{_e(i.get('since', ''))}</td></tr>")
    return out + ["</table>"]


def _gotchas(report: Report, site: Optional[Site]) -> List[str]:
    hit = gotchas_hit(report.rows)
    if not hit:
        return []
    out = ["<h2 id='gotchas'>Gotchas hit</h2>"]
    for g in hit:
        src = f"<a href='{_e(g.source)}'>{_e(g.source)}</a>" if g.source.startswith("http") else _e(g.source)
        out.append(f"<h3 id='g-{_e(g.id)}'><code>{_e(g.id)}</code>: {_e(g.title)}</h3><p><b>Cause.</b> "
                   f"{_e(g.cause)}</p><div class='fix'>{_e(fix_text(g.id, site))}</div>"
                   f"<p class='small'>Source: {src}</p>")
    return out


def _launches(report: Report) -> List[str]:
    if not report.launches:
        return []
    failing = {(r.image, r.night) for r in report.rows if r.outcome in FAILING}
    out = ["<h2 id='launches'>Launches and reproducers</h2><table><tr><th>image</th><th>night</th><th>ranks</th>"
           "<th>hosts</th><th>reproducer</th></tr>"]
    for ln in report.launches:
        bad = (ln.image, ln.night) in failing
        reruns = "".join(
            f"<div class='small'>rerun {_e(', '.join(x.probes))} with {_e(x.change)}: "
            f"{_e(x.outcome)} — {_e(x.finding)}<br><code>{_e(x.command)}</code></div>"
            for x in ln.record.reruns)
        cmd = f"<code>{_e(ln.command)}</code>" if ln.command else "<span class='small'>(no launch.json)</span>"
        out.append(f"<tr class='o-{'failed' if bad else 'passed'}'><td>{_e(ln.image)}</td><td>{_e(ln.night)}</td>"
                   f"<td>{len(ln.found)}/{ln.expected}</td><td>{len(ln.hosts)}</td><td>{cmd}{reruns}"
                   f"<div class='small'>{_e(ln.dir)}</div></td></tr>")
    return out + ["</table>"]


def _lost(report: Report) -> List[str]:
    """Lost ranks grouped by image, host and cause: a dead node is one line, not eight (or twelve)."""
    if not report.lost:
        return []
    groups: Dict[tuple, list] = {}
    for x in report.lost:
        groups.setdefault((x.image, x.host, x.gotcha), []).append(x)
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    out = [f"<h2 id='lost'>Lost ranks ({len(report.lost):,} on {len({k[1] for k in groups}):,} host(s))</h2>"
           "<table id='lost-table'><tr><th>image</th><th>host</th><th>ranks</th><th>gotcha</th><th>reason</th></tr>"]
    for (image, host, gid), xs in ordered[:LOST_SHOWN]:
        reasons = Counter(x.reason for x in xs).most_common()
        reason = reasons[0][0] + (f" (and {len(reasons) - 1} other reason(s))" if len(reasons) > 1 else "")
        out.append(f"<tr class='o-lost'><td>{_e(image)}</td><td>{_e(host)}</td><td>{_e(rank_ranges([x.rank for x in xs]))}"
                   f" ({len(xs)})</td><td><code>{_e(gid)}</code></td><td>{_e(reason)}</td></tr>")
    out.append("</table>")
    if len(ordered) > LOST_SHOWN:
        out.append(f"<p class='small'>… and {len(ordered) - LOST_SHOWN:,} more host(s) with lost ranks; all are in the "
                   "JSON report.</p>")
    return out


def _problems(report: Report) -> List[str]:
    """Unusable inputs: counted by kind; the list itself folded when long (thousands at 100,000 ranks)."""
    if not report.problems:
        return []
    kinds = Counter(re.split(r" \(|;", p.message, 1)[0] for p in report.problems)
    out = [f"<h2 id='incomplete'>Incomplete: {len(report.problems):,} input(s) could not be used</h2>",
           "<p>" + "; ".join(f"{n:,}: {_e(k)}" for k, n in kinds.most_common(10))
           + (f"; {len(kinds) - 10} other kind(s)" if len(kinds) > 10 else "") + "</p>",
           f"<details{' open' if len(report.problems) <= PROBLEMS_OPEN else ''}><summary>the inputs</summary><ul>"]
    out += [f"<li><code>{_e(p.path)}</code>: {_e(p.message)}</li>" for p in report.problems[:PROBLEMS_SHOWN]]
    out.append("</ul>")
    if len(report.problems) > PROBLEMS_SHOWN:
        out.append(f"<p class='small'>… and {len(report.problems) - PROBLEMS_SHOWN:,} more; all are in the JSON "
                   "report.</p>")
    return out + ["</details>"]


def page(report: Report, site: Optional[Site] = None, title: str = "contprobe report") -> str:
    v = report.verdict
    parts = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             # No network: everything is inline; the CSP makes sure nothing is ever fetched.
             "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'\">",
             f"<title>{_e(title)}: {v}</title><style>{CSS}</style></head><body>",
             f"<h1>{_e(title)}: <span class='verdict-{v}' id='verdict'>{v.upper()}</span></h1>",
             f"<p>{_e(header(report))}</p><p><b>{_e(summary_line(report))}</b></p>",
             "<p class='small'><a href='#broke'>what broke</a> · <a href='#images'>images</a> · "
             "<a href='#nodes'>nodes</a> · <a href='#gotchas'>gotchas</a> · <a href='#launches'>launches</a></p>"]
    for section in (_problems(report), _broke(report, site), _images_matrix(report), _nodes_matrix(report),
                    _perf(report), _baseline(report), _gotchas(report, site), _launches(report), _lost(report)):
        parts += section
    parts.append("</body></html>\n")
    return redact_text("\n".join(parts))
