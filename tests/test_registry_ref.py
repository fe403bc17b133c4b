"""Registry references as `contprobe.registry` reads them to ask a registry for its digest."""
from __future__ import annotations

import pytest

from contprobe import registry
from contprobe.registry import Reference

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize("ref,want", [
    ("docker://ubuntu", Reference("registry-1.docker.io", "library/ubuntu", "latest")),
    ("docker://ubuntu:22.04", Reference("registry-1.docker.io", "library/ubuntu", "22.04")),
    ("docker://docker.io/rocm/pytorch:latest", Reference("registry-1.docker.io", "rocm/pytorch", "latest")),
    ("docker://nvcr.io/nvidia/pytorch:24.01-py3", Reference("nvcr.io", "nvidia/pytorch", "24.01-py3")),
    ("docker://localhost:5453/base:1", Reference("localhost:5453", "base", "1")),
    ("docker://localhost:5453/a/b", Reference("localhost:5453", "a/b", "latest")),
    (f"docker://reg.example:5000/a/b@{D}", Reference("reg.example:5000", "a/b", D)),
    ("oras://127.0.0.1:5453/base-sif:1", Reference("127.0.0.1:5453", "base-sif", "1")),
])
def test_parse(ref, want):
    assert registry.parse(ref) == want


@pytest.mark.parametrize("ref", ["library://alpine", "shub://x/y", "oras://no-registry-host", "docker://", "base.sif"])
def test_not_a_registry_reference(ref):
    assert registry.parse(ref) is None
    assert registry.manifest_digest(ref) == ""


def test_a_pinned_digest_is_the_digest_without_asking():
    assert registry.manifest_digest(f"docker://reg.invalid/a@{D}", timeout=0.01) == D


def test_an_unreachable_registry_is_an_empty_digest_not_an_error():
    # port 9 (discard) on loopback: nothing listens in CI; refused at once
    assert registry.manifest_digest("docker://127.0.0.1:9/base:1", timeout=5) == ""
