"""The registry family (60-registry.toml) against outputs captured verbatim from the real registry of
ci/services/registry (ERRORS.md): `apptainer pull`, `apptainer build` (what contprobe's conversion
runs) and podman. Each names its gotcha in the pull stage; nothing earlier in the catalog takes it."""
from __future__ import annotations

import pytest

from contprobe.inimage import catalog

CAPTURED = [
    # apptainer pull (ERRORS.md R1-R5)
    ('FATAL:   While making image from oci registry: error fetching image to cache: failed to get checksum for '
     'docker://127.0.0.1:5443/base:1: pinging container registry 127.0.0.1:5443: Get "https://127.0.0.1:5443/v2/": '
     'tls: failed to verify certificate: x509: certificate signed by unknown authority', "registry-ca-untrusted"),
    ('Error: initializing source docker://127.0.0.1:5443/base:1: pinging container registry 127.0.0.1:5443: '
     'Get "https://127.0.0.1:5443/v2/": x509: certificate signed by unknown authority', "registry-ca-untrusted"),
    ('FATAL:   While making image from oci registry: error fetching image to cache: failed to get checksum for '
     'docker://127.0.0.1:5445/base:1: pinging container registry 127.0.0.1:5445: Get "https://127.0.0.1:5445/v2/": '
     'dial tcp 127.0.0.1:5445: connect: connection refused', "registry-unreachable"),
    ('FATAL:   While making image from oci registry: error fetching image to cache: failed to get checksum for '
     'docker://vm:5443/base:1: pinging container registry vm:5443: Get "https://vm:5443/v2/": Forbidden',
     "registry-proxy-forbidden"),
    ('Error: initializing source docker://vm:5443/base:1: pinging container registry vm:5443: '
     'Get "https://vm:5443/v2/": Forbidden', "registry-proxy-forbidden"),
    ('FATAL:   While making image from oci registry: error fetching image to cache: failed to get checksum for '
     'docker://127.0.0.1:5444/base:1: pinging container registry 127.0.0.1:5444: Get "https://127.0.0.1:5444/v2/": '
     'net/http: TLS handshake timeout', "registry-tls-handshake-timeout"),
    ('FATAL:   While making image from oci registry: error fetching image to cache: failed to get checksum for '
     'docker://127.0.0.1:5443/base:nope: reading manifest nope in 127.0.0.1:5443/base: manifest unknown',
     "registry-tag-missing"),
    # apptainer build, as `contprobe run` converts (tests/test_registry_e2e.py, 2026-11-29)
    ('FATAL:   While performing build: conveyor failed to get: Get "https://localhost:5453/v2/": tls: failed to '
     'verify certificate: x509: certificate signed by unknown authority; GET http://localhost:5453/v2/: unexpected '
     'status code 400 Bad Request: Client sent an HTTP request to an HTTPS server.', "registry-ca-untrusted"),
    ('FATAL:   While performing build: conveyor failed to get: Get "https://localhost:5455/v2/": dial tcp '
     '127.0.0.1:5455: connect: connection refused; Get "http://localhost:5455/v2/": dial tcp 127.0.0.1:5455: '
     'connect: connection refused', "registry-unreachable"),
    ('FATAL:   While performing build: conveyor failed to get: while fetching library image: failed to get '
     'checksum for oras://vm:5453/base-sif:1: Get "https://vm:5453/v2/": Forbidden', "registry-proxy-forbidden"),
    ('FATAL:   While performing build: conveyor failed to get: GET https://localhost:5453/v2/base/manifests/nope: '
     'MANIFEST_UNKNOWN: manifest unknown; map[Tag:nope]', "registry-tag-missing"),
]


@pytest.mark.parametrize("text,gotcha", CAPTURED, ids=[f"{g}-{i}" for i, (_, g) in enumerate(CAPTURED)])
def test_captured_registry_failures_are_named(text: str, gotcha: str):
    assert catalog.match(text, "pull") == gotcha
    # build-check's build log too (registry-tag-missing, from 20-from-corpus.toml, is seen_in pull only)
    if gotcha != "registry-tag-missing":
        assert catalog.match(text, "build") == gotcha


@pytest.mark.parametrize("text", [
    # a registry's own 403 (denied by its access rules) is not the proxy refusing the tunnel
    'GET https://reg.example/v2/x/manifests/1: DENIED: requested access to the resource is denied; Forbidden by policy',
    'unexpected status code 403 Forbidden',
    # a hostname mismatch is not an unknown CA
    'tls: failed to verify certificate: x509: certificate is valid for other.example, not reg.example',
])
def test_near_misses_are_not_taken(text: str):
    assert catalog.match(text, "pull") not in ("registry-proxy-forbidden", "registry-ca-untrusted")
