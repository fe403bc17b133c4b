"""`contprobe report` on real per-rank JUnit files written by the probe suite.

Inputs come from real pytest runs of contprobe/inimage/probes (PMI_RANK/PMI_SIZE fake the rank); to get
many ranks on many hosts, real files are cloned with only their identity (rank, host, image)
rewritten, the way a launch of the same image on other nodes would write them.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, Optional

import junitparser
import junitparser as _jp
import pytest

from contprobe import textsafe
from contprobe.reports import collect

ROOT = Path(__file__).resolve().parents[1]
PROBES = ROOT / "contprobe" / "inimage" / "probes"


def clean_env(**extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "PALS_", "OMPI_", "SLURM_", "HYDRA_", "MPI_LOCALRANKID", "PMIX_",
                                "APPTAINER_", "SINGULARITY_"))}
    env.update(extra)
    return env


def probe_run(out: Path, *args: str, **env: str) -> Path:
    """One real run of the probe suite; returns the rank file it wrote."""
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.glob("junit-r*.xml"))
    subprocess.run([sys.executable, "-m", "pytest", str(PROBES), "-q", "-p", "no:cacheprovider",
                    "--results-dir", str(out), "-m", "env or binds or gpu", *args],
                   env=clean_env(**env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300, cwd=out)
    [new] = set(out.glob("junit-r*.xml")) - before
    return new


@pytest.fixture(scope="session")
def real(tmp_path_factory):
    """Real rank files: a passing one, a failing one (missing bind), both as rank 0 of 1."""
    d = tmp_path_factory.mktemp("real")
    ok = probe_run(d / "ok")
    bad = probe_run(d / "bad", "--expect-bind", "/nonexistent-contprobe")
    return {"ok": ok, "bad": bad}


def clone(src: Path, dst_dir: Path, rank: int, host: str, size: int, image: Optional[str] = None,
          started: Optional[str] = None, edit=None) -> Path:
    """A copy of a real rank file as rank `rank` of `size` on `host` (and image)."""
    tree = ET.parse(src)
    props = tree.getroot().find("testsuite/properties")
    for p in props:
        name = p.get("name")
        if name == "rank":
            p.set("value", str(rank))
        elif name == "size":
            p.set("value", str(size))
        elif name == "hostname":
            p.set("value", host)
        elif name == "image" and image:
            p.set("value", image)
        elif name == "started_utc" and started:
            p.set("value", started)
    if edit:
        edit(tree.getroot())
    dst_dir.mkdir(parents=True, exist_ok=True)
    path = dst_dir / f"junit-r{rank:05d}-{host}.xml"
    tree.write(path, encoding="utf-8", xml_declaration=True)
    return path


def launch(src_of, d: Path, ranks: int, hosts: int, image: str = "img.sif", **kw) -> Path:
    """ranks rank files spread over hosts in blocks; src_of(rank, host) picks the real file to clone."""
    ppn = max(1, ranks // hosts)
    for r in range(ranks):
        host = f"x3001c0s{r // ppn}b0n0"
        clone(src_of(r, host), d, r, host, ranks, image=image, **kw)
    return d


def fail_case(test_name: str, message: str):
    """Edit: the real testcase `test_name` fails, as pytest writes a failure."""
    def edit(root):
        for tc in root.iter("testcase"):
            if tc.get("name") == test_name:
                ET.SubElement(tc, "failure", message=message).text = message
    return edit


LEAK = fail_case("test_ld_preload", "LD_PRELOAD leaked into the container")


def report(*args: str, env: Optional[Dict[str, str]] = None, cwd: Optional[str] = None):
    return subprocess.run([sys.executable, "-m", "contprobe", "report", *map(str, args)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env or clean_env(), cwd=cwd, timeout=300)


def result(doc: dict, probe: str, image: Optional[str] = None) -> dict:
    [r] = [r for r in doc["results"] if r["probe"] == probe and (image is None or r["image"] == image)]
    return r


# ---- the reader ------------------------------------------------------------------------------
def test_fast_reader_agrees_with_junitparser(real):
    """The bulk reader says what junitparser's object model says about the same real files."""
    for path in real.values():
        _, kind, rf = collect.read_rank_file(str(path))
        assert kind == "ok"
        cases = [c for suite in _jp.JUnitXml.fromfile(str(path)) for c in suite]
        assert [c.name for c in cases] and len(cases) == len(rf.cases)
        for mine, theirs in zip(rf.cases, cases):
            props = {p.name: p.value for p in (theirs.child(_jp.Properties) or [])}
            assert mine.probe == props["probe"]
            assert mine.duration_s == float(theirs.time or 0.0)
            kinds = {type(r).__name__.lower() for r in theirs.result}
            assert (mine.outcome == "failed") == ("failure" in kinds)
            assert (mine.outcome == "skipped") == ("skipped" in kinds)
        assert any(c.outcome == "failed" for c in rf.cases) == (path == real["bad"])


