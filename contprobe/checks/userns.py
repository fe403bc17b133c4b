"""host.user_namespaces, host.subuid: what unprivileged runs and --fakeroot builds need."""
from __future__ import annotations

import getpass
import os
from typing import List, Tuple

from contprobe.checks import Check, failed, passed, skipped

MIN_SUBIDS = 65536


def _read_int(path: str) -> int:
    try:
        with open(path) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return -1


def check_userns(max_path: str = "/proc/sys/user/max_user_namespaces",
                 clone_path: str = "/proc/sys/kernel/unprivileged_userns_clone") -> Check:
    limit = _read_int(max_path)
    if limit == 0:
        return failed("user-namespaces-disabled", f"{max_path} is 0")
    if _read_int(clone_path) == 0:
        return failed("user-namespaces-disabled", f"{clone_path} is 0")
    if limit < 0:
        return skipped(f"cannot read {max_path}")
    return passed(f"user.max_user_namespaces = {limit}")


def ranges(path: str, user: str, uid: int) -> List[Tuple[int, int]]:
    out = []
    try:
        with open(path) as fh:
            for line in fh:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[0] in (user, str(uid)):
                    try:
                        out.append((int(parts[1]), int(parts[2])))
                    except ValueError:
                        continue
    except OSError:
        pass
    return out


def check_subids(subuid: str = "/etc/subuid", subgid: str = "/etc/subgid") -> Check:
    uid = os.getuid()
    if uid == 0:
        return skipped("running as root: fakeroot needs no subordinate ids")
    user = getpass.getuser()
    problems, sizes = [], []
    for path in (subuid, subgid):
        rs = ranges(path, user, uid)
        largest = max((n for _, n in rs), default=0)
        sizes.append(f"{os.path.basename(path)} {largest}")
        if largest < MIN_SUBIDS:
            problems.append(f"{path}: {'no range' if not rs else f'largest range {largest}'} for {user} "
                            f"(need {MIN_SUBIDS})")
    if problems:
        return failed("subuid-range-small", "; ".join(problems))
    return passed(", ".join(sizes))
