"""Reading untrusted trees and writing outputs without being steered by links, FIFOs or huge files.

A results tree is written by the image under test, so anything in it may be hostile: a FIFO named
like a rank file (a read would block forever), a link to /dev/zero or to a host file, links to `.`
that make a walk endless, a file of gigabytes. Outputs are written by the operator's process and
must never follow a link someone planted where the output goes.
"""
from __future__ import annotations

import errno
import os
import stat
from typing import Iterator, List, Optional, Set, Tuple

DEFAULT_CAP = 16 << 20          # bytes read from any one input file
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
NONBLOCK = getattr(os, "O_NONBLOCK", 0)


class InputError(OSError):
    """An input that cannot be used; the message says why in a few words."""


def read_capped(path: str, cap: int = DEFAULT_CAP, follow: bool = False) -> bytes:
    """A regular file's bytes, at most cap of them. Links are refused unless follow (an operator's
    own argument); FIFOs, devices and sockets are refused without blocking."""
    flags = os.O_RDONLY | NONBLOCK | (0 if follow else NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(exc.errno, "a symbolic link (not followed)") from None
        raise InputError(exc.errno, exc.strerror or str(exc)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(errno.EINVAL, "not a regular file")
        if st.st_size > cap:
            raise InputError(errno.EFBIG, f"{st.st_size} bytes, over the {cap}-byte limit")
        chunks: List[bytes] = []
        left = cap + 1
        while left > 0:
            b = os.read(fd, min(left, 1 << 20))
            if not b:
                break
            chunks.append(b)
            left -= len(b)
        data = b"".join(chunks)
        if len(data) > cap:
            raise InputError(errno.EFBIG, f"over the {cap}-byte limit")
        return data
    finally:
        os.close(fd)


def walk(root: str, others: Optional[List[Tuple[str, str]]] = None) -> Iterator[Tuple[str, List[str]]]:
    """(directory, names of its regular files) under root, each directory once, links never followed,
    hidden entries skipped.

    Sorted, so results depend only on the tree. Unreadable directories are skipped silently here:
    callers report missing results, not missing directories. Entries that are neither a directory
    nor a regular file (links, FIFOs, devices, sockets) are appended to `others` as (path, what),
    so a caller can name the ones that pose as inputs instead of silently dropping them.
    """
    seen: Set[Tuple[int, int]] = set()
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            st = os.stat(d, follow_symlinks=(d == root))
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen or not stat.S_ISDIR(st.st_mode):
            continue
        seen.add(key)
        files: List[str] = []
        subdirs: List[str] = []
        try:
            with os.scandir(d) as it:
                for e in it:
                    if e.name.startswith("."):
                        continue
                    if e.is_dir(follow_symlinks=False):
                        subdirs.append(e.path)
                    elif e.is_file(follow_symlinks=False):
                        files.append(e.name)
                    elif others is not None:
                        others.append((e.path, "a symbolic link (not followed)" if e.is_symlink()
                                       else "not a regular file (a FIFO, device or socket)"))
        except OSError:
            continue
        yield d, sorted(files)
        stack.extend(sorted(subdirs, reverse=True))


def open_output(path: str, mode: int = 0o644):
    """A text file for writing that refuses to follow a link planted at path (O_NOFOLLOW) and
    truncates only after opening what is really there."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | NOFOLLOW | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError(errno.EINVAL, f"{path}: not a regular file")
        os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "w", encoding="utf-8")


def write_text(path: str, text: str) -> None:
    with open_output(path) as fh:
        fh.write(text)


def is_empty_dir(path: str) -> Optional[bool]:
    """True/False for a directory, None when path does not exist."""
    try:
        with os.scandir(path) as it:
            return next(it, None) is None
    except FileNotFoundError:
        return None
