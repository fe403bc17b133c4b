"""SingularityCE (Sylabs) and pre-split Singularity 3.x (`singularity`): SINGULARITY_* variables."""
from __future__ import annotations

import re

from contprobe.runtimes import Runtime, register


@register
class Singularity(Runtime):
    name = "singularity"
    executables = ("singularity",)
    # "singularity-ce version 4.1.0" or "singularity version 3.8.7"; apptainer's compatibility
    # `singularity` link says "apptainer version" and is not this backend.
    version_re = re.compile(r"singularity(?:-ce)? version\s+(\S+)", re.I)
    var_prefix = "SINGULARITY"
    remote_schemes = ("docker", "oras", "library", "shub", "docker-archive", "docker-daemon")
