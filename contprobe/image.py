"""Images under test: SIF files, sandbox directories and registry references.

The image is never modified: files are only read (header, digest); a registry reference is
converted once into a cached SIF, as users do with `apptainer build NAME.sif docker://...`.
"""
from __future__ import annotations

import hashlib
import os
import re
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from contprobe.runtimes import Runtime


SIF_MAGIC = b"SIF_MAGIC"
SIF_MAGIC_OFFSET = 32
# Global header: launch script[32] magic[10] version[3] arch[3] id[16], then eight int64s;
# the last two are the data section's offset and size (little-endian).
SIF_HEADER = struct.Struct("<32s10s3s3s16sqqqqqqqq")
SQUASHFS_MAGIC = b"hsqs"
REMOTE = re.compile(r"^(docker|oras|library|shub|docker-archive|docker-daemon)://")


class ImageError(ValueError):
    """The image argument cannot be used; the CLI prints it as one line and exits 2."""


@dataclass(frozen=True)
class Image:
    ref: str          # what the user gave
    path: str         # what the runtime is given (a local SIF or sandbox directory)
    kind: str         # sif | sandbox | squashfs | remote
    registry_digest: str = ""   # remote: the registry's manifest digest, recorded when converted

    def digest(self, cache_dir: Optional[str] = None) -> str:
        """sha256 of a SIF file; for a registry reference the registry's manifest digest (what
        `skopeo inspect` and the registry call it; '' when it could not be read), not the hash of
        the SIF converted from it; sandboxes and squashfs report no digest.

        Cached by (device, inode, size, mtime): nightly runs hash each multi-GB image once.
        """
        if self.kind == "remote":
            return self.registry_digest
        if self.kind != "sif":
            return ""
        st = os.stat(self.path)
        key = f"{st.st_dev}-{st.st_ino}-{st.st_size}-{st.st_mtime_ns}"
        cache = os.path.join(cache_dir, "digests", key) if cache_dir else None
        if cache and os.path.isfile(cache):
            with open(cache) as fh:
                return fh.read().strip()
        h = hashlib.sha256()
        with open(self.path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        digest = "sha256:" + h.hexdigest()
        if cache:
            try:
                os.makedirs(os.path.dirname(cache), exist_ok=True)
                with open(cache + ".tmp", "w") as fh:
                    fh.write(digest)
                os.replace(cache + ".tmp", cache)
            except OSError:
                pass  # a read-only cache only costs the next run the hash
        return digest


def check_sif(path: str) -> None:
    """A SIF header that is present and consistent with the file's size (no truncation)."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(SIF_HEADER.size)
    if len(head) < SIF_HEADER.size or head[SIF_MAGIC_OFFSET:SIF_MAGIC_OFFSET + len(SIF_MAGIC)] != SIF_MAGIC:
        raise ImageError(f"{path}: not a SIF image (no SIF header)")
    fields = SIF_HEADER.unpack(head)
    data_offset, data_size = fields[-2], fields[-1]
    if data_offset < 0 or data_size < 0 or data_offset + data_size > size:
        raise ImageError(f"{path}: truncated SIF image ({size} bytes on disk, header says "
                         f"{data_offset + data_size}); re-copy or rebuild it")


def resolve(ref: str, runtime: "Runtime", cache_dir: str, timeout: float = 3600.0) -> Image:
    """Check an image argument and turn it into something the runtime can exec."""
    if REMOTE.match(ref):
        path = convert(ref, runtime, cache_dir, timeout)
        return Image(ref, path, "remote", read_text(path + DIGEST_SUFFIX))
    if not os.path.exists(ref):
        raise ImageError(f"image {ref!r} does not exist")
    path = os.path.abspath(ref)
    if os.path.isdir(path):
        if not os.path.isdir(os.path.join(path, ".singularity.d")) and not os.path.isdir(os.path.join(path, "usr")):
            raise ImageError(f"{ref}: directory is not a sandbox image (no .singularity.d or usr/)")
        return Image(ref, path, "sandbox")
    if not os.access(path, os.R_OK):
        raise ImageError(f"image {ref!r} is not readable")
    with open(path, "rb") as fh:
        head = fh.read(64)
    if SQUASHFS_MAGIC in head[:4]:
        return Image(ref, path, "squashfs")
    check_sif(path)
    return Image(ref, path, "sif")


def cached_name(ref: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", REMOTE.sub("", ref)).strip("_")
    return f"{safe[:80]}-{hashlib.sha256(ref.encode()).hexdigest()[:12]}.sif"


DIGEST_SUFFIX = ".digest"   # beside a converted SIF: the registry's digest of what was converted


def read_text(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read(200).strip()
    except OSError:
        return ""


class ConversionFailed(ImageError):
    """A registry image could not be converted: a failed row with its gotcha, not bad usage."""

    def __init__(self, message: str, gotcha: str, log: str) -> None:
        super().__init__(message)
        self.gotcha, self.log = gotcha, log


def conversion_failed(ref: str, log: str, timed_out: bool = False) -> ConversionFailed:
    """A conversion's failure named from the catalog (stage pull): a registry pull's, podman's
    import, Charliecloud's copy."""
    from contprobe.inimage import catalog
    gotcha = catalog.match(log, "pull")
    if timed_out and gotcha == catalog.UNKNOWN:
        gotcha = "pull-stalled"
    tail = " ".join(log.strip().splitlines()[-1:])
    return ConversionFailed(f"could not convert {ref}: {tail}", gotcha, log)


def convert(ref: str, runtime: "Runtime", cache_dir: str, timeout: float = 3600.0) -> str:
    """Build a registry reference into a cached SIF once; reuse it afterwards. A stalled pull ends
    at `timeout` (its whole process group is killed) as a failed conversion, not a hang. The
    registry's digest is read right after the conversion and kept beside the SIF, so a warm run
    reports the digest of what it converted, not of what the tag points to now."""
    from contprobe import registry
    from contprobe.launch import execute
    os.makedirs(cache_dir, exist_ok=True)
    target = os.path.join(cache_dir, cached_name(ref))
    if os.path.exists(target):
        return target
    partial = target + ".partial"
    if os.path.exists(target + DIGEST_SUFFIX):
        os.unlink(target + DIGEST_SUFFIX)   # of an earlier conversion that was removed
    log_path = target + ".log"
    res = execute(runtime.build_argv(partial, ref, extra=("--force",)), log_path, timeout,
                  env=runtime.build_env(os.environ))
    if res.returncode != 0 or not os.path.exists(partial):
        raise conversion_failed(ref, res.log, res.timed_out)
    digest = registry.manifest_digest(ref, min(timeout, 20.0))
    if digest:
        with open(target + DIGEST_SUFFIX + ".tmp", "w") as fh:
            fh.write(digest + "\n")
        os.replace(target + DIGEST_SUFFIX + ".tmp", target + DIGEST_SUFFIX)
    os.replace(partial, target)
    return target
