"""The `contprobe` command: doctor, gotchas (and the container, scale and report commands)."""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

from contprobe import __version__, catalog
from contprobe.expect import argtype, parse_bind, parse_env, parse_gpus, parse_sizes
from contprobe.suite import Expectations, UsageError, check_markexpr

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3


class Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as one line and exit status 2, no usage dump."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message)


def add_expectations(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("expectations (forwarded to the probe suite)")
    g.add_argument("--expect-gpus", type=argtype(parse_gpus, drop="--expect-gpus "), metavar="N")
    g.add_argument("--expect-ranks", type=argtype(parse_gpus, drop="--expect-gpus "), metavar="N")
    g.add_argument("--expect-bind", type=argtype(parse_bind, keep_text=True), action="append", default=[],
                   metavar="PATH[:rw]")
    g.add_argument("--expect-env", type=argtype(parse_env, keep_text=True), action="append", default=[],
                   metavar="NAME[=VALUE]")
    g.add_argument("--expect-proxy", action="store_true")
    g.add_argument("--allreduce-sizes", type=argtype(parse_sizes, keep_text=True), metavar="B,B,...")
    g.add_argument("-k", dest="keyword", metavar="EXPR", help="select probes by keyword (pytest -k)")
    g.add_argument("-m", dest="markexpr", metavar="MARKEXPR", help="select probes by marker (pytest -m)")
    g.add_argument("--probe-timeout", type=float, default=300.0, metavar="S")


def add_outputs(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("outputs")
    g.add_argument("--json", metavar="FILE", help="JSON contract ('-' for stdout)")
    g.add_argument("--junit", metavar="FILE", help="JUnit XML")
    g.add_argument("--markdown", metavar="FILE", help="Markdown report")


def expectations(ns: argparse.Namespace) -> Expectations:
    if ns.markexpr:
        check_markexpr(ns.markexpr)
    return Expectations(gpus=ns.expect_gpus, ranks=ns.expect_ranks, binds=ns.expect_bind, envs=ns.expect_env,
                        proxy=ns.expect_proxy, allreduce_sizes=ns.allreduce_sizes, keyword=ns.keyword,
                        markexpr=ns.markexpr, probe_timeout=ns.probe_timeout)


def write_out(path: Optional[str], text: str) -> None:
    if not path:
        return
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def emit(ns: argparse.Namespace, results, context: Dict[str, str], junit_src: Optional[str],
         extra: Optional[dict] = None, title: str = "contprobe") -> int:
    """Print the table and write the requested files; the exit status follows the verdict."""
    from contprobe.reports import render
    doc = render.contract(results, context, extra)
    # With the JSON on stdout the human table goes to stderr, so pipes get clean JSON.
    human = sys.stderr if ns.json == "-" else sys.stdout
    human.write(render.terminal(results, doc["context"]))
    write_out(ns.json, render.to_json(doc))
    write_out(ns.markdown, render.markdown(results, doc["context"], title))
    if ns.junit and junit_src:
        shutil.copyfile(junit_src, ns.junit)
    return EXIT_OK if doc["verdict"] == "passed" else EXIT_FAILED


# ---- doctor ----------------------------------------------------------------------------------
def cmd_doctor(ns: argparse.Namespace) -> int:
    from contprobe.reports import junit
    from contprobe.suite import new_workdir, run_argv_quoted, run_local
    exp = expectations(ns)
    workdir = new_workdir("contprobe-doctor-")
    t0 = time.monotonic()
    try:
        run = run_local(exp, workdir, timeout=ns.timeout)
        if run.returncode == 5:
            raise UsageError("no probe matches the -k/-m selection")
        if run.returncode in (3, 4) or not os.path.exists(run.junit):
            # pytest itself broke (internal error, bad option): show what it said, never nothing.
            sys.stderr.write(run.output[-4000:])
            sys.stderr.write(f"contprobe: the probe suite did not run (pytest exit {run.returncode})\n")
            return EXIT_FAILED
        result = junit.read(run.junit)
        from contprobe import site as sites
        from contprobe.checks import HostOptions, run_all
        site = sites.detect()
        host = run_all(HostOptions(module_hint=site.runtime_module, site_proxy=site.proxy)) \
            if not (exp.keyword or exp.markexpr) else []
        context = dict(result.context)
        context["site"] = site.name
        context.update({"mode": "doctor", "duration_s": f"{time.monotonic() - t0:.2f}",
                        "command": run_argv_quoted(run.argv)})
        return emit(ns, host + result.cases, context, run.junit, title="contprobe doctor")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# ---- gotchas ---------------------------------------------------------------------------------
def cmd_gotchas(ns: argparse.Namespace) -> int:
    from tabulate import tabulate
    cat = catalog.load()
    if ns.id:
        if ns.id not in cat:
            raise UsageError(f"no gotcha {ns.id!r} (see `contprobe gotchas` for the list)")
        g = cat[ns.id]
        print(f"{g.id}: {g.title}\n\nsymptoms: " + ("; ".join(g.symptoms) or "(detected by probes)")
              + f"\n\ncause: {g.cause}\n\nfix:\n  " + g.fix.strip().replace("\n", "\n  ")
              + f"\n\nsource: {g.source}" + (f"\nrefs: {', '.join(g.refs)}" if g.refs else ""))
        return EXIT_OK
    print(tabulate([[g.id, g.title, g.fix_line[:80]] for g in cat.values()], headers=["id", "title", "fix"]))
    return EXIT_OK


# ---- parser ----------------------------------------------------------------------------------
def build_parser() -> Parser:
    p = Parser(prog="contprobe", description="Validate GPU HPC containers and explain what breaks.")
    p.add_argument("--version", action="version", version=f"contprobe {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    d = sub.add_parser("doctor", help="run the probe suite on this machine and explain every failure")
    add_expectations(d)
    add_outputs(d)
    d.add_argument("--timeout", type=float, default=1800.0, metavar="S", help="whole-suite timeout")
    d.set_defaults(func=cmd_doctor)
    g = sub.add_parser("gotchas", help="list the gotcha catalog, or show one entry")
    g.add_argument("id", nargs="?")
    g.set_defaults(func=cmd_gotchas)
    for register in EXTRA_COMMANDS:
        register(sub)
    return p


# Later commands (run, report, build-check, validate) add themselves here from their modules.
EXTRA_COMMANDS: List[Callable[[argparse._SubParsersAction], None]] = []


def _load_extra_commands() -> None:
    import importlib
    EXTRA_COMMANDS.clear()
    for mod in ("contprobe.cmd_run", "contprobe.cmd_build", "contprobe.cmd_report"):
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
            continue
        EXTRA_COMMANDS.append(getattr(m, "register_all", m.register))


def main(argv: Optional[Sequence[str]] = None) -> int:
    _load_extra_commands()
    parser = build_parser()
    try:
        ns = parser.parse_args(argv)
        if not getattr(ns, "func", None):
            parser.print_help()
            return EXIT_USAGE
        return ns.func(ns)
    except UsageError as exc:
        sys.stderr.write(f"contprobe: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("contprobe: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
