"""`contprobe explain`: every known failure in a log, root cause first, through the same engine as `run`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, clean_env
from contprobe.inimage import catalog

CORPUS = ROOT / "tests" / "corpus"
DRIVER_LOG = ("starting job on x3004c0s1b0n0\n"
              "[WARN] Kernel module nvidia_uvm is not loaded. Make sure the NVIDIA device driver is installed\n"
              "nvidia-container-cli: initialization error: nvml error: driver not loaded\n"
              "Error: mystery failure 42\n")


def explain(*args, stdin=None, env=None):
    return subprocess.run([sys.executable, "-m", "contprobe", "explain", *args], input=stdin,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env or clean_env(), cwd=str(ROOT))


@pytest.fixture
def driver_log(tmp_path):
    p = tmp_path / "job.o123"
    p.write_text(DRIVER_LOG)
    return p


def test_known_failures_root_cause_first_with_evidence_and_exit_1(driver_log, tmp_path):
    out = tmp_path / "e.json"
    p = explain(str(driver_log), "--json", str(out), "--site", "polaris")
    assert p.returncode == 1, p.stderr
    doc = json.loads(out.read_text())
    f = doc["files"][0]
    assert [x["gotcha"] for x in f["findings"]] == ["nvidia-driver-not-loaded", "nvidia-uvm-not-loaded"]
    assert f["findings"][1]["explained_by"] == "nvidia-driver-not-loaded"
    assert f["findings"][0]["evidence"] == [{"line": 3, "kind": "symptom",
                                             "text": "nvidia-container-cli: initialization error: nvml error: driver not loaded"}]
    g = catalog.get("nvidia-driver-not-loaded")
    assert f["findings"][0]["fix"] == g.fix.strip() and f["findings"][0]["source"] == g.source
    # What it did not recognise is said plainly, with the line.
    assert f["unrecognised"] == [{"line": 4, "text": "Error: mystery failure 42"}]
    # The table says the same.
    assert p.stdout.index("nvidia-driver-not-loaded") < p.stdout.index("nvidia-uvm-not-loaded")
    assert "line 3: nvidia-container-cli" in p.stdout and "not recognised" in p.stdout
    assert "line 4: Error: mystery failure 42" in p.stdout


def test_site_note_goes_with_the_fix(tmp_path):
    log = tmp_path / "pull.log"
    log.write_text("FATAL:   unable to Download Image: write /home/u/.apptainer/cache/library/sha256.1: "
                   "no space left on device\n")
    out = tmp_path / "e.json"
    p = explain(str(log), "--site", "polaris", "--json", str(out))
    assert p.returncode == 1, p.stderr
    x = json.loads(out.read_text())["files"][0]["findings"][0]
    assert x["gotcha"] == "cache-in-home" and "/local/scratch" in x["site_note"]
    assert "site (polaris): On Polaris" in p.stdout


def test_nothing_known_exits_0_and_says_so(tmp_path):
    log = tmp_path / "ok.log"
    log.write_text("x3004c0s1b0n0:1:2 [0] NCCL INFO NET/Socket : Using [0]hsn0:10.0.0.1<0>\nall good\n")
    p = explain(str(log))
    assert p.returncode == 0, p.stderr
    assert "no known failure recognised" in p.stdout and "no error-looking line either" in p.stdout


@pytest.mark.parametrize("args, what", [
    (["/no/such/log"], "no such file"),
    (["-", "-"], "only once"),
    (["--stage", "exec", "x"], "invalid choice"),
    (["-", "--json", "-", "--markdown", "-"], "only one output"),
])
def test_bad_usage_is_one_line_and_exit_2(args, what):
    p = explain(*args, stdin="")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and what in p.stderr, p.stderr
    assert "Traceback" not in p.stderr and not p.stdout


def test_a_directory_is_bad_usage(tmp_path):
    p = explain(str(tmp_path))
    assert p.returncode == 2 and "is a directory" in p.stderr


def test_stdin_and_json_to_stdout_table_to_stderr():
    p = explain("-", "--json", "-", stdin=DRIVER_LOG)
    assert p.returncode == 1
    doc = json.loads(p.stdout)
    assert doc["files"][0]["path"] == "<stdin>" and doc["known"] == 2
    assert "nvidia-driver-not-loaded" in p.stderr


def test_outputs_are_redacted_and_escaped(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("pip: Could not fetch via https://alice:s3cretPW@proxy.example:3128 "
                   "x509: certificate signed by unknown authority \x1b]0;pwned\x07 <script>|</script>\n")
    md, js = tmp_path / "x.md", tmp_path / "x.json"
    p = explain(str(log), "--markdown", str(md), "--json", str(js))
    assert p.returncode == 1, p.stderr
    for text in (p.stdout, md.read_text(), js.read_text()):
        assert "s3cretPW" not in text and "<redacted>" in text
        assert "\x1b" not in text and "\x07" not in text
    assert "<script>" not in md.read_text() and "\\<script\\>" in md.read_text()
    assert "\\x1b" in p.stdout
    assert json.loads(js.read_text())["files"][0]["findings"][0]["gotcha"] == "proxy-ca-missing"


def test_grep_prefilter_and_python_reader_give_the_same_document(tmp_path):
    """explain uses grep -F to find candidate lines when grep is there; without it, Python does: same answer."""
    logs = [str(CORPUS / p) for p in ("nccl/013-shm-kubeflow.txt", "runtime/003-pyxis-enroot-userns-enospc.txt",
                                      "driver/028-enroot-uvm-not-loaded-no-driver.txt")]
    with_grep = explain(*logs, "--json", "-")
    no_grep = explain(*logs, "--json", "-", env=clean_env(PATH=str(tmp_path)))
    assert with_grep.returncode == no_grep.returncode == 1, no_grep.stderr
    assert json.loads(with_grep.stdout) == json.loads(no_grep.stdout)


def test_run_and_explain_give_the_same_answer_for_the_same_text(tmp_path):
    """A launch log that `run` diagnoses with catalog.match(log, 'launch') gets the same root cause here."""
    for path in sorted(CORPUS.glob("*/*.txt"))[::9]:
        text = path.read_text().partition("\n---\n")[2]
        log = tmp_path / "launch.log"
        log.write_text(text)
        p = explain(str(log), "--stage", "launch", "--json", "-")
        found = json.loads(p.stdout)["files"][0]["findings"]
        assert (found[0]["gotcha"] if found else catalog.UNKNOWN) == catalog.match(text, "launch"), path


def test_grep_expressions_select_every_line_that_matters(tmp_path):
    """The superset property the grep reader relies on, over every line of the corpus (and at every stage's
    rule set: explain --stage narrows the rules): every line a pattern matches, or that looks like an error,
    is selected by grep."""
    import re
    import shutil
    from contprobe.inimage import scan
    lines = [line for p in sorted(CORPUS.glob("*/*.txt")) for line in p.read_text().splitlines()]
    data = ("\n".join(lines) + "\n").encode()
    log = tmp_path / "all.txt"
    log.write_bytes(data)
    for stage in (None, *catalog.STAGES):
        rules = catalog.rules(stage)
        regexes = [re.compile(p, re.IGNORECASE) for p in rules.patterns] + [scan.ERROR_LOOKING]
        want = {n for n, line in enumerate(lines, 1) if any(r.search(line) for r in regexes)}
        assert len(want) > 300
        argv = [shutil.which("grep"), "-a", "-n", "-i", "-E"]
        for e in scan.grep_expressions(rules):
            argv += ["-e", e]
        p = subprocess.run(argv + [str(log)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={"LC_ALL": "C"})
        assert p.returncode == 0 and not p.stderr, p.stderr
        got = {int(x.split(b":", 1)[0]) for x in p.stdout.splitlines()}
        assert want <= got, [lines[n - 1] for n in sorted(want - got)][:5]


@pytest.mark.parametrize("pattern, expr", [
    (r"(?:a|b)\d+ failed: \[x\]", r"(a|b)[0-9]+ failed: \[x\]"),
    (r"can\'t open .*?\.sif", r"can't open .*?\.sif"),
    (r"[^\s:]+:ro\b", None),                 # \s inside a bracket means something else to grep
    (r"--writable(?!-tmpfs)", None),         # no lookaround in ERE
    (r"[]a]x", "[]a]x"),
])
def test_ere_translation(pattern, expr):
    from contprobe.inimage import scan
    assert scan.ere(pattern) == expr
