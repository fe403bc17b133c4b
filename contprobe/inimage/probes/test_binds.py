"""binds.*: every --expect-bind path is visible, a readable directory, writable when :rw."""
from __future__ import annotations

import os
import uuid

import pytest

from contprobe.inimage.diagnose import fail

pytestmark = pytest.mark.binds


def test_expected(expected_bind, in_container):
    if expected_bind is None:
        pytest.skip("no --expect-bind given")
    path = expected_bind.path
    if not os.path.exists(path):
        hint = f": add -B {path}" if in_container else ""
        fail("bind-missing", f"{path} does not exist here{hint}")
    if not os.path.isdir(path):
        fail("bind-missing", f"{path} exists but is not a directory")
    try:
        os.listdir(path)
    except OSError as exc:
        fail("bind-missing", f"{path} is not readable: {exc.strerror}")
    if expected_bind.writable:
        probe = os.path.join(path, f".contprobe-{uuid.uuid4().hex}")
        try:
            with open(probe, "w") as fh:
                fh.write("contprobe")
            os.remove(probe)
        except OSError as exc:
            fail("bind-not-writable", f"{path} is not writable: {exc.strerror}")
