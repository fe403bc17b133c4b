"""`contprobe run docker://...` and `oras://...` against a real registry with its own CA (tests/registry.py):
converted once then reused, the registry's digest in the report, a reproducer that runs; and the
real failures (CA not trusted, missing tag, registry down, refusing proxy, stalled pull) each named
with its catalog fix, as a failed row, never a traceback, with no process left behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

from contprobe.inimage import catalog
from tests.containers import as_user, image, run_as_user, user_dir
from tests.conftest import CLIResult, result_of
from tests.registry import Registry, registry  # noqa: F401  (the session fixture)

pytestmark = pytest.mark.slow
SYSTEM_CAS = "/etc/ssl/certs/ca-certificates.crt"
SELECTION = ["-m", "env or binds"]      # a short suite: the tests are about the image's way in


def user_env(cache: str, **extra: str) -> Dict[str, str]:
    """A login-like environment for the unprivileged user: no proxy, no CA unless the case sets one."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8", "USER": "cpuser",
           "APPTAINER_CACHEDIR": os.path.join(cache, "apptainer")}
    env.update(extra)
    return env


def contprobe_run(ref: str, work: str, name: str, env: Dict[str, str], *extra: str,
                  timeout: float = 900) -> CLIResult:
    out = os.path.join(work, name)
    return run_as_user(["run", ref, "--cache-dir", os.path.join(work, "sifs"), "--out", out,
                        "--json", f"{out}.json", *SELECTION, *extra], env=env, timeout=timeout)


def report(work: str, name: str) -> dict:
    """The --json document the run wrote."""
    with open(os.path.join(work, f"{name}.json")) as fh:
        return json.load(fh)


def record(work: str, name: str) -> dict:
    with open(os.path.join(work, name, "launch.json")) as fh:
        return json.load(fh)


def processes_mentioning(text: str) -> List[str]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmd:
                found.append(f"{pid}: {cmd[:200]}")
    return found


def converted(work: str) -> List[Path]:
    return sorted(Path(work, "sifs").glob("*.sif"))


@pytest.fixture
def work() -> Iterator[str]:
    image("base.sif")            # skips without apptainer or its user
    d = user_dir("contprobe-registry-")
    yield d
    shutil.rmtree(d, ignore_errors=True)    # converted SIFs are 60 MB each


@pytest.mark.parametrize("scheme,repo", [("docker", "base:1"), ("oras", "base-sif:1")])
def test_registry_image_converts_once_then_reuses_the_cache(registry: Registry, work: str, scheme: str, repo: str):
    ref = f"{scheme}://{registry.host}/{repo}"
    env = user_env(work, SSL_CERT_FILE=registry["CONTPROBE_REGISTRY_BUNDLE"])
    t0 = time.monotonic()
    first = contprobe_run(ref, work, "cold", env)
    cold_s = time.monotonic() - t0
    assert first.rc == 0, first
    assert report(work, "cold")["verdict"] == "passed", first
    [sif] = converted(work)
    before = (sif.stat().st_ino, sif.stat().st_mtime_ns, Path(f"{sif}.log").stat().st_mtime_ns)

    t0 = time.monotonic()
    second = contprobe_run(ref, work, "warm", env)
    warm_s = time.monotonic() - t0
    assert second.rc == 0, second
    # the cache was reused: the same SIF, untouched, and no conversion log written again
    assert converted(work) == [sif]
    assert (sif.stat().st_ino, sif.stat().st_mtime_ns, Path(f"{sif}.log").stat().st_mtime_ns) == before
    print(f"{ref}: cold {cold_s:.1f} s, warm {warm_s:.1f} s")

    # the digest in the report is the registry's: its Docker-Content-Digest and the sha256 of the
    # manifest skopeo reads from it, for the cold and the warm run alike
    want = registry["CONTPROBE_REGISTRY_BASE_DIGEST" if scheme == "docker" else "CONTPROBE_REGISTRY_BASE_SIF_DIGEST"]
    assert want == "sha256:" + hashlib.sha256(registry.skopeo_raw(ref)).hexdigest()
    for name in ("cold", "warm"):
        assert record(work, name)["image_digest"] == want
        assert report(work, name)["context"]["image_digest"] == want
        assert record(work, name)["image"] == ref

    # the reproducer is the exact command that ran: run again as written, it passes and rewrites
    # the rank file in the same results directory
    rec = record(work, "warm")
    assert str(sif) in rec["argv"] and rec["argv"][:2] == [rec["argv"][0], "exec"]
    ranks = Path(work, "warm", "ranks")
    [junit] = ranks.glob("junit-r*.xml")
    stamp = junit.stat().st_mtime_ns
    time.sleep(0.05)
    proc = subprocess.run(as_user(["env", "-i", "PATH=/usr/bin:/bin", "bash", "-c", rec["command"]]),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600, cwd=work)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert junit.stat().st_mtime_ns > stamp and "<testcase" in junit.read_text()