# ---- whole runs ------------------------------------------------------------------------------
def test_real_ranks_collapse_expand_and_lost(real, tmp_path):
    # Ranks 0 and 3 of 4 from real runs: 1 and 2 never wrote anything.
    d = tmp_path / "launch"
    probe_run(d, PMI_RANK="0", PMI_SIZE="4")
    probe_run(d, "--expect-bind", "/nonexistent-contprobe", PMI_RANK="3", PMI_SIZE="4")
    res = report(d, "--json", tmp_path / "r.json")
    assert res.returncode == 1, res.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["verdict"] == "failed"
    assert sorted(x["rank"] for x in doc["lost"]) == [1, 2]
    assert all(x["gotcha"] == "rank-lost" for x in doc["lost"])
    r = result(doc, "binds.expected[/nonexistent-contprobe]")
    assert r["gotcha"] == "bind-missing" and r["fix"].startswith("Bind each file system")
    assert {x["rank"]: x["outcome"] for x in r["ranks"]} == {3: "failed", 1: "lost", 2: "lost"}
    assert "rank 1 on " in res.stdout and "bind-missing" in res.stdout and "Gotchas hit" in res.stdout
    assert "failed on " in res.stdout and " r3" in res.stdout


def test_all_agree_collapses_and_disagreement_names_hosts(real, tmp_path):
    d = launch(lambda r, h: real["ok"], tmp_path / "ok", ranks=8, hosts=2)
    res = report(d)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "8/8 passed" in res.stdout and "verdict: PASSED" in res.stdout
    # One host's ranks fail: the row expands and names that host and its ranks only.
    d2 = tmp_path / "mixed"
    for r in range(12):
        host = f"x3001c0s{r // 4}b0n0"
        clone(real["ok"], d2, r, host, 12, edit=LEAK if host == "x3001c0s1b0n0" else None)
    res = report(d2, "--html", tmp_path / "p.html")
    assert res.returncode == 1
    assert "8/12 passed, 4 failed" in res.stdout and "failed on x3001c0s1b0n0 r4-7\n" in res.stdout
    assert "x3001c0s0b0n0 r" not in res.stdout and "x3001c0s2b0n0 r" not in res.stdout
    assert "Hosts that stand out:" in res.stdout and "x3001c0s1b0n0:" in res.stdout
    html = (tmp_path / "p.html").read_text()
    assert "<tr class='outlier'><th>x3001c0s1b0n0</th>" in html
    assert "<tr class='outlier'><th>x3001c0s0b0n0</th>" not in html


def test_expect_ranks_names_missing(real, tmp_path):
    d = launch(lambda r, h: real["ok"], tmp_path / "l", ranks=4, hosts=1)
    for r in (1, 2):
        next(d.glob(f"junit-r{r:05d}-*.xml")).unlink()
    res = report(d, "--expect-ranks", "6", "--json", "-")
    assert res.returncode == 1
    doc = json.loads(res.stdout)
    assert sorted(x["rank"] for x in doc["lost"]) == [1, 2, 4, 5]
    assert "rank 4 on" in res.stderr and "rank 5 on" in res.stderr  # the table goes to stderr with --json -
    assert result(doc, "env.ld_preload")["counts"] == {"passed": 2, "lost": 4}


