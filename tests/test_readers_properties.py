"""The readers take any bytes: property-based tests over journals, JUnit, launch records, history.

Everything in a results tree is written by the image under test (see DESIGN.md's trust model). Each
example builds a launch directory holding one good rank file plus hostile inputs and drives it
through the real pipeline (`reports.pipeline.build` + `render`, the code `contprobe report` runs).
Properties, for every input:
- no traceback and no hang (an alarm guards each example; the adversarial trees run `contprobe
  report` as a child with a wall-clock timeout and an address-space limit);
- every unusable input is a named problem (its path on stderr) and the exit status is 3;
- what is readable is still reported (the good rank's probe, passed);
- the terminal, Markdown and JUnit outputs carry no raw ESC, C1 or bidi characters; the JUnit parses;
  report.json is strict JSON; a host secret reaches no output.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import resource
import secrets
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from contprobe.reports import pipeline
from contprobe.site import load

ROOT = Path(__file__).resolve().parents[1]
SITE = load("generic")
SECRET = "hf_" + secrets.token_hex(12)           # a host secret no output may carry
EXAMPLE_ALARM_S = 60                              # one example: generous, it only catches a hang
# Raw characters no human-facing output may carry: C0 but tab/newline, DEL, C1, bidi controls.
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
HOSTILE_TEXT = ["\x1b]0;pwned\x07", "\x1b[2J\x1b[H", "\x1b]52;c;ZWNobyBwd25lZA==\x07", "\x1b[32mverdict: PASSED\x1b[0m",
                "\x9b31m", "\u202eevil\u202c", "line\nverdict: PASSED", "a|b", "<script>x</script>",
                "[x](javascript:alert(1))", "\x00", "\ud800", f"HF_TOKEN={SECRET}", SECRET,
                "https://alice:hunter2pw@registry.example/x", "Authorization: Bearer abcdefghijkl",
                # masks that once broke the document they were put in (JSON escapes, XML markup)
                'X_TOKEN=a"b', "API_KEY=x\\", "\nbob:hunter2pw@proxy:3128", 'http://a":hunter2pw@x',
                f"<b>{SECRET}</b>", f"a_token={SECRET}&amp;"]
# The planted user:password pairs in their full shapes (a bare "x:hunter2pw" is no credential).
LEAKED_CREDENTIAL = re.compile(r'alice:hunter2pw@registry|bob:hunter2pw@proxy:3128|a(\\?"|&quot;|&#34;):hunter2pw@x')
SETTINGS = settings(max_examples=int(os.environ.get("CONTPROBE_HYPOTHESIS_EXAMPLES", "60")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])

# ---- strategies ----------------------------------------------------------------------------------
text = st.one_of(st.text(max_size=40), st.sampled_from(HOSTILE_TEXT))
numbers = st.one_of(st.integers(min_value=-2**70, max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([99999999999, -1, 0]))
scalars = st.one_of(st.none(), st.booleans(), numbers, text)
json_values = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                           st.dictionaries(text, kids, max_size=4)), max_leaves=12)


def dumps(obj) -> bytes:
    """JSON as a hostile writer would produce it: NaN/Infinity literals included."""
    return json.dumps(obj, allow_nan=True).encode("utf-8", "surrogatepass")


@st.composite
def journal_entry(draw) -> dict:
    entry = {"event": draw(st.one_of(st.sampled_from(["session", "start", "done"]), json_values)),
             "nodeid": draw(st.one_of(st.sampled_from(["test_env.py::test_ld_preload", "test_x.py::test_y[\n]"]),
                                      json_values)),
             "outcome": draw(st.one_of(st.sampled_from(["passed", "failed", "error", "skipped", "lost", "warning"]),
                                       json_values)),
             }
    for k in draw(st.lists(st.sampled_from(["probe", "message", "gotcha", "duration_s", "size", "launcher",
                                            "image", "metric.busbw_gbps", "metric.x"]), max_size=5)):
        entry[k] = draw(json_values)
    return entry


journal_lines = st.lists(st.one_of(journal_entry().map(dumps), json_values.map(dumps),
                                   st.binary(max_size=60),
                                   st.sampled_from([b"[" * 100000, b'{"a":' * 50000, b"\xff\xfe\xc0",
                                                    b'{"event":"session","size":99999999999}'])),
                         max_size=12).map(lambda ls: b"\n".join(ls))


def _xml_attr(s: str) -> str:
    return (s.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
            .replace("\n", "&#10;").replace("\x1b", "&#27;"))


@st.composite
def junit_doc(draw) -> bytes:
    """A JUnit file as pytest writes it, with hostile values, or garbage, or a structural attack."""
    kind = draw(st.sampled_from(["junit", "junit", "junit", "binary", "deep", "entities", "manycases"]))
    if kind == "binary":
        return draw(st.binary(max_size=200))
    if kind == "deep":
        return b"<testsuite>" + b"<a>" * 200000 + b"</a>" * 200000 + b"</testsuite>"
    if kind == "entities":   # billion laughs: expat must refuse the amplification
        ents = "".join(f'<!ENTITY e{i} "' + f"&e{i - 1};" * 10 + '">' for i in range(1, 10))
        return (f'<?xml version="1.0"?><!DOCTYPE t [<!ENTITY e0 "lol">{ents}]>'
                f"<testsuite><testcase name='&e9;'/></testsuite>").encode()
    if kind == "manycases":
        return b"<testsuite>" + b"<testcase name='x'/>" * 6000 + b"</testsuite>"
    props = "".join(f'<property name="{_xml_attr(k)}" value="{_xml_attr(v)}"/>'
                    for k, v in draw(st.lists(st.tuples(st.sampled_from(["rank", "size", "hostname", "image",
                                                                          "launcher", "command", "x"]),
                                                        text), max_size=5)))
    cases = []
    for _ in range(draw(st.integers(0, 4))):
        cprops = "".join(f'<property name="{_xml_attr(k)}" value="{_xml_attr(v)}"/>'
                         for k, v in draw(st.lists(st.tuples(st.sampled_from(["probe", "gotcha", "message", "fix",
                                                                               "metric.busbw_gbps"]), text),
                                                   max_size=4)))
        res = draw(st.sampled_from(["", "failure", "error", "skipped"]))
        body = (f'<{res} message="{_xml_attr(draw(text))}">{_xml_attr(draw(text))}</{res}>' if res else "")
        cases.append(f'<testcase classname="{_xml_attr(draw(text))}" name="{_xml_attr(draw(text))}" '
                     f'time="{_xml_attr(str(draw(numbers)))}"><properties>{cprops}</properties>{body}</testcase>')
    root = draw(st.sampled_from(["testsuite", "testsuites"]))
    inner = f"<testsuite><properties>{props}</properties>{''.join(cases)}</testsuite>"
    doc = f"<testsuites>{inner}</testsuites>" if root == "testsuites" else inner
    return doc.encode("utf-8", "surrogatepass")


@st.composite
def launch_record(draw) -> bytes:
    good = {"format": "contprobe-launch/1", "image": "/images/good.sif", "expected_ranks": 2, "hosts": ["h0"],
            "started_utc": "2026-01-02T03:04:05Z"}
    for k in draw(st.lists(st.sampled_from(["image", "expected_ranks", "hosts", "host_cases", "lost", "reruns",
                                            "argv", "command", "night", "duration_s", "exit_code"]), max_size=4)):
        good[k] = draw(json_values)
    return draw(st.one_of(st.just(dumps(good)), json_values.map(dumps), st.binary(max_size=80)))


history_doc = st.one_of(json_values.map(dumps), st.binary(max_size=80),
                        st.fixed_dictionaries({"verdict": text, "results": json_values,
                                               "context": json_values}).map(dumps),
                        st.fixed_dictionaries({"verdict": text, "context": json_values,
                                               "results": st.lists(st.dictionaries(
                                                   st.sampled_from(["probe", "outcome", "image", "night"]),
                                                   json_values), max_size=3)}).map(dumps))

# ---- a results tree and the pipeline over it ------------------------------------------------------
GOOD = ("<testsuites><testsuite name='pytest'><properties><property name='rank' value='0'/>"
        "<property name='size' value='2'/><property name='hostname' value='h0'/></properties>"
        "<testcase classname='test_good' name='test_readable' time='0.1'><properties>"
        "<property name='probe' value='good.readable'/></properties></testcase></testsuite></testsuites>")


def good_launch(d: Path, record: Optional[bytes] = None) -> Path:
    (d / "ranks").mkdir(parents=True)
    (d / "ranks" / "junit-r00000-h0.xml").write_text(GOOD)
    rec = {"format": "contprobe-launch/1", "image": "/images/good.sif", "expected_ranks": 2, "hosts": ["h0"],
           "started_utc": "2026-01-02T03:04:05Z"}
    (d / "launch.json").write_bytes(record if record is not None else json.dumps(rec).encode())
    return d


@contextlib.contextmanager
def alarm(seconds: int):
    def boom(*_):
        raise TimeoutError(f"the pipeline took over {seconds} s: a hang")
    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@contextlib.contextmanager
def host_secret():
    """The operator's environment holds a secret; redaction reads os.environ."""
    old = os.environ.get("HF_TOKEN")
    os.environ["HF_TOKEN"] = SECRET
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("HF_TOKEN", None)
        else:
            os.environ["HF_TOKEN"] = old


