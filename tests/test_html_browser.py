"""The HTML report in a real headless browser (Debian's chromium): it renders, shows the failing
probe and its fix, and asks the network for nothing."""
from __future__ import annotations

import shutil
from html import escape as html_escape
import subprocess
import tempfile

import pytest

from contprobe.inimage import catalog

from tests.test_report import LEAK, clone, probe_run, report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")


def chromium(*args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                               "--no-first-run", "--disable-background-networking", "--disable-component-update",
                               "--disable-sync", f"--user-data-dir={profile}", *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)


def test_report_page_renders_failing_probe_and_fix(tmp_path):
    ok = probe_run(tmp_path / "real")
    bad = probe_run(tmp_path / "real-bad", "--expect-bind", "/nonexistent-contprobe")
    d = tmp_path / "ranks"
    for r in range(8):
        host = f"x3001c0s{r // 4}b0n0"
        clone(bad if r == 5 else ok, d, r, host, 8, image="pytorch.sif", edit=LEAK if host.endswith("s1b0n0") else None)
    page = tmp_path / "index.html"
    assert report(d, "--html", page).returncode == 1
    dom = chromium("--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    # What the browser built, not just the file: the verdict, the failing probe, where, and the fix.
    assert '<span class="verdict-failed" id="verdict">FAILED</span>' in html
    assert "env.ld_preload" in html and "failed on x3001c0s1b0n0 r4-7" in html
    assert "binds.expected[/nonexistent-contprobe]" in html
    assert html_escape(catalog.get("bind-missing").fix_line, quote=False) in html
    assert '<tr class="outlier"><th>x3001c0s1b0n0</th>' in html
    shot = tmp_path / "shot.png"
    res = chromium("--window-size=1280,2000", f"--screenshot={shot}", page.as_uri())
    assert res.returncode == 0 and shot.stat().st_size > 20000   # a blank page is a few kB