def test_unusable_inputs_are_named_and_the_rest_reported(real, tmp_path):
    d = launch(lambda r, h: real["ok"], tmp_path / "night", ranks=4, hosts=1)
    truncated = d / "junit-r00002-x3001c0s0b0n0.xml"
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])           # killed while writing
    (d / "pom.xml").write_text("<project><modelVersion>4.0.0</modelVersion></project>")
    (d / "junit-r00009-empty.xml").write_text("")
    shutil.copy(d / "junit-r00001-x3001c0s0b0n0.xml", d / "copy-of-rank1.xml")
    (tmp_path / "empty-dir").mkdir()
    res = report(d, tmp_path / "empty-dir", "--json", tmp_path / "r.json")
    assert res.returncode == 3, res.stderr
    err = res.stderr
    assert f"{truncated}: not well-formed XML" in err and "killed while writing" in err
    assert f"{d / 'pom.xml'}: not a JUnit file (root element <project>" in err
    assert "junit-r00009-empty.xml: empty file" in err
    assert f"{d / 'copy-of-rank1.xml'}: duplicate of {d / 'junit-r00001-x3001c0s0b0n0.xml'}" in err
    assert f"{tmp_path / 'empty-dir'}: no JUnit" in err
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["context"]["incomplete"] is True and len(doc["incomplete"]) == 5
    # Every readable rank is still there; the truncated one is lost with the reason.
    r = result(doc, "env.ld_preload")
    assert r["counts"] == {"passed": 3, "lost": 2}
    assert [(x["rank"], "unreadable" in x["reason"]) for x in doc["lost"]] == [(2, True), (9, True)]
    assert "INCOMPLETE" in res.stdout


def test_bad_usage_is_one_line_exit_2(tmp_path):
    for args in ([tmp_path / "nope"], [tmp_path, "--expect-ranks", "0"], [tmp_path, "--site", "nowhere"],
                 [tmp_path, "--baseline", tmp_path / "missing.json"]):
        res = report(*args)
        assert res.returncode == 2, (args, res.stderr)
        assert res.stderr.count("\n") == 1 and res.stderr.startswith("contprobe: error:"), res.stderr
        assert "Traceback" not in res.stderr
    (tmp_path / "junk.json").write_text("{not json")
    res = report(tmp_path, "--baseline", tmp_path / "junk.json")
    assert res.returncode == 2 and "junk.json: not valid JSON" in res.stderr


def test_launch_json_layout_of_contprobe_run(real, tmp_path):
    """contprobe run writes OUT/launch.json, OUT/ranks/*.xml and OUT/merged-junit.xml."""
    out = tmp_path / "run"
    launch(lambda r, h: real["bad"] if r == 0 else real["ok"], out / "ranks", ranks=3, hosts=1,
           image="/soft/containers/pytorch.sif")
    (out / "merged-junit.xml").write_text("<testsuites name='contprobe'><testsuite name='x'/></testsuites>")
    (out / ".harness").mkdir()
    (out / ".harness" / "stray.xml").write_text("<nope/>")
    meta = {"command": "apptainer exec --nv /soft/containers/pytorch.sif python3 -m pytest",
            "argv": [], "image": "/soft/containers/pytorch.sif", "expected_ranks": 4,
            "hosts": ["x3001c0s0b0n0", "x3001c0s1b0n0"],
            "lost": [{"rank": 3, "host": "x3001c0s1b0n0", "reason": "launch exit code 137"}],
            "reruns": [{"probes": ["binds.expected[/nonexistent-contprobe]"], "change": "-B /nonexistent-contprobe",
                        "finding": "the bind was missing", "outcome": "passed",
                        "command": "apptainer exec -B /nonexistent-contprobe ...", "exit_code": 0}],
            "started_utc": "2025-03-04T02:00:00Z", "duration_s": 12.5}
    (out / "launch.json").write_text(json.dumps(meta))
    res = report(out, "--json", tmp_path / "r.json", "--markdown", tmp_path / "r.md", "--html", tmp_path / "r.html")
    assert res.returncode == 1, res.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["context"]["images"] == ["pytorch.sif"] and doc["context"]["night"] == "2025-03-04"
    assert [(x["rank"], x["host"], x["reason"]) for x in doc["lost"]] == [(3, "x3001c0s1b0n0", "launch exit code 137")]
    assert result(doc, "env.ld_preload")["counts"] == {"passed": 3, "lost": 1}   # merged-junit.xml not counted
    [ln] = doc["launches"]
    assert ln["command"] == meta["command"] and ln["expected_ranks"] == 4 and ln["reruns"] == meta["reruns"]
    md = (tmp_path / "r.md").read_text()
    assert textsafe.md_cell(meta['command']) in md and "| binds.expected\\[/nonexistent-contprobe\\]" in md
    html = (tmp_path / "r.html").read_text()
    assert meta["command"] in html and "the bind was missing" in html


