"""SingularityCE (Sylabs) and pre-split Singularity 3.x (`singularity`): Apptainer's command line and
image references under the older names, SINGULARITY_* variables."""
from __future__ import annotations

import re

from contprobe.runtimes import register
from contprobe.runtimes.apptainer import Apptainer


@register
class Singularity(Apptainer):
    name = "singularity"
    executables = ("singularity",)
    # "singularity-ce version 4.1.0" or "singularity version 3.8.7"; apptainer's compatibility
    # `singularity` link says "apptainer version" and is not this backend.
    version_re = re.compile(r"singularity(?:-ce)? version\s+(\S+)", re.I)
    var_prefix = "SINGULARITY"
