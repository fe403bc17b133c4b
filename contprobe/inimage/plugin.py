"""pytest plugin of the probe suite: expectation options, markers, diagnoses in JUnit.

Loaded by contprobe/inimage/probes/conftest.py, so `pytest contprobe/inimage/probes -m gpu --expect-gpus 4`
works by hand as well as through `contprobe doctor` / `contprobe run`.
Runs inside images: Python 3.8, standard library and pytest >= 7 only.
"""
from __future__ import annotations

import faulthandler
import os
import shlex
import signal
import sys
import time
from typing import Dict, Tuple

import pytest

from contprobe import __version__
from contprobe.inimage import catalog, context
from contprobe.inimage.options import MARKERS, add_options
from contprobe.inimage.diagnose import ProbeFailure
from contprobe.inimage.redact import redact_text_with_env

# What the probe suite's conftest takes in: every hook and fixture of this plugin.
__all__ = ["pytest_addoption", "pytest_configure", "pytest_unconfigure", "pytest_runtest_logstart",
           "pytest_runtest_logreport", "pytest_runtest_call", "pytest_runtest_makereport",
           "contprobe_state", "record_metric", "_contprobe_suite_properties"]

def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser.getgroup("contprobe", "contprobe expectations").addoption, cli=False)


# ---- per-run state ---------------------------------------------------------------------------
class State:
    """Context shared by the probes of one process and written to JUnit at the end."""

    def __init__(self) -> None:
        self.context: Dict[str, str] = {}
        self.outcomes: Dict[str, str] = {}
        self.durations: Dict[str, float] = {}
        self._journal = None

    def record(self, name: str, value: object) -> None:
        self.context[name] = str(value)

    def open_journal(self, path: str) -> None:
        # Line-buffered: each line reaches the file with its own write, so an abort loses nothing.
        self._journal = open(path, "w", buffering=1, encoding="utf-8")
        info = context.launch_info()
        import socket
        self.journal({"event": "session", "rank": info.rank, "size": info.size, "launcher": info.launcher,
                      "hostname": socket.gethostname(), "image": context.container_info()[0]})

    def journal(self, entry: dict) -> None:
        if self._journal is not None:
            import json
            self._journal.write(redact_text_with_env(json.dumps(entry), os.environ) + "\n")

    def close_journal(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None


STATE = State()


def junit_name(info: context.LaunchInfo, hostname: str) -> str:
    return f"junit-r{info.rank:05d}-{hostname}.xml"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    for name, doc in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {doc}")
    results_dir = config.getoption("--results-dir", None)
    if results_dir:
        import socket
        os.makedirs(results_dir, exist_ok=True)
        name = junit_name(context.launch_info(), socket.gethostname())
        if not getattr(config.option, "xmlpath", None):
            config.option.xmlpath = os.path.join(results_dir, name)
        STATE.open_journal(os.path.join(results_dir, "partial-" + name[len("junit-"):-len(".xml")] + ".jsonl"))
    STATE.context.clear()


# ---- the journal: results that survive a rank that crashes before JUnit is written ------------
def pytest_runtest_logstart(nodeid: str, location) -> None:
    STATE.journal({"event": "start", "nodeid": nodeid})


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "teardown":
        props = dict(report.user_properties)
        STATE.journal({"event": "done", "nodeid": report.nodeid, "probe": props.get("probe", report.nodeid),
                       "outcome": STATE.outcomes.pop(report.nodeid, "passed"),
                       "duration_s": round(STATE.durations.pop(report.nodeid, 0.0), 6),
                       **{k: str(v) for k, v in props.items() if k != "probe"}})
    else:
        STATE.durations[report.nodeid] = STATE.durations.get(report.nodeid, 0.0) + report.duration
        if report.failed:
            STATE.outcomes[report.nodeid] = "failed" if report.when == "call" else "error"
        elif report.skipped and report.nodeid not in STATE.outcomes:
            STATE.outcomes[report.nodeid] = "skipped"


def pytest_unconfigure(config: pytest.Config) -> None:
    STATE.close_journal()


def probe_id(item: pytest.Item) -> str:
    module = item.module.__name__.rsplit(".", 1)[-1] if getattr(item, "module", None) else "probe"
    group = module[5:] if module.startswith("test_") else module
    name = item.name[5:] if item.name.startswith("test_") else item.name
    return f"{group}.{name}"


@pytest.fixture(scope="session")
def contprobe_state() -> State:
    return STATE


@pytest.fixture
def record_metric(request):
    """record_metric(name, value): a figure kept in JUnit as property metric.<name>."""
    def record(name: str, value: float) -> None:
        request.node.user_properties.append((f"metric.{name}", f"{value:.6g}"))
    return record


@pytest.fixture(scope="session", autouse=True)
def _contprobe_suite_properties(record_testsuite_property):
    """Write the run's context as <testsuite> properties once all probes are done."""
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    yield
    import pytest as _pytest
    props = context.gather(STATE.context)
    props.update({
        "pytest": _pytest.__version__,
        "pytest_source": os.environ.get("CONTPROBE_PYTEST_SOURCE", "host python"),
        "pytest_path": os.path.dirname(_pytest.__file__),
        "contprobe": __version__,
        "started_utc": started,
        "command": " ".join(shlex.quote(a) for a in [sys.executable, "-m", "pytest", *sys.argv[1:]]),
    })
    for name in sorted(props):
        record_testsuite_property(name, redact_text_with_env(str(props[name]), os.environ))


# ---- timeouts: a hung probe (MPI, NCCL) must end in a report, not a stuck job ----------------
class ProbeTimeout(Exception):
    pass


def _alarm(signum, frame):  # pragma: no cover - exercised through a real hang in tests
    raise ProbeTimeout("probe exceeded --probe-timeout")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    timeout = float(item.config.getoption("--probe-timeout") or 0)
    use_alarm = timeout > 0 and hasattr(signal, "SIGALRM")
    if use_alarm:
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        # A probe blocked inside C (an MPI wait) never sees the alarm: exit hard after 2x,
        # the harness then reports this rank as lost with the traceback dump.
        faulthandler.dump_traceback_later(2 * timeout, exit=True)
    try:
        yield
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
            faulthandler.cancel_dump_traceback_later()


# ---- diagnosis of every outcome --------------------------------------------------------------
def diagnose(excinfo: pytest.ExceptionInfo) -> Tuple[str, str, str]:
    """(gotcha, one-line message, evidence) for an exception raised by a probe."""
    exc = excinfo.value
    if isinstance(exc, ProbeFailure):
        return exc.gotcha, exc.message, exc.evidence
    if isinstance(exc, ProbeTimeout):
        return "rank-lost", "probe timed out (--probe-timeout)", ""
    text = f"{type(exc).__name__}: {exc}"
    gotcha = catalog.match(text)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return gotcha, first, text


def split_tag(text: str) -> Tuple[str, str]:
    """'[gotcha-id] reason' -> ('gotcha-id', 'reason'); untagged text -> ('', text)."""
    if text.startswith("[") and "] " in text:
        tag, rest = text[1:].split("] ", 1)
        if tag in catalog.load():
            return tag, rest
    return "", text


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if call.when == "setup":
        item.user_properties.append(("probe", probe_id(item)))
    if report.skipped and call.excinfo is not None:
        reason = call.excinfo.value.msg if hasattr(call.excinfo.value, "msg") else str(call.excinfo.value)
        gotcha, reason = split_tag(reason)
        if gotcha:
            item.user_properties.extend([("gotcha", gotcha), ("fix", catalog.get(gotcha).fix_line)])
        item.user_properties.append(("message", _one_line(reason)))
    elif report.failed and call.excinfo is not None:
        gotcha, message, evidence = diagnose(call.excinfo)
        g = catalog.get(gotcha)
        item.user_properties.extend([("gotcha", g.id if gotcha in catalog.load() else catalog.UNKNOWN),
                                     ("message", _one_line(message)), ("fix", g.fix_line)])
        if isinstance(call.excinfo.value, ProbeFailure):
            # A diagnosed failure needs no traceback: say what, why and how to fix it.
            report.longrepr = "\n".join(filter(None, [
                f"[{g.id}] {message}", evidence, f"fix: {g.fix_line}", f"see: contprobe gotchas {g.id}"]))
    _redact_report(report, item)


def _redact_report(report: pytest.TestReport, item: pytest.Item) -> None:
    """Secrets never reach JUnit or the terminal: a traceback, a skip reason or a property may hold one."""
    def red(text: object) -> str:
        return redact_text_with_env(str(text), os.environ)

    lr = report.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:          # a skip: (path, lineno, reason)
        report.longrepr = (lr[0], lr[1], red(lr[2]))
    elif lr is not None:
        # A traceback object keeps its formatting unless it holds a secret; then it becomes text.
        text = str(lr)
        if red(text) != text or isinstance(lr, str):
            report.longrepr = red(text)
    item.user_properties[:] = [(k, red(v)) for k, v in item.user_properties]
    report.user_properties = [(k, red(v)) for k, v in report.user_properties]