def _set_case_prop(probe: str, name: str, value: str):
    def edit(root):
        for tc in root.iter("testcase"):
            props = tc.find("properties")
            if any(p.get("name") == "probe" and p.get("value") == probe for p in props):
                ET.SubElement(props, "property", name=name, value=value)
    return edit


def test_perf_reference_from_site_profile(real, tmp_path):
    sites = tmp_path / "sites"
    sites.mkdir()
    (sites / "testsite.toml").write_text('name = "testsite"\n[gpus]\nper_node = 4\n'
                                         '[perf."env.ld_preload"]\nfake_gbps = [10.0, 0.2]\n')
    d = tmp_path / "l"
    clone(real["ok"], d, 0, "x3001c0s0b0n0", 2, edit=_set_case_prop("env.ld_preload", "metric.fake_gbps", "9.5"))
    clone(real["ok"], d, 1, "x3001c0s1b0n0", 2, edit=_set_case_prop("env.ld_preload", "metric.fake_gbps", "5"))
    env = clean_env(CONTPROBE_SITES=str(sites))
    res = report(d, "--site", "testsite", "--json", tmp_path / "r.json", "--junit", tmp_path / "j.xml", env=env)
    assert res.returncode == 1, res.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    r = result(doc, "env.ld_preload")
    assert r["outcome"] == "failed" and r["gotcha"] == "perf-regression"
    assert r["message"] == "failed on 1/2 ranks: fake_gbps 5 below reference 10 - 20% (ratio 0.50)"
    [p] = r["perf"]
    assert (p["value"], p["median"], p["reference"], p["ratio"], p["ok"]) == (5.0, 7.25, 10.0, 0.5, False)
    assert [b["rank"] for b in p["below"]] == [1]
    assert "failed on x3001c0s1b0n0 r1" in res.stdout and "ratio 0.50" in res.stdout
    # Without the site's reference the same files pass.
    assert report(d, "--site", "generic", env=env).returncode == 0


def test_merged_junit_is_a_test_report_and_never_an_input(real, tmp_path):
    d = tmp_path / "l"
    for r in range(4):
        clone(real["ok"], d, r, f"h{r // 2}", 4, image="a.sif", edit=LEAK if r == 1 else None)
    out = tmp_path / "out"
    assert report(d, "--out", out).returncode == 1
    xml = junitparser.JUnitXml.fromfile(str(out / "junit.xml"))
    assert xml.name == "contprobe-report"
    [suite] = list(xml)
    assert suite.name == "a.sif" and suite.failures == 1
    cases = {c.name: c for c in suite}
    [res] = cases["env.ld_preload"].result
    assert isinstance(res, junitparser.Failure) and res.type == "unknown"
    assert res.message.startswith("3/4 passed, 1 failed: [unknown] LD_PRELOAD leaked")
    assert "failed on h0 r1" in res.text and "fix: Read the evidence" in res.text
    assert cases["env.user_site"].result == []
    assert isinstance(cases["gpu.count"].result[0], junitparser.Skipped)
    for name in ("index.html", "report.json", "report.md"):
        assert (out / name).stat().st_size > 0
    # A later report over the results and the report directory counts every rank once.
    shutil.copytree(out, d / "report-copy")
    res = report(d, "--json", "-")
    assert res.returncode == 1 and json.loads(res.stdout)["context"]["ranks"] == 4


