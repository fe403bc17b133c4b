"""Apptainer (the Linux Foundation's fork, `apptainer`): APPTAINER_* variables."""
from __future__ import annotations

import re

from contprobe.runtimes import Runtime, register


@register
class Apptainer(Runtime):
    name = "apptainer"
    executables = ("apptainer",)
    version_re = re.compile(r"apptainer version\s+(\S+)", re.I)
    var_prefix = "APPTAINER"
    remote_schemes = ("docker", "oras", "library", "shub", "docker-archive", "docker-daemon")
    # sylog.Fatalf ("FATAL:   ...", then exit 255): e.g. 'FATAL:   "python3": executable file not
    # found in $PATH' when the image's FUSE mount went away under a starting rank.
    died_line = re.compile(r"^FATAL: +\S[^\n]*$", re.M)
