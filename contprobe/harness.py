"""What the harness brings into a container: the in-image subpackage (read-only) and, if needed, pytest.

Only `contprobe/inimage/` (plus the two-line `contprobe/__init__.py` that makes it importable) is
staged: the host side (CLI, reports, backends) never enters an image under test. Staged once on the
host and bound read-only at /.contprobe into every rank and re-run; the image is never touched.
A staged directory carries the key of what it holds, so staging the same contents again copies
nothing: runs share the operator's copy (CACHE/harness/KEY), a nightly one for all its images.
The brought-along pytest keeps its wheel's file dates, and the in-image files theirs: a per-image
bytecode cache compiled from an earlier staging stays valid (same size and mtime per source).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import stat
import time
import zipfile
from pathlib import Path
from typing import List, Optional, Sequence

PACKAGE_DIR = Path(__file__).resolve().parent
INIMAGE_DIR = PACKAGE_DIR / "inimage"
WHEELS_DIR = INIMAGE_DIR / "_vendor" / "wheels"
MOUNT = "/.contprobe"               # harness (read-only) inside the container
RESULTS_MOUNT = "/.contprobe-out"   # rank results (read-write) inside the container
INIMAGE = f"{MOUNT}/contprobe/inimage"
PROBES = f"{INIMAGE}/probes"
SHARED_VAR = "CONTPROBE_HARNESS_DIR"  # a harness staged once for several results directories (nightly)
KEY_FILE = ".contprobe-harness-key"
KEEP = 4                              # staged versions kept in the operator's cache (1.7 MB each)
IGNORE = ("__pycache__", "*.pyc", "wheels")


def _sources() -> List[Path]:
    """What stage copies, in a fixed order: the package marker, the in-image tree, the wheels."""
    tree = [p for p in sorted(INIMAGE_DIR.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc" and WHEELS_DIR not in p.parents]
    return [PACKAGE_DIR / "__init__.py", *tree, *sorted(WHEELS_DIR.glob("*.whl"))]


def content_key() -> str:
    """sha256 over the relative names and contents of everything staged (about 2 MB: a few ms)."""
    h = hashlib.sha256(b"contprobe-harness-v2\0")
    for p in _sources():
        h.update(str(p.relative_to(PACKAGE_DIR)).encode() + b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()


def staged_key(harness_dir: str) -> Optional[str]:
    """The key of a staged harness this user can trust: a real directory they own that nobody else
    can write, holding the key file; else None."""
    try:
        st = os.lstat(harness_dir)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
            return None
        with open(os.path.join(harness_dir, KEY_FILE)) as fh:
            return fh.read().strip()
    except OSError:
        return None


def _copy_into(tmp: str, key: str) -> None:
    pkg = os.path.join(tmp, "contprobe")
    os.makedirs(pkg)
    shutil.copy2(PACKAGE_DIR / "__init__.py", os.path.join(pkg, "__init__.py"))
    shutil.copytree(INIMAGE_DIR, os.path.join(pkg, "inimage"), ignore=shutil.ignore_patterns(*IGNORE))
    pylib = os.path.join(tmp, "pylib")
    os.makedirs(pylib)
    for whl in sorted(WHEELS_DIR.glob("*.whl")):
        with zipfile.ZipFile(whl) as zf:
            for info in zf.infolist():
                path = zf.extract(info, pylib)
                # the wheel's own dates, not now: a .pyc compiled from an earlier staging of the
                # same wheel (same size and mtime) stays valid
                when = time.mktime(info.date_time + (0, 0, -1))
                os.utime(path, (when, when))
    with open(os.path.join(tmp, KEY_FILE), "w") as fh:
        fh.write(key + "\n")
    # Readable by all, writable by none: under a launcher the ranks may run as another user than the
    # stager, and nothing inside a container may change what the next rank imports.
    for root, dirs, files in os.walk(tmp):
        for name in dirs + files:
            p = os.path.join(root, name)
            os.chmod(p, 0o555 if os.path.isdir(p) else 0o444)
    os.chmod(tmp, 0o555)


def remove_tree(path: str) -> None:
    """rmtree that first makes the read-only directories of a staged harness writable again."""
    for root, dirs, _ in os.walk(path):
        os.chmod(root, stat.S_IRWXU)
        for d in dirs:
            p = os.path.join(root, d)
            if not os.path.islink(p):
                os.chmod(p, stat.S_IRWXU)
    shutil.rmtree(path)


def stage(harness_dir: str, key: Optional[str] = None) -> str:
    """The in-image subpackage and the brought-along pytest in harness_dir, read-only; return it.

    Copies nothing when harness_dir already holds these contents (same key, owned by this user and
    writable by no one else); stages beside it and renames into place otherwise, so concurrent
    launches sharing one harness never see half of it.
    """
    key = key or content_key()
    if staged_key(harness_dir) == key:
        return harness_dir
    tmp = f"{harness_dir}.tmp-{socket.gethostname()}-{os.getpid()}"   # nodes may share the file system
    if os.path.lexists(tmp):
        remove_tree(tmp)
    _copy_into(tmp, key)
    if os.path.lexists(harness_dir) and not (os.path.isdir(harness_dir) and not os.listdir(harness_dir)):
        if staged_key(harness_dir) == key:      # someone else staged the same meanwhile
            remove_tree(tmp)
            return harness_dir
        if os.path.islink(harness_dir) or not os.path.isdir(harness_dir) or os.lstat(harness_dir).st_uid != os.getuid():
            remove_tree(tmp)
            raise OSError(f"{harness_dir}: not a harness directory of this user")
        remove_tree(harness_dir)               # an older contprobe's harness
    elif os.path.isdir(harness_dir):
        os.rmdir(harness_dir)
    try:
        os.rename(tmp, harness_dir)
    except OSError:
        remove_tree(tmp)
        if staged_key(harness_dir) != key:
            raise
    return harness_dir


def prepare(out: str, cache_root: Optional[str]) -> str:
    """Stage (or find staged) the harness a launch binds, and return where it is:
    1. CONTPROBE_HARNESS_DIR, when a nightly staged one for all its images;
    2. CACHE_ROOT/harness/KEY, the operator's own copy of these exact contents, shared by every run
       (staging costs ~0.3 s of unzipping; finding it staged, a few ms);
    3. OUT/.harness, when the cache cannot be written (a full or read-only home).
    """
    key = content_key()
    shared = os.environ.get(SHARED_VAR, "")
    places = [shared] if shared and os.path.isabs(shared) else []
    if cache_root:
        places.append(os.path.join(cache_root, "harness", key[:24]))
    for place in places:
        try:
            os.makedirs(os.path.dirname(place), mode=0o700, exist_ok=True)
            stage(place, key)
        except OSError:
            continue    # not ours, not writable, full: the next place
        if place != shared:
            _prune(os.path.dirname(place), place)
        return place
    return stage(os.path.join(out, ".harness"), key)


def _prune(root: str, current: str) -> None:
    """Mark `current` used and keep only the KEEP most recently used harnesses of the cache: one
    per contprobe version would otherwise pile up in the operator's home."""
    try:
        os.utime(current)
        paths = [os.path.join(root, name) for name in os.listdir(root)]
        entries = [(os.lstat(p).st_mtime, p) for p in paths if p != current and staged_key(p) is not None]
        for _, p in sorted(entries, reverse=True)[KEEP - 1:]:
            remove_tree(p)
    except OSError:
        pass    # pruning is housekeeping: never the reason a run fails


def node_id(probe: str) -> str:
    """pytest node id inside the container for a probe id: binds.expected[/x] -> .../test_binds.py::test_expected[/x]."""
    group, _, name = probe.partition(".")
    return f"{PROBES}/test_{group}.py::test_{name}"


def bootstrap_command(python: str, pytest_args: Sequence[str], targets: Sequence[str] = (),
                      gpus_per_node: int = 0, gpu_order: str = "natural") -> List[str]:
    opts = [f"--gpus-per-node={gpus_per_node}", f"--gpu-order={gpu_order}"] if gpus_per_node else []
    return [python, f"{INIMAGE}/bootstrap.py", *opts, "--", *(list(targets) or [PROBES]), *pytest_args]