def test_images_nights_baseline_and_history(real, tmp_path):
    """Three nights of four images: new failure, fixed, still failing (since when), flaky."""
    root = tmp_path / "nightly"
    plan = {"a.sif": "PPF",      # new failure tonight
            "b.sif": "FFP",      # fixed tonight
            "c.sif": "PFF",      # still failing since night 2
            "d.sif": "FPF"}      # flaky
    nights = ["2025-01-01", "2025-01-02", "2025-01-03"]
    for i, night in enumerate(nights):
        for img, seq in plan.items():
            launch(lambda r, h: real["ok"], root / night / "results" / img.split(".")[0], 2, 1, image=img,
                   started=f"{night}T02:00:00Z",
                   edit=LEAK if seq[i] == "F" else None)
        if i < 2:  # earlier nights have their report JSON where ci/nightly.sh leaves it
            (root / night / "report").mkdir()
            assert report(root / night / "results", "--json", root / night / "report" / "report.json").returncode == 1
    tonight = root / nights[2] / "results"
    res = report(tonight, "--baseline", root / nights[1] / "report" / "report.json", "--history", root,
                 "--json", tmp_path / "r.json", "--html", tmp_path / "r.html")
    assert res.returncode == 1, res.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    change = {r["image"]: (r.get("change"), r.get("since")) for r in doc["results"] if r["probe"] == "env.ld_preload"}
    assert change == {"a.sif": ("new", "2025-01-03"), "b.sif": ("fixed", None),
                      "c.sif": ("still-failing", "2025-01-02"), "d.sif": ("flaky", "2025-01-03")}
    assert result(doc, "env.ld_preload", "a.sif")["gotcha"] == "unknown"
    b = doc["baseline"]
    assert [(i["image"], i["probe"]) for i in b["new"]] == [("a.sif", "env.ld_preload")]
    assert [i["image"] for i in b["fixed"]] == ["b.sif"] and [i["image"] for i in b["flaky"]] == ["d.sif"]
    assert b["previous"] == ["2025-01-02"] and b["nights"] == nights
    assert doc["context"]["images"] == ["a.sif", "b.sif", "c.sif", "d.sif"]
    assert "still-failing since 2025-01-02" in res.stdout and "new failures: 1" in res.stdout
    html = (tmp_path / "r.html").read_text()
    assert "Images × probes" in html and "<tr><th>a.sif</th>" in html and "flaky" in html
    # Rank files of all three nights at once: tonight is the report, earlier nights its history.
    res = report(root, "--json", "-")
    doc = json.loads(res.stdout)
    assert doc["context"]["night"] == "2025-01-03" and doc["context"]["nights"] == nights
    assert {r["image"]: r["outcome"] for r in doc["results"] if r["probe"] == "env.ld_preload"} == \
        {"a.sif": "failed", "b.sif": "passed", "c.sif": "failed", "d.sif": "failed"}


def test_secrets_never_leave(real, tmp_path):
    d = tmp_path / "l"
    clone(real["bad"], d, 0, "h0", 1, edit=_set_case_prop(
        "binds.expected[/nonexistent-contprobe]", "message", "pull from https://alice:hunter2@registry.example/x"))
    # the first property wins, so put ours first
    tree = ET.parse(next(d.glob("*.xml")))
    for tc in tree.getroot().iter("testcase"):
        props = tc.find("properties")
        mine = [p for p in props if p.get("value", "").startswith("pull from")]
        for p in mine:
            props.remove(p)
            props.insert(0, p)
    tree.write(next(d.glob("*.xml")))
    out = tmp_path / "out"
    res = report(d, "--out", out)
    texts = [res.stdout] + [(out / n).read_text() for n in ("index.html", "report.json", "report.md", "junit.xml")]
    assert all("hunter2" not in t for t in texts)
    assert all("<redacted>@registry.example" in t or "&lt;redacted&gt;@registry.example" in t for t in texts)


def test_html_is_self_contained(real, tmp_path):
    d = launch(lambda r, h: real["bad"] if r == 0 else real["ok"], tmp_path / "l", 2, 2)
    assert report(d, "--html", tmp_path / "p.html").returncode == 1
    html = (tmp_path / "p.html").read_text()
    assert "<script" not in html and " src=" not in html and "@import" not in html and "url(" not in html
    assert "default-src 'none'" in html
    assert "binds.expected[/nonexistent-contprobe]" in html and "Bind each file system you use" in html


def test_parallel_reading_equals_serial(real, tmp_path):
    d = launch(lambda r, h: real["bad"] if r % 7 == 0 else real["ok"], tmp_path / "l", 120, 30)
    (d / "junit-r00200-broken.xml").write_text("<testsuites><testsuite")
    files = [(p, e) for p, e, _ in collect.discover([str(d)]).rank_files]
    serial = collect.read_many(files, workers=1)
    parallel = collect.read_many(files, workers=2)
    assert [(p, k, getattr(x, "cases", x), getattr(x, "context", None)) for p, k, x in serial] == \
        [(p, k, getattr(x, "cases", x), getattr(x, "context", None)) for p, k, x in parallel]
    assert sum(k == "error" for _, k, _ in parallel) == 1


