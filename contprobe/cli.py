"""The `contprobe` command: an explicit list of commands (contprobe.commands), one module each.

Bad usage is one line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Optional, Sequence

from contprobe import __version__
from contprobe.commands import COMMANDS
from contprobe.suite import UsageError

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as one line and exit status 2, no usage dump."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message)


def build_parser() -> Parser:
    p = Parser(prog="contprobe", description="Validate GPU HPC containers and explain what breaks.")
    p.add_argument("--version", action="version", version=f"contprobe {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in COMMANDS:
        mod = importlib.import_module(f"contprobe.commands.{name}")
        cp = sub.add_parser(mod.NAME, help=mod.HELP, description=(mod.__doc__ or "").split("\n\n")[0])
        mod.add_arguments(cp)
        cp.set_defaults(main=mod.main)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    from contprobe import textsafe
    parser = build_parser()
    try:
        ns = parser.parse_args(argv)
        if not getattr(ns, "main", None):
            parser.print_help()
            return EXIT_USAGE
        return ns.main(ns)
    except UsageError as exc:
        sys.stderr.write(f"contprobe: error: {textsafe.one_line(str(exc))}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("contprobe: interrupted\n")
        return 130
    except BrokenPipeError:
        # `contprobe gotchas | head`: the reader left; say nothing more (Python would print a traceback
        # flushing stdout at exit unless stdout points elsewhere).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13


if __name__ == "__main__":
    sys.exit(main())
