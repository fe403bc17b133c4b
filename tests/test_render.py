"""One run's table, terminal text and Markdown: diagnoses with the site's own words added."""
from __future__ import annotations

from contprobe.reports import render
from contprobe.reports.junit import CaseResult


def results():
    return [CaseResult("binds.expected[/eagle]", "failed", 0.01, "/eagle does not exist here", "bind-missing", "fix"),
            CaseResult("env.user_site", "passed", 0.0, "4/4 ranks passed")]


def test_site_note_follows_the_fix_only_on_that_site():
    polaris = render.terminal(results(), {"site": "polaris", "hostname": "x3001c0s1b0n0"})
    assert "site:  On Polaris the project file systems" in polaris
    assert "site:" not in render.terminal(results(), {"site": "generic"})
    assert "site:" not in render.terminal(results(), {"site": "no-such-site"})
    md = render.markdown(results(), {"site": "polaris"})
    assert "**On polaris.** On Polaris the project file systems" in md


def test_passed_rows_keep_their_message_and_failures_their_fix():
    text = render.table(results())
    assert "4/4 ranks passed" in text
    assert "FAILED" in text and "bind-missing" in text
    assert render.verdict(results()) == "failed"
    assert render.summary_line(results()) == "verdict: FAILED (1 passed, 1 failed)"
