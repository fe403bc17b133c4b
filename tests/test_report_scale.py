"""The report at the size of the largest machines, and the fast reader that makes it possible.

- The fast JUnit reader (reports/fastjunit.py) reads real rank files exactly as ElementTree does, and
  on every truncation and many corruptions of them either agrees or leaves the file to ElementTree.
- A 100,000-rank report (Frontier: 12,500 nodes x 8) keeps its HTML page bounded: every failing node
  has a row, the passing ones are one sentence, lost ranks are grouped by host.
- The JSON written in pieces is the document the whole-object writer makes.
Speed and memory are measured by ci/bench/bench_report.py, not asserted here.
"""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from typing import Dict, List

import pytest

from contprobe.model import Case, LaunchRecord, LostRank, Rank
from contprobe.reports import collect, fastjunit, html, merge, summary
from contprobe.site import load

from tests.test_report import real  # noqa: F401  (the session fixture: real rank files)

NAME = "junit-r00001-x1000c0s0b0n0.xml"


def et_read(data: bytes):
    """What the ElementTree reader makes of data: the Rank's parts, or 'error'."""
    try:
        _, kind, rank = collect._parse_rank(NAME, data, False)
    except (ET.ParseError, RecursionError, ValueError, TypeError):
        return "error"
    return (rank.base, rank.durations, rank.context) if kind == "ok" else kind


def fast_read(data: bytes):
    got = fastjunit.parse(data, collect._make_case)
    if got is None:
        return None
    _, kind, rank = collect._rank_of(NAME, data, *got)
    return (rank.base, rank.durations, rank.context) if kind == "ok" else kind


def mutations(data: bytes):
    """Truncations, and insertions of what XML treats specially, all through the file."""
    for cut in range(0, len(data), 13):
        yield data[:cut]
    inserts = [b"x", b"<", b"&", b"&#1;", b"&#10;", b"&amp;", b"&bogus;", b"\r", b"\x01", b'"', b"'", b" ",
               b"]]>", b"<!-- c -->", b"<![CDATA[z]]>", b"\xff", b"\xef\xbf\xbe", b' name="dup"', b"</testcase>",
               b"<skipped/>", b"\t", b"\n"]
    for i, ins in enumerate(inserts):
        for at in range(i % 7, len(data), 97):
            yield data[:at] + ins + data[at:]


def test_fast_reader_equals_elementtree_on_real_and_broken_files(real):  # noqa: F811
    accepted = refused = 0
    for path in real.values():
        data = path.read_bytes()
        assert fast_read(data) is not None, "the fast path must read pytest's own files"
        assert fast_read(data) == et_read(data)
        for bad in mutations(data):
            mine = fast_read(bad)
            if mine is None:
                refused += 1
                continue
            accepted += 1
            assert mine == et_read(bad), bad
    # Both branches ran: some corruptions are still JUnit (text inserted), most are not.
    assert accepted > 100 and refused > 1000, (accepted, refused)


def test_fast_reader_leaves_other_layouts_to_elementtree(real):  # noqa: F811
    data = real["bad"].read_bytes()
    merged = data.replace(b'<testsuites name="pytest tests">', b'<testsuites name="contprobe-report">')
    assert merged != data and fastjunit.parse(merged, collect._make_case) is None
    spaced = data.replace(b"><testcase", b">\n  <testcase")
    assert fastjunit.parse(spaced, collect._make_case) is None and et_read(spaced) == et_read(data)
    ns = data.replace(b'<testsuite name=', b'<testsuite xmlns="urn:x" name=')
    assert fastjunit.parse(ns, collect._make_case) is None and et_read(ns) == "error"