# (case, reference, extra environment, --timeout, gotcha, what its fix must say)
FAILURES = [
    ("ca-untrusted-docker", "docker://{host}/base:1", {"SSL_CERT_FILE": SYSTEM_CAS}, None,
     "registry-ca-untrusted", "SSL_CERT_FILE"),
    ("ca-untrusted-oras", "oras://{host}/base-sif:1", {}, None, "registry-ca-untrusted", "SSL_CERT_FILE"),
    ("tag-missing-docker", "docker://{host}/base:nope", {"SSL_CERT_FILE": "{bundle}"}, None,
     "registry-tag-missing", "list-tags"),
    ("tag-missing-oras", "oras://{host}/base-sif:nope", {"SSL_CERT_FILE": "{bundle}"}, None,
     "registry-tag-missing", "list-tags"),
    ("registry-down", "docker://{down}/base:1", {"SSL_CERT_FILE": "{bundle}"}, None,
     "registry-unreachable", "curl -sSI https://HOST:PORT/v2/"),
    ("proxy-refuses-docker", "docker://{alias}/base:1", {"SSL_CERT_FILE": "{bundle}", "https_proxy": "{proxy}"}, None,
     "registry-proxy-forbidden", "no_proxy=REGISTRY_HOST"),
    ("proxy-refuses-oras", "oras://{alias}/base-sif:1", {"SSL_CERT_FILE": "{bundle}", "https_proxy": "{proxy}"}, None,
     "registry-proxy-forbidden", "no_proxy=REGISTRY_HOST"),
    # TLS completes, then the registry says nothing: neither apptainer nor Go ever time out
    ("stalled", "docker://{stalled}/base:1", {"SSL_CERT_FILE": "{bundle}"}, 15, "pull-stalled", "curl -sSI"),
    # TCP accepted, TLS never answered: oras:// has no handshake timeout at all
    ("stalled-oras", "oras://{stalled_tcp}/base-sif:1", {"SSL_CERT_FILE": "{bundle}"}, 15, "pull-stalled",
     "curl -sSI"),
]


@pytest.mark.parametrize("case,ref,extra,timeout,gotcha,fix_has", FAILURES, ids=[f[0] for f in FAILURES])
def test_registry_failure_is_named_with_its_fix(registry: Registry, work: str, case: str, ref: str,
                                               extra: Dict[str, str], timeout: Optional[int], gotcha: str,
                                               fix_has: str):
    values = {"host": registry.host, "alias": registry.alias, "bundle": registry["CONTPROBE_REGISTRY_BUNDLE"],
              "proxy": registry["CONTPROBE_REFUSING_PROXY"],
              "down": registry["CONTPROBE_DOWN_REGISTRY"].replace("127.0.0.1", "localhost"),
              "stalled": registry["CONTPROBE_STALLED_TLS_REGISTRY"].replace("127.0.0.1", "localhost"),
              "stalled_tcp": registry["CONTPROBE_STALLED_REGISTRY"].replace("127.0.0.1", "localhost")}
    ref = ref.format(**values)
    env = user_env(work, **{k: v.format(**values) for k, v in extra.items()})
    args = ["--timeout", str(timeout)] if timeout else []
    t0 = time.monotonic()
    res = contprobe_run(ref, work, case, env, *args)
    took = time.monotonic() - t0
    assert res.rc == 1, res
    assert "Traceback" not in res.err, res
    doc = report(work, case)
    row = result_of(doc, "pull.convert")
    assert row["outcome"] == "failed", row
    assert row["gotcha"] == gotcha, row
    assert row["fix"] == catalog.get(gotcha).fix_line and fix_has in row["fix"], row
    assert gotcha in {g["id"] for g in doc["gotchas"]}
    assert not converted(work), "a failed conversion left a SIF in the cache"
    assert not processes_mentioning(os.path.join(work, "sifs")), "a conversion process outlived contprobe"
    if timeout:
        # the stalled pull ended at its --timeout (plus host checks and the kill), not at a tool's own
        assert took < timeout + 60, f"stalled conversion took {took:.0f} s with --timeout {timeout}"
        assert "timeout" in row["message"]


def test_the_proxy_fix_lets_the_pull_through(registry: Registry, work: str):
    """The fix the proxy gotcha names, applied: the same pull, same refusing proxy, with no_proxy."""
    host = registry.alias.split(":")[0]
    env = user_env(work, SSL_CERT_FILE=registry["CONTPROBE_REGISTRY_BUNDLE"],
                   https_proxy=registry["CONTPROBE_REFUSING_PROXY"], no_proxy=host)
    res = contprobe_run(f"oras://{registry.alias}/base-sif:1", work, "no-proxy", env)
    assert res.rc == 0, res
    assert result_of(report(work, "no-proxy"), "env.user_site")["outcome"] == "passed"
    assert record(work, "no-proxy")["image_digest"] == registry["CONTPROBE_REGISTRY_BASE_SIF_DIGEST"]


def test_build_check_on_a_docker_base(registry: Registry, work: str):
    """`build-check --base docker://...`: a fakeroot build on the registry image, then the probes in it."""
    out = os.path.join(work, "b")
    env = user_env(work, SSL_CERT_FILE=registry["CONTPROBE_REGISTRY_BUNDLE"])
    res = run_as_user(["build-check", "--base", f"docker://{registry.host}/base:1", "--out", out,
                       "--json", f"{out}.json", "--cache-dir", os.path.join(work, "apptainer"), *SELECTION],
                      env=env, timeout=900)
    assert res.rc == 0, res
    doc = report(work, "b")
    assert result_of(doc, "build.fakeroot")["outcome"] == "passed"
    assert result_of(doc, "env.expected[CONTPROBE_BUILD_CHECK]")["outcome"] == "passed"