def pipeline_over(paths: List[str], out: Path, history: Optional[str] = None) -> Tuple[int, str, str, object]:
    """build + render in this process, as `contprobe report PATHS --out OUT` does: (exit, stdout, stderr, report)."""
    so, se = io.StringIO(), io.StringIO()
    with alarm(EXAMPLE_ALARM_S), host_secret(), contextlib.redirect_stdout(so), contextlib.redirect_stderr(se):
        rep, warnings = pipeline.build(paths, SITE, history=history, workers=1)
        pipeline.render(rep, SITE, pipeline.Outputs(out_dir=str(out)), "hostile", warnings)
    return rep.exit_code(), so.getvalue(), se.getvalue(), rep


def strict_json(text_: str):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(text_, parse_constant=refuse)


def check_outputs(out: Path, stdout: str, stderr: str) -> dict:
    """The output properties every example must keep; returns report.json."""
    for name, t in (("stdout", stdout), ("stderr", stderr), ("report.md", (out / "report.md").read_text())):
        m = UNSAFE.search(t)
        assert m is None, f"{name} carries a raw {m.group(0)!r}"
    doc = strict_json((out / "report.json").read_text())
    ET.parse(out / "junit.xml")          # merged JUnit parses (no XML-illegal character left)
    for t in [stdout, stderr] + [(out / n).read_text() for n in pipeline.OUT_FILES.values()]:
        assert SECRET not in t and not LEAKED_CREDENTIAL.search(t)
    # Nothing forges a verdict line: exactly one, and it is the last line of the table.
    assert len(re.findall(r"(?m)^verdict: ", stdout)) == 1, stdout[-2000:]
    return doc