# ---- 100,000 ranks ---------------------------------------------------------------------------
RANKS, PPN = 100_000, 8
PROBES = [f"group{i % 5}.probe{i}" for i in range(30)]
ECC_NODES = {7, 4099, 9001}            # every rank of these nodes fails gpu-ecc-errors in probe 4
SCATTERED = set(range(13, RANKS, 4999))  # one rank of these nodes fails probe 9 (no gotcha property)
DEAD_NODE = 6000                         # its ranks left nothing: lost, named by the launch record
JOURNAL_ONLY = {77_777, 88_888}          # died in probe 12: a journal, no JUnit


def host(rank: int) -> str:
    return f"frontier{rank // PPN:05d}"


def big_inputs(ranks: int = RANKS) -> collect.Inputs:
    """What collect() returns for one launch of `ranks` ranks on ranks/8 nodes, built in memory."""
    d = "/lustre/run"
    passed = [Case(p, "passed") for p in PROBES]
    skipped = Case(PROBES[20], "skipped", 0.0, "no --expect-gpus given")
    ecc = Case(PROBES[4], "failed", 0.0, "1 GPU(s) with uncorrectable ECC errors", "gpu-ecc-errors", "fix ecc")
    inputs = collect.Inputs()
    rec = LaunchRecord(image="/soft/pt.sif", expected_ranks=ranks, hosts=[host(r) for r in range(0, ranks, PPN)],
                       lost=[LostRank(r, host(r), "srun: error: Node failure on " + host(r))
                             for r in range(DEAD_NODE * PPN, DEAD_NODE * PPN + PPN) if r < ranks])
    inputs.launches[d] = rec
    for r in range(ranks):
        if r // PPN == DEAD_NODE:
            continue
        ctx = {"rank": str(r), "hostname": host(r), "local_rank": str(r % PPN), "image": "/soft/pt.sif"}
        if r in JOURNAL_ONLY:
            cases = passed[:12] + [Case(PROBES[12], "error", 0.0, collect.CRASHED, "rank-lost", "")]
            inputs.ranks.append(Rank(f"{d}/ranks/partial-r{r:05d}.jsonl", dict(ctx, partial="yes"), cases, "j%d" % r,
                                     d, journal=True))
            continue
        cases = list(passed)
        cases[20] = skipped
        if r // PPN in ECC_NODES:
            cases[4] = ecc
        if r in SCATTERED:
            cases[9] = Case(PROBES[9], "failed", 0.0, f"world has 1 rank, launcher started {ranks} (rank {r})",
                            "unknown", "")
        inputs.ranks.append(Rank(f"{d}/ranks/junit-r{r:05d}-{host(r)}.xml", ctx, cases, "d%d" % r, d,
                                 durations=[0.001 * (r % 7)] * len(cases)))
    return inputs


class Page(HTMLParser):
    """The node table's row headers, the lost table's host cells, and the text of <p>/<span> by id."""

    def __init__(self) -> None:
        super().__init__()
        self.table = ""
        self.cell = 0
        self.node_rows: List[str] = []
        self.lost_hosts: List[str] = []
        self.ids: Dict[str, str] = {}
        self._open: List[str] = []          # ids of the <p>/<span> elements we are in ('' for none)
        self._th = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.table = a.get("id", "")
        elif tag == "tr":
            self.cell = 0
        elif tag in ("td", "th"):
            self.cell += 1
        self._th = tag == "th"
        if tag in ("p", "span"):
            self._open.append(a.get("id", ""))
            if a.get("id"):
                self.ids[a["id"]] = ""

    def handle_endtag(self, tag):
        if tag == "table":
            self.table = ""
        if tag in ("p", "span") and self._open:
            self._open.pop()

    def handle_data(self, data):
        if self.table == "nodes-table" and self._th and self.cell == 1:
            self.node_rows.append(data)
        if self.table == "lost-table" and not self._th and self.cell == 2:
            self.lost_hosts.append(data)
        for i in self._open:
            if i:
                self.ids[i] += data


@pytest.fixture(scope="module")
def big_report():
    return merge.merge(big_inputs(), refs={}, site="frontier")


