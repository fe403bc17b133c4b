"""The commands, one module each. The CLI knows exactly this list; no module imports the CLI.

Each module has NAME, HELP, `add_arguments(parser)` and `main(ns) -> int`, which turns the parsed
arguments into the command's own typed request and runs it. A command that runs another builds
that command's request; nothing fakes another command's argparse Namespace.
"""
COMMANDS = ("doctor", "run", "validate", "build_check", "report", "nightly", "gotchas", "sites",
            "explain")