def good_row_kept(doc: dict) -> None:
    rows = [r for r in doc["results"] if r["probe"] == "good.readable"]
    assert rows, "the readable rank file was not reported"
    assert any(x["rank"] == 0 and x["outcome"] == "passed" for x in rows[0]["ranks"])


def named(problem_path: Path, stderr: str) -> bool:
    return f"contprobe: incomplete: {problem_path}" in stderr


# ---- properties ----------------------------------------------------------------------------------
@SETTINGS
@given(journal=journal_lines)
def test_any_journal(tmp_path_factory, journal):
    d = good_launch(tmp_path_factory.mktemp("j") / "launch")
    (d / "ranks" / "partial-r00001-h1.jsonl").write_bytes(journal)
    rc, so, se, rep = pipeline_over([str(d)], d.parent / "out")
    doc = check_outputs(d.parent / "out", so, se)
    good_row_kept(doc)
    # A journal is a log: bad lines are skipped, never an error; rank 1 died, so it is lost.
    assert rc == (3 if rep.problems else 1), se
    assert 1 in {x["rank"] for x in doc["lost"]}


@SETTINGS
@given(junit=junit_doc())
def test_any_junit(tmp_path_factory, junit):
    d = good_launch(tmp_path_factory.mktemp("x") / "launch")
    bad = d / "ranks" / "junit-r00001-h1.xml"
    bad.write_bytes(junit)
    rc, so, se, rep = pipeline_over([str(d)], d.parent / "out")
    doc = check_outputs(d.parent / "out", so, se)
    good_row_kept(doc)
    problem_paths = {p.path for p in rep.problems}
    assert (rc == 3) == bool(problem_paths), (rc, se)
    for p in problem_paths:
        assert named(Path(p), se), p
    if str(bad) in problem_paths:   # unusable: rank 1 is lost, not silently dropped
        assert 1 in {x["rank"] for x in doc["lost"]}, doc["lost"]