def test_100k_rank_html_is_bounded_and_names_every_failing_node(big_report):
    page = html.page(big_report, load("generic"), "frontier nightly")
    assert len(page.encode()) < 2_000_000, len(page)
    doc = Page()
    doc.feed(page)
    dead = f"frontier{DEAD_NODE:05d}"
    one_probe = {host(r) for r in SCATTERED} | {f"frontier{n:05d}" for n in ECC_NODES}
    journals = sorted(host(r) for r in JOURNAL_ONLY)
    # Every failing node has its row and no passing node has one; most failing probes first: the dead
    # node (30 lost), the ranks that died in probe 12 (1 error, 17 lost), then one failing probe each.
    assert doc.node_rows == ["node", dead, *journals, *sorted(one_probe)], doc.node_rows[:5]
    nodes, failing = RANKS // PPN, 1 + len(journals) + len(one_probe)
    assert doc.ids["nodes-passed"] == f"{nodes - failing:,} node(s) passed every probe they ran"
    assert f"{nodes:,} node(s); <b>{failing} with a failing probe</b>" in page
    # Lost ranks: one line for the dead node's 8 ranks, one for each rank that left only a journal.
    assert doc.lost_hosts == [dead, *journals]
    # The dead node failed every probe (all but the ECC and the scattered ones are its card): a few
    # are shown, the rest folded.
    card = page[page.index("id='broke-rank-lost'"):]
    card = card[:card.index("</div>")]
    assert card.count("<code class='probe'>") == len(PROBES) - 2 and "more probe(s)</summary>" in card
    assert re.search(rf"<td>{dead}</td><td>r{DEAD_NODE * PPN}-{DEAD_NODE * PPN + PPN - 1} \(8\)</td>", page)
    assert "Node failure on " + dead in page
    assert "gpu-ecc-errors" in page and "1 GPU(s) with uncorrectable ECC errors" in page


def test_failing_nodes_beyond_the_cap_are_counted_not_listed():
    inputs = big_inputs(20_000)
    for rf in inputs.ranks:                  # probe 3 fails on every rank of every odd node
        if not rf.journal and (rf.rank // PPN) % 2:
            rf.base = list(rf.base)
            rf.base[3] = Case(PROBES[3], "failed", 0.0, "bad", "unknown", "")
    inputs.problems += [collect.Problem(f"/run/ranks/junit-r{r:05d}-h.xml", f"not well-formed XML (line 1, column {r})")
                        for r in range(3000)]
    rep = merge.merge(inputs, refs={}, site="x")
    page = html.page(rep)
    # 3,000 unusable files: counted by kind, listed up to the cap, folded.
    assert "3,000 input(s) could not be used" in page and "<p>3,000: not well-formed XML</p>" in page
    assert page.count("<li><code>/run/ranks/") == html.PROBLEMS_SHOWN and "<details><summary>the inputs" in page
    doc = Page()
    doc.feed(page)
    assert len(doc.node_rows) - 1 == html.NODES_SHOWN_MAX
    hidden = doc.ids["nodes-hidden"]
    assert "more failing node(s), not shown" in hidden and f"{PROBES[3]} on " in hidden
    assert len(page.encode()) < 2_000_000


def test_json_in_pieces_is_the_whole_document():
    rep = merge.merge(big_inputs(2_000), refs={}, site="x")       # 60,000 entries: the compact layout
    assert sum(r.size for r in rep.rows) > summary.PRETTY_JSON_MAX_ENTRIES
    pieces = list(summary.json_parts(rep))
    assert len(pieces) > 3
    whole = summary.to_json(summary.contract(rep))
    assert "".join(pieces) == whole
    doc = json.loads(whole)
    ecc = next(r for r in doc["results"] if r["probe"] == PROBES[4])
    assert ecc["counts"] == {"passed": 1992, "failed": 8}
    assert [x["rank"] for x in ecc["ranks"] if x["outcome"] == "failed"] == list(range(56, 64))
