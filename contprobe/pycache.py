"""A persistent bytecode cache per image, so the probes' Python does not recompile on every run.

The image is read-only, so an image without .pyc files (and the staged harness) would otherwise be
compiled from source at every start: pytest alone costs ~0.4 s of the ~0.8 s a one-rank launch takes.
PYTHONPYCACHEPREFIX (Python 3.8+) sends the bytecode to a directory bound in from the host.

Trust: bytecode written from inside an image is that image's output, so each image gets its own
directory (keyed by the image file's identity) and no image ever reads another's. The directories live
in the operator's cache, 0700, and only the most recently used KEEP are kept, because a cache that
grows with every image published is the cache-in-home gotcha this tool warns about.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from typing import Optional

MOUNT = "/.contprobe-pycache"
# An inherited PYTHONDONTWRITEBYTECODE=1 would leave the cache empty; an empty value means "unset".
ENV = {"PYTHONPYCACHEPREFIX": MOUNT, "PYTHONDONTWRITEBYTECODE": ""}
KEEP = 8


def image_key(image_path: str) -> str:
    """The image file's identity: a rebuilt image (new inode, size or mtime) gets a fresh cache."""
    st = os.stat(image_path)
    ident = f"{os.path.realpath(image_path)}\0{st.st_dev}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}"
    return hashlib.sha256(ident.encode("utf-8", "surrogateescape")).hexdigest()[:24]


def prepare(cache_root: str, image_path: str, keep: int = KEEP) -> Optional[str]:
    """The image's bytecode directory (created 0700, marked used now), or None when none can be made."""
    root = os.path.join(cache_root, "pycache")
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
        d = os.path.join(root, image_key(image_path))
        os.makedirs(d, mode=0o700, exist_ok=True)
        if os.path.islink(d) or not os.path.isdir(d) or os.stat(d).st_uid != os.getuid():
            return None         # not ours: never bind a directory someone else placed there
        os.utime(d)
        _prune(root, keep)
        return d
    except OSError:
        return None             # a full or read-only home costs speed, never the run


def _prune(root: str, keep: int) -> None:
    paths = [os.path.join(root, name) for name in os.listdir(root)]
    entries = [(os.stat(p).st_mtime, p) for p in paths if os.path.isdir(p) and not os.path.islink(p)]
    for _, p in sorted(entries, reverse=True)[keep:]:
        shutil.rmtree(p, ignore_errors=True)