@SETTINGS
@given(record=launch_record())
def test_any_launch_record(tmp_path_factory, record):
    d = good_launch(tmp_path_factory.mktemp("r") / "launch", record=record)
    rc, so, se, rep = pipeline_over([str(d)], d.parent / "out")
    doc = check_outputs(d.parent / "out", so, se)
    good_row_kept(doc)
    assert rc in (0, 1, 3)
    if any(p.path == str(d / "launch.json") for p in rep.problems):
        assert rc == 3 and named(d / "launch.json", se)
    # However the record was forged, the lost ranks it implies stay bounded by its schema.
    assert len(doc["lost"]) <= 1_000_000


@SETTINGS
@given(docs=st.lists(history_doc, min_size=1, max_size=4))
def test_any_history(tmp_path_factory, docs):
    base = tmp_path_factory.mktemp("h")
    d = good_launch(base / "launch")
    hist = base / "history"
    for i, data in enumerate(docs):
        night = hist / f"2026-01-0{i + 1}"
        night.mkdir(parents=True)
        (night / "report.json").write_bytes(data)
    rc, so, se, rep = pipeline_over([str(d)], base / "out", history=str(hist))
    doc = check_outputs(base / "out", so, se)
    good_row_kept(doc)
    assert rc in (0, 1)   # a bad history file is a warning, never a crash nor a lost night


@SETTINGS
@given(t=st.lists(text, max_size=6).map(" ".join))
def test_redaction_is_idempotent_and_keeps_json_strict(t):
    """Documents are redacted where they are made and again at the output boundary: the second
    pass must change nothing, and neither may break a JSON string."""
    from contprobe.inimage.redact import redact_output
    with host_secret():
        once = redact_output(t)
        assert redact_output(once) == once
        assert SECRET not in once
        doc = pipeline.redact_document(json.dumps({"m": t}), "json")
        strict_json(doc)
        assert SECRET not in doc


# ---- adversarial trees through `contprobe report` as a child process -------------------------------
REPORT_TIMEOUT_S = 120        # a bound on a hang, not a speed assertion (speed: ci/bench/bench_reliability.py)
MEMORY_LIMIT = 3 << 30        # address space of the report process