def test_rank_that_died_is_lost_and_keeps_its_journal(tmp_path):
    """Two real ranks; rank 1 'dies' before pytest writes its JUnit: only its journal is left."""
    d = tmp_path / "launch"
    for rank in (0, 1):
        probe_run(d, "--expect-bind", "/nonexistent-contprobe", PMI_RANK=str(rank), PMI_SIZE="2")
    [junit1] = d.glob("junit-r00001-*.xml")
    junit1.unlink()
    [journal] = d.glob("partial-r00001-*.jsonl")
    with open(journal, "a") as fh:                      # it was in the middle of a probe
        fh.write('{"event": "start", "nodeid": "test_gpu.py::test_ecc"}\n')
    res = report(d, "--json", "-")
    assert res.returncode == 1, res.stderr               # lost rank: failed, not "incomplete"
    doc = json.loads(res.stdout)
    assert [(l["rank"], l["gotcha"]) for l in doc["lost"]] == [(1, "rank-lost")]
    bind = result(doc, "binds.expected[/nonexistent-contprobe]")
    assert bind["outcome"] == "failed" and {r["rank"] for r in bind["ranks"]} == {0, 1}
    ecc = result(doc, "gpu.ecc")                          # the probe rank 1 died in
    assert {(r["rank"], r["outcome"]) for r in ecc["ranks"]} >= {(1, "error")}


def test_advice_is_a_warning_not_a_failure(real, tmp_path):
    """A cache in $HOME with room to spare is advice: verdict passed (exit 0), failed only under --strict."""
    out = tmp_path / "run"
    launch(lambda r, h: real["ok"], out / "ranks", ranks=1, hosts=1)
    meta = {"command": "apptainer exec img.sif python3", "argv": [], "image": "img.sif", "expected_ranks": 1,
            "hosts": ["n1"], "started_utc": "2025-03-04T02:00:00Z", "duration_s": 1.0,
            "host_cases": [{"probe": "host.cache_dirs", "outcome": "warning", "duration_s": 0.0,
                            "message": "APPTAINER_CACHEDIR unset: /home/u/.apptainer/cache is on $HOME",
                            "gotcha": "cache-in-home", "fix": "Point cache and temp at node-local scratch"}]}
    (out / "launch.json").write_text(json.dumps(meta))
    res = report(out, "--json", tmp_path / "r.json", "--junit", tmp_path / "r.xml")
    assert res.returncode == 0, res.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["verdict"] == "passed" and result(doc, "host.cache_dirs")["outcome"] == "warning"
    case = [c for c in ET.parse(tmp_path / "r.xml").iter("testcase") if c.get("name") == "host.cache_dirs"][0]
    assert not [c for c in case if c.tag in ("failure", "error", "skipped")]      # a passed testcase ...
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["warning"] == "cache-in-home" and "scratch" in props["fix"]       # ... that says why
    assert report(out, "--strict").returncode == 1                                 # the publish gate


def test_cache_check_warns_on_advice_and_fails_only_when_space_is_short(tmp_path, monkeypatch):
    from contprobe.checks import HostOptions, storage
    monkeypatch.setenv("HOME", str(tmp_path))
    opts = HostOptions(pulls=True)
    advice = storage.check_cache_dirs(opts, env={})
    assert (advice.outcome, advice.gotcha) == ("warning", "cache-in-home") and "$HOME" in advice.message
    monkeypatch.setattr(storage, "MIN_FREE_GB", 1e12)
    short = storage.check_cache_dirs(opts, env={})
    assert (short.outcome, short.gotcha) == ("failed", "cache-in-home") and "GB free" in short.message
    assert storage.check_cache_dirs(HostOptions(), env={}).outcome == "passed"      # no pull, no advice


@pytest.mark.parametrize("runtime", ["   ", "apptainer", "apptainer 1.4.5 extra words"])
def test_a_launch_record_runtime_of_any_shape_renders(real, tmp_path, runtime):
    """A record copied from elsewhere may hold any string: a blank runtime crashed the table."""
    out = tmp_path / "run"
    launch(lambda r, h: real["ok"], out / "ranks", ranks=1, hosts=1)
    (out / "launch.json").write_text(json.dumps({"image": "/x/img.sif", "expected_ranks": 1, "runtime": runtime}))
    res = report(out)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    assert ("runtime=apptainer" in res.stdout) == bool(runtime.strip())
