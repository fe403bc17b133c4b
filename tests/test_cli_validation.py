"""Every numeric flag and output path is checked before anything starts: one line on stderr, exit 2.

Numbers must be finite and positive (nan, inf, 0 or -1 would disable a timeout or start nothing),
worker counts are capped at the CPUs, `-` is stdout for every document, and an output path that is
a directory, lies under a file, is a link, a FIFO or cannot be written is refused up front.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.conftest import OPT_PYTHON, clean_env, run_cli

PY = OPT_PYTHON if os.path.exists(OPT_PYTHON) else None
FAST = ["-m", "env", "-k", "ld_preload"]   # a doctor run of a quarter second


def one_line_usage_error(res, *needles: str) -> None:
    assert res.rc == 2, res
    assert "Traceback" not in res.err, res
    assert res.err.count("\n") == 1 and res.err.startswith("contprobe: error:"), res
    for n in needles:
        assert n in res.err, res


def cli(*args, cwd=None, user=None):
    return run_cli([str(a) for a in args], python=PY or "python3", cwd=cwd, timeout=120, user=user)


@pytest.fixture
def an_image(tmp_path):
    """A file that exists where an image is expected: numbers are checked before the image is."""
    p = tmp_path / "img.sif"
    p.write_bytes(b"not used")
    return p


@pytest.fixture
def results(tmp_path):
    d = tmp_path / "results"
    d.mkdir()
    (d / "junit-r00000-h0.xml").write_text(
        "<testsuite><properties><property name='rank' value='0'/></properties>"
        "<testcase classname='test_a' name='test_b'/></testsuite>")
    return d


BAD_NUMBERS = ["nan", "inf", "-1", "0"]
ODD_NUMBERS = ["-inf", "1e400", "abc", "", "0x10"]
NUMERIC = [  # (command builder, flag)
    ("doctor", "--timeout"), ("doctor", "--probe-timeout"),
    ("run", "--timeout"), ("run", "--grace"), ("run", "--probe-timeout"), ("run", "--ranks"), ("run", "--ppn"),
    ("validate", "--timeout"), ("validate", "--grace"),
    ("build-check", "--timeout"), ("nightly", "--timeout"), ("nightly", "--jobs"), ("nightly", "--nodes-per-image"),
    ("report", "--expect-ranks"), ("report", "--workers"), ("run", "--expect-ranks"),
]


def command(name: str, an_image: Path, results: Path) -> list:
    return {"doctor": ["doctor", *FAST], "run": ["run", an_image], "validate": ["validate", an_image],
            "build-check": ["build-check", "--base", an_image], "nightly": ["nightly", an_image.parent],
            "report": ["report", results]}[name]


@pytest.mark.parametrize("name,flag,value", [(n, f, v) for n, f in NUMERIC for v in BAD_NUMBERS
                                              if not (n == "run" and f == "--expect-ranks" and v == "0")])
def test_numbers_must_be_finite_and_positive(name, flag, value, an_image, results, tmp_path):
    res = cli(*command(name, an_image, results), f"{flag}={value}", cwd=tmp_path)
    one_line_usage_error(res, flag)
    assert not (tmp_path / "contprobe-results").exists()   # nothing started


@pytest.mark.parametrize("value", ODD_NUMBERS)
@pytest.mark.parametrize("flag", ["--timeout", "--grace", "--ranks"])
def test_odd_numbers(flag, value, an_image, tmp_path):
    one_line_usage_error(cli("run", an_image, f"{flag}={value}", cwd=tmp_path), flag)


def test_workers_are_capped_at_the_cpus(results):
    cpus = len(os.sched_getaffinity(0))
    one_line_usage_error(cli("report", results, "--workers", cpus + 1), "--workers", f"only {cpus} CPUs")
    assert cli("report", results, "--workers", cpus).rc == 0


@pytest.mark.parametrize("expr_flag,expr", [("-m", "env and ("), ("-k", "a and"), ("-m", "not"), ("-k", "(")])
def test_selection_syntax_errors(expr_flag, expr):
    one_line_usage_error(cli("doctor", expr_flag, expr), expr_flag)


# ---- output paths ----------------------------------------------------------------------------------
def bad_paths(tmp_path: Path) -> dict:
    afile = tmp_path / "afile"
    afile.write_text("x")
    os.mkfifo(tmp_path / "fifo.json")
    os.symlink("/etc/hostname-contprobe-test", tmp_path / "link.json")
    return {"a directory": (tmp_path, "is a directory"),
            "under a file": (afile / "x.json", "is not a directory"),
            "a FIFO": (tmp_path / "fifo.json", "not a regular file"),
            "a link": (tmp_path / "link.json", "symbolic link"),
            "an unwritable file system": (Path("/proc/contprobe.json"), "/proc/contprobe.json")}


OUTPUT_FLAGS = ["--json", "--junit", "--markdown", "--html"]


@pytest.mark.parametrize("what", ["a directory", "under a file", "a FIFO", "a link", "an unwritable file system"])
@pytest.mark.parametrize("flag", OUTPUT_FLAGS)
@pytest.mark.parametrize("name", ["doctor", "report", "run"])
def test_output_paths_are_checked_before_anything_runs(name, flag, what, tmp_path, an_image, results):
    path, needle = bad_paths(tmp_path)[what]
    out = tmp_path / "never"
    args = {"doctor": ["doctor", *FAST, "--out", out], "report": ["report", results],
            "run": ["run", an_image, "--out", out]}[name]
    res = cli(*args, flag, path, cwd=tmp_path)
    one_line_usage_error(res, flag, needle)
    assert not out.exists()                                         # nothing ran
    assert not os.path.lexists("/etc/hostname-contprobe-test")    # the link was not followed


def test_unwritable_directory_for_an_unprivileged_user(tmp_path, results):
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("needs root to run as another user")
    from tests.containers import USER, _user
    if _user() is None:
        pytest.skip(f"user {USER} missing")
    # tmp_path's parents are root's 0700: the user cannot even enter it.
    res = cli("doctor", *FAST, "--out", tmp_path / "out", user=USER, cwd="/tmp")
    one_line_usage_error(res, "--out", "Permission denied")
    locked = Path(tempfile.mkdtemp(prefix="contprobe-locked-", dir="/tmp"))   # root's 0700
    os.chmod(locked, 0o755)              # enterable, not writable by the user
    try:
        shutil.copytree(results, locked / "results")
        res = cli("report", locked / "results", "--json", locked / "r.json", user=USER, cwd="/tmp")
        one_line_usage_error(res, "--json", "not writable")
        res = cli("doctor", *FAST, "--out", locked / "out", user=USER, cwd="/tmp")
        one_line_usage_error(res, "--out", "Permission denied")
        assert not (locked / "out").exists()
    finally:
        shutil.rmtree(locked)


def test_out_dir_under_a_file_and_non_empty(tmp_path, results):
    (tmp_path / "afile").write_text("x")
    one_line_usage_error(cli("report", results, "--out", tmp_path / "afile" / "o"), "not a directory")
    one_line_usage_error(cli("doctor", *FAST, "--out", tmp_path / "afile"), "--out")
    one_line_usage_error(cli("doctor", *FAST, "--out", results), "not empty")
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.sif").write_bytes(b"x")
    one_line_usage_error(cli("nightly", images, "--out-root", tmp_path / "afile" / "n"), "--out-root",
                         "Not a directory")


# ---- '-' is stdout everywhere --------------------------------------------------------------------
@pytest.mark.parametrize("flag,check", [("--json", lambda t: json.loads(t)["verdict"]),
                                        ("--junit", lambda t: t.startswith("<?xml")),
                                        ("--markdown", lambda t: t.startswith("# ")),
                                        ("--html", lambda t: t.startswith("<!DOCTYPE html>"))])
@pytest.mark.parametrize("name", ["doctor", "report"])
def test_dash_is_stdout_for_every_document(name, flag, check, tmp_path, results):
    args = ["doctor", *FAST] if name == "doctor" else ["report", results]
    res = cli(*args, flag, "-", cwd=tmp_path)
    assert res.rc == 0, res
    assert check(res.out), res.out[:300]
    assert "verdict:" in res.err and "verdict:" not in res.out.split("\n")[-2:]   # the table went to stderr
    assert not (tmp_path / "-").exists()


def test_only_one_document_on_stdout(results):
    one_line_usage_error(cli("report", results, "--json", "-", "--junit", "-"), "only one output")