def report_child(*args: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    e = dict(env or os.environ)
    e["PYTHONPATH"] = str(ROOT)
    e["HF_TOKEN"] = SECRET
    return subprocess.run([sys.executable, "-m", "contprobe", "report", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=e, timeout=REPORT_TIMEOUT_S, preexec_fn=limit)


def plant_hostile_tree(d: Path, outside: Path) -> Dict[str, Path]:
    """Everything issue 9 lists, planted under one launch's results; returns what must be named."""
    ranks = d / "ranks"
    planted = {}
    os.mkfifo(ranks / "junit-r00001-fifo.xml")
    planted["fifo"] = ranks / "junit-r00001-fifo.xml"
    os.symlink("/dev/zero", ranks / "junit-r00002-zero.xml")
    planted["zero"] = ranks / "junit-r00002-zero.xml"
    os.symlink("/dev/zero", ranks / "partial-r00003-zero.jsonl")
    planted["zero_journal"] = ranks / "partial-r00003-zero.jsonl"
    for i in range(5):
        os.symlink(".", ranks / f"loop{i}")
    os.symlink(str(outside), ranks / "outside")
    (ranks / "junit-r00004-big.xml").write_bytes(b"<testsuite>" + b" " * (20 << 20) + b"</testsuite>")
    planted["big"] = ranks / "junit-r00004-big.xml"
    (ranks / "partial-r00005-size.jsonl").write_text(json.dumps({"event": "session", "size": 99999999999}) + "\n")
    (ranks / "junit-r00006-deep.xml").write_bytes(b"<testsuite>" + b"<a>" * 300000 + b"</a>" * 300000
                                                  + b"</testsuite>")
    planted["deep"] = ranks / "junit-r00006-deep.xml"
    forged = d / "ranks" / "9999-12-31"
    forged.mkdir()
    (forged / "launch.json").write_text(json.dumps({"image": "/images/victim.sif", "expected_ranks": 1}))
    planted["forged_record"] = forged / "launch.json"
    (forged / "junit-r00000-victim.xml").write_text(GOOD.replace("good.readable", "victim.everything"))
    planted["forged_rank"] = forged / "junit-r00000-victim.xml"
    return planted


@pytest.fixture
def outside_dir(tmp_path):
    o = tmp_path / "host-files"
    o.mkdir()
    (o / "junit-r00000-hostfile.xml").write_text(GOOD.replace("good.readable", "host.file.read"))
    return o


def test_hostile_tree_is_named_bounded_and_the_rest_reported(tmp_path, outside_dir):
    d = good_launch(tmp_path / "launch")
    planted = plant_hostile_tree(d, outside_dir)
    out = tmp_path / "out"
    res = report_child(str(d), "--out", str(out))
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert res.returncode == 3, res.stderr[-3000:]
    for what, p in planted.items():
        assert named(p, res.stderr), (what, res.stderr[-3000:])
    doc = check_outputs(out, res.stdout, res.stderr)
    good_row_kept(doc)
    probes = {r["probe"] for r in doc["results"]}
    assert "host.file.read" not in probes and "victim.everything" not in probes   # no link, no forgery
    assert doc["context"]["images"] == ["good.sif"]
    # The launch record says 2 ranks: the planted rank numbers are outside and counted as nothing.
    assert doc["context"]["ranks"] == 2


def test_claimed_world_size_is_capped_without_a_record(tmp_path):
    d = tmp_path / "plain"
    d.mkdir()
    (d / "junit-r00000-h0.xml").write_text(GOOD)
    (d / "partial-r00001-h1.jsonl").write_text(json.dumps({"event": "session", "size": 99999999999}) + "\n")
    res = report_child(str(d), "--json", "-")
    assert res.returncode == 3 and "claim a world size of 99999999999" in res.stderr, res.stderr[-2000:]
    assert len(strict_json(res.stdout)["lost"]) <= 64


def test_huge_failure_text_is_matched_on_an_excerpt(tmp_path):
    """A 200 MB failure text: over the file cap (a named problem); 15 MB under it: read, bounded."""
    d = good_launch(tmp_path / "launch")
    body = ("x" * 1000 + "\n") * (15 * 1024)
    (d / "ranks" / "junit-r00001-h1.xml").write_text(
        "<testsuite><testcase classname='test_a' name='test_b'><failure message='boom'>"
        + body + "</failure></testcase></testsuite>")
    with open(d / "ranks" / "partial-r00001-h1.jsonl", "wb") as fh:   # rank 1's journal: 200 MB
        fh.truncate(200 << 20)
    res = report_child(str(d), "--json", "-")
    assert "Traceback" not in res.stderr
    doc = strict_json(res.stdout)
    row = [r for r in doc["results"] if r["probe"] == "test_a.test_b"][0]
    assert row["outcome"] == "failed" and len(row.get("evidence", "")) <= 4000
    good_row_kept(doc)


def test_history_with_fifo_link_and_bad_json_is_only_warned_about(tmp_path):
    d = good_launch(tmp_path / "launch")
    hist = tmp_path / "hist"
    (hist / "2026-01-01").mkdir(parents=True)
    os.mkfifo(hist / "2026-01-01" / "report.json")
    os.symlink("/dev/zero", hist / "zero.json")
    os.symlink(".", hist / "loop")
    (hist / "nan.json").write_text('{"verdict": "passed", "results": [], "context": {"x": NaN}}')
    (hist / "deep.json").write_text("[" * 200000)
    (hist / "ctx.json").write_text('{"verdict": "passed", "results": [{"probe": "good.readable"}], "context": [1]}')
    res = report_child(str(d), "--history", str(hist), "--json", "-")
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert res.returncode == 1, res.stderr[-3000:]     # rank 1 of 2 is lost; history changes nothing
    for name in ("2026-01-01/report.json", "zero.json", "nan.json", "deep.json", "ctx.json"):
        assert f"--history {hist / name}" in res.stderr, (name, res.stderr)
    good_row_kept(strict_json(res.stdout))


def test_nan_metrics_never_reach_json(tmp_path):
    d = good_launch(tmp_path / "launch")
    (d / "ranks" / "partial-r00001-h1.jsonl").write_text(
        '{"event":"done","nodeid":"test_a.py::test_b","outcome":"passed","metric.x":NaN,"duration_s":1e999}\n')
    res = report_child(str(d), "--json", "-")
    strict_json(res.stdout)
    assert math.isfinite(max(r["duration_s"] for r in strict_json(res.stdout)["results"]))
