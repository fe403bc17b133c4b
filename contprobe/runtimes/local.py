"""Local images for runtimes that cannot run a SIF: where a SIF keeps its root file system, cache
keys, and conversion steps that end at their timeout as a named failure.

podman and Charliecloud run the same test images as Apptainer: the SIF's squashfs partition is
read in place (podman imports it once into its storage; Charliecloud runs a copy of the partition),
and the SIF itself is never changed.
"""
from __future__ import annotations

import hashlib
import os
import re
import struct
import subprocess
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from contprobe import image as images

# SIF v1 descriptor (github.com/apptainer/sif pkg/sif rawDescriptor, packed little-endian):
# type, used, id, group, link, offset, size, size+padding, ctime, mtime, uid, gid, name[128], extra[384].
SIF_DESCRIPTOR = struct.Struct("<i?IIIqqqqqqq128s384s")
SIF_PARTITION = 0x4004            # DataPartition
SIF_SQUASHFS, SIF_PRIMARY = 1, 2  # extra: fstype, parttype (PartPrimSys)


@dataclass(frozen=True)
class LocalImage(images.Image):
    """An image converted for a runtime; its digest is the one of what the operator gave."""
    digest_of: str = ""           # file whose sha256 is the digest (the SIF), or "" for none
    digest_value: str = ""        # a digest the runtime reported (podman's image digest)

    def digest(self, cache_dir: Optional[str] = None) -> str:
        if self.digest_value:
            return self.digest_value
        if self.digest_of:
            return images.Image(self.ref, self.digest_of, "sif").digest(cache_dir)
        return ""


def sif_rootfs(path: str) -> Tuple[int, int]:
    """(offset, size) of a SIF's primary squashfs partition: the image's root file system."""
    images.check_sif(path)
    with open(path, "rb") as fh:
        head = images.SIF_HEADER.unpack(fh.read(images.SIF_HEADER.size))
        total, desc_off = head[8], head[9]
        fh.seek(desc_off)
        for _ in range(max(0, min(total, 4096))):
            raw = fh.read(SIF_DESCRIPTOR.size)
            if len(raw) < SIF_DESCRIPTOR.size:
                break
            d = SIF_DESCRIPTOR.unpack(raw)
            fstype, parttype = struct.unpack("<ii", d[13][:8])
            if d[1] and d[0] == SIF_PARTITION and fstype == SIF_SQUASHFS and parttype == SIF_PRIMARY:
                return d[5], d[6]
    raise images.ImageError(f"{path}: no squashfs root file system in this SIF (encrypted or ext3 images "
                            "need `apptainer build --sandbox` first)")


def is_squashfs(path: str) -> bool:
    """A bare squashfs file (not a SIF, which holds one at an offset)."""
    with open(path, "rb") as fh:
        return images.SQUASHFS_MAGIC in fh.read(4)


def cache_key(path: str) -> str:
    """Short key of a local image as it is now (path, size, mtime): a changed image converts again."""
    st = os.stat(path)
    return hashlib.sha256(f"{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]


def stem(ref: str) -> str:
    """A lower-case name for a converted image (podman tags and file names allow little)."""
    base = os.path.basename(ref.rstrip("/")).split(".")[0].lower()
    return re.sub(r"[^a-z0-9_.-]+", "-", base).strip("-.") or "image"


def copy_range(src: str, offset: int, size: int, target: str) -> None:
    """Copy size bytes at offset of src into target, atomically (a killed copy leaves no image)."""
    partial = f"{target}.partial"
    with open(src, "rb") as fi, open(partial, "wb") as fo:
        fi.seek(offset)
        left = size
        while left > 0:
            chunk = fi.read(min(left, 1 << 22))
            if not chunk:
                raise images.ImageError(f"{src}: truncated (partition ends past the file)")
            fo.write(chunk)
            left -= len(chunk)
    os.replace(partial, target)


def convert(ref: str, steps: Sequence[List[str]], timeout: float) -> None:
    """Run one conversion `pipeline`; its failure is named from the catalog (stage pull), like a
    registry conversion's."""
    rc, log, timed_out = pipeline(steps, timeout)
    if rc != 0:
        raise images.conversion_failed(ref, log, timed_out)


def pipeline(steps: Sequence[List[str]], timeout: float) -> Tuple[int, str, bool]:
    """Run argv lists joined by pipes (no shell) in one new process group; (first failing rc, what they
    all wrote, timed out). At the timeout the whole group is killed: a stalled import is no hang."""
    import signal
    import tempfile
    procs: List[subprocess.Popen] = []
    with tempfile.TemporaryFile() as log:
        prev = None
        for i, argv in enumerate(steps):
            last = i == len(steps) - 1
            group = procs[0].pid if procs else 0
            try:
                p = subprocess.Popen(argv, stdin=prev if prev is not None else subprocess.DEVNULL,
                                     stdout=log if last else subprocess.PIPE, stderr=log,
                                     preexec_fn=lambda g=group: os.setpgid(0, g))
            except OSError as exc:
                for q in procs:
                    q.kill()
                return 127, f"{argv[0]}: {exc}", False
            if prev is not None:
                prev.close()
            prev = p.stdout
            procs.append(p)
        deadline = time.monotonic() + timeout
        timed_out = False
        for p in procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(procs[0].pid, signal.SIGKILL)
                p.wait()
        log.seek(0)
        text = log.read()[-(1 << 20):].decode("utf-8", "replace")
    rc = next((p.returncode for p in procs if p.returncode), 0)
    return (124 if timed_out else rc), text, timed_out
