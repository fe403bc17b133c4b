"""`contprobe validate IMAGE --site NAME`: the publish gate. The image's full validation for a site:
GPUs, the site's file systems, every rank of the allocation (from PBS or Slurm); nonzero on any
failure or lost rank."""
from __future__ import annotations

import argparse
import os
from typing import Mapping, Optional

from contprobe import schedulers
from contprobe.commands import run as runcmd
from contprobe.inimage.options import BindExpectation
from contprobe.site import Site, load_or_detect

NAME, HELP = "validate", "publish gate: the image's full validation for a site; nonzero on any failure or lost rank"


def add_arguments(p: argparse.ArgumentParser) -> None:
    runcmd.add_arguments(p)


def apply_site(req: runcmd.RunRequest, site: Site, env: Optional[Mapping[str, str]] = None) -> runcmd.RunRequest:
    """The site's defaults on top of what the operator gave: --nv, its file systems, all ranks."""
    if site.gpus_per_node:
        req.nv = True
    for path in site.default_binds:
        if os.path.exists(path):
            if not any(b.split(":")[0] == path for b in req.binds):
                req.binds.append(path)
            if not any(e.path == path for e in req.exp.binds):
                req.exp.binds.append(BindExpectation(path, False))
    alloc = schedulers.current(env, site.scheduler)
    # One rank per GPU; on a site without GPUs, as many as the allocation has tasks per node.
    per_node = site.gpus_per_node or (alloc.ranks_per_node if alloc is not None else None)
    if alloc is not None and req.ranks == 1 and per_node:
        req.ranks = len(alloc.hosts) * per_node
        req.ppn = req.ppn or per_node
        if alloc.hostfile and not req.hostfile and req.launcher != "srun" and site.launcher != "srun":
            req.hostfile = alloc.hostfile
    if req.exp.gpus is None and site.gpus_per_node:
        req.exp.gpus = 1 if req.ranks > 1 else site.gpus_per_node
    if req.exp.mig is None and site.gpu_mig:
        req.exp.mig = site.gpu_mig
    if req.exp.ranks is None and req.ranks > 1:
        req.exp.ranks = req.ranks
    req.mode, req.title = "validate", "contprobe validate"
    return req


def main(ns: argparse.Namespace) -> int:
    site = load_or_detect(ns.site)
    return runcmd.run(apply_site(runcmd.request(ns, site), site))
