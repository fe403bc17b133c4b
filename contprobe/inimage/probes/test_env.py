"""env.*: expected variables, user site-packages shadowing, LD_PRELOAD leaks, proxies."""
from __future__ import annotations

import os
import site
import sys
from typing import Dict, List, Set

import pytest

from contprobe.inimage.diagnose import fail
from contprobe.inimage.redact import redact_value

pytestmark = pytest.mark.env

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")


def test_expected(expected_env, in_container):
    if expected_env is None:
        pytest.skip("no --expect-env given")
    name, want = expected_env.name, expected_env.wanted(os.environ)
    if name not in os.environ:
        fail("env-not-passed" if in_container else "env-expectation",
             f"{name} is not set" + (" inside the container" if in_container else ""))
    if want is not None and os.environ[name] != want:
        # Never the values: the expected one may be a secret, and the actual one too.
        fail("env-expectation", f"{name} differs from the expected value ({len(os.environ[name])} characters, "
                                f"expected {len(want)})")


def top_level_names(directory: str) -> Set[str]:
    """Importable top-level names in a site directory (packages, modules, extensions)."""
    names = set()
    try:
        entries = os.listdir(directory)
    except OSError:
        return names
    for entry in entries:
        if entry.endswith((".dist-info", ".egg-info", ".pth")) or entry.startswith(("_", ".")):
            continue
        full = os.path.join(directory, entry)
        if os.path.isdir(full) and (os.path.exists(os.path.join(full, "__init__.py")) or entry.isidentifier()):
            names.add(entry)
        elif entry.endswith(".py"):
            names.add(entry[:-3])
        elif ".cpython-" in entry or entry.endswith(".so"):
            names.add(entry.split(".", 1)[0])
    return names


def shadowed_packages(user_site: str, path: List[str]) -> Dict[str, str]:
    """Top-level names in user_site that also exist further along sys.path: name -> other dir."""
    mine = top_level_names(user_site)
    found: Dict[str, str] = {}
    for entry in path:
        if not entry or os.path.realpath(entry) == os.path.realpath(user_site) or not os.path.isdir(entry):
            continue
        for name in mine & top_level_names(entry):
            found.setdefault(name, entry)
    return found


def test_user_site():
    user_site = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    if not user_site or not os.path.isdir(user_site) or user_site not in sys.path:
        return
    shadows = shadowed_packages(user_site, sys.path)
    if shadows:
        fail("user-site-shadow", f"{len(shadows)} package(s) in {user_site} shadow installed ones: "
             + ", ".join(sorted(shadows)),
             "\n".join(f"{n}: {user_site} hides {d}" for n, d in sorted(shadows.items())))


def test_ld_preload():
    entries = [e for e in os.environ.get("LD_PRELOAD", "").replace(":", " ").split() if e]
    missing = [e for e in entries if os.sep in e and not os.path.exists(e)]
    if missing:
        fail("ld-preload-leak", f"LD_PRELOAD names {len(missing)} missing librar{'y' if len(missing) == 1 else 'ies'}: "
             + " ".join(missing))


def test_proxy(request):
    if not request.config.getoption("--expect-proxy"):
        pytest.skip("no --expect-proxy given")
    missing = [v for v in PROXY_VARS if not os.environ.get(v)]
    if missing:
        present = {v: redact_value(v, os.environ[v]) for v in PROXY_VARS if os.environ.get(v)}
        fail("proxy-missing", "proxy variable(s) not set: " + ", ".join(missing),
             "set: " + (", ".join(f"{k}={v}" for k, v in present.items()) or "none"))
